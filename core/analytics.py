"""Revenue analytics, computed in SQL over every ledger row in the range (no page limit), in
the same statements on SQLite and PostgreSQL (aggregate FILTER, window functions)."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Float, and_, case, cast, distinct, exists, func, or_, select
from sqlalchemy.orm import aliased

from core.db import AsyncSession, Payment, SubscriptionRecord
from core.payloads import PaymentKind

# Plain table columns: SQL expressions, not model attributes.
P = Payment.__table__.c  # type: ignore[attr-defined]
S = SubscriptionRecord.__table__.c  # type: ignore[attr-defined]


# A failed attempt's reason: the issuer's decline code, else Stripe's error code.
UNKNOWN_CODE = "unknown"


class DeclineRecovery(BaseModel):
    """Invoices whose first failure in the range had one decline code, and how many were paid."""

    failed: int
    recovered: int


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
    first_attempt_failure_rate: float
    involuntary_churn_rate: float
    recovery_by_decline_code: dict[str, DeclineRecovery]


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

    first_attempt = and_(P.attempt == 1, P.kind.in_((PaymentKind.SUCCEEDED, PaymentKind.FAILED)))
    ledger = (
        await session.exec(  # type: ignore[call-overload]
            select(
                count(PaymentKind.SUCCEEDED),
                count(PaymentKind.FAILED),
                count(PaymentKind.REFUNDED),
                total(PaymentKind.SUCCEEDED),
                total(PaymentKind.REFUNDED),
                # Invoices whose first payment attempt fell in the range, and those it failed.
                func.count(distinct(P.invoice_id)).filter(first_attempt),
                func.count(distinct(P.invoice_id)).filter(
                    first_attempt, P.kind == PaymentKind.FAILED
                ),
            ).where(mine)
        )
    ).one()
    succeeded, failed, refunded, gross, refunds, first_attempts, first_failed = (
        int(v) for v in ledger
    )

    # Dunning: each invoice with a failure in the range, under the reason of its first failure
    # in the range, and whether it was paid since.
    reason = func.coalesce(
        func.nullif(P.decline_code, ""), func.nullif(P.failure_code, ""), UNKNOWN_CODE
    )
    nth = func.row_number().over(
        partition_by=P.invoice_id, order_by=(P.occurred_at, P.attempt, P.id)
    )
    failures = (
        select(P.invoice_id, reason.label("code"), nth.label("nth"))
        .where(mine, P.kind == PaymentKind.FAILED)
        .subquery()
    )
    paid = aliased(Payment.__table__)  # type: ignore[attr-defined]
    was_paid = exists().where(
        paid.c.invoice_id == failures.c.invoice_id, paid.c.kind == PaymentKind.SUCCEEDED
    )
    by_code = {
        str(code): DeclineRecovery(failed=int(invoices), recovered=int(paid_since))
        for code, invoices, paid_since in await session.exec(  # type: ignore[call-overload]
            select(failures.c.code, func.count(), func.count().filter(was_paid))
            .where(failures.c.nth == 1)
            .group_by(failures.c.code)
            .order_by(failures.c.code)
        )
    }
    dunned = sum(figures.failed for figures in by_code.values())
    recovered = sum(figures.recovered for figures in by_code.values())

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
                func.count().filter(
                    and_(ended >= since, ended < until, sub.cancellation_reason == "payment_failed")
                ),
            ).where(sub.currency == currency)
        )
    ).one()
    mrr, active, new, canceled, at_start, involuntary = subs
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
        recovered_payments=recovered,
        recovery_rate=_ratio(recovered, dunned),
        first_attempt_failure_rate=_ratio(first_failed, first_attempts),
        involuntary_churn_rate=_ratio(int(involuntary), int(at_start)),
        recovery_by_decline_code=by_code,
    )
