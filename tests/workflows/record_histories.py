"""Record the histories `test_replay.py` replays: `python -m tests.workflows.record_histories`."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from core.payloads import Cancel, ChangePlan, Plan, SetPaymentMethod, StripeEventRef
from core.temporal import ensure_search_attributes
from tests.conftest import BIN
from tests.workflows.conftest import POLICY, on_fakes, order, until
from tests.workflows.test_replay import HISTORIES
from workflows.subscription import SEARCH_ATTRIBUTES, SubscriptionWorkflow


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
        await until(handle, lambda v: v.failed_payment_attempts == 1)
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


async def main() -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    try:
        await ensure_search_attributes(env.client, SEARCH_ATTRIBUTES)
        await record(env)
    finally:
        await env.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
