"""Subscriptions: thin routes that start, steer and read the customer's workflow."""

from __future__ import annotations

from contextlib import suppress
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, Response
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import WorkflowIDConflictPolicy

from api.auth import Principal
from api.deps import PrincipalDep, SettingsDep, TemporalDep
from api.errors import NOT_FOUND, execution_status, steering
from api.problems import invalid, problems
from api.schemas import (
    PAYMENT_METHOD_ID_PATTERN,
    ChangeSubscriptionRequest,
    CreateSubscriptionRequest,
    PaymentMethodOut,
    PaymentMethodRequest,
    SubscriptionOut,
    UserId,
    WorkflowStatus,
)
from core.payloads import Cancel, ChangePlan, RemovePaymentMethod, SetPaymentMethod
from workflows.policy import DunningPolicy
from workflows.subscription import StartSubscription, SubscriptionWorkflow, workflow_id

router = APIRouter(prefix="/stripe/subscriptions", tags=["subscriptions"])

# Every route also answers 422 (and 400 for a body it cannot read): see api/problems.py.
ERRORS: dict[int | str, dict[str, Any]] = problems(401, 404, 503)
CONFLICT: dict[int | str, dict[str, Any]] = problems(409)
STEER: dict[int | str, dict[str, Any]] = {**ERRORS, **CONFLICT, **problems(502)}


def owned(principal: Principal, user_id: str) -> str:
    """Another user's id answers 404, so ids cannot be probed."""
    if not principal.may_act_for(user_id):
        raise HTTPException(404, NOT_FOUND)
    return workflow_id(user_id)


@router.post(
    "",
    status_code=201,
    response_model=SubscriptionOut,
    responses=problems(
        401,
        402,
        403,
        409,
        422,
        502,
        503,
        described={
            403: "Only admins may pass user_id",
            409: "The user already has a live subscription",
            422: "Invalid request (e.g. unknown plan, or no email in the body nor the token)",
        },
    ),
)
async def create_subscription(
    body: CreateSubscriptionRequest,
    principal: PrincipalDep,
    client: TemporalDep,
    settings: SettingsDep,
) -> SubscriptionOut:
    """Start the customer's workflow; answers once the Stripe subscription exists."""
    user_id = body.user_id or principal.user_id
    if user_id != principal.user_id and not principal.admin:
        raise HTTPException(403, "only admins may act for another user")
    # The token's email is its subject's: used only when no user_id is given.
    email = body.email or (principal.email if body.user_id is None else None)
    if email is None:
        reason = "with user_id" if body.user_id else "unless the token carries an email claim"
        raise invalid(("body", "email"), f"Field required {reason}")
    start = StartSubscription(
        user_id=user_id,
        email=email,
        name=body.name,
        plan=body.plan,
        interval=body.interval,
        trial_days=body.trial_days,
        payment_method_id=body.payment_method_id,
        policy=DunningPolicy.from_settings(settings),
    )
    operation = WithStartWorkflowOperation(
        SubscriptionWorkflow.run,
        start,
        id=workflow_id(user_id),
        task_queue=settings.temporal_task_queue,
        # A live subscription is a conflict; a new one after a cancellation is a new run.
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
    )
    try:
        async with steering(settings.api_wait_seconds):
            view = await client.execute_update_with_start_workflow(
                SubscriptionWorkflow.subscription_ready, start_workflow_operation=operation
            )
    except HTTPException:
        with suppress(Exception):  # the start's own outcome is the same error: consume it
            await operation.workflow_handle()
        raise
    return SubscriptionOut.of(view)


