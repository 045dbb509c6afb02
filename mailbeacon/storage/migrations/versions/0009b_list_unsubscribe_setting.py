"""domains.list_unsubscribe: one-click unsubscribe headers on every message

Revision ID: 0009b
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009b"
down_revision = "0009e"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("domains") as batch:
        batch.add_column(sa.Column("list_unsubscribe", sa.Boolean(), nullable=False,
                                   server_default="1"))


def downgrade() -> None:
    with op.batch_alter_table("domains") as batch:
        batch.drop_column("list_unsubscribe")
