"""Subscriptions: thin routes that start, steer and read the customer's workflow."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Path, Query, Response
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from api.auth import Principal
from api.deps import PrincipalDep, SettingsDep, TemporalDep
from api.errors import NOT_FOUND, describe_raw, execution_status, steering
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
from core.payloads import (
    Cancel,
    ChangePlan,
    Failure,
    RemovePaymentMethod,
    SetPaymentMethod,
    Status,
    SubscriptionView,
)
from core.policy import DunningPolicy
from core.settings import Settings
from core.state import StartSubscription
from workflows.subscription import SubscriptionWorkflow, workflow_id

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
    responses={
        202: {
            "model": SubscriptionOut,
            "description": "Accepted: the workflow started and goes on by itself, but Stripe "
            "has not answered within the wait. `Location` is where to read the view.",
        },
        **problems(
            401,
            402,
            403,
            409,
            422,
            502,
            503,
            described={
                403: "Only admins may pass user_id",
                409: "The user already has a live subscription (in this system or in Stripe)",
                422: "Invalid request (e.g. unknown plan, or no email in the body nor the token)",
            },
        ),
    },
)
async def create_subscription(
    body: CreateSubscriptionRequest,
    principal: PrincipalDep,
    client: TemporalDep,
    settings: SettingsDep,
    response: Response,
    idempotency_key: Annotated[
        str | None,
        Header(
            alias="Idempotency-Key",
            min_length=1,
            max_length=255,
            description="The same key with the same body answers the first answer again.",
        ),
    ] = None,
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
    request_id = _request_id(user_id, idempotency_key, body)
    start = StartSubscription(
        request_id=request_id,
        user_id=user_id,
        email=email,
        name=body.name,
        plan=body.plan,
        interval=body.interval,
        trial_days=body.trial_days,
        payment_method_id=body.payment_method_id,
        policy=DunningPolicy.from_settings(settings),
    )
    try:
        async with steering(settings.api_wait_seconds):
            view = await create_through_temporal(client, settings, start)
    except HTTPException as err:
        if err.status_code != 503 or not await _started_by(client, start):
            raise
        # Accepted: the workflow carries the order out by itself; never 503 from here on.
        response.status_code = 202
        response.headers["Location"] = f"{router.prefix}/{user_id}"
        return SubscriptionOut.of(
            SubscriptionView(
                user_id=user_id,
                status=Status.INCOMPLETE,
                plan=body.plan,
                interval=body.interval,
                workflow_id=workflow_id(user_id),
                access=start.policy.access(Status.INCOMPLETE, 0),
            )
        )
    return SubscriptionOut.of(view)


REQUEST_MEMO = "request_id"


async def create_through_temporal(
    client: Client, settings: Settings, start: StartSubscription
) -> SubscriptionView:
    """Update-with-start of the customer's workflow, waiting out a run that is ending."""
    for attempt in (1, 2):
        operation = WithStartWorkflowOperation(
            SubscriptionWorkflow.run,
            start,
            id=workflow_id(start.user_id),
            task_queue=settings.temporal_task_queue,
            # A running workflow gets the update: its validator answers a retry of the request
            # that started it and refuses any other create (409). After a cancellation, a new
            # subscription is a new run.
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            memo={REQUEST_MEMO: start.request_id},
        )
        try:
            return await client.execute_update_with_start_workflow(
                SubscriptionWorkflow.subscription_ready,
                start_workflow_operation=operation,
                id=start.request_id,
            )
        except WorkflowUpdateFailedError as err:
            ending = (
                isinstance(err.cause, ApplicationError)
                and err.cause.type == Failure.SUBSCRIPTION_ENDING
            )
            if not ending or attempt == 2:
                raise
            # Just canceled, still writing its last records: a new run starts once it ends.
            await client.get_workflow_handle(workflow_id(start.user_id)).result()
    raise AssertionError("unreachable")


def _request_id(user_id: str, key: str | None, body: CreateSubscriptionRequest) -> str:
    """The create's update id: from the Idempotency-Key and the body when given (a retry is
    the same update, which Temporal answers once), else new for every request."""
    if key is None:
        return f"create-{uuid.uuid4().hex}"
    request = json.dumps([user_id, key, body.model_dump(mode="json")], sort_keys=True)
    return f"create-{hashlib.sha256(request.encode()).hexdigest()[:40]}"


async def _started_by(client: Client, start: StartSubscription) -> bool:
    """Whether the customer's running workflow was started by this request."""
    try:
        info = await describe_raw(client, workflow_id(start.user_id), timedelta(seconds=2))
    except RPCError:
        return False
    if info.status != WorkflowExecutionStatus.RUNNING.value:
        return False
    memo = info.memo.fields.get(REQUEST_MEMO)
    started_by = client.data_converter.payload_converter.from_payload(memo) if memo else None
    return bool(started_by == start.request_id)


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
