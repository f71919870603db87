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

DECLINE_CODES = ["insufficient_funds", "insufficient_funds", "lost_card", "do_not_honor", "", None]
FAILURE_CODES = ["card_declined", "expired_card", None]
CANCELLATION_REASONS = ["payment_failed", "payment_failed", "cancellation_requested", None]


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
                # Near the end the attempts pile up on day 89: ties in time, told apart by
                # their attempt number. Some have no decline code ("" is none either).
                payments.append(
                    Payment(
                        attempt=attempt,
                        kind="failed",
                        occurred_at=at(min(day + 2 * (attempt - 1), 89), 60),
                        decline_code=rng.choice(DECLINE_CODES),
                        failure_code=rng.choice(FAILURE_CODES),
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
        reason = rng.choice(CANCELLATION_REASONS) if status == "canceled" else None
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
                cancellation_reason=reason,
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

    first_attempts = [p for p in rows if p.attempt == 1 and p.kind in ("succeeded", "failed")]
    first_failed = {p.invoice_id for p in first_attempts if p.kind == "failed"}
    failures_of: dict[str, list[Payment]] = {}
    for p in failed:
        failures_of.setdefault(p.invoice_id, []).append(p)
    by_code: dict[str, dict[str, int]] = {}
    for invoice, failures in failures_of.items():
        first = min(failures, key=lambda p: (p.occurred_at, p.attempt))
        figures = by_code.setdefault(
            first.decline_code or first.failure_code or "unknown", {"failed": 0, "recovered": 0}
        )
        figures["failed"] += 1
        figures["recovered"] += invoice in paid_ever
    involuntary = [s for s in canceled if s.cancellation_reason == "payment_failed"]

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
        "first_attempt_failure_rate": ratio(
            len(first_failed), len({p.invoice_id for p in first_attempts})
        ),
        "involuntary_churn_rate": ratio(len(involuntary), len(at_start)),
        "recovery_by_decline_code": by_code,
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


# --- a ledger built by hand: a handful of customers whose outcomes are known ----------------

MARCH = (date(2026, 3, 1), date(2026, 3, 31))


def on(month: int, day: int, hour: int = 12) -> datetime:
    return datetime(2026, month, day, hour, tzinfo=UTC)


def pay(
    invoice: str,
    attempt: int,
    kind: str,
    when: datetime,
    amount: int = 2_900,
    decline: str | None = None,
    failure: str | None = None,
    currency: str = "usd",
) -> Payment:
    return Payment(
        invoice_id=invoice,
        attempt=attempt,
        kind=kind,
        amount_minor=amount,
        currency=currency,
        user_id=invoice.removeprefix("in_"),
        recovered=kind == "succeeded" and attempt > 1,
        decline_code=decline,
        # A card the issuer declined is Stripe's `card_declined`, unless told otherwise.
        failure_code=failure if failure is not None else "card_declined" if decline else None,
        occurred_at=when,
    )


def subscribed(
    user: str,
    started: datetime,
    canceled: datetime | None = None,
    reason: str | None = None,
    status: str = "active",
    currency: str = "usd",
) -> SubscriptionRecord:
    return SubscriptionRecord(
        stripe_subscription_id=f"sub_{user}_{started:%m%d}",
        user_id=user,
        status="canceled" if canceled else status,
        plan="starter",
        interval="monthly",
        amount_minor=2_900,
        currency=currency,
        started_at=started,
        canceled_at=canceled,
        cancellation_reason=reason,
    )


def hand_built() -> list[Payment | SubscriptionRecord]:
    return [
        # alice: first attempt declined (insufficient funds), paid by the dunning retry.
        pay("in_alice", 1, "failed", on(3, 3), decline="insufficient_funds"),
        pay("in_alice", 2, "succeeded", on(3, 6)),
        # bob: lost card at the first attempt, never paid; dunning gave up (below).
        pay("in_bob", 1, "failed", on(3, 4), decline="lost_card"),
        # carol: insufficient funds, then a generic decline, then paid: counted under the
        # code of her FIRST failure.
        pay("in_carol", 1, "failed", on(3, 5), 9_900, decline="insufficient_funds"),
        pay("in_carol", 2, "failed", on(3, 8), 9_900, decline="generic_decline"),
        pay("in_carol", 3, "succeeded", on(3, 11), 9_900),
        # dan: paid at once, then refunded twice (one ledger row per refund).
        pay("in_dan", 1, "succeeded", on(3, 2), 9_900),
        pay("in_dan", 1, "refunded", on(3, 10), 1_000),
        pay("in_dan", 2, "refunded", on(3, 12), 900),
        # erin: paid at once; she cancels (below).
        pay("in_erin", 1, "succeeded", on(3, 1, 0)),
        # frank: first failure in February; in March only his second, with no decline code
        # (expired card): not a first attempt in March, counted under expired_card; paid in April.
        pay("in_frank", 1, "failed", on(2, 25), 9_900, decline="insufficient_funds"),
        pay("in_frank", 2, "failed", on(3, 2), 9_900, failure="expired_card"),
        pay("in_frank", 3, "succeeded", on(4, 2), 9_900),
        # gina: a failure Stripe gave no code for; never paid.
        pay("in_gina", 1, "failed", on(3, 9), failure=""),
        # tom: two failures at the same instant, the second written first: his first failure
        # is attempt 1's (do_not_honor). Never paid.
        pay("in_tom", 2, "failed", on(3, 14), decline="insufficient_funds"),
        pay("in_tom", 1, "failed", on(3, 14), decline="do_not_honor"),
        # Outside the figures: another currency, and April.
        pay("in_xavier", 1, "failed", on(3, 7), decline="lost_card", currency="eur"),
        pay("in_hank", 1, "failed", on(4, 1, 0), decline="insufficient_funds"),
        # The read model.
        subscribed("alice", on(1, 1)),
        subscribed("bob", on(1, 10), on(3, 20), "payment_failed"),
        subscribed("bob", on(3, 22)),  # subscribed again after dunning gave up
        subscribed("carol", on(2, 1)),
        subscribed("dan", on(1, 5)),
        subscribed("erin", on(2, 10), on(3, 15), "cancellation_requested"),
        subscribed("frank", on(1, 3)),
        subscribed("gina", on(1, 20), status="past_due"),
        subscribed("tom", on(3, 1, 0), status="past_due"),  # starts as March does
        subscribed("hank", on(1, 2), on(2, 20), "payment_failed"),  # gone before March
        subscribed("ivy", on(3, 10), on(3, 25), "payment_failed"),  # came and went in March
        subscribed("uma", on(1, 1), on(4, 1, 0), "payment_failed"),  # canceled as April begins
        subscribed("vic", on(1, 1), on(3, 1, 0), "payment_failed"),  # canceled as March begins
        subscribed("xavier", on(1, 1), on(3, 7), "payment_failed", currency="eur"),
    ]


async def test_decline_figures_match_a_ledger_built_by_hand(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with db_sessions() as session:
        session.add_all(hand_built())
        await session.commit()
        report = await revenue(session, *MARCH)

    # Invoices with a first attempt (attempt 1, succeeded or failed) in March, in usd: alice,
    # bob, carol, dan, erin, gina, tom (frank's was in February, xavier's in eur, hank's in
    # April); of those, failed: alice, bob, carol, gina, tom. 5 / 7.
    assert report.first_attempt_failure_rate == round(5 / 7, 4) == 0.7143

    # Live on March 1 (started before, not canceled before): alice, bob's first, carol, dan,
    # erin, frank, gina, uma, vic = 9 (tom started on the instant March began, ivy later,
    # hank was gone). Canceled in March: bob (payment_failed), erin (requested), ivy
    # (payment_failed), vic (payment_failed, on the first instant) = 4; uma's cancellation
    # is April's, xavier's in eur. Involuntary: bob, ivy, vic = 3 / 9; all: 4 / 9.
    assert report.involuntary_churn_rate == round(3 / 9, 4) == 0.3333
    assert report.churn_rate == round(4 / 9, 4)
    assert report.canceled_subscriptions == 4

    # Invoices with a failure in March, by the code of their first failure in March:
    # insufficient_funds: alice (paid 6th), carol (paid 11th)           -> 2 failed, 2 recovered
    # lost_card:          bob (never paid)                              -> 1, 0
    # expired_card:       frank (no decline code; paid in April)        -> 1, 1
    # unknown:            gina (no code at all, never paid)             -> 1, 0
    # do_not_honor:       tom (attempt 1 of two at the same instant)    -> 1, 0
    assert {
        code: (figures.failed, figures.recovered)
        for code, figures in report.recovery_by_decline_code.items()
    } == {
        "insufficient_funds": (2, 2),
        "lost_card": (1, 0),
        "expired_card": (1, 1),
        "unknown": (1, 0),
        "do_not_honor": (1, 0),
    }
    # The same invoices make the overall recovery: 3 of 6.
    assert report.recovered_payments == 3
    assert report.recovery_rate == 0.5

    # Failed attempts in March: alice 1, bob 1, carol 2, frank 1, gina 1, tom 2 = 8.
    # Succeeded: alice 2900, carol 9900, dan 9900, erin 2900 = 25,600; refunds 1,000 + 900.
    assert report.failed_payments == 8
    assert report.successful_payments == 4
    assert report.refunded_payments == 2
    assert report.total_revenue_minor == 25_600 - 1_900 == 23_700
    assert report.success_rate == round(4 / 12, 4)


async def test_a_refund_later_than_the_payment_counts_when_it_is_made(
    db_sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with db_sessions() as session:
        session.add_all(hand_built())
        await session.commit()
        february = await revenue(session, date(2026, 2, 1), date(2026, 2, 28))
        first_week = await revenue(session, date(2026, 3, 1), date(2026, 3, 7))
        second_week = await revenue(session, date(2026, 3, 8), date(2026, 3, 14))
    # Dan's 9,900 came on March 2, his refunds on the 10th and 12th.
    assert february.total_revenue_minor == 0
    assert first_week.total_revenue_minor == 2_900 + 9_900 + 2_900  # alice, dan, erin
    assert (first_week.refunded_payments, second_week.refunded_payments) == (0, 2)
    assert second_week.total_revenue_minor == 9_900 - 1_900  # carol, less dan's refunds
    # In February frank's first attempt failed (insufficient funds), and he paid in April.
    assert february.first_attempt_failure_rate == 1.0
    assert {
        code: (figures.failed, figures.recovered)
        for code, figures in february.recovery_by_decline_code.items()
    } == {"insufficient_funds": (1, 1)}
