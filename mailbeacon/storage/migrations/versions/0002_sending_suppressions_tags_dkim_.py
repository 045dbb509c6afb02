"""sending: suppressions, tags, dkim, unsubscribe, retries

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 15:31:51.961006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('soft_bounces',
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('last_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('domain', 'address', name=op.f('pk_soft_bounces'))
    )
    op.create_table('suppressions',
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('tag', sa.String(length=330), nullable=False),
    sa.Column('code', sa.String(length=8), server_default='', nullable=False),
    sa.Column('error', sa.Text(), server_default='', nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('domain', 'kind', 'address', 'tag', name=op.f('pk_suppressions'))
    )
    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.create_index('ix_suppressions_address', ['domain', 'address'], unique=False)

    op.create_table('tags',
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('tag', sa.String(length=128), nullable=False),
    sa.Column('description', sa.Text(), server_default='', nullable=False),
    sa.Column('first_seen', sa.BigInteger(), nullable=False),
    sa.Column('last_seen', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('domain', 'tag', name=op.f('pk_tags'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('first_attempt_at', sa.BigInteger(), nullable=True))

    with op.batch_alter_table('domains', schema=None) as batch_op:
        batch_op.add_column(sa.Column('bounce_domain', sa.String(length=253), nullable=True))
        batch_op.add_column(sa.Column('dkim_selector', sa.String(length=63), nullable=True))
        batch_op.add_column(sa.Column('dkim_private_key', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('unsubscribe_footer', sa.Boolean(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('footer_html', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('footer_text', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('soft_bounce_limit', sa.Integer(), server_default='5', nullable=False))

    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.add_column(sa.Column('recipient_variables', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('testmode', sa.Boolean(), server_default='0', nullable=False))



def downgrade() -> None:
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_column('testmode')
        batch_op.drop_column('recipient_variables')

    with op.batch_alter_table('domains', schema=None) as batch_op:
        batch_op.drop_column('soft_bounce_limit')
        batch_op.drop_column('footer_text')
        batch_op.drop_column('footer_html')
        batch_op.drop_column('unsubscribe_footer')
        batch_op.drop_column('dkim_private_key')
        batch_op.drop_column('dkim_selector')
        batch_op.drop_column('bounce_domain')

    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('first_attempt_at')

    op.drop_table('tags')
    with op.batch_alter_table('suppressions', schema=None) as batch_op:
        batch_op.drop_index('ix_suppressions_address')

    op.drop_table('suppressions')
    op.drop_table('soft_bounces')
