"""Reconciliation of Stripe with the workflows, for admins: run one now, read the latest report.

It also runs on a Temporal Schedule (the worker creates it); see `workflows/reconcile.py`.
"""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, HTTPException
from sqlmodel import col, select
from temporalio.client import (
    Client,
    RPCTimeoutOrCancelledError,
    ScheduleActionExecutionStartWorkflow,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from api.deps import AdminDep, SessionsDep, SettingsDep, TemporalDep
from api.errors import DATABASE_UNAVAILABLE, reading_database
from api.problems import problems
from api.schemas import ReconcileReportOut, ReconcileStartedOut
from core.db import Reconciliation
from core.payloads import ReconcileReport, ReconcileRun
from workflows.reconcile import SCHEDULE_ID, WORKFLOW_ID, ReconcileWorkflow

router = APIRouter(prefix="/admin/reconcile", tags=["reconciliation"])
UNAVAILABLE = "The billing engine is unavailable; retry"


@router.post(
    "",
    status_code=202,
    response_model=ReconcileStartedOut,
    responses=problems(401, 403, 503, described={503: UNAVAILABLE}),
)
async def reconcile_now(
    _: AdminDep, settings: SettingsDep, client: TemporalDep
) -> ReconcileStartedOut:
    """Start a reconciliation now; while one asked for earlier runs, that one is answered."""
    rpc_timeout = timedelta(seconds=settings.temporal_rpc_timeout_seconds)
    try:
        scheduled = await _scheduled_run(client, rpc_timeout)
        if scheduled:
            return scheduled
        try:
            handle = await client.start_workflow(
                ReconcileWorkflow.run,
                ReconcileRun(concurrency=settings.reconcile_concurrency),
                id=WORKFLOW_ID,
                task_queue=settings.temporal_task_queue,
                # One at a time: a second request while one runs starts nothing.
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
                rpc_timeout=rpc_timeout,
            )
            return ReconcileStartedOut(
                workflow_id=WORKFLOW_ID, run_id=handle.first_execution_run_id, already_running=False
            )
        except WorkflowAlreadyStartedError as running:
            return ReconcileStartedOut(
                workflow_id=WORKFLOW_ID,
                run_id=running.first_run_id or running.run_id,
                already_running=True,
            )
    except (RPCError, RPCTimeoutOrCancelledError) as err:
        raise HTTPException(503, "the billing engine is unavailable; try again") from err


async def _scheduled_run(client: Client, rpc_timeout: timedelta) -> ReconcileStartedOut | None:
    """The schedule's run, if one is running (its ids are `reconcile-<time>`)."""
    try:
        described = await client.get_schedule_handle(SCHEDULE_ID).describe(rpc_timeout=rpc_timeout)
    except RPCError as err:
        # None yet (no worker has created it), or a server without schedules (the test server).
        if err.status in (RPCStatusCode.NOT_FOUND, RPCStatusCode.UNIMPLEMENTED):
            return None
        raise
    for action in described.info.running_actions:
        if not isinstance(action, ScheduleActionExecutionStartWorkflow):
            continue
        return ReconcileStartedOut(
            workflow_id=action.workflow_id,
            run_id=action.first_execution_run_id,
            already_running=True,
        )
    return None


@router.get(
    "/latest",
    response_model=ReconcileReportOut,
    responses=problems(
        401,
        403,
        404,
        503,
        described={404: "No reconciliation has finished yet", 503: DATABASE_UNAVAILABLE},
    ),
)
async def latest_report(_: AdminDep, sessions: SessionsDep) -> ReconcileReportOut:
    """The report of the latest finished reconciliation."""
    async with reading_database(), sessions() as session:
        row = (
            await session.exec(
                select(Reconciliation)
                .order_by(col(Reconciliation.finished_at).desc(), col(Reconciliation.id).desc())
                .limit(1)
            )
        ).first()
    if row is None:
        raise HTTPException(404, "no reconciliation has finished yet")
    return ReconcileReportOut.of(ReconcileReport.model_validate(row.report))
