"""Revenue analytics over a generated ledger of thousands of rows, against figures computed
here by hand (in Python, row by row), on SQLite and PostgreSQL."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, time, timedelta
from typing import TypedDict

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker

from core.analytics import revenue
from core.db import AsyncSession, Payment, SubscriptionRecord

DAY0 = date(2026, 1, 1)
PRICES = {
    ("starter", "monthly"): 2_900,
    ("pro", "monthly"): 9_900,
    ("pro", "yearly"): 99_000,
    ("enterprise", "yearly"): 499_000,
}


class Invoiced(TypedDict):
    """What every payment row of one invoice shares."""

    invoice_id: str
    amount_minor: int
    currency: str
    user_id: str


def at(day: int, seconds: int = 0) -> datetime:
    return datetime.combine(DAY0 + timedelta(days=day), time.min, UTC) + timedelta(seconds=seconds)


def generated() -> tuple[list[Payment], list[SubscriptionRecord]]:
    rng = random.Random(20261123)
    payments: list[Payment] = []
    for n in range(3_000):
        day, invoice = rng.randrange(0, 90), f"in_{n}"
        amount = rng.choice(list(PRICES.values()))
        currency = "eur" if n % 37 == 0 else "usd"
        common: Invoiced = {
            "invoice_id": invoice,
            "amount_minor": amount,
            "currency": currency,
            "user_id": f"u{n % 400}",
        }
        roll = rng.random()
        if roll < 0.7:
            payments.append(
                Payment(
                    attempt=1,
                    kind="succeeded",
                    occurred_at=at(day, rng.randrange(86_400)),
                    **common,
                )
            )
            if rng.random() < 0.05:
                payments.append(
                    Payment(attempt=1, kind="refunded", occurred_at=at(min(day + 3, 89)), **common)
                )
        else:
            failures = rng.randint(1, 3)
            for attempt in range(1, failures + 1):
                payments.append(
                    Payment(
                        attempt=attempt,
                        kind="failed",
                        occurred_at=at(min(day + 2 * (attempt - 1), 89), 60),
                        **common,
                    )
                )
            if failures < 3 and rng.random() < 0.6:
                payments.append(
                    Payment(
                        attempt=failures + 1,
                        kind="succeeded",
                        recovered=True,
                        occurred_at=at(min(day + 2 * failures, 89), 120),
                        **common,
                    )
                )
    subs: list[SubscriptionRecord] = []
    for n in range(300):
        (plan, interval), amount = rng.choice(list(PRICES.items()))
        started = rng.randrange(-60, 90)
        canceled = started + rng.randrange(1, 120) if rng.random() < 0.3 else None
        status = (
            "canceled"
            if canceled is not None and canceled < 90
            else rng.choice(["active", "active", "active", "trialing", "past_due"])
        )
        subs.append(
            SubscriptionRecord(
                stripe_subscription_id=f"sub_{n}",
                user_id=f"u{n}",
                status=status,
                plan=plan,
                interval=interval,
                amount_minor=amount,
                currency="usd",
                started_at=at(started),
                canceled_at=at(canceled) if status == "canceled" and canceled is not None else None,
            )
        )
    return payments, subs


def expected(
    payments: list[Payment], subs: list[SubscriptionRecord], start: date, end: date
) -> dict[str, object]:
    since, until = at((start - DAY0).days), at((end - DAY0).days + 1)
    rows = [p for p in payments if since <= p.occurred_at < until and p.currency == "usd"]
    ok = [p for p in rows if p.kind == "succeeded"]
    failed = [p for p in rows if p.kind == "failed"]
    refunds = [p for p in rows if p.kind == "refunded"]
    dunned = {p.invoice_id for p in failed}
    paid_ever = {p.invoice_id for p in payments if p.kind == "succeeded"}
    active = [s for s in subs if s.status == "active"]
    at_start = [
        s
        for s in subs
        if s.started_at < since and (s.canceled_at is None or s.canceled_at >= since)
    ]
    canceled = [s for s in subs if s.canceled_at is not None and since <= s.canceled_at < until]

    def ratio(a: int, b: int) -> float:
        return round(a / b, 4) if b else 0.0

    return {
        "period_days": (end - start).days + 1,
        "total_revenue_minor": sum(p.amount_minor for p in ok)
        - sum(p.amount_minor for p in refunds),
        "successful_payments": len(ok),
        "failed_payments": len(failed),
        "refunded_payments": len(refunds),
        "success_rate": ratio(len(ok), len(ok) + len(failed)),
        "mrr_minor": round(
            sum(s.amount_minor / 12 if s.interval == "yearly" else s.amount_minor for s in active)
        ),
        "active_subscriptions": len(active),
        "new_subscriptions": len([s for s in subs if since <= s.started_at < until]),
        "canceled_subscriptions": len(canceled),
        "churn_rate": ratio(len(canceled), len(at_start)),
        "recovered_payments": len(dunned & paid_ever),
        "recovery_rate": ratio(len(dunned & paid_ever), len(dunned)),
    }


@pytest.fixture
async def ledger(
    db_sessions: async_sessionmaker[AsyncSession],
) -> tuple[list[Payment], list[SubscriptionRecord]]:
    payments, subs = generated()
    expected_rows = [(p.model_copy(),) for p in payments]  # keep plain copies for the checks
    async with db_sessions() as session:
        session.add_all([*payments, *subs])
        await session.commit()
    assert len(expected_rows) > 3_000
    return generated()


RANGES = [
    (date(2026, 1, 1), date(2026, 3, 31)),  # everything
    (date(2026, 2, 1), date(2026, 2, 28)),  # a month
    (date(2026, 1, 15), date(2026, 1, 15)),  # one day
    (date(2027, 1, 1), date(2027, 1, 31)),  # nothing in range
]


async def test_revenue_matches_hand_computed_figures(
    db_sessions: async_sessionmaker[AsyncSession],
    ledger: tuple[list[Payment], list[SubscriptionRecord]],
) -> None:
    payments, subs = ledger
    for start, end in RANGES:
        async with db_sessions() as session:
            report = await revenue(session, start, end)
        figures = report.model_dump(exclude={"currency", "start", "end"})
        assert figures == expected(payments, subs, start, end), (start, end)
        assert report.successful_payments > 0 or start.year == 2027
    # The empty range (the last one): zeros, and no division by zero.
    assert report.total_revenue_minor == 0
    assert report.successful_payments == 0
    assert report.success_rate == 0.0
    assert report.recovery_rate == 0.0
