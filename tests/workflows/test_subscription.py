"""Each path of the lifecycle on the time-skipping server, with fake Stripe and mailbox."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from temporalio.client import WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from api.errors import describe_raw
from core.payloads import (
    Cancel,
    CancelSubscription,
    ChangePlan,
    ChangeSubscription,
    CreateSubscription,
    Failure,
    Interval,
    PayInvoice,
    Plan,
    ProrationBehavior,
    SetPaymentMethod,
    Status,
)
from tests.helpers import eventually
from tests.workflows.fakes import Call
from tests.workflows.helpers import POLICY, on_fakes, order, ref, view_when
from workflows.subscription import SubscriptionWorkflow, fold_next
from workflows.visibility import CUSTOMER_ID, DUNNING_ATTEMPT, NEXT_ACTION_AT, PLAN, STATUS


def close(a: datetime, b: datetime, slack: timedelta = timedelta(minutes=5)) -> bool:
    return abs(a - b) <= slack


async def test_trial_then_active(env: WorkflowEnvironment) -> None:
    async with on_fakes(env, order(trial_days=14)) as (handle, stripe, mail):
        view = await handle.query(SubscriptionWorkflow.view)
        assert view.status == Status.TRIALING
        assert view.trial_end is not None
        assert stripe.names() == [
            "ensure_customer",
            "find_subscription",  # never a second live subscription
            "attach_payment_method",
            "set_default_payment_method",
            "create_subscription",
        ]
        [create] = stripe.requests(CreateSubscription)
        assert create.trial_days == 14
        assert create.payment_method_id == "pm_card_visa_attached"
        started = await env.get_current_time()

        await env.sleep(timedelta(days=11, hours=1))
        await eventually(lambda: len(mail.sent) >= 1)
        assert mail.kinds() == ["trial_ending"]
        assert close(mail.sent[0].at, view.trial_end - POLICY.trial_reminder_before)
        # Stripe's own trial_will_end arrives too: still one reminder.
        await handle.signal(
            SubscriptionWorkflow.stripe_event,
            ref("customer.subscription.trial_will_end", stripe.sub["id"]),
        )
        await handle.query(SubscriptionWorkflow.view)  # handled before time moves on

        await env.sleep(timedelta(days=3))
        invoice = stripe.end_trial(paid=True)
        await handle.signal(SubscriptionWorkflow.stripe_event, ref("invoice.paid", invoice))
        view = await view_when(handle, lambda v: v.status == Status.ACTIVE)
        assert view.failed_payment_attempts == 0
        await eventually(lambda: len(mail.sent) >= 2)
        assert mail.kinds() == ["trial_ending", "receipt"]
        assert mail.sent[1].email.context["amount"] == "29.00 USD"
        assert (await env.get_current_time()) - started >= timedelta(days=14)


async def test_no_trial_first_payment_fails_then_recovers(env: WorkflowEnvironment) -> None:
    async with on_fakes(env, order(payment_method_id="pm_card_chargeCustomerFail")) as (
        handle,
        stripe,
        mail,
    ):
        view = await handle.query(SubscriptionWorkflow.view)
        assert view.status == Status.PAST_DUE
        assert view.failed_payment_attempts == 1
        assert view.next_payment_retry_at is not None
        await eventually(lambda: len(mail.sent) >= 1)
        assert mail.kinds() == ["payment_failed"]
        assert mail.sent[0].email.context["attempt"] == "1"
        # The customer fixes the card in Stripe; the scheduled retry succeeds.
        stripe.default_pm = "pm_card_visa_attached"
        await env.sleep(POLICY.retry_delays[0] + timedelta(minutes=1))
        view = await view_when(handle, lambda v: v.status == Status.ACTIVE)
        assert view.failed_payment_attempts == 0
        assert view.next_payment_retry_at is None
        await eventually(lambda: len(mail.sent) >= 2)
        assert mail.kinds() == ["payment_failed", "receipt"]
        assert stripe.names().count("pay_invoice") == 1


async def test_three_failures_then_canceled_with_reminders_at_the_policys_times(
    env: WorkflowEnvironment,
) -> None:
    async with on_fakes(env, order(payment_method_id="pm_card_chargeCustomerFail")) as (
        handle,
        stripe,
        mail,
    ):
        view = await handle.query(SubscriptionWorkflow.view)
        assert view.status == Status.PAST_DUE
        assert view.next_payment_retry_at is not None
        t0 = view.next_payment_retry_at - POLICY.retry_delays[0]  # the first failure
        await env.sleep(POLICY.retry_delays[0] + timedelta(hours=1))
        attributes = (await handle.describe()).typed_search_attributes
        assert attributes.get(STATUS) == "past_due"
        assert attributes.get(DUNNING_ATTEMPT) == 2
        assert attributes.get(CUSTOMER_ID) == stripe.sub["customer"]
        assert attributes.get(PLAN) == "starter"
        next_action_at = attributes.get(NEXT_ACTION_AT)
        assert next_action_at is not None
        assert close(next_action_at, t0 + sum(POLICY.retry_delays, timedelta()))
        await env.sleep(POLICY.retry_delays[1])
        result = await handle.result()
        assert result.status == Status.CANCELED
        await eventually(lambda: len(mail.sent) >= 3)
        assert mail.kinds() == ["payment_failed", "payment_failed", "final_notice"]
        times = [sent.at for sent in mail.sent]
        assert close(times[1], t0 + POLICY.retry_delays[0])
        assert close(times[2], t0 + POLICY.retry_delays[0] + POLICY.retry_delays[1])
        assert [sent.email.context.get("attempt") for sent in mail.sent[:2]] == ["1", "2"]
        pays = stripe.requests(PayInvoice)
        assert len(pays) == 2
        assert len({p.idempotency_key for p in pays}) == 2
        cancel = stripe.requests(CancelSubscription)[0]
        assert cancel.at_period_end is False
        assert stripe.sub["status"] == "canceled"


async def test_recovery_mid_dunning_through_a_new_payment_method(env: WorkflowEnvironment) -> None:
    async with on_fakes(env, order(payment_method_id="pm_card_chargeCustomerFail")) as (
        handle,
        stripe,
        mail,
    ):
        metadata = await handle.query("__temporal_workflow_metadata")
        assert "**past_due**" in metadata.current_details
        assert "dunning retry 1 of 2" in metadata.current_details
        attributes = (await handle.describe()).typed_search_attributes
        assert attributes.get(STATUS) == "past_due"
        assert attributes.get(DUNNING_ATTEMPT) == 1
        assert attributes.get(NEXT_ACTION_AT) is not None
        await env.sleep(POLICY.retry_delays[0] + timedelta(hours=1))
        view = await view_when(handle, lambda v: v.failed_payment_attempts == 2)
        assert view.status == Status.PAST_DUE
        card = await handle.execute_update(
            SubscriptionWorkflow.set_payment_method,
            SetPaymentMethod(payment_method_id="pm_card_visa"),
        )
        assert card.id == "pm_card_visa_attached"
        assert card.card is not None
        view = await handle.query(SubscriptionWorkflow.view)
        assert view.status == Status.ACTIVE
        assert view.failed_payment_attempts == 0
        assert view.next_payment_retry_at is None
        await eventually(lambda: len(mail.sent) >= 3)
        assert mail.kinds() == ["payment_failed", "payment_failed", "receipt"]
        assert stripe.names()[-4:] == [
            "attach_payment_method",
            "set_default_payment_method",
            "pay_invoice",  # retried at once with the new card
            "get_subscription",
        ]
        # Nothing else happens when the old retry time comes.
        calls = len(stripe.calls)
        await env.sleep(POLICY.retry_delays[1] + timedelta(hours=1))
        assert "pay_invoice" not in stripe.names()[calls:]


async def test_duplicate_and_out_of_order_events_change_nothing(env: WorkflowEnvironment) -> None:
    async with on_fakes(env, order()) as (handle, stripe, mail):
        assert (await handle.query(SubscriptionWorkflow.view)).status == Status.ACTIVE
        invoice = stripe.renew(paid=False)
        failed = ref("invoice.payment_failed", invoice, "evt_failed_1")
        for _ in range(3):
            await handle.signal(SubscriptionWorkflow.stripe_event, failed)
        # Another event about the same failed attempt (a different event id) is not a new failure.
        await handle.signal(
            SubscriptionWorkflow.stripe_event, ref("invoice.payment_failed", invoice)
        )
        await view_when(handle, lambda v: v.status == Status.PAST_DUE)
        assert (await handle.query(SubscriptionWorkflow.view)).failed_payment_attempts == 1
        await eventually(lambda: len(mail.sent) >= 2)
        assert mail.kinds() == ["receipt", "payment_failed"]

        # Paid out of band; the paid event arrives, then a stale failure event.
        stripe.default_pm = "pm_card_visa_attached"
        stripe._charge(invoice)
        await handle.signal(SubscriptionWorkflow.stripe_event, ref("invoice.paid", invoice))
        await view_when(handle, lambda v: v.status == Status.ACTIVE)
        await handle.signal(
            SubscriptionWorkflow.stripe_event, ref("invoice.payment_failed", invoice, "evt_late")
        )
        await handle.signal(SubscriptionWorkflow.stripe_event, failed)
        view = await handle.query(SubscriptionWorkflow.view)
        assert view.status == Status.ACTIVE
        assert view.failed_payment_attempts == 0
        await eventually(lambda: len(mail.sent) >= 3)
        assert mail.kinds() == ["receipt", "payment_failed", "receipt"]
        # Events about someone else's objects are ignored.
        await handle.signal(
            SubscriptionWorkflow.stripe_event, ref("customer.subscription.updated", "sub_other")
        )
        await handle.signal(SubscriptionWorkflow.stripe_event, ref("customer.updated", "cus_other"))
        assert (await handle.query(SubscriptionWorkflow.view)).status == Status.ACTIVE


async def test_plan_change_with_proration(env: WorkflowEnvironment) -> None:
    async with on_fakes(env, order()) as (handle, stripe, mail):
        view = await handle.execute_update(
            SubscriptionWorkflow.change_plan,
            ChangePlan(plan=Plan.PRO, proration_behavior=ProrationBehavior.ALWAYS_INVOICE),
        )
        assert view.plan == Plan.PRO
        assert view.status == Status.ACTIVE
        change = stripe.requests(ChangeSubscription)[0]
        assert change.proration_behavior == ProrationBehavior.ALWAYS_INVOICE
        assert (change.plan.value, change.interval.value) == ("pro", "monthly")
        await eventually(lambda: len(mail.sent) >= 2)
        assert mail.kinds() == ["receipt", "receipt"]  # the prorated invoice was paid now
        assert mail.sent[1].email.context["amount"] == "70.00 USD"
        view = await handle.execute_update(
            SubscriptionWorkflow.change_plan, ChangePlan(interval=Interval.YEARLY)
        )
        assert (view.plan, view.interval) == (Plan.PRO, Interval.YEARLY)


async def test_cancel_at_period_end_then_resume(env: WorkflowEnvironment) -> None:
    async with on_fakes(env, order()) as (handle, stripe, mail):
        view = await handle.execute_update(SubscriptionWorkflow.cancel, Cancel(at_period_end=True))
        assert view.cancel_at_period_end
        assert view.status == Status.ACTIVE
        await eventually(lambda: len(mail.sent) >= 2)
        assert mail.kinds() == ["receipt", "canceled"]
        assert "stays active until" in mail.sent[1].email.context["when"]
        view = await handle.execute_update(SubscriptionWorkflow.resume)
        assert not view.cancel_at_period_end
        assert view.status == Status.ACTIVE
        assert [n for n in stripe.names() if n.endswith("_subscription")][-2:] == [
            "cancel_subscription",
            "resume_subscription",
        ]


async def test_cancel_at_period_end_ends_when_stripe_ends_it(env: WorkflowEnvironment) -> None:
    async with on_fakes(env, order()) as (handle, stripe, _):
        await handle.execute_update(SubscriptionWorkflow.cancel, Cancel(at_period_end=True))
        stripe.sub["status"] = "canceled"  # Stripe ends it at the period end; no webhook needed
        await env.sleep(timedelta(days=31))
        assert (await handle.result()).status == Status.CANCELED


async def test_immediate_cancel(env: WorkflowEnvironment) -> None:
    async with on_fakes(env, order()) as (handle, stripe, mail):
        view = await handle.execute_update(SubscriptionWorkflow.cancel, Cancel(at_period_end=False))
        assert view.status == Status.CANCELED
        assert (await handle.result()).status == Status.CANCELED
        await eventually(lambda: len(mail.sent) >= 2)
        assert mail.kinds() == ["receipt", "canceled"]
        assert stripe.sub["status"] == "canceled"


async def test_updates_refused_in_the_wrong_state(env: WorkflowEnvironment) -> None:
    async with on_fakes(env, order(payment_method_id="pm_card_chargeCustomerFail")) as (
        handle,
        stripe,
        _,
    ):
        calls = len(stripe.calls)
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(SubscriptionWorkflow.change_plan, ChangePlan(plan=Plan.PRO))
        assert isinstance(err.value.cause, ApplicationError)
        assert err.value.cause.type == Failure.INVALID_STATE
        assert "past_due" in str(err.value.cause)
        with pytest.raises(WorkflowUpdateFailedError) as err:
            await handle.execute_update(SubscriptionWorkflow.resume)
        assert isinstance(err.value.cause, ApplicationError)
        assert err.value.cause.type == Failure.INVALID_STATE
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(SubscriptionWorkflow.change_plan, ChangePlan())
        assert len(stripe.calls) == calls  # refused before anything was written


async def test_stripe_down_is_retried_until_it_answers(env: WorkflowEnvironment) -> None:
    async with on_fakes(env, order(payment_method_id="pm_card_chargeCustomerFail")) as (
        handle,
        stripe,
        _,
    ):
        stripe.fail_next_calls = 4  # the scheduled retry meets a Stripe outage
        stripe.default_pm = "pm_card_visa_attached"
        await env.sleep(POLICY.retry_delays[0] + timedelta(minutes=10))
        view = await view_when(handle, lambda v: v.status == Status.ACTIVE)
        assert view.failed_payment_attempts == 0
        assert stripe.fail_next_calls == 0


async def test_continue_as_new_keeps_the_state(env: WorkflowEnvironment) -> None:
    start = order(payment_method_id="pm_card_chargeCustomerFail", signals_before_continue_as_new=2)
    async with on_fakes(env, start) as (handle, stripe, mail):
        first_run = (await handle.describe()).run_id
        invoice = stripe.sub["latest_invoice"]
        await handle.signal(
            SubscriptionWorkflow.stripe_event, ref("invoice.payment_failed", invoice, "evt_a")
        )
        await handle.signal(
            SubscriptionWorkflow.stripe_event, ref("customer.updated", "cus_x", "evt_b")
        )

        async def next_run() -> str:
            return (await handle.describe()).run_id or ""

        latest = env.client.get_workflow_handle_for(SubscriptionWorkflow.run, handle.id)

        async def continued_as_new() -> bool:
            if (await latest.describe()).run_id != first_run:
                return True
            await env.sleep(timedelta(seconds=1))  # workflow time moves on between looks
            return False

        await eventually(continued_as_new)
        view = await latest.query(SubscriptionWorkflow.view)
        assert view.status == Status.PAST_DUE
        assert view.failed_payment_attempts == 1
        assert view.stripe_subscription_id == stripe.sub["id"]
        assert view.next_payment_retry_at is not None
        # The event ids seen before continue-as-new are still known.
        await latest.signal(
            SubscriptionWorkflow.stripe_event, ref("invoice.payment_failed", invoice, "evt_a")
        )
        # And the dunning schedule carries on in the new run.
        stripe.default_pm = "pm_card_visa_attached"
        await env.sleep(POLICY.retry_delays[0])
        view = await view_when(latest, lambda v: v.status == Status.ACTIVE)
        await eventually(lambda: len(mail.sent) >= 2)
        assert mail.kinds() == ["payment_failed", "receipt"]
        assert await next_run()


async def test_operators_can_retry_a_payment_now(env: WorkflowEnvironment) -> None:
    async with on_fakes(env, order(payment_method_id="pm_card_chargeCustomerFail")) as (
        handle,
        stripe,
        _,
    ):
        stripe.default_pm = "pm_card_visa_attached"  # fixed in Stripe; no need to wait two days
        view = await handle.execute_update(SubscriptionWorkflow.retry_payment_now)
        assert view.status == Status.ACTIVE
        assert view.failed_payment_attempts == 0
        with pytest.raises(WorkflowUpdateFailedError):
            await handle.execute_update(SubscriptionWorkflow.retry_payment_now)


async def test_a_steady_stream_of_events_never_holds_off_continue_as_new(
    env: WorkflowEnvironment,
) -> None:
    start = order(signals_before_continue_as_new=3)
    async with on_fakes(env, start) as (handle, stripe, _):
        first = await describe_raw(env.client, handle.id)
        for n in range(12):  # faster than it handles them, each about another invoice
            await handle.signal(
                SubscriptionWorkflow.stripe_event,
                ref("invoice.paid", f"in_elsewhere_{n}", f"evt_stream_{n}"),
            )

        await eventually(lambda: Call("get_invoice", "in_elsewhere_11") in stripe.calls)
        latest = await describe_raw(env.client, handle.id)
        assert latest.execution.run_id != first.execution.run_id
        # The first run stopped handling events once over its budget of 3 signals and
        # continued as new with the rest: at most 3 of them were read in it.
        history = await env.client.get_workflow_handle(
            handle.id, run_id=first.execution.run_id
        ).fetch_history()
        reads = [e for e in history.events if b"in_elsewhere" in e.user_metadata.summary.data]
        assert len(reads) <= 3
        assert history.events[-1].HasField("workflow_execution_continued_as_new_event_attributes")


def test_a_burst_of_events_about_one_object_is_folded_into_one() -> None:
    burst = [
        ref("customer.subscription.updated", "sub_1", "evt_1"),
        ref("invoice.payment_failed", "in_1", "evt_2"),
        ref("customer.subscription.trial_will_end", "sub_1", "evt_3"),
        ref("invoice.paid", "in_1", "evt_4"),
        ref("customer.updated", "cus_1", "evt_5"),
        ref("customer.updated", "cus_1", "evt_6"),
        ref("invoice.paid", "in_2", "evt_7"),
    ]
    handled = []
    while burst:
        event, burst = fold_next(burst)
        handled.append(event.id)
    # One re-read of sub_1 (the reminder kept), one of in_1, one of cus_1, one of in_2.
    assert handled == ["evt_3", "evt_2", "evt_5", "evt_7"]
    # Events naming nothing to re-read are never folded.
    alike = [ref("balance.available", "", "evt_8"), ref("balance.available", "", "evt_9")]
    assert fold_next(alike)[0].id == "evt_8"
    assert [e.id for e in fold_next(alike)[1]] == ["evt_9"]


async def test_events_in_a_burst_are_all_answered(env: WorkflowEnvironment) -> None:
    async with on_fakes(env, order(trial_days=14)) as (handle, stripe, mail):
        sub = stripe.sub["id"]
        reads_before = stripe.names().count("get_subscription")
        for n, type_ in enumerate(
            [
                "customer.subscription.updated",
                "customer.subscription.updated",
                "customer.subscription.trial_will_end",
                "customer.subscription.updated",
            ]
        ):
            await handle.signal(SubscriptionWorkflow.stripe_event, ref(type_, sub, f"evt_b{n}"))
        await eventually(lambda: mail.kinds() == ["trial_ending"])
        reads = stripe.names().count("get_subscription") - reads_before
        assert 1 <= reads <= 4
        view = await handle.query(SubscriptionWorkflow.view)
        assert view.status == Status.TRIALING
