"""insight: enrichment stats, links, contacts, privacy

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 15:59:57.916180
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('contacts',
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('address', sa.String(length=320), nullable=False),
    sa.Column('consent', sa.Boolean(), nullable=True),
    sa.Column('consent_at', sa.BigInteger(), nullable=True),
    sa.Column('score', sa.Float(), server_default='0', nullable=False),
    sa.Column('score_at', sa.BigInteger(), server_default='0', nullable=False),
    sa.Column('score_rank', sa.Float(), server_default='-1e300', nullable=False),
    sa.Column('opens', sa.Integer(), server_default='0', nullable=False),
    sa.Column('clicks', sa.Integer(), server_default='0', nullable=False),
    sa.Column('replies', sa.Integer(), server_default='0', nullable=False),
    sa.Column('last_activity_at', sa.BigInteger(), nullable=True),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('domain', 'address', name=op.f('pk_contacts'))
    )
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.create_index('ix_contacts_rank', ['domain', 'score_rank'], unique=False)

    op.create_table('dimension_stats',
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('tag', sa.String(length=128), nullable=False),
    sa.Column('event', sa.String(length=24), nullable=False),
    sa.Column('dimension', sa.String(length=16), nullable=False),
    sa.Column('value', sa.String(length=128), nullable=False),
    sa.Column('day', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.Column('human_count', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('domain', 'tag', 'event', 'dimension', 'value', 'day', name=op.f('pk_dimension_stats'))
    )
    op.create_table('link_clicks',
    sa.Column('delivery_id', sa.String(length=26).with_variant(sa.String(length=26, collation='C'), 'postgresql'), nullable=False),
    sa.Column('link_index', sa.Integer(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('delivery_id', 'link_index', name=op.f('pk_link_clicks'))
    )
    op.create_table('link_stats',
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('tag', sa.String(length=128), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('clicks', sa.BigInteger(), nullable=False),
    sa.Column('unique_clicks', sa.BigInteger(), nullable=False),
    sa.Column('human_clicks', sa.BigInteger(), server_default='0', nullable=False),
    sa.PrimaryKeyConstraint('domain', 'tag', 'url', name=op.f('pk_link_stats'))
    )
    with op.batch_alter_table('domains', schema=None) as batch_op:
        batch_op.add_column(sa.Column('track_activities', sa.String(length=8), server_default='always', nullable=False))
        batch_op.add_column(sa.Column('truncate_ips', sa.Boolean(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('retention_days', sa.Integer(), server_default='30', nullable=False))
        batch_op.add_column(sa.Column('bot_thresholds', sa.Text(), nullable=True))

    with op.batch_alter_table('recipient_state', schema=None) as batch_op:
        batch_op.add_column(sa.Column('human_open_count', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('human_click_count', sa.Integer(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('first_human_open_at', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('first_human_click_at', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('recipient', sa.String(length=320), nullable=True))
        batch_op.add_column(sa.Column('bounced', sa.Boolean(), server_default='0', nullable=False))

    with op.batch_alter_table('stats_buckets', schema=None) as batch_op:
        batch_op.add_column(sa.Column('human_count', sa.BigInteger(), server_default='0', nullable=False))



def downgrade() -> None:
    with op.batch_alter_table('stats_buckets', schema=None) as batch_op:
        batch_op.drop_column('human_count')

    with op.batch_alter_table('recipient_state', schema=None) as batch_op:
        batch_op.drop_column('bounced')
        batch_op.drop_column('recipient')
        batch_op.drop_column('first_human_click_at')
        batch_op.drop_column('first_human_open_at')
        batch_op.drop_column('human_click_count')
        batch_op.drop_column('human_open_count')

    with op.batch_alter_table('domains', schema=None) as batch_op:
        batch_op.drop_column('bot_thresholds')
        batch_op.drop_column('retention_days')
        batch_op.drop_column('truncate_ips')
        batch_op.drop_column('track_activities')

    op.drop_table('link_stats')
    op.drop_table('link_clicks')
    op.drop_table('dimension_stats')
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_index('ix_contacts_rank')

    op.drop_table('contacts')
