"""payment errors, access and cancellation reason

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24 08:29:59.869277
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("failure_code", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=True)
        )
        batch_op.add_column(
            sa.Column("decline_code", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=True)
        )
        batch_op.add_column(
            sa.Column(
                "hosted_invoice_url", sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True
            )
        )
        batch_op.create_index(
            batch_op.f("ix_payments_decline_code"), ["decline_code"], unique=False
        )

    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "access",
                sqlmodel.sql.sqltypes.AutoString(length=20),
                server_default="full",
                nullable=False,
            )
        )
        batch_op.add_column(
            sa.Column(
                "last_decline_code", sqlmodel.sql.sqltypes.AutoString(length=60), nullable=True
            )
        )
        batch_op.add_column(
            sa.Column(
                "cancellation_reason", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True
            )
        )
        batch_op.create_index(batch_op.f("ix_subscriptions_access"), ["access"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_subscriptions_last_decline_code"), ["last_decline_code"], unique=False
        )

    # Rows written before: what the app could grant by their status, until the workflow writes.
    op.execute(
        "UPDATE subscriptions SET access = CASE"
        " WHEN status IN ('canceled', 'incomplete') THEN 'none'"
        " WHEN status = 'past_due' THEN 'grace' ELSE 'full' END"
    )
    op.execute(
        "UPDATE subscriptions SET cancellation_reason = CASE WHEN dunning_attempt > 0"
        " THEN 'payment_failed' ELSE 'cancellation_requested' END WHERE status = 'canceled'"
    )


def downgrade() -> None:
    with op.batch_alter_table("subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_subscriptions_last_decline_code"))
        batch_op.drop_index(batch_op.f("ix_subscriptions_access"))
        batch_op.drop_column("cancellation_reason")
        batch_op.drop_column("last_decline_code")
        batch_op.drop_column("access")

    with op.batch_alter_table("payments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_payments_decline_code"))
        batch_op.drop_column("hosted_invoice_url")
        batch_op.drop_column("decline_code")
        batch_op.drop_column("failure_code")
