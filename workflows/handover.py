"""Handing a Stripe event to a customer's workflow from outside it (a client, not a workflow):
signal it, or start a run that adopts what Stripe has. The webhook route and reconciliation
both hand events over this way."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import Client
from temporalio.common import WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError

from core.payloads import StripeEventRef
from core.policy import DunningPolicy
from core.settings import Settings
from core.state import StartSubscription
from workflows.subscription import SubscriptionWorkflow, workflow_id


async def hand_over(
    client: Client,
    settings: Settings,
    user_id: str,
    ref: StripeEventRef,
    *,
    live_in_stripe: bool = False,
) -> bool:
    """Signal the customer's workflow, starting one (to adopt what Stripe has) if none runs.

    False for a late event: the customer's lifecycle ended (its last run completed, canceled)
    and the event is about the subscription it ended with, so no run starts and the customer's
    last view stays as it was. An event about another subscription (one made in the dashboard
    since) starts a run that adopts it if Stripe says it is live, or ends showing that view.
    `live_in_stripe`: the caller has just read the subscription live in Stripe (reconciliation),
    so it is adopted even if the last run ended with it.
    """
    start = StartSubscription(
        user_id=user_id,
        adopt_customer_id=ref.customer_id,
        policy=DunningPolicy.from_settings(settings),
    )
    try:
        # A failed or terminated run may leave Stripe billing: a new run adopts it.
        await signal_with_start(
            client, settings, start, ref, WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY
        )
        return True
    except WorkflowAlreadyStartedError:
        pass
    rpc_timeout = timedelta(seconds=settings.temporal_rpc_timeout_seconds)
    ended = client.get_workflow_handle_for(SubscriptionWorkflow.run, workflow_id(user_id))
    previous = await ended.result(rpc_timeout=rpc_timeout)
    if not live_in_stripe and ref.subscription_id in (None, previous.stripe_subscription_id):
        return False
    start = start.model_copy(update={"previous": previous})
    await signal_with_start(client, settings, start, ref, WorkflowIDReusePolicy.ALLOW_DUPLICATE)
    return True


async def signal_with_start(
    client: Client,
    settings: Settings,
    start: StartSubscription,
    ref: StripeEventRef,
    reuse: WorkflowIDReusePolicy,
) -> None:
    await client.start_workflow(
        SubscriptionWorkflow.run,
        start,
        id=workflow_id(start.user_id),
        task_queue=settings.temporal_task_queue,
        id_reuse_policy=reuse,
        start_signal="stripe_event",
        start_signal_args=[ref],
        rpc_timeout=timedelta(seconds=settings.temporal_rpc_timeout_seconds),
    )
