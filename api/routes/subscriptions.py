"""Subscriptions: thin routes that start, steer and read the customer's workflow."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Response
from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
)
from temporalio.common import WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError

from api.auth import Principal
from api.deps import PrincipalDep, SettingsDep, TemporalDep
from api.errors import NOT_FOUND, execution_info, steering
from api.schemas import (
    ChangeSubscriptionRequest,
    CreateSubscriptionRequest,
    PaymentMethodOut,
    PaymentMethodRequest,
    Problem,
    SubscriptionOut,
)
from core.payloads import (
    Cancel,
    ChangePlan,
    RemovePaymentMethod,
    SetPaymentMethod,
    Status,
    SubscriptionView,
)
from core.settings import Settings
from workflows.policy import DunningPolicy
from workflows.subscription import ENDING, StartSubscription, SubscriptionWorkflow, workflow_id

router = APIRouter(prefix="/stripe/subscriptions", tags=["subscriptions"])

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or invalid bearer token"},
    404: {"model": Problem, "description": "No subscription for this user (or not yours)"},
    503: {"model": Problem, "description": "The billing engine is unavailable; retry"},
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": Problem, "description": "The subscription's state forbids this"}
}


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
        **ERRORS,
        **CONFLICT,
        402: {"model": Problem, "description": "Card declined"},
        403: {"model": Problem, "description": "Only admins may pass user_id"},
        422: {"model": Problem, "description": "Invalid request (e.g. unknown plan)"},
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
    request_id = _request_id(user_id, idempotency_key, body)
    start = StartSubscription(
        request_id=request_id,
        user_id=user_id,
        email=body.email,
        name=body.name,
        plan=body.plan,
        interval=body.interval,
        trial_days=body.trial_days,
        payment_method_id=body.payment_method_id,
        policy=DunningPolicy.from_settings(settings),
    )
    try:
        async with steering(settings.api_wait_seconds):
            view = await _create(client, settings, start)
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
            )
        )
    return SubscriptionOut.of(view)


REQUEST_MEMO = "request_id"


async def _create(client: Client, settings: Settings, start: StartSubscription) -> SubscriptionView:
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
            ending = isinstance(err.cause, ApplicationError) and err.cause.type == ENDING
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
    info = await execution_info(client, workflow_id(start.user_id), rpc_timeout=2)
    if info is None or info.status != WorkflowExecutionStatus.RUNNING.value:
        return False
    memo = info.memo.fields.get(REQUEST_MEMO)
    started_by = client.data_converter.payload_converter.from_payload(memo) if memo else None
    return bool(started_by == start.request_id)


@router.get("/{user_id}", response_model=SubscriptionOut, responses=ERRORS)
async def get_subscription(
    user_id: str, principal: PrincipalDep, client: TemporalDep, settings: SettingsDep
) -> SubscriptionOut:
    handle = client.get_workflow_handle(owned(principal, user_id))
    async with steering(settings.api_wait_seconds, client, handle.id):
        view = await handle.query(
            SubscriptionWorkflow.view, rpc_timeout=timedelta(seconds=settings.api_wait_seconds)
        )
    return SubscriptionOut.of(view)


@router.patch("/{user_id}", response_model=SubscriptionOut, responses={**ERRORS, **CONFLICT})
async def change_subscription(
    user_id: str,
    body: ChangeSubscriptionRequest,
    principal: PrincipalDep,
    client: TemporalDep,
    settings: SettingsDep,
) -> SubscriptionOut:
    """Change plan and/or interval, with the given proration behaviour."""
    if body.plan is None and body.interval is None:
        raise HTTPException(422, "give a plan, an interval or both")
    handle = client.get_workflow_handle(owned(principal, user_id))
    change = ChangePlan(
        plan=body.plan, interval=body.interval, proration_behavior=body.proration_behavior
    )
    async with steering(settings.api_wait_seconds, client, handle.id):
        view = await handle.execute_update(SubscriptionWorkflow.change_plan, change)
    return SubscriptionOut.of(view)


@router.delete("/{user_id}", response_model=SubscriptionOut, responses={**ERRORS, **CONFLICT})
async def cancel_subscription(
    user_id: str,
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


@router.post("/{user_id}/resume", response_model=SubscriptionOut, responses={**ERRORS, **CONFLICT})
async def resume_subscription(
    user_id: str, principal: PrincipalDep, client: TemporalDep, settings: SettingsDep
) -> SubscriptionOut:
    """Undo a cancel scheduled for the end of the period."""
    handle = client.get_workflow_handle(owned(principal, user_id))
    async with steering(settings.api_wait_seconds, client, handle.id):
        view = await handle.execute_update(SubscriptionWorkflow.resume)
    return SubscriptionOut.of(view)


@router.post(
    "/{user_id}/payment-methods",
    response_model=PaymentMethodOut,
    responses={**ERRORS, **CONFLICT, 402: {"model": Problem, "description": "Card declined"}},
)
async def add_payment_method(
    user_id: str,
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
    responses={**ERRORS, **CONFLICT},
)
async def remove_payment_method(
    user_id: str,
    payment_method_id: str,
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
