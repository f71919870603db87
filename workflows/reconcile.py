"""Reconciliation with Stripe: a Temporal Schedule (and `POST /admin/reconcile`) runs this.

It walks every Stripe subscription, one page per activity, and hands what differs to the
customers' workflows (`activities/reconcile.py`). The cursor and the running totals go across
continue-as-new every few pages, so a large account keeps a short history and a crash resumes
at the page it was on. The report is kept in the database and shown in the Temporal UI.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.client import (
    Client,
    ScheduleActionStartWorkflow,
)
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.reconcile import ReconcileActivities
    from core.payloads import (
        Drift,
        ReconciledPage,
        ReconcilePage,
        ReconcileReport,
        ReconcileRun,
        ReconcileTotals,
    )
    from core.temporal import ensure_schedule

# The on-demand run's id (the schedule's runs are `reconcile-<time>`).
WORKFLOW_ID = "reconcile"
SCHEDULE_ID = "reconcile"
RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5))
# A page of 100 checks a few hundred Temporal calls; the heartbeat after each check shows a
# stuck page within a minute.
PAGE_TIMEOUT = timedelta(minutes=10)
PAGE_HEARTBEAT = timedelta(minutes=1)
# The report lists this many drifts and counts the rest (the history stays small).
MAX_DRIFT_LISTED = 500


@workflow.defn
class ReconcileWorkflow:
    def __init__(self) -> None:
        self.pages: list[str] = []

    @workflow.run
    async def run(self, run: ReconcileRun) -> ReconcileReport:
        started_at = run.started_at or workflow.now()
        # The same across continue-as-new: it names the signals and the report.
        run_id = workflow.info().first_execution_run_id
        totals, drift, not_listed = run.totals, list(run.drift), run.drift_not_listed
        cursor = run.cursor
        for _ in range(run.pages_per_run):
            page: ReconciledPage = await workflow.execute_activity_method(
                ReconcileActivities.page,
                ReconcilePage(
                    run_id=run_id,
                    cursor=cursor,
                    page_size=run.page_size,
                    concurrency=run.concurrency,
                ),
                start_to_close_timeout=PAGE_TIMEOUT,
                heartbeat_timeout=PAGE_HEARTBEAT,
                retry_policy=RETRY,
                summary=f"page {totals.pages + 1}: up to {run.page_size} subscriptions "
                + _where(cursor),
            )
            totals = totals.plus(page.totals)
            room = max(MAX_DRIFT_LISTED - len(drift), 0)
            drift.extend(page.drift[:room])
            not_listed += len(page.drift) - len(page.drift[:room])
            self._show(totals, page, cursor)
            if not page.has_more:
                break
            cursor = page.last_id
        else:
            workflow.continue_as_new(
                run.model_copy(
                    update={
                        "cursor": cursor,
                        "started_at": started_at,
                        "totals": totals,
                        "drift": drift,
                        "drift_not_listed": not_listed,
                    }
                )
            )
        report = ReconcileReport(
            run_id=run_id,
            started_at=started_at,
            finished_at=workflow.now(),
            totals=totals,
            drift=drift,
            drift_not_listed=not_listed,
        )
        await workflow.execute_activity_method(
            ReconcileActivities.save,
            report,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RETRY,
            summary=f"keep the report: {_counts(totals)}",
        )
        workflow.set_current_details(f"**Done**: {_counts(totals)}\n\n" + "\n".join(self.pages))
        return report

    def _show(self, totals: ReconcileTotals, page: ReconciledPage, cursor: str | None) -> None:
        """The Temporal UI's current details: the totals so far and a line per page (this run)."""
        self.pages.append(
            f"- page {totals.pages} ({_where(cursor)}): {_counts(page.totals)}"
            + "".join(f"\n  - {_drift_line(d)}" for d in page.drift[:10])
        )
        workflow.set_current_details(
            f"**So far**: {_counts(totals)}\n\n" + "\n".join(self.pages[-50:])
        )


def _where(cursor: str | None) -> str:
    return f"after {cursor}" if cursor else "from the newest"


def _counts(totals: ReconcileTotals) -> str:
    return (
        f"{totals.checked} checked, {totals.adopted} adopted, {totals.resynced} re-synced, "
        f"{totals.ended} ended, {totals.unmatched} unmatched, "
        f"{totals.customers_repaired} customers rows written"
    )


def _drift_line(drift: Drift) -> str:
    fields = ", ".join(f"{name} {ours} → {theirs}" for name, (ours, theirs) in drift.fields.items())
    return f"{drift.action} {drift.user_id or '?'} {drift.stripe_subscription_id}: {fields}"


async def ensure_reconcile_schedule(client: Client, task_queue: str, every: timedelta) -> None:
    """Create the reconciliation schedule if it does not exist (every worker may call this)."""
    action = ScheduleActionStartWorkflow(
        ReconcileWorkflow.run, ReconcileRun(), id=SCHEDULE_ID, task_queue=task_queue
    )
    await ensure_schedule(client, SCHEDULE_ID, action, every)
