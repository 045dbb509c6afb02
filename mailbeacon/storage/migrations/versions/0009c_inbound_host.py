"""inbound messages: the bounce domain each was addressed to (unmatched reports by domain)

Revision ID: 0009c
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009c"
down_revision = "0009f"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("inbound_messages") as batch:
        batch.add_column(sa.Column("host", sa.String(253), nullable=False, server_default=""))
    op.create_index("ix_inbound_messages_host", "inbound_messages",
                    ["host", "status", "received_at"])


def downgrade() -> None:
    op.drop_index("ix_inbound_messages_host", table_name="inbound_messages")
    with op.batch_alter_table("inbound_messages") as batch:
        batch.drop_column("host")
