"""Reconciliation: one page of Stripe subscriptions compared with the customers' workflows.

Each subscription's customer workflow is described and queried; what differs is repaired the
way a webhook would have: a signal (the workflow re-reads Stripe itself), or a signal-with-start
that adopts a live subscription no workflow follows. Signals carry an event id made of the
reconciliation run and the subscription, so a retried page signals nothing twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import stripe
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from stripe._stripe_object import UntypedStripeObject
from temporalio import activity
from temporalio.client import Client, WorkflowQueryRejectedError
from temporalio.common import QueryRejectCondition
from temporalio.service import RPCError, RPCStatusCode

from activities.store import StoreActivities
from activities.stripe import subscription_state
from core.db import AsyncSession, Customer, Reconciliation, SubscriptionRecord, insert_for
from core.metrics import RECONCILE_DRIFT, activity_meter
from core.payloads import (
    ENDED_STATUSES,
    Drift,
    DriftAction,
    ReconciledPage,
    ReconcilePage,
    ReconcileReport,
    ReconcileTotals,
    Record,
    Status,
    StripeEventRef,
    SubscriptionSnapshot,
    SubscriptionState,
    SubscriptionView,
    is_user_id,
    status_of,
)
from core.settings import Settings
from workflows.handover import hand_over
from workflows.subscription import SubscriptionWorkflow, workflow_id

Value = str | bool | None


def _shown(value: object) -> Value:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


@dataclass(frozen=True)
class Observed:
    """What the workflow shows of a subscription: its view, or the read-model row it wrote."""

    status: str
    plan: str | None
    interval: str
    current_period_end: datetime | None
    cancel_at_period_end: bool
    failed_payment_attempts: int

    @classmethod
    def of_view(cls, view: SubscriptionView) -> Observed:
        return cls(
            view.status,
            view.plan,
            view.interval,
            view.current_period_end,
            view.cancel_at_period_end,
            view.failed_payment_attempts,
        )

    @classmethod
    def of_record(cls, row: SubscriptionRecord) -> Observed:
        end = row.current_period_end
        # SQLite gives back naive datetimes: they were written in UTC.
        if end is not None and end.tzinfo is None:
            end = end.replace(tzinfo=UTC)
        return cls(
            row.status, row.plan, row.interval, end, row.cancel_at_period_end, row.dunning_attempt
        )


def differences(ours: Observed, sub: SubscriptionState) -> dict[str, list[Value]]:
    """The fields where the workflow differs from Stripe, as [workflow, Stripe].

    Stripe's status is read as the workflow reads it: ended is canceled, and a subscription in
    our dunning is past_due whatever Stripe says (our retries are ours, not Stripe's).
    """
    if sub.status in ENDED_STATUSES:
        status = Status.CANCELED
    elif ours.failed_payment_attempts > 0:
        status = Status.PAST_DUE
    else:
        status = status_of(sub.status)
    pairs: dict[str, tuple[object, object]] = {
        "status": (ours.status, status),
        "current_period_end": (ours.current_period_end, sub.current_period_end),
        "cancel_at_period_end": (ours.cancel_at_period_end, sub.cancel_at_period_end),
    }
    if sub.plan and sub.interval:  # a price we do not sell is not ours to compare
        pairs["plan"] = (ours.plan, sub.plan)
        pairs["interval"] = (ours.interval, sub.interval)
    return {
        name: [_shown(mine), _shown(theirs)]
        for name, (mine, theirs) in pairs.items()
        if mine != theirs
    }


class ReconcileActivities:
    """Stripe, the workflows and the customers table compared; the report kept."""

    def __init__(
        self,
        temporal: Client,
        client: stripe.StripeClient,
        settings: Settings,
        sessions: async_sessionmaker[AsyncSession],
    ) -> None:
        self._temporal = temporal
        self._stripe = client.v1
        self._settings = settings
        self._sessions = sessions

    @activity.defn(name="reconcile.page")
    async def page(self, req: ReconcilePage) -> ReconciledPage:
        """Compare one page of Stripe subscriptions (newest first) and repair what differs."""
        if req.cursor:
            listed = await self._stripe.subscriptions.list_async(
                {"status": "all", "limit": req.page_size, "starting_after": req.cursor}
            )
        else:
            listed = await self._stripe.subscriptions.list_async(
                {"status": "all", "limit": req.page_size}
            )
        subs = [subscription_state(sub, self._settings) for sub in listed.data]
        metadata_users = {
            sub.id: _user_in(sub.metadata if "metadata" in sub else None) for sub in listed.data
        }
        stored = await self._stored_users({sub.customer_id for sub in subs})
        limit = asyncio.Semaphore(req.concurrency)

        async def user_of(sub: SubscriptionState) -> tuple[str | None, int]:
            async with limit:
                return await self._user_of(sub, metadata_users[sub.id], stored)

        users = await asyncio.gather(*(user_of(sub) for sub in subs))
        user_of_sub = {sub.id: user for sub, (user, _) in zip(subs, users, strict=True)}
        running = await self._running({user for user, _ in users if user})
        records = await self._records([sub.id for sub in subs])
        counts: Counter[str] = Counter(customers_repaired=sum(n for _, n in users))
        drift: list[Drift] = []

        async def check(sub: SubscriptionState) -> None:
            user_id = user_of_sub[sub.id]
            record = records.get(sub.id)
            if not (user_id in running and record and not differences(record, sub)):
                # Not in step by the read model and the visibility store: ask the workflow.
                async with limit:
                    found, repaired = await self._check(req.run_id, sub, user_id, record)
                if found:
                    drift.append(found)
                    counts[found.action] += 1
                counts["read_model_repaired"] += repaired
            counts["checked"] += 1
            activity.heartbeat(counts["checked"])

        await asyncio.gather(*(check(sub) for sub in subs))
        drift.sort(key=lambda d: d.stripe_subscription_id)
        meter = activity_meter()
        for action in (*DriftAction, "customers_repaired", "read_model_repaired"):
            RECONCILE_DRIFT.add(meter, counts[action], action=str(action))
        return ReconciledPage(
            totals=ReconcileTotals(
                pages=1,
                checked=counts["checked"],
                adopted=counts[DriftAction.ADOPTED],
                resynced=counts[DriftAction.RESYNCED],
                ended=counts[DriftAction.ENDED],
                unmatched=counts[DriftAction.UNMATCHED],
                customers_repaired=counts["customers_repaired"],
                read_model_repaired=counts["read_model_repaired"],
            ),
            drift=drift,
            last_id=subs[-1].id if subs else None,
            has_more=bool(listed.has_more and subs),
        )

    @activity.defn(name="reconcile.save")
    async def save(self, report: ReconcileReport) -> None:
        """Keep the report (once per reconciliation, however often the save is retried)."""
        async with self._sessions() as session:
            stmt = insert_for(session, Reconciliation).values(
                run_id=report.run_id,
                started_at=report.started_at,
                finished_at=report.finished_at,
                report=report.model_dump(mode="json"),
            )
            await session.exec(stmt.on_conflict_do_nothing())
            await session.commit()

    # --- one subscription ------------------------------------------------------------------

    async def _check(
        self, run_id: str, sub: SubscriptionState, user_id: str | None, record: Observed | None
    ) -> tuple[Drift | None, bool]:
        """What differs for one subscription, repaired; and whether its read-model row was
        written (the workflow in step with Stripe, its row missing or stale)."""
        found, view = await self._drift(run_id, sub, user_id)
        if found is not None or user_id is None:
            return found, False
        in_step = view and view.stripe_subscription_id == sub.id
        if not in_step or (record is not None and not differences(record, sub)):
            return None, False
        assert view is not None
        # The workflow writes its row only when its state changes: write what it shows.
        error = view.last_payment_error
        await StoreActivities(self._sessions).record(
            Record(
                subscription=SubscriptionSnapshot(
                    stripe_subscription_id=sub.id,
                    user_id=user_id,
                    status=view.status.value,
                    plan=view.plan.value if view.plan else None,
                    interval=view.interval.value,
                    amount_minor=sub.amount_minor,
                    currency=sub.currency,
                    current_period_end=view.current_period_end,
                    cancel_at_period_end=view.cancel_at_period_end,
                    dunning_attempt=view.failed_payment_attempts,
                    started_at=sub.started_at or datetime.now(UTC),
                    canceled_at=sub.canceled_at,
                    access=view.access,
                    last_decline_code=error.reason if error else None,
                    cancellation_reason=sub.cancellation_reason,
                )
            )
        )
        return None, True

    async def _drift(
        self, run_id: str, sub: SubscriptionState, user_id: str | None
    ) -> tuple[Drift | None, SubscriptionView | None]:
        """What differs, repaired, with the workflow's view when it runs."""
        ended = sub.status in ENDED_STATUSES
        if user_id is None:
            # Nobody to hand it to: reported while Stripe still bills, never guessed.
            if ended:
                return None, None
            return Drift(stripe_subscription_id=sub.id, action=DriftAction.UNMATCHED), None
        handle = self._temporal.get_workflow_handle_for(
            SubscriptionWorkflow.run, workflow_id(user_id)
        )
        ref = StripeEventRef(
            id=f"reconcile-{run_id}-{sub.id}",
            type="customer.subscription.deleted" if ended else "customer.subscription.updated",
            created=datetime.now(UTC),
            object_id=sub.id,
            customer_id=sub.customer_id,
            subscription_id=sub.id,
        )
        view = await self._running_view(user_id)
        if view is None:
            if ended:
                return None, view  # nothing runs and nothing bills: in sync
            # Stripe bills and no workflow follows it (never adopted, or ended by an operator).
            await hand_over(self._temporal, self._settings, user_id, ref, live_in_stripe=True)
            adopted = Drift(
                user_id=user_id,
                stripe_subscription_id=sub.id,
                action=DriftAction.ADOPTED,
                fields={"status": [None, _shown(status_of(sub.status))]},
            )
            return adopted, view
        if view.stripe_subscription_id != sub.id:
            # Another subscription of the customer: an old one that ended is no news; a live
            # one the workflow does not follow is reported (a workflow follows one at a time).
            if ended or view.stripe_subscription_id is None:
                return None, view
            other = Drift(
                user_id=user_id,
                stripe_subscription_id=sub.id,
                action=DriftAction.UNMATCHED,
                fields={"stripe_subscription_id": [view.stripe_subscription_id, sub.id]},
            )
            return other, view
        fields = differences(Observed.of_view(view), sub)
        if not fields:
            return None, view
        try:
            await handle.signal(SubscriptionWorkflow.stripe_event, ref)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            return None, view  # it ended meanwhile: the next run looks again
        action = DriftAction.ENDED if ended else DriftAction.RESYNCED
        return Drift(
            user_id=user_id, stripe_subscription_id=sub.id, action=action, fields=fields
        ), view

    async def _running_view(self, user_id: str) -> SubscriptionView | None:
        """The customer's workflow's view, or None when no run of it is running (one RPC: the
        server refuses the query of a closed workflow without asking a worker)."""
        handle = self._temporal.get_workflow_handle_for(
            SubscriptionWorkflow.run, workflow_id(user_id)
        )
        try:
            return await handle.query(
                SubscriptionWorkflow.view, reject_condition=QueryRejectCondition.NOT_OPEN
            )
        except WorkflowQueryRejectedError:
            return None
        except RPCError as err:
            if err.status == RPCStatusCode.NOT_FOUND:
                return None
            raise

    async def _running(self, user_ids: set[str]) -> set[str]:
        """The users of `user_ids` whose workflow runs, by one visibility query (it may lag a
        moment: it only decides which customers need no query)."""
        if not user_ids:
            return set()
        ids = ", ".join(f"'{workflow_id(user)}'" for user in sorted(user_ids))
        query = f"ExecutionStatus = 'Running' AND WorkflowId IN ({ids})"
        prefix = len(workflow_id(""))
        return {wf.id[prefix:] async for wf in self._temporal.list_workflows(query)}

    async def _records(self, subscription_ids: list[str]) -> dict[str, Observed]:
        """What the workflows last wrote to the read model for these subscriptions."""
        if not subscription_ids:
            return {}
        async with self._sessions() as session:
            rows = await session.exec(
                select(SubscriptionRecord).where(
                    col(SubscriptionRecord.stripe_subscription_id).in_(subscription_ids)
                )
            )
            return {row.stripe_subscription_id: Observed.of_record(row) for row in rows}

    # --- whose subscription ------------------------------------------------------------------

    async def _user_of(
        self, sub: SubscriptionState, in_metadata: str | None, stored: dict[str, str]
    ) -> tuple[str | None, int]:
        """The user a subscription belongs to (its metadata, its customer's, else the stored
        mapping), and 1 when the customers table lacked the row and it was written."""
        user_id = in_metadata
        email: str | None = None
        if user_id is None and sub.customer_id not in stored:
            customer = await self._stripe.customers.retrieve_async(sub.customer_id)
            # A deleted customer answers without metadata or email.
            user_id = _user_in(customer.metadata if "metadata" in customer else None)
            email = customer.email if "email" in customer else None
        if user_id is None:
            return stored.get(sub.customer_id), 0
        if sub.customer_id in stored:
            return user_id, 0
        return user_id, await self._write_customer(user_id, sub.customer_id, email)

    async def _stored_users(self, customer_ids: set[str]) -> dict[str, str]:
        """Stripe customer id -> user id, for the customers the table has."""
        if not customer_ids:
            return {}
        async with self._sessions() as session:
            rows = await session.exec(
                select(Customer).where(col(Customer.stripe_customer_id).in_(customer_ids))
            )
            return {row.stripe_customer_id: row.user_id for row in rows if is_user_id(row.user_id)}

    async def _write_customer(self, user_id: str, customer_id: str, email: str | None) -> int:
        """The customers row Stripe implies (never over another row for the user)."""
        async with self._sessions() as session:
            stmt = insert_for(session, Customer).values(
                user_id=user_id,
                stripe_customer_id=customer_id,
                email=email,
                created_at=datetime.now(UTC),
            )
            result = await session.exec(stmt.on_conflict_do_nothing())
            await session.commit()
        return 1 if result.rowcount else 0


def _user_in(metadata: UntypedStripeObject[str] | None) -> str | None:
    """`metadata.user_id` when it is there and is a user id."""
    if metadata is None or "user_id" not in metadata:
        return None
    value = metadata["user_id"]
    return value if is_user_id(value) else None