@router.get("/{user_id}", response_model=SubscriptionOut, responses=ERRORS)
async def get_subscription(
    user_id: UserId, principal: PrincipalDep, client: TemporalDep, settings: SettingsDep
) -> SubscriptionOut:
    """The subscription view, with whether the customer's workflow still runs."""
    handle = client.get_workflow_handle(owned(principal, user_id))
    rpc_timeout = timedelta(seconds=settings.api_wait_seconds)
    # A workflow that never existed is NOT_FOUND on describe: 404, no second look needed.
    async with steering(settings.api_wait_seconds):
        described = await execution_status(client, handle.id, rpc_timeout)
        view = await handle.query(SubscriptionWorkflow.view, rpc_timeout=rpc_timeout)
    status = WorkflowStatus.of(described)
    if status != WorkflowStatus.RUNNING and view.stripe_subscription_id is None:
        # A run that found nothing to adopt, or whose creation failed: no subscription.
        raise HTTPException(404, NOT_FOUND)
    return SubscriptionOut.of(view, status)


@router.patch("/{user_id}", response_model=SubscriptionOut, responses=STEER)
async def change_subscription(
    user_id: UserId,
    body: ChangeSubscriptionRequest,
    principal: PrincipalDep,
    client: TemporalDep,
    settings: SettingsDep,
) -> SubscriptionOut:
    """Change plan and/or interval, with the given proration behaviour."""
    handle = client.get_workflow_handle(owned(principal, user_id))
    change = ChangePlan(
        plan=body.plan, interval=body.interval, proration_behavior=body.proration_behavior
    )
    async with steering(settings.api_wait_seconds, client, handle.id):
        view = await handle.execute_update(SubscriptionWorkflow.change_plan, change)
    return SubscriptionOut.of(view)


@router.delete("/{user_id}", response_model=SubscriptionOut, responses=STEER)
async def cancel_subscription(
    user_id: UserId,
    principal: PrincipalDep,
    client: TemporalDep,
    settings: SettingsDep,
    at_period_end: Annotated[bool, Query()] = True,
) -> SubscriptionOut:
    """Cancel at the end of the period (default) or now."""
    handle = client.get_workflow_handle(owned(principal, user_id))
    async with steering(settings.api_wait_seconds, client, handle.id):
        view = await handle.execute_update(
            SubscriptionWorkflow.cancel, Cancel(at_period_end=at_period_end)
        )
    return SubscriptionOut.of(view)


@router.post("/{user_id}/resume", response_model=SubscriptionOut, responses=STEER)
async def resume_subscription(
    user_id: UserId, principal: PrincipalDep, client: TemporalDep, settings: SettingsDep
) -> SubscriptionOut:
    """Undo a cancel scheduled for the end of the period."""
    handle = client.get_workflow_handle(owned(principal, user_id))
    async with steering(settings.api_wait_seconds, client, handle.id):
        view = await handle.execute_update(SubscriptionWorkflow.resume)
    return SubscriptionOut.of(view)


@router.post(
    "/{user_id}/payment-methods",
    response_model=PaymentMethodOut,
    responses={**STEER, **problems(402)},
)
async def add_payment_method(
    user_id: UserId,
    body: PaymentMethodRequest,
    principal: PrincipalDep,
    client: TemporalDep,
    settings: SettingsDep,
) -> PaymentMethodOut:
    """Attach a payment method and make it the default (in dunning, the payment is retried)."""
    handle = client.get_workflow_handle(owned(principal, user_id))
    async with steering(settings.api_wait_seconds, client, handle.id):
        info = await handle.execute_update(
            SubscriptionWorkflow.set_payment_method,
            SetPaymentMethod(payment_method_id=body.payment_method_id),
        )
    return PaymentMethodOut.of(info)


@router.delete(
    "/{user_id}/payment-methods/{payment_method_id}",
    status_code=204,
    response_class=Response,
    responses=STEER,
)
async def remove_payment_method(
    user_id: UserId,
    payment_method_id: Annotated[str, Path(pattern=PAYMENT_METHOD_ID_PATTERN, max_length=255)],
    principal: PrincipalDep,
    client: TemporalDep,
    settings: SettingsDep,
) -> Response:
    handle = client.get_workflow_handle(owned(principal, user_id))
    async with steering(settings.api_wait_seconds, client, handle.id):
        await handle.execute_update(
            SubscriptionWorkflow.remove_payment_method,
            RemovePaymentMethod(payment_method_id=payment_method_id),
        )
    return Response(status_code=204)
