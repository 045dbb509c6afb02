"""lookup indexes: deliveries by address, recipient state by recipient

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_deliveries_recipient_lower", "deliveries",
                    [sa.text("lower(recipient)")])
    op.create_index("ix_recipient_state_recipient", "recipient_state",
                    ["domain", "recipient"])


def downgrade() -> None:
    op.drop_index("ix_recipient_state_recipient", table_name="recipient_state")
    op.drop_index("ix_deliveries_recipient_lower", table_name="deliveries")
