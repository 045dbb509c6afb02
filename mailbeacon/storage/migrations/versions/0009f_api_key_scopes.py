"""api key scopes: a domain and a role per key, revocation, last use, a shown prefix

Revision ID: 0009f
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009f"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing keys keep what they could do: every domain, full role.
    op.add_column("api_keys", sa.Column("prefix", sa.String(16), nullable=False,
                                        server_default=""))
    op.add_column("api_keys", sa.Column("domain", sa.String(253), nullable=True))
    op.add_column("api_keys", sa.Column("role", sa.String(8), nullable=False,
                                        server_default="full"))
    op.add_column("api_keys", sa.Column("revoked_at", sa.BigInteger(), nullable=True))
    op.add_column("api_keys", sa.Column("last_used_at", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        for column in ("last_used_at", "revoked_at", "role", "domain", "prefix"):
            batch.drop_column(column)
