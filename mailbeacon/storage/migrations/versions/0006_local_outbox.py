"""local outbox

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-27 16:07:37.571067
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('local_outbox',
    sa.Column('id', sa.String(length=26).with_variant(sa.String(length=26, collation='C'), 'postgresql'), nullable=False),
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('delivery_id', sa.String(length=26).with_variant(sa.String(length=26, collation='C'), 'postgresql'), nullable=False),
    sa.Column('sender', sa.Text(), nullable=False),
    sa.Column('recipient', sa.Text(), nullable=False),
    sa.Column('subject', sa.Text(), server_default='', nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_local_outbox'))
    )
    with op.batch_alter_table('local_outbox', schema=None) as batch_op:
        batch_op.create_index('ix_local_outbox_domain', ['domain', 'id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('local_outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_local_outbox_domain')

    op.drop_table('local_outbox')
