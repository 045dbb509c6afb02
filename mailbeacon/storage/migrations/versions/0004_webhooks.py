"""webhooks

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27 15:44:10.011746
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.String(length=26).with_variant(sa.String(length=26, collation='C'), 'postgresql'), nullable=False),
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('webhook', sa.String(length=24), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('event_id', sa.String(length=26).with_variant(sa.String(length=26, collation='C'), 'postgresql'), nullable=False),
    sa.Column('payload', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_at', sa.BigInteger(), nullable=False),
    sa.Column('lease_until', sa.BigInteger(), nullable=True),
    sa.Column('last_code', sa.Integer(), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('last_attempt_at', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries'))
    )
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_webhook_deliveries_domain', ['domain', 'id'], unique=False)
        batch_op.create_index('ix_webhook_deliveries_due', ['status', 'next_attempt_at'], unique=False)

    op.create_table('webhooks',
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('webhook', sa.String(length=24), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('domain', 'webhook', 'url', name=op.f('pk_webhooks'))
    )
    with op.batch_alter_table('domains', schema=None) as batch_op:
        batch_op.add_column(sa.Column('webhook_signing_key', sa.String(length=128), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('domains', schema=None) as batch_op:
        batch_op.drop_column('webhook_signing_key')

    op.drop_table('webhooks')
    with op.batch_alter_table('webhook_deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_deliveries_due')
        batch_op.drop_index('ix_webhook_deliveries_domain')

    op.drop_table('webhook_deliveries')
