"""The dunning policy lab: small simulations whose figures can be worked out by hand.

Every customer's first renewal attempt fails (`first_attempt_failure_rate` 1), so each figure
follows from the policy: 7 days to the first retry, 7 more to the last failure.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import timedelta

import pytest

from core.policy import DunningPolicy
from lab.mix import DEFAULT_MIX, CodeBehaviour, DeclineMix
from lab.simulate import Figures, simulate, table

POLICY = DunningPolicy(retry_delays=[timedelta(days=7), timedelta(days=7)], max_failures=3)
# The workflow learns of a renewal's failure when it re-reads Stripe an hour after the period
# end (the policy's `period_end_sync_after`), and its retry timers run from then.
LAG = POLICY.period_end_sync_after / timedelta(days=1)


def only(code: str, **behaviour: object) -> DeclineMix:
    return DeclineMix(
        first_attempt_failure_rate=1.0,
        codes={code: CodeBehaviour.model_validate({"share": 1.0, **behaviour})},
    )


@pytest.mark.timeout(120)
async def test_every_soft_decline_recovering_at_retry_1_gives_full_recovery_and_no_churn() -> None:
    mix = only("insufficient_funds", retry_success={0: 1.0})
    figures = await simulate("all recover", POLICY, mix, customers=10, months=3, seed=7)
    # Renewals at days 30 and 60, each failing, each paid by the retry 7 days later.
    assert figures.failed_invoices == 20
    assert (figures.recovered, figures.lost, figures.pending) == (20, 0, 0)
    assert figures.recovery_rate == 1.0
    assert figures.involuntary_churn_rate == 0.0
    assert figures.days_in_dunning_median == pytest.approx(7 + LAG, abs=0.01)
    assert figures.emails_per_recovered_invoice == 1.0  # one reminder each, no final notice
    assert figures.restricted_customer_days == 0.0  # restricted only from failure 2
    assert figures.by_code["insufficient_funds"].recovery_rate == 1.0
    assert figures.revenue_lost_minor == 0
    assert figures.recovered_by_day[7] == 0.0
    assert figures.recovered_by_day[8] == 1.0


@pytest.mark.timeout(120)
async def test_nothing_recovering_cancels_every_failing_customer_at_the_policys_limit() -> None:
    mix = only("insufficient_funds", retry_success={0: 0.0})
    figures = await simulate("none recover", POLICY, mix, customers=10, months=3, seed=7)
    # Each fails at day 30, is retried at days 37 and 44, and is canceled at the third failure.
    assert (figures.failed_invoices, figures.recovered, figures.lost) == (10, 0, 10)
    assert figures.recovery_rate == 0.0
    assert figures.days_in_dunning_median == pytest.approx(14 + LAG, abs=0.01)
    # Month 1 (days 30-60) loses all 10 of the 10 live at its start; months 0 and 2 none.
    assert figures.involuntary_churn_rate == pytest.approx((0 + 1 + 0) / 3)
    # Restricted from failure 2 (day 37) to the cancel (day 44): 7 days each.
    assert figures.restricted_customer_days == pytest.approx(10 * 7, abs=0.1)
    # Two reminders and the final notice per lost invoice, and no recovery to divide by.
    assert figures.emails_per_recovered_invoice == 0.0
    assert figures.revenue_recovered_minor == 0
    assert figures.revenue_lost_minor > 0


@pytest.mark.timeout(120)
async def test_a_hard_decline_is_never_retried_and_recovers_only_by_a_new_card() -> None:
    mix = only("lost_card", retry_success={0: 1.0}, new_card_per_reminder=0.0)
    figures = await simulate("hard", POLICY, mix, customers=5, months=2, seed=7)
    # A retry would succeed, but a lost card is never charged again: all are lost.
    assert (figures.failed_invoices, figures.recovered, figures.lost) == (5, 0, 5)


@pytest.mark.timeout(180)
async def test_the_same_seed_gives_the_same_figures() -> None:
    mix = DeclineMix.load(DEFAULT_MIX).model_copy(update={"first_attempt_failure_rate": 0.5})

    async def run() -> Figures:
        figures = await simulate("default", POLICY, mix, customers=20, months=3, seed=3)
        figures.seconds = 0.0
        return figures

    first, second = await run(), await run()
    assert asdict(first) == asdict(second)
    assert first.failed_invoices > 0
    assert "recovery rate" in table([first, second])


@pytest.mark.timeout(180)
async def test_shards_give_the_figures_of_one_process() -> None:
    mix = DeclineMix.load(DEFAULT_MIX).model_copy(update={"first_attempt_failure_rate": 0.5})
    one = await simulate("one", POLICY, mix, customers=12, months=2, seed=5)
    two = await simulate("two", POLICY, mix, customers=12, months=2, seed=5, shards=2)
    assert {**asdict(one), "policy": "", "seconds": 0} == {
        **asdict(two),
        "policy": "",
        "seconds": 0,
    }
