"""Revenue analytics, computed in SQL over every ledger row in the range (no page limit)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Float, and_, case, cast, exists, func, or_, select
from sqlalchemy.orm import aliased

from core.db import AsyncSession, Payment, SubscriptionRecord

# Plain table columns: SQL expressions, not model attributes.
P = Payment.__table__.c  # type: ignore[attr-defined]
S = SubscriptionRecord.__table__.c  # type: ignore[attr-defined]


class Revenue(BaseModel):
    currency: str
    start: date
    end: date
    period_days: int
    total_revenue_minor: int
    successful_payments: int
    failed_payments: int
    refunded_payments: int
    success_rate: float
    mrr_minor: int
    active_subscriptions: int
    new_subscriptions: int
    canceled_subscriptions: int
    churn_rate: float
    recovered_payments: int
    recovery_rate: float


def _ratio(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


async def revenue(session: AsyncSession, start: date, end: date, currency: str = "usd") -> Revenue:
    """Figures for the inclusive date range [start, end] (UTC days)."""
    since = datetime.combine(start, time.min, UTC)
    until = datetime.combine(end + timedelta(days=1), time.min, UTC)
    mine = and_(P.occurred_at >= since, P.occurred_at < until, P.currency == currency)

    def count(kind: str) -> Any:
        return func.count().filter(P.kind == kind)

    def total(kind: str) -> Any:
        return func.coalesce(func.sum(P.amount_minor).filter(P.kind == kind), 0)

    ledger = (
        await session.exec(  # type: ignore[call-overload]
            select(
                count("succeeded"),
                count("failed"),
                count("refunded"),
                total("succeeded"),
                total("refunded"),
            ).where(mine)
        )
    ).one()
    succeeded, failed, refunded, gross, refunds = (int(v) for v in ledger)

    # Dunning: invoices with a failure in the range, and those later paid.
    failed_invoices = select(P.invoice_id).where(mine, P.kind == "failed").distinct().subquery()
    paid = aliased(Payment.__table__)  # type: ignore[attr-defined]
    dunned, recovered = (
        await session.exec(  # type: ignore[call-overload]
            select(
                func.count(),
                func.count().filter(
                    exists().where(
                        paid.c.invoice_id == failed_invoices.c.invoice_id,
                        paid.c.kind == "succeeded",
                    )
                ),
            ).select_from(failed_invoices)
        )
    ).one()

    sub = S
    monthly = case(
        (sub.interval == "yearly", cast(sub.amount_minor, Float) / 12),
        else_=cast(sub.amount_minor, Float),
    )
    started = sub.started_at
    ended = sub.canceled_at
    subs = (
        await session.exec(  # type: ignore[call-overload]
            select(
                func.coalesce(func.sum(monthly).filter(sub.status == "active"), 0),
                func.count().filter(sub.status == "active"),
                func.count().filter(and_(started >= since, started < until)),
                func.count().filter(and_(ended >= since, ended < until)),
                func.count().filter(and_(started < since, or_(ended.is_(None), ended >= since))),
            ).where(sub.currency == currency)
        )
    ).one()
    mrr, active, new, canceled, at_start = subs
    return Revenue(
        currency=currency,
        start=start,
        end=end,
        period_days=(end - start).days + 1,
        total_revenue_minor=gross - refunds,
        successful_payments=succeeded,
        failed_payments=failed,
        refunded_payments=refunded,
        success_rate=_ratio(succeeded, succeeded + failed),
        mrr_minor=round(float(mrr)),
        active_subscriptions=int(active),
        new_subscriptions=int(new),
        canceled_subscriptions=int(canceled),
        churn_rate=_ratio(int(canceled), int(at_start)),
        recovered_payments=int(recovered),
        recovery_rate=_ratio(int(recovered), int(dunned)),
    )
