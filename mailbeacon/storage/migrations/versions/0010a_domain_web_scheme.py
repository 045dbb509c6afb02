"""domains.web_scheme: tracking links in http or https (Mailgun's web_scheme)

Revision ID: 0010a
Revises: 0009b
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010a"
down_revision = "0009b"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: links keep the scheme their base URL is written with, as before.
    with op.batch_alter_table("domains") as batch:
        batch.add_column(sa.Column("web_scheme", sa.String(5), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("domains") as batch:
        batch.drop_column("web_scheme")
