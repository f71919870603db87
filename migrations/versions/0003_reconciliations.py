"""reconciliations

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 09:47:25.035166
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "reconciliations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("run_id", sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("report", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("reconciliations", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_reconciliations_finished_at"), ["finished_at"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_reconciliations_run_id"), ["run_id"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("reconciliations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reconciliations_run_id"))
        batch_op.drop_index(batch_op.f("ix_reconciliations_finished_at"))

    op.drop_table("reconciliations")
