"""the read model's dunning count takes the name it has everywhere else

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 07:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Batch mode: SQLite alters a table by copying it; PostgreSQL renames in place.
    with op.batch_alter_table("subscriptions") as table:
        table.alter_column("dunning_attempt", new_column_name="failed_payment_attempts")


def downgrade() -> None:
    with op.batch_alter_table("subscriptions") as table:
        table.alter_column("failed_payment_attempts", new_column_name="dunning_attempt")
