"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27 15:25:00.588781
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('api_keys',
    sa.Column('id', sa.String(length=26).with_variant(sa.String(length=26, collation='C'), 'postgresql'), nullable=False),
    sa.Column('key_hash', sa.String(length=64), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('key_hash', name=op.f('uq_api_keys_key_hash'))
    )
    op.create_table('domains',
    sa.Column('name', sa.String(length=253), nullable=False),
    sa.Column('id', sa.String(length=26).with_variant(sa.String(length=26, collation='C'), 'postgresql'), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('track_opens', sa.Boolean(), nullable=False),
    sa.Column('track_clicks', sa.String(length=8), nullable=False),
    sa.Column('pixel_top', sa.Boolean(), nullable=False),
    sa.Column('tracking_url', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_domains')),
    sa.UniqueConstraint('id', name=op.f('uq_domains_id'))
    )
    op.create_table('events',
    sa.Column('id', sa.String(length=26).with_variant(sa.String(length=26, collation='C'), 'postgresql'), nullable=False),
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('ts', sa.BigInteger(), nullable=False),
    sa.Column('event', sa.String(length=24), nullable=False),
    sa.Column('recipient', sa.Text(), nullable=True),
    sa.Column('message_id', sa.String(length=255), nullable=True),
    sa.Column('delivery_id', sa.String(length=26).with_variant(sa.String(length=26, collation='C'), 'postgresql'), nullable=True),
    sa.Column('severity', sa.String(length=16), nullable=True),
    sa.Column('tags', sa.Text(), nullable=False),
    sa.Column('data', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_domain_event', ['domain', 'event', 'id'], unique=False)
        batch_op.create_index('ix_events_domain_id', ['domain', 'id'], unique=False)
        batch_op.create_index('ix_events_domain_message', ['domain', 'message_id', 'id'], unique=False)
        batch_op.create_index('ix_events_domain_recipient', ['domain', 'recipient', 'id'], unique=False)

    op.create_table('installation',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('value', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_installation'))
    )
    op.create_table('recipient_state',
    sa.Column('delivery_id', sa.String(length=26).with_variant(sa.String(length=26, collation='C'), 'postgresql'), nullable=False),
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('first_open_at', sa.BigInteger(), nullable=True),
    sa.Column('last_open_at', sa.BigInteger(), nullable=True),
    sa.Column('open_count', sa.Integer(), nullable=False),
    sa.Column('first_click_at', sa.BigInteger(), nullable=True),
    sa.Column('last_click_at', sa.BigInteger(), nullable=True),
    sa.Column('click_count', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('delivery_id', name=op.f('pk_recipient_state'))
    )
    op.create_table('stats_buckets',
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('tag', sa.String(length=128), nullable=False),
    sa.Column('event', sa.String(length=24), nullable=False),
    sa.Column('hour', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.BigInteger(), nullable=False),
    sa.PrimaryKeyConstraint('domain', 'tag', 'event', 'hour', name=op.f('pk_stats_buckets'))
    )
    op.create_table('messages',
    sa.Column('id', sa.String(length=26).with_variant(sa.String(length=26, collation='C'), 'postgresql'), nullable=False),
    sa.Column('domain', sa.String(length=253), nullable=False),
    sa.Column('message_id', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.BigInteger(), nullable=False),
    sa.Column('sender', sa.Text(), nullable=False),
    sa.Column('headers', sa.Text(), nullable=False),
    sa.Column('tags', sa.Text(), nullable=False),
    sa.Column('user_variables', sa.Text(), nullable=False),
    sa.Column('options', sa.Text(), nullable=False),
    sa.Column('mime', sa.LargeBinary(), nullable=False),
    sa.ForeignKeyConstraint(['domain'], ['domains.name'], name=op.f('fk_messages_domain_domains')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages'))
    )
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.create_index('ix_messages_domain_message_id', ['domain', 'message_id'], unique=False)

    op.create_table('deliveries',
    sa.Column('id', sa.String(length=26).with_variant(sa.String(length=26, collation='C'), 'postgresql'), nullable=False),
    sa.Column('message_id', sa.String(length=26).with_variant(sa.String(length=26, collation='C'), 'postgresql'), nullable=False),
    sa.Column('recipient', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.BigInteger(), nullable=False),
    sa.Column('lease_until', sa.BigInteger(), nullable=True),
    sa.Column('last_code', sa.Integer(), nullable=True),
    sa.Column('last_message', sa.Text(), nullable=True),
    sa.Column('updated_at', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_deliveries_message_id_messages')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_deliveries_message', ['message_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_message')
        batch_op.drop_index('ix_deliveries_due')

    op.drop_table('deliveries')
    with op.batch_alter_table('messages', schema=None) as batch_op:
        batch_op.drop_index('ix_messages_domain_message_id')

    op.drop_table('messages')
    op.drop_table('stats_buckets')
    op.drop_table('recipient_state')
    op.drop_table('installation')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_domain_recipient')
        batch_op.drop_index('ix_events_domain_message')
        batch_op.drop_index('ix_events_domain_id')
        batch_op.drop_index('ix_events_domain_event')

    op.drop_table('events')
    op.drop_table('domains')
    op.drop_table('api_keys')
