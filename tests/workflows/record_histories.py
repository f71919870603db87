"""Record the histories `test_replay.py` replays: `python -m tests.workflows.record_histories`."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.payloads import (
    Cancel,
    ChangePlan,
    ChargeRefunds,
    Interval,
    Plan,
    Refund,
    SetPaymentMethod,
    StripeEventRef,
)
from core.state import StartSubscription
from core.temporal import ensure_search_attributes
from tests.helpers import BIN, eventually
from tests.workflows.fakes import Call, FakeMailbox, FakeStore, FakeStripe
from tests.workflows.helpers import HISTORIES, POLICY, lifecycle, on_fakes, order, view_when
from workflows.subscription import SubscriptionWorkflow, workflow_id
from workflows.visibility import SEARCH_ATTRIBUTES


async def record(env: WorkflowEnvironment) -> None:
    HISTORIES.mkdir(exist_ok=True)
    async with on_fakes(
        env, order(user_id="replay-dunning", payment_method_id="pm_card_chargeCustomerFail")
    ) as (handle, _, _):
        await env.sleep(sum(POLICY.retry_delays, timedelta()) + timedelta(hours=1))
        await handle.result()
        (HISTORIES / "dunning_to_cancel.json").write_text((await handle.fetch_history()).to_json())

    async with on_fakes(env, order(user_id="replay-trial", trial_days=14)) as (handle, stripe, _):
        await env.sleep(timedelta(days=12))
        await handle.execute_update(SubscriptionWorkflow.change_plan, ChangePlan(plan=Plan.PRO))
        invoice = stripe.end_trial(paid=False)
        await handle.signal(
            SubscriptionWorkflow.stripe_event,
            StripeEventRef(
                id="evt_1",
                type="invoice.payment_failed",
                created=await env.get_current_time(),
                object_id=invoice,
            ),
        )
        await view_when(handle, lambda v: v.failed_payment_attempts == 1)
        await handle.execute_update(
            SubscriptionWorkflow.set_payment_method,
            SetPaymentMethod(payment_method_id="pm_card_visa"),
        )
        await handle.execute_update(SubscriptionWorkflow.cancel, Cancel(at_period_end=True))
        await handle.execute_update(SubscriptionWorkflow.resume)
        await handle.execute_update(SubscriptionWorkflow.cancel, Cancel(at_period_end=False))
        await handle.result()
        (HISTORIES / "trial_plan_change_recovery.json").write_text(
            (await handle.fetch_history()).to_json()
        )


async def record_adoption(env: WorkflowEnvironment) -> None:
    """A subscription made in Stripe adopted by an event, an event for an invoice Stripe does
    not have (contained), then a cancel."""
    stripe, mail, store = FakeStripe(clock=env.get_current_time), FakeMailbox(), FakeStore()
    stripe.live_elsewhere(
        "sub_replay_adopt", "cus_replay_adopt", await env.get_current_time() + timedelta(days=30)
    )
    queue = "replay-adoption"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[SubscriptionWorkflow],
        activities=[*stripe.activities(), mail.send_email, store.record],
    ):
        handle = await env.client.start_workflow(
            SubscriptionWorkflow.run,
            StartSubscription(
                user_id="replay-adopt", adopt_customer_id="cus_replay_adopt", policy=POLICY
            ),
            id=workflow_id("replay-adopt"),
            task_queue=queue,
            start_signal="stripe_event",
            start_signal_args=[
                StripeEventRef(
                    id="evt_adopt",
                    type="customer.subscription.created",
                    created=await env.get_current_time(),
                    object_id="sub_replay_adopt",
                    customer_id="cus_replay_adopt",
                )
            ],
        )
        await view_when(handle, lambda v: v.status == "active")
        await handle.signal(
            SubscriptionWorkflow.stripe_event,
            StripeEventRef(
                id="evt_gone",
                type="invoice.payment_failed",
                created=await env.get_current_time(),
                object_id="in_stripe_does_not_have",
            ),
        )
        await eventually(lambda: Call("get_invoice", "in_stripe_does_not_have") in stripe.calls)
        await handle.execute_update(SubscriptionWorkflow.cancel, Cancel(at_period_end=False))
        await handle.result()
        (HISTORIES / "adoption_and_missing_invoice.json").write_text(
            (await handle.fetch_history()).to_json()
        )


async def record_local_calls(env: WorkflowEnvironment) -> None:
    """Every Stripe call a local activity, one timer per due time, and a dunning count carried
    across continue-as-new under its new name (`failed_payment_attempts`, once `failures`)."""
    start = order(
        user_id="replay-local-calls",
        payment_method_id="pm_card_chargeCustomerFail",
        signals_before_continue_as_new=1,
    )
    async with on_fakes(env, start) as (handle, stripe, _):
        await handle.signal(
            SubscriptionWorkflow.stripe_event,
            StripeEventRef(
                id="evt_local_1",
                type="customer.subscription.updated",
                created=await env.get_current_time(),
                object_id=stripe.sub["id"],
            ),
        )
        await env.sleep(sum(POLICY.retry_delays, timedelta()) + timedelta(hours=1))
        await handle.result()
        (HISTORIES / "local_calls_dunning_across_continue_as_new.json").write_text(
            (await handle.fetch_history()).to_json()
        )


async def record_declines(env: WorkflowEnvironment) -> None:
    """Decline-aware dunning (patch `decline-aware-dunning`): a card expiring before the renewal,
    a hard decline whose window runs out, a new default card from Stripe, a request to
    authenticate answered on Stripe's page, a renewal announced by `invoice.upcoming`, a
    refund, then a cancel."""
    now = await env.get_current_time()
    stripe, mail, store = FakeStripe(clock=env.get_current_time), FakeMailbox(), FakeStore()
    stripe.expiry["pm_card_expiring"] = (now.month, now.year)
    start = order(
        user_id="replay-declines", interval=Interval.YEARLY, payment_method_id="pm_card_expiring"
    )

    async def event(type_: str, object_id: str) -> None:
        await handle.signal(
            SubscriptionWorkflow.stripe_event,
            StripeEventRef(
                id=f"evt_{type_}_{len(stripe.calls)}",
                type=type_,
                created=await env.get_current_time(),
                object_id=object_id,
            ),
        )

    async with lifecycle(env, start, [*stripe.activities(), mail.send_email, store.record]) as (
        handle
    ):
        invoice = stripe.renew(paid=False, card="pm_LostCard")
        await event("invoice.payment_failed", invoice)
        await view_when(handle, lambda v: v.action_required is not None)
        await env.sleep(POLICY.retry_delays[0] + timedelta(hours=1))
        await view_when(handle, lambda v: v.failed_payment_attempts == 2)
        stripe.default_pm = "pm_from_the_portal"
        await event("customer.updated", stripe.sub["customer"])
        await view_when(handle, lambda v: v.status == "active")
        invoice = stripe.renew(paid=False, card="pm_authenticationRequired")
        await event("invoice.payment_action_required", invoice)
        await view_when(handle, lambda v: v.action_required is not None)
        stripe.authenticate(invoice)
        await event("invoice.paid", invoice)
        await view_when(handle, lambda v: v.status == "active")
        await event("invoice.upcoming", stripe.sub["id"])
        stripe.refunds["ch_replay"] = ChargeRefunds(
            charge_id="ch_replay",
            customer_id=stripe.sub["customer"],
            invoice_id=invoice,
            currency="usd",
            refunds=[Refund(id="re_1", amount=100, created=now, status="succeeded")],
        )
        await event("charge.refunded", "ch_replay")
        await eventually(
            lambda: any(r.payment and r.payment.kind == "refunded" for r in store.records)
        )
        await handle.execute_update(SubscriptionWorkflow.cancel, Cancel(at_period_end=False))
        await handle.result()
        (HISTORIES / "declines_access_and_reminders.json").write_text(
            (await handle.fetch_history()).to_json()
        )


async def main() -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    try:
        await ensure_search_attributes(env.client, SEARCH_ATTRIBUTES)
        # Only what is missing: a history already recorded proves older code still replays.
        if not (HISTORIES / "dunning_to_cancel.json").exists():
            await record(env)
        if not (HISTORIES / "adoption_and_missing_invoice.json").exists():
            await record_adoption(env)
        if not (HISTORIES / "local_calls_dunning_across_continue_as_new.json").exists():
            await record_local_calls(env)
        if not (HISTORIES / "declines_access_and_reminders.json").exists():
            await record_declines(env)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
