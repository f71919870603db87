"""Reconciliation: one page of Stripe subscriptions compared with the customers' workflows.

Each subscription's customer workflow is described and queried; what differs is repaired the
way a webhook would have: a signal (the workflow re-reads Stripe itself), or a signal-with-start
that adopts a live subscription no workflow follows. Signals carry an event id made of the
reconciliation run and the subscription, so a retried page signals nothing twice.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime

import stripe
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from stripe._stripe_object import UntypedStripeObject
from temporalio import activity
from temporalio.client import Client, WorkflowQueryRejectedError
from temporalio.common import QueryRejectCondition
from temporalio.service import RPCError, RPCStatusCode

from activities.stripe import subscription_state
from core.db import AsyncSession, Customer, Reconciliation, insert_for
from core.payloads import (
    ENDED_STATUSES,
    Drift,
    DriftAction,
    ReconciledPage,
    ReconcilePage,
    ReconcileReport,
    ReconcileTotals,
    Status,
    StripeEventRef,
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


def differences(view: SubscriptionView, sub: SubscriptionState) -> dict[str, list[Value]]:
    """The fields where the workflow's view differs from Stripe, as [workflow, Stripe].

    Stripe's status is read as the workflow reads it: ended is canceled, and a subscription in
    our dunning is past_due whatever Stripe says (our retries are ours, not Stripe's).
    """
    if sub.status in ENDED_STATUSES:
        status = Status.CANCELED
    elif view.failed_payment_attempts > 0:
        status = Status.PAST_DUE
    else:
        status = status_of(sub.status)
    pairs: dict[str, tuple[object, object]] = {
        "status": (view.status, status),
        "current_period_end": (view.current_period_end, sub.current_period_end),
        "cancel_at_period_end": (view.cancel_at_period_end, sub.cancel_at_period_end),
    }
    if sub.plan and sub.interval:  # a price we do not sell is not ours to compare
        pairs["plan"] = (view.plan, sub.plan)
        pairs["interval"] = (view.interval, sub.interval)
    return {
        name: [_shown(ours), _shown(theirs)]
        for name, (ours, theirs) in pairs.items()
        if ours != theirs
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
        counts: Counter[str] = Counter()
        drift: list[Drift] = []
        limit = asyncio.Semaphore(req.concurrency)

        async def check(sub: SubscriptionState) -> None:
            async with limit:
                user_id, repaired = await self._user_of(sub, metadata_users[sub.id], stored)
                found = await self._check(req.run_id, sub, user_id)
            counts["checked"] += 1
            counts["customers_repaired"] += repaired
            if found:
                drift.append(found)
                counts[found.action] += 1
            activity.heartbeat(counts["checked"])

        await asyncio.gather(*(check(sub) for sub in subs))
        drift.sort(key=lambda d: d.stripe_subscription_id)
        return ReconciledPage(
            totals=ReconcileTotals(
                pages=1,
                checked=counts["checked"],
                adopted=counts[DriftAction.ADOPTED],
                resynced=counts[DriftAction.RESYNCED],
                ended=counts[DriftAction.ENDED],
                unmatched=counts[DriftAction.UNMATCHED],
                customers_repaired=counts["customers_repaired"],
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
        self, run_id: str, sub: SubscriptionState, user_id: str | None
    ) -> Drift | None:
        ended = sub.status in ENDED_STATUSES
        if user_id is None:
            # Nobody to hand it to: reported while Stripe still bills, never guessed.
            if ended:
                return None
            return Drift(stripe_subscription_id=sub.id, action=DriftAction.UNMATCHED)
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
                return None  # nothing runs and nothing bills: in sync
            # Stripe bills and no workflow follows it (never adopted, or ended by an operator).
            await hand_over(self._temporal, self._settings, user_id, ref, live_in_stripe=True)
            return Drift(
                user_id=user_id,
                stripe_subscription_id=sub.id,
                action=DriftAction.ADOPTED,
                fields={"status": [None, _shown(status_of(sub.status))]},
            )
        if view.stripe_subscription_id != sub.id:
            # Another subscription of the customer: an old one that ended is no news; a live
            # one the workflow does not follow is reported (a workflow follows one at a time).
            if ended or view.stripe_subscription_id is None:
                return None
            return Drift(
                user_id=user_id,
                stripe_subscription_id=sub.id,
                action=DriftAction.UNMATCHED,
                fields={"stripe_subscription_id": [view.stripe_subscription_id, sub.id]},
            )
        fields = differences(view, sub)
        if not fields:
            return None
        try:
            await handle.signal(SubscriptionWorkflow.stripe_event, ref)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            return None  # it ended meanwhile: the next run looks again
        action = DriftAction.ENDED if ended else DriftAction.RESYNCED
        return Drift(user_id=user_id, stripe_subscription_id=sub.id, action=action, fields=fields)

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
