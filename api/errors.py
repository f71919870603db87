"""Typed workflow failures to the status codes of API.md."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

from fastapi import HTTPException
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflow.v1 import WorkflowExecutionInfo
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    WorkflowExecutionStatus,
    WorkflowFailureError,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from core.payloads import Failure

# ApplicationError types raised by the workflow and its activities.
STATUS_BY_TYPE: dict[str, int] = {
    Failure.INVALID_STATE: 409,
    Failure.INVALID_REQUEST: 422,
    Failure.CARD_DECLINED: 402,
    Failure.IDEMPOTENCY_CONFLICT: 409,
    Failure.SUBSCRIPTION_ENDING: 409,
    Failure.STRIPE_UNAVAILABLE: 502,
}

NOT_FOUND = "no subscription for this user"
DATABASE_UNAVAILABLE = "The database is unavailable; retry"


@asynccontextmanager
async def reading_database() -> AsyncIterator[None]:
    """Run database reads; a database that cannot be reached answers 503, so clients retry.

    Only the driver's connection and operational errors and the pool's timeout: any other error
    is a bug, answered 500 and logged.
    """
    try:
        yield
    except (OperationalError, InterfaceError, PoolTimeout) as err:
        raise HTTPException(503, "the database is unavailable; try again") from err


@asynccontextmanager
async def steering(
    wait_seconds: float, client: Client | None = None, workflow_id: str | None = None
) -> AsyncIterator[None]:
    """Run a call on a customer's workflow; answer its failures as HTTP errors.

    Given the workflow (`client`, `workflow_id`), a call on a workflow that has ended (the subscription was
    canceled) answers 409, and one on a workflow that never existed 404.
    """
    try:
        async with asyncio.timeout(wait_seconds):
            yield
    except (WorkflowUpdateFailedError, WorkflowFailureError) as err:
        raise _from_cause(err.cause) from err
    except WorkflowAlreadyStartedError as err:
        raise HTTPException(
            409, "the user already has a subscription that is not canceled"
        ) from err
    except WorkflowQueryFailedError as err:
        raise HTTPException(503, f"the subscription could not be read: {err}") from err
    except RPCError as err:
        if err.status == RPCStatusCode.ALREADY_EXISTS:
            raise HTTPException(
                409, "the user already has a subscription that is not canceled"
            ) from err
        if err.status == RPCStatusCode.NOT_FOUND:
            if client and workflow_id and await _has_ended(client, workflow_id):
                raise HTTPException(409, "the subscription is canceled") from err
            raise HTTPException(404, NOT_FOUND) from err
        raise HTTPException(503, "the billing engine is unavailable; try again") from err
    except (
        TimeoutError,
        RPCTimeoutOrCancelledError,
        WorkflowUpdateRPCTimeoutOrCancelledError,
    ) as err:
        raise HTTPException(503, "the billing engine did not answer in time; try again") from err


async def describe_raw(
    client: Client, workflow_id: str, rpc_timeout: timedelta | None = None
) -> WorkflowExecutionInfo:
    """The latest run's raw description (status, memo), in one describe RPC; RPCError
    NOT_FOUND if there is none.

    Raw: the typed `describe()` also decodes the search attributes, and fails on a datetime
    one the workflow has unset.
    """
    request = DescribeWorkflowExecutionRequest(
        namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
    )
    described = await client.workflow_service.describe_workflow_execution(
        request, timeout=rpc_timeout
    )
    return described.workflow_execution_info


async def execution_status(
    client: Client, workflow_id: str, rpc_timeout: timedelta | None = None
) -> WorkflowExecutionStatus | None:
    """The status of the workflow's latest run (None: one this SDK does not name)."""
    info = await describe_raw(client, workflow_id, rpc_timeout)
    try:
        return WorkflowExecutionStatus(info.status)
    except ValueError:
        return None


async def _has_ended(client: Client, workflow_id: str) -> bool:
    try:
        status = await execution_status(client, workflow_id)
    except RPCError:
        return False
    return status != WorkflowExecutionStatus.RUNNING


def _from_cause(cause: BaseException | None) -> HTTPException:
    # An activity's failure arrives wrapped: ActivityError -> ApplicationError.
    while cause is not None and not isinstance(cause, ApplicationError):
        cause = cause.__cause__ or getattr(cause, "cause", None)
    if cause is None:
        return HTTPException(502, "the billing engine failed")
    status = STATUS_BY_TYPE.get(cause.type or "", 502)
    return HTTPException(status, cause.message)
