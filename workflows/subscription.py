"""What happens to a customer's subscription: trial, payment, dunning, cancellation, recovery.

One `SubscriptionWorkflow` per customer, id `subscription-<user id>`. Stripe events arrive as
the `stripe_event` signal (a reference only: the workflow re-reads the object from Stripe),
API calls as updates, and the subscription view is a query. Dunning is owned here: timers
between payment retries, reminders, and cancellation after the policy's number of failures.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from temporalio import workflow
from temporalio.exceptions import ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.stripe import StripeActivities
    from core.declines import DeclineKind, kind_of
    from core.idempotency import idempotency_key
    from core.metrics import DUNNING_CANCELLATIONS
    from core.payloads import (
        Access,
        ActionReason,
        ActionRequired,
        AttachPaymentMethod,
        Cancel,
        CancelSubscription,
        ChangePlan,
        ChangeSubscription,
        CreateSubscription,
        DetachPaymentMethod,
        EmailKind,
        EnsureCustomer,
        Failure,
        FoundSubscription,
        Interval,
        InvoiceState,
        PayInvoice,
        PaymentError,
        PaymentKind,
        PaymentMethodInfo,
        Plan,
        RemovePaymentMethod,
        ResumeSubscription,
        SetDefaultPaymentMethod,
        SetPaymentMethod,
        Status,
        StripeEventRef,
        SubscriptionState,
        SubscriptionView,
        status_of,
    )
    from core.policy import DunningPolicy
    from core.state import BillingState, StartSubscription
    from workflows import calls
    from workflows.outbox import Outbox, day, money
    from workflows.visibility import Visibility
    from workflows.wakeup import WakeUp


# Memory kept of handled event ids and counted payment attempts (enough to outlast redelivery).
RECENT = 500
# Runs started on code with this patch know declines, access levels and pre-dunning; runs
# started before keep the old behaviour until they continue as new (their histories replay).
DECLINE_AWARE = "decline-aware-dunning"
# Runs started on code with this patch wait for their next timed step on one timer kept across
# events (`workflows/wakeup.py`); runs started before keep a timer per pause between events
# until they continue as new (their timers are numbered that way in their histories).
STEADY_TIMER = "steady-wakeup-timer"


# What the customer is waiting to do, for the timer's summary.
_TO_DO = {
    ActionReason.NEW_PAYMENT_METHOD: "add a new card",
    ActionReason.AUTHENTICATION_REQUIRED: "authenticate the payment",
}


def workflow_id(user_id: str) -> str:
    return f"subscription-{user_id}"


def _invalid(message: str) -> ApplicationError:
    """An update the current state forbids; the API answers 409."""
    return ApplicationError(message, type=Failure.INVALID_STATE, non_retryable=True)


@workflow.defn
class SubscriptionWorkflow:
    @workflow.init
    def __init__(self, start: StartSubscription) -> None:
        self.start = start
        self.state = start.state or BillingState(
            user_id=start.user_id,
            email=start.email,
            name=start.name,
            plan=start.plan,
            interval=start.interval,
        )
        self.lock = asyncio.Lock()
        self.created = start.state is not None
        # Why the order was not carried out (the `subscription_ready` caller gets it).
        self.creation_error: ApplicationError | None = None
        # Set when a run started by an event found nothing to adopt: what it shows instead.
        self.ended_view: SubscriptionView | None = None
        self.changed = False
        self.signals_this_run = 0
        self.visibility = Visibility()
        self.outbox = Outbox(self.state)
        self.next_action = ""
        # Read at the start of the run's first activation, before any handler runs.
        self.decline_aware = workflow.patched(DECLINE_AWARE)
        self.steady_timer = workflow.patched(STEADY_TIMER)
        self.wakeup = WakeUp()

    @property
    def policy(self) -> DunningPolicy:
        """The dunning policy of the customer's plan (carried in the input)."""
        return self.start.policy.for_plan(self.state.plan)

    # --- the lifecycle --------------------------------------------------------------------

    @workflow.run
    async def run(self, start: StartSubscription) -> SubscriptionView:
        senders = self.outbox.start()
        try:
            return await self._lifecycle()
        finally:
            for sender in senders:
                sender.cancel()

    async def _lifecycle(self) -> SubscriptionView:
        if not self.created:
            async with self.lock:
                try:
                    if self.start.adopt_customer_id or self.start.plan is None:
                        await self._adopt(self.start.adopt_customer_id)
                    else:
                        await self._subscribe()
                except calls.CALL_FAILED as err:
                    self.creation_error = calls.as_business_error(err)
                finally:
                    self.created = True
            if not self.state.subscription_id:
                # Nothing live in Stripe: the run ends (the caller of the order gets why).
                self.state.status = Status.CANCELED
        while self.state.status != Status.CANCELED:
            if self._continue_as_new_due():
                await self._quiesce()
                if self.state.status == Status.CANCELED:
                    break
                workflow.continue_as_new(self.start.model_copy(update={"state": self.state}))
            self.changed = False
            due, what = self._next_timer()
            self._publish(due, what)
            if self.steady_timer:
                if due and due <= workflow.now():
                    async with self.lock:
                        await self._on_timers()
                    continue
                # No timer is started or cancelled here unless `due` has changed: the pauses
                # between events are not where the SDK's replay always finds them.
                self.wakeup.set(due, what)
                await workflow.wait_condition(lambda: self._woken() or self.wakeup.rang)
            else:
                timeout = max(due - workflow.now(), timedelta(0)) if due else None
                try:
                    await workflow.wait_condition(
                        self._woken, timeout=timeout, timeout_summary=what or None
                    )
                except TimeoutError:
                    async with self.lock:
                        await self._on_timers()
                    continue
            async with self.lock:
                while self.state.pending_events and self.state.status != Status.CANCELED:
                    ref = self._next_event()
                    await calls.contained(self._on_event(ref), f"{ref.type} {ref.id}")
                    if self._continue_as_new_due():
                        break  # a steady stream of events never holds off continue-as-new
        if self.ended_view:
            # A late event found nothing to adopt: leave the read model as the last run left it.
            await self._quiesce()
            return self.ended_view
        # The final state goes to the read model too; then wait for every queued write.
        while True:
            self._publish(None, "")
            await self._quiesce()
            if not self.state.records:
                return self._view()

    def _woken(self) -> bool:
        """Something for the main loop to do besides its timed steps."""
        return (
            bool(self.state.pending_events)
            or self.changed
            or self.state.status == Status.CANCELED
            or self._continue_as_new_due()
        )

    def _continue_as_new_due(self) -> bool:
        return (
            workflow.info().is_continue_as_new_suggested()
            or self.signals_this_run >= self.start.signals_before_continue_as_new
        )

    async def _quiesce(self) -> None:
        """Before ending or continuing as new: handlers finished, every email sent."""
        await workflow.wait_condition(
            lambda: workflow.all_handlers_finished() and self.outbox.empty()
        )

    def _publish(self, due: datetime | None, what: str) -> None:
        """Show the state: the read model's row (queued when it changed) and the Temporal UI."""
        self.outbox.subscription(self._access())
        self.visibility.publish(
            self.state, self.policy.max_failures, self._access(), due, what, self.decline_aware
        )

    # --- Stripe events: re-read what they point at ----------------------------------------

    @workflow.signal
    def stripe_event(self, ref: StripeEventRef) -> None:
        """A Stripe webhook, by reference. Duplicates (by event id) change nothing."""
        s = self.state
        if ref.id in s.recent_event_ids:
            return
        s.recent_event_ids = [*s.recent_event_ids, ref.id][-RECENT:]
        s.pending_events.append(ref)
        self.signals_this_run += 1

    def _next_event(self) -> StripeEventRef:
        ref, self.state.pending_events = fold_next(self.state.pending_events)
        return ref

    async def _on_event(self, ref: StripeEventRef) -> None:
        """A Stripe event: re-read what it points at instead of trusting the order of events."""
        if ref.type == "invoice.upcoming" and self.decline_aware:
            # No invoice id: the object is the subscription. (Runs from before the patch take
            # the invoice branch below, as their code did, so their histories replay.)
            if ref.object_id == self.state.subscription_id:
                await self._on_upcoming_renewal()
        elif ref.type == "charge.refunded":
            if self.decline_aware:
                await self._on_refund(ref.object_id)
        elif ref.type == "customer.updated":
            if self.decline_aware and ref.object_id == self.state.customer_id:
                await self._on_customer_updated()
        elif ref.type.startswith("invoice."):
            await self._check_invoice(ref.object_id)
        elif ref.type.startswith("customer.subscription."):
            if ref.object_id != self.state.subscription_id:
                return
            await self._sync()
            if ref.type == "customer.subscription.trial_will_end":
                await self._trial_reminder()

    async def _check_invoice(self, invoice_id: str) -> InvoiceState | None:
        """Re-read an invoice and act on it; the invoice, or None if Stripe has it not."""
        try:
            inv = await calls.stripe_read(
                StripeActivities.get_invoice, invoice_id, f"re-read invoice {invoice_id}"
            )
        except calls.CALL_FAILED as err:
            # Stripe does not have it (another account, a deleted test clock): not ours.
            workflow.logger.warning("invoice %s not re-read: %s", invoice_id, err)
            if invoice_id == self.state.dunning_invoice_id:  # dunning cannot go on with it
                self._end_dunning()
                await self._sync(check_invoice=False)
            return None
        await self._on_invoice(inv)
        return inv

    async def _on_invoice(self, inv: InvoiceState, resync: bool = True) -> None:
        if inv.subscription_id != self.state.subscription_id:
            return
        if inv.status == "paid":
            await self._on_paid_invoice(inv, resync)
        elif inv.status == "open" and inv.attempt_count > 0:
            await self._on_failed_attempt(inv)
        elif inv.id == self.state.dunning_invoice_id:  # voided or written off elsewhere
            self._end_dunning()
            await self._sync(check_invoice=False)

    # --- payments and dunning: each step beside what triggers it --------------------------

    async def _on_failed_attempt(self, inv: InvoiceState, retry_key: str | None = None) -> None:
        """A failed payment attempt, counted once however many times we hear of it: Stripe's
        by the invoice's `attempt_count`, a retry of ours by the retry's idempotency key."""
        s = self.state
        attempt = retry_key or f"{inv.id}#{inv.attempt_count}"
        if attempt in s.counted_attempts:
            return
        s.counted_attempts = [*s.counted_attempts, attempt][-RECENT:]
        error = inv.last_payment_error
        # Stripe counts only its own retries in `attempt_count`: ours are numbered on from it.
        number = max(inv.attempt_count, s.failed_payment_attempts + 1) if retry_key else None
        self.outbox.payment(inv, PaymentKind.FAILED, inv.amount_due, error=error, attempt=number)
        s.failed_payment_attempts += 1
        s.dunning_invoice_id = inv.id
        s.status = Status.PAST_DUE
        # Stripe's `incomplete`: nothing paid yet, nothing to grant (the status stays past_due).
        s.unpaid_from_start = inv.billing_reason == "subscription_create"
        s.last_payment_error = (error or PaymentError()).model_copy(update={"at": workflow.now()})
        if s.failed_payment_attempts >= self.policy.max_failures:
            await self._give_up(inv.id)
            return
        s.next_retry_at = workflow.now() + self.policy.delay_after(s.failed_payment_attempts)
        kind = kind_of(error, inv.requires_action) if self.decline_aware else DeclineKind.SOFT
        if kind != DeclineKind.SOFT:
            # Never charged again without the customer (off-session it would fail the same way):
            # another card, or the customer on Stripe's page.
            s.declined_payment_method = (
                error.payment_method if error and error.payment_method else s.default_payment_method
            )
        if kind == DeclineKind.HARD:
            s.action_required = ActionRequired(
                reason=ActionReason.NEW_PAYMENT_METHOD, url=self.policy.update_payment_method_url
            )
        elif kind == DeclineKind.AUTHENTICATION:
            # Only the customer can authenticate, on Stripe's page for the invoice.
            s.action_required = ActionRequired(
                reason=ActionReason.AUTHENTICATION_REQUIRED,
                url=inv.hosted_invoice_url or self.policy.update_payment_method_url,
            )
        else:
            s.action_required = None
        self._dunning_reminder(attempt)

    def _dunning_reminder(self, discriminator: str) -> None:
        """The email after failure n: what happened, what the customer can do, and where."""
        s = self.state
        action = s.action_required
        kind = EmailKind.PAYMENT_FAILED
        if action and action.reason == ActionReason.NEW_PAYMENT_METHOD:
            kind = EmailKind.NEW_CARD_NEEDED
        elif action and action.reason == ActionReason.AUTHENTICATION_REQUIRED:
            kind = EmailKind.AUTHENTICATION_REQUIRED
        error = s.last_payment_error
        self.outbox.email(
            kind,
            discriminator,
            {
                "invoice_id": s.dunning_invoice_id or "",
                "attempt": str(s.failed_payment_attempts),
                "max_attempts": str(self.policy.max_failures),
                "retry_at": day(s.next_retry_at),
                "reason": (error.message if error else None) or "The payment was declined.",
                "action_url": action.url if action else self.policy.update_payment_method_url,
            },
            summary=f"dunning reminder {s.failed_payment_attempts} of {self.policy.max_failures}"
            f"{f' ({action.reason.value})' if action else ''}",
        )

    def _next_timer(self) -> tuple[datetime | None, str]:
        """The earliest thing the workflow will do by itself, and why."""
        s = self.state
        timers: list[tuple[datetime, str]] = []
        if s.next_retry_at and s.action_required:
            timers.append(
                (
                    s.next_retry_at,
                    f"end of the customer's window to {_TO_DO[s.action_required.reason]} "
                    f"(invoice {s.dunning_invoice_id}): counts as failed payment "
                    f"{s.failed_payment_attempts + 1} of {self.policy.max_failures}",
                )
            )
        elif s.next_retry_at:
            timers.append(
                (
                    s.next_retry_at,
                    f"dunning retry {s.failed_payment_attempts} of {self.policy.max_failures - 1}: "
                    f"pay invoice {s.dunning_invoice_id}",
                )
            )
        if reminder := self._trial_reminder_due():
            timers.append((reminder, f"trial reminder before the trial ends {day(s.trial_end)}"))
        if reminder := self._renewal_reminder_due():
            timers.append((reminder, f"renewal reminder before {day(s.current_period_end)}"))
        if reminder := self._card_reminder_due():
            timers.append(
                (
                    reminder,
                    f"card expiry reminder: the card expires {day(s.card_expires_at)}, "
                    f"before the renewal on {day(self._next_charge_at())}",
                )
            )
        if s.next_sync_at:
            timers.append((s.next_sync_at, "re-sync with Stripe after the period end"))
        if not timers:
            return None, ""
        return min(timers, key=lambda t: t[0])

    async def _on_timers(self) -> None:
        # Each step moves its own time on before it calls out, so a failure cannot make a
        # timer fire again at once.
        now = workflow.now()
        s = self.state
        if s.next_retry_at and s.next_retry_at <= now:
            if s.action_required and self.decline_aware:
                await calls.contained(self._customer_window_ends(), "end of the customer's window")
            else:
                await calls.contained(self._retry_payment(), "dunning retry")
        reminder = self._trial_reminder_due()
        if reminder and reminder <= now:
            await self._trial_reminder()
        reminder = self._renewal_reminder_due()
        if reminder and reminder <= now:
            self._renewal_reminder()
        reminder = self._card_reminder_due()
        if reminder and reminder <= now:
            self._card_reminder()
        if s.next_sync_at and s.next_sync_at <= now and s.status != Status.CANCELED:
            before = s.current_period_end
            s.next_sync_at = now + timedelta(days=1)
            await calls.contained(self._sync(), "re-sync after the period end")
            if s.status != Status.CANCELED and s.current_period_end == before:
                s.next_sync_at = now + timedelta(days=1)  # Stripe has not renewed yet

    async def _retry_payment(self) -> None:
        s = self.state
        invoice_id = s.dunning_invoice_id
        s.next_retry_at = None
        if not invoice_id:
            return
        if s.declined_payment_method and s.default_payment_method == s.declined_payment_method:
            # The card a hard decline (or the bank's request to authenticate) was for: never
            # again off-session, whoever asks (an operator, the same card added again). The
            # customer's window goes on.
            workflow.logger.info("not charging %s again: it was declined", invoice_id)
            s.next_retry_at = workflow.now() + self.policy.delay_after(
                max(s.failed_payment_attempts, 1)
            )
            return
        key = self._next_idempotency_key(f"pay-{invoice_id}")
        try:
            inv = await calls.stripe(
                StripeActivities.pay_invoice,
                PayInvoice(
                    invoice_id=invoice_id,
                    idempotency_key=key,
                    # After a hard decline, the card chosen instead of it, by name.
                    payment_method=s.default_payment_method
                    if self.decline_aware and s.declined_payment_method
                    else None,
                ),
                f"retry invoice {invoice_id} payment (dunning {s.failed_payment_attempts} of "
                f"{self.policy.max_failures - 1} retries)",
            )
        except calls.CALL_FAILED as err:
            # Declined (or no longer payable): the invoice tells which attempt this was.
            workflow.logger.info("retry of %s failed: %s", invoice_id, err.cause or err)
            counted = s.failed_payment_attempts
            reread = await self._check_invoice(invoice_id)
            if (
                s.status != Status.CANCELED
                and s.failed_payment_attempts == counted
                and s.dunning_invoice_id == invoice_id
                and not s.next_retry_at
            ):
                if (
                    self.decline_aware
                    and reread
                    and reread.status == "open"
                    and calls.business_type(err) == Failure.CARD_DECLINED
                ):
                    # Declined, and Stripe did not count it: a manual attempt leaves
                    # `attempt_count` as it was (only Stripe's own retries move it on).
                    await self._on_failed_attempt(reread, retry_key=key)
                    return
                # Refused without a new attempt counted: try again later, never stall.
                s.next_retry_at = workflow.now() + self.policy.delay_after(
                    max(s.failed_payment_attempts, 1)
                )
            return
        await self._on_invoice(inv)

    async def _customer_window_ends(self) -> None:
        """The customer was asked to act (a new card, or to authenticate) and the window is
        over: paid meanwhile, or a new default card to try, or it counts as a failure."""
        s = self.state
        invoice_id, counted = s.dunning_invoice_id, s.failed_payment_attempts
        # Another window if what follows fails (it is contained): never a customer left with
        # no timer. Every way on from here sets it again.
        s.next_retry_at = workflow.now() + self.policy.delay_after(max(counted, 1))
        if not invoice_id:
            return
        await self._check_invoice(invoice_id)  # paid on Stripe's page with the webhook lost?
        if (
            s.status == Status.CANCELED
            or s.dunning_invoice_id != invoice_id
            or s.failed_payment_attempts != counted
        ):
            return
        customer = await calls.stripe_read(
            StripeActivities.get_customer, s.customer_id, f"re-read customer {s.customer_id}"
        )
        card = customer.default_payment_method
        if card and card != s.declined_payment_method:  # a new card, set in Stripe
            if card != s.default_payment_method:
                await self._make_default(card)
                await self._learn_card(card)
            await self._retry_payment()
            return
        s.failed_payment_attempts += 1
        if s.failed_payment_attempts >= self.policy.max_failures:
            await self._give_up(invoice_id)
            return
        s.next_retry_at = workflow.now() + self.policy.delay_after(s.failed_payment_attempts)
        self._dunning_reminder(f"{invoice_id}#waited-{s.failed_payment_attempts}")

    async def _give_up(self, invoice_id: str) -> None:
        s = self.state
        if s.subscription_id:
            sub = await calls.stripe(
                StripeActivities.cancel_subscription,
                CancelSubscription(
                    subscription_id=s.subscription_id,
                    at_period_end=False,
                    idempotency_key=self._next_idempotency_key("cancel-unpaid"),
                ),
                f"cancel after {s.failed_payment_attempts} failed payments",
            )
            self._apply(sub)
        s.status = Status.CANCELED
        s.canceled_at = s.canceled_at or workflow.now()
        s.cancellation_reason = "payment_failed"
        # Not counted again when this history is replayed (the SDK's workflow meter is silent).
        DUNNING_CANCELLATIONS.add(workflow.metric_meter(), plan=s.plan.value if s.plan else "none")
        s.next_retry_at = None
        s.action_required = None
        self.outbox.email(
            EmailKind.FINAL_NOTICE,
            invoice_id,
            {"invoice_id": invoice_id, "max_attempts": str(self.policy.max_failures)},
            summary="final notice",
        )

    async def _on_paid_invoice(self, inv: InvoiceState, resync: bool = True) -> None:
        s = self.state
        recovered = s.failed_payment_attempts > 0
        if recovered:
            workflow.logger.info(
                "payment recovered after %d failed attempts", s.failed_payment_attempts
            )
        self._end_dunning()
        if inv.amount_paid > 0:
            self.outbox.payment(inv, PaymentKind.SUCCEEDED, inv.amount_paid, recovered=recovered)
        if inv.amount_paid > 0 and inv.id not in s.receipted_invoices:
            s.receipted_invoices = [*s.receipted_invoices, inv.id][-RECENT:]
            self.outbox.email(
                EmailKind.RECEIPT,
                inv.id,
                {"amount": money(inv.amount_paid, inv.currency), "invoice_id": inv.id},
            )
        if resync:  # the subscription's status follows its invoice: read it again
            await self._sync(check_invoice=False)

    def _end_dunning(self) -> None:
        s = self.state
        s.failed_payment_attempts = 0
        s.dunning_invoice_id = None
        s.next_retry_at = None
        s.action_required = None
        s.declined_payment_method = None
        s.last_payment_error = None
        s.unpaid_from_start = False

    def _access(self) -> Access:
        s = self.state
        status = Status.INCOMPLETE if s.unpaid_from_start else s.status
        return self.policy.access(status, s.failed_payment_attempts)

    # --- the trial ------------------------------------------------------------------------

    def _trial_reminder_due(self) -> datetime | None:
        s = self.state
        if (
            s.status != Status.TRIALING
            or not s.trial_end
            or s.trial_reminder_sent_for == s.trial_end
        ):
            return None
        return s.trial_end - self.policy.trial_reminder_before

    async def _trial_reminder(self) -> None:
        s = self.state
        if (
            s.status != Status.TRIALING
            or not s.trial_end
            or s.trial_reminder_sent_for == s.trial_end
        ):
            return
        s.trial_reminder_sent_for = s.trial_end
        self.outbox.email(
            EmailKind.TRIAL_ENDING, s.trial_end.isoformat(), {"trial_end": day(s.trial_end)}
        )

    # --- before dunning: reminders of a yearly renewal and of a card that will not last ---

    def _next_charge_at(self) -> datetime | None:
        s = self.state
        return s.trial_end if s.status == Status.TRIALING else s.current_period_end

    def _renewal_reminder_due(self) -> datetime | None:
        s = self.state
        renewal = s.current_period_end
        if (
            not self.decline_aware
            or s.interval != Interval.YEARLY
            or s.status != Status.ACTIVE
            or s.cancel_at_period_end
            or not renewal
            or renewal <= workflow.now()
            or s.renewal_reminder_sent_for == renewal
        ):
            return None
        return renewal - self.policy.renewal_reminder_before

    def _renewal_reminder(self) -> None:
        s = self.state
        if self._renewal_reminder_due() is None or not s.current_period_end:
            return
        s.renewal_reminder_sent_for = s.current_period_end
        self.outbox.email(
            EmailKind.RENEWAL_REMINDER,
            s.current_period_end.isoformat(),
            {
                "renews_at": day(s.current_period_end),
                "amount": money(s.amount_minor, s.currency),
                "action_url": self.policy.update_payment_method_url,
            },
            summary=f"renewal reminder before {day(s.current_period_end)}",
        )

    async def _on_upcoming_renewal(self) -> None:
        """Stripe's `invoice.upcoming` (days before a renewal, as the account is set): a yearly
        customer is reminded now, if the timer has not done it already."""
        if self.state.interval != Interval.YEARLY:
            return
        await self._sync(check_invoice=False)  # still renewing, and when
        self._renewal_reminder()

    def _card_reminder_due(self) -> datetime | None:
        s = self.state
        charge_at = self._next_charge_at()
        if (
            not self.decline_aware
            or s.status not in (Status.ACTIVE, Status.TRIALING)
            or s.cancel_at_period_end
            or not charge_at
            or not s.card_expires_at
            or charge_at <= workflow.now()
            or s.card_expires_at > charge_at
            or s.card_reminder_sent_for == f"{s.card_expiry_known_for}@{charge_at.isoformat()}"
        ):
            return None
        return charge_at - self.policy.card_expiry_reminder_before

    def _card_reminder(self) -> None:
        s = self.state
        charge_at = self._next_charge_at()
        if self._card_reminder_due() is None or not charge_at or not s.card_expires_at:
            return
        s.card_reminder_sent_for = f"{s.card_expiry_known_for}@{charge_at.isoformat()}"
        last_day = s.card_expires_at - timedelta(days=1)
        self.outbox.email(
            EmailKind.CARD_EXPIRING,
            s.card_reminder_sent_for,
            {
                "expires": last_day.strftime("%m/%Y"),
                "charge_at": day(charge_at),
                "action_url": self.policy.update_payment_method_url,
            },
            summary=f"card expiry reminder before the charge on {day(charge_at)}",
        )

    def _know_card(self, info: PaymentMethodInfo) -> None:
        """The default card's expiry (cards work to the end of their expiry month)."""
        s = self.state
        s.card_expiry_known_for = info.id
        card = info.card
        s.card_expires_at = (
            datetime(card.exp_year + card.exp_month // 12, card.exp_month % 12 + 1, 1, tzinfo=UTC)
            if card
            else None
        )

    async def _learn_card(self, payment_method_id: str) -> None:
        """Read a default card set elsewhere (the dashboard, the customer portal, adoption)."""
        try:
            info = await calls.stripe_read(
                StripeActivities.get_payment_method,
                payment_method_id,
                f"read payment method {payment_method_id} (its expiry)",
            )
        except calls.CALL_FAILED as err:
            workflow.logger.warning("payment method %s not read: %s", payment_method_id, err)
            return
        self._know_card(info)

    async def _on_customer_updated(self) -> None:
        """`customer.updated`: a new default card set in Stripe becomes the subscription's
        too, and after a hard decline the payment is retried with it at once."""
        s = self.state
        customer = await calls.stripe_read(
            StripeActivities.get_customer, s.customer_id, f"re-read customer {s.customer_id}"
        )
        card = customer.default_payment_method
        if (
            not card
            or card in (s.default_payment_method, s.declined_payment_method)
            or s.status == Status.CANCELED
        ):
            return
        await self._make_default(card)
        await self._learn_card(card)
        if s.action_required:  # the customer's answer: try it at once
            await self._retry_payment()

    # --- refunds --------------------------------------------------------------------------

    async def _on_refund(self, charge_id: str) -> None:
        """`charge.refunded`: each refund of the charge lands in the ledger (once: a row per
        refund, keyed by its number on the charge)."""
        try:
            charge = await calls.stripe_read(
                StripeActivities.get_charge_refunds, charge_id, f"read the refunds of {charge_id}"
            )
        except calls.CALL_FAILED as err:
            workflow.logger.warning("charge %s not re-read: %s", charge_id, err)
            return
        if not charge.customer_id or charge.customer_id != self.state.customer_id:
            return
        for number, refund in enumerate(charge.refunds, 1):
            if refund.status in ("succeeded", "pending"):
                self.outbox.refund(charge, number, refund)

    # --- Stripe's subscription ------------------------------------------------------------

    async def _sync(self, check_invoice: bool = True) -> None:
        """Re-read the subscription, and its latest invoice when payment is in question."""
        sub = await calls.stripe_read(
            StripeActivities.get_subscription,
            self.state.subscription_id,
            f"re-read subscription {self.state.subscription_id}",
        )
        self._apply(sub)
        card = self.state.default_payment_method
        if self.decline_aware and card and card != self.state.card_expiry_known_for:
            await self._learn_card(card)
        in_question = (
            sub.status in ("past_due", "incomplete") or self.state.failed_payment_attempts > 0
        )
        if (
            check_invoice
            and sub.latest_invoice_id
            and in_question
            and self.state.status != Status.CANCELED
        ):
            await self._check_invoice(sub.latest_invoice_id)

    def _apply(self, sub: SubscriptionState) -> None:
        """Take Stripe's word for the subscription's status, plan and dates."""
        s = self.state
        s.subscription_id = sub.id
        s.customer_id = sub.customer_id
        if sub.plan and sub.interval:
            s.plan, s.interval = sub.plan, sub.interval
        s.cancel_at_period_end = sub.cancel_at_period_end
        s.trial_end = sub.trial_end
        s.current_period_end = sub.current_period_end
        s.amount_minor, s.currency = sub.amount_minor, sub.currency
        s.started_at = sub.started_at or s.started_at
        status = status_of(sub.status)
        ended = status == Status.CANCELED
        s.canceled_at = (sub.canceled_at or s.canceled_at or workflow.now()) if ended else None
        s.default_payment_method = sub.default_payment_method or s.default_payment_method
        if ended:
            s.status = Status.CANCELED
            s.next_retry_at = None  # the failure count stays, for the record
            s.action_required = None
            s.cancellation_reason = (
                s.cancellation_reason or sub.cancellation_reason or "cancellation_requested"
            )
        elif s.failed_payment_attempts > 0:
            s.status = Status.PAST_DUE
        else:
            s.status = status
        if s.current_period_end and s.status != Status.CANCELED:
            s.next_sync_at = s.current_period_end + self.policy.period_end_sync_after

    # --- creating or adopting the subscription --------------------------------------------

    async def _subscribe(self) -> None:
        """Create (or find) the Stripe customer, attach the card, create the subscription."""
        s = self.state
        customer = await calls.stripe(
            StripeActivities.ensure_customer,
            EnsureCustomer(
                user_id=s.user_id,
                email=s.email,
                name=s.name,
                idempotency_key=self._next_idempotency_key("customer"),
            ),
            "create or find the Stripe customer",
        )
        s.customer_id = customer.id
        self.outbox.customer()
        # A customer this run has just made has nothing to look at.
        if workflow.patched("look-before-create") and not customer.created:
            # One live Stripe subscription per customer, ever: one made elsewhere (the
            # dashboard, a run that ended by mistake) is followed, never doubled.
            found = await self._find(customer.id)
            if found and found.subscription:
                await self._take_over(found)
                self.creation_error = _invalid(
                    f"the user already has a live subscription in Stripe "
                    f"({found.subscription.id}); it is followed from now on"
                )
                return
        if self.start.payment_method_id:
            try:
                await self._attach(self.start.payment_method_id)
            except calls.CALL_FAILED as err:
                if calls.business_type(err) != Failure.CARD_DECLINED:
                    raise
                # A card refused at attach time: subscribe without it; the first charge fails
                # into dunning (or the trial ends) and the customer is asked for another card.
                workflow.logger.warning("payment method declined at attach; continuing without")
        if s.plan is None:
            raise ApplicationError(
                "a plan is needed", type=Failure.INVALID_REQUEST, non_retryable=True
            )
        plan = s.plan
        sub = await calls.stripe(
            StripeActivities.create_subscription,
            CreateSubscription(
                customer_id=customer.id,
                user_id=s.user_id,
                plan=plan,
                interval=s.interval,
                trial_days=self.start.trial_days,
                payment_method_id=s.default_payment_method,
                idempotency_key=self._next_idempotency_key("subscription"),
            ),
            f"create the {plan.value}/{s.interval.value} subscription",
        )
        self._apply(sub)
        if sub.status == "trialing":
            return
        first = sub.latest_invoice
        if first and (first.status == "paid" or not self.decline_aware):
            await self._on_invoice(first, resync=False)  # answered with the create
        elif first:
            # A failed first payment: why (its PaymentIntent) is one expand deeper than Stripe
            # allows on a create, so the invoice is read again.
            await self._check_invoice(first.id)
        elif sub.latest_invoice_id:
            await self._check_invoice(sub.latest_invoice_id)

    async def _attach(self, payment_method_id: str) -> PaymentMethodInfo:
        s = self.state
        info = await calls.stripe(
            StripeActivities.attach_payment_method,
            AttachPaymentMethod(
                customer_id=s.customer_id or "",
                payment_method_id=payment_method_id,
                idempotency_key=self._next_idempotency_key(f"attach-{payment_method_id}"),
            ),
            f"attach payment method {payment_method_id}",
        )
        await self._make_default(info.id)
        self._know_card(info)
        return info

    async def _make_default(self, payment_method_id: str) -> None:
        s = self.state
        await calls.stripe(
            StripeActivities.set_default_payment_method,
            SetDefaultPaymentMethod(
                customer_id=s.customer_id or "",
                payment_method_id=payment_method_id,
                subscription_id=s.subscription_id,
                idempotency_key=self._next_idempotency_key(f"default-{payment_method_id}"),
            ),
            f"make {payment_method_id} the default payment method",
        )
        s.default_payment_method = payment_method_id

    async def _adopt(self, customer_id: str | None) -> None:
        """Take over what Stripe has for the customer (a subscription made in the dashboard),
        or end quietly (a late event): a canceled subscription is never resurrected."""
        found = await self._find(customer_id) if customer_id else None
        if found is None or found.subscription is None:
            workflow.logger.info("nothing live in Stripe for %s: nothing to adopt", customer_id)
            self.state.status = Status.CANCELED
            self.ended_view = self.start.previous
            return
        await self._take_over(found)

    async def _find(self, customer_id: str) -> FoundSubscription | None:
        """The customer's live subscription in Stripe; None for a customer Stripe does not
        have (another account, a deleted test clock) or that belongs to another user."""
        try:
            found = await calls.stripe_read(
                StripeActivities.find_subscription,
                customer_id,
                f"look up customer {customer_id} and its live subscription",
            )
        except calls.CALL_FAILED as err:
            workflow.logger.warning("customer %s not found: %s", customer_id, err)
            return None
        if found.customer.user_id not in ("", self.state.user_id):
            workflow.logger.warning(
                "customer %s belongs to user %r, not this one", customer_id, found.customer.user_id
            )
            return None
        return found

    async def _take_over(self, found: FoundSubscription) -> None:
        """Follow a live subscription made elsewhere: mapping, read model and the ledger of
        what Stripe was already paid (no receipts: those payments are not news)."""
        assert found.subscription is not None
        s = self.state
        s.customer_id = found.customer.id
        s.email = s.email or found.customer.email or ""
        self.outbox.customer()
        self._apply(found.subscription)
        for inv in found.paid_invoices:
            if inv.amount_paid > 0:
                self.outbox.payment(inv, PaymentKind.SUCCEEDED, inv.amount_paid, at=inv.created)
            s.receipted_invoices = [*s.receipted_invoices, inv.id][-RECENT:]
        if found.subscription.latest_invoice_id and s.status != Status.TRIALING:
            await self._check_invoice(found.subscription.latest_invoice_id)

    def _next_idempotency_key(self, step: str) -> str:
        """An idempotency key from the workflow and the step: the same on every retry."""
        self.state.writes += 1
        info = workflow.info()
        return idempotency_key(
            info.workflow_id, info.first_execution_run_id, f"{self.state.writes}-{step}"
        )

    # --- the API: updates (each with its validator) and the query -------------------------

    @workflow.update
    async def subscription_ready(self) -> SubscriptionView:
        """Answers once the Stripe subscription exists (used with update-with-start)."""
        await workflow.wait_condition(lambda: self.created)
        if self.creation_error:
            raise self.creation_error
        return self._view()

    @subscription_ready.validator
    def _check_ready(self) -> None:
        # Only the request that started this run (or its retry, same update id) is answered;
        # any other create finds a live subscription: 409, never a second one.
        update = workflow.current_update_info()
        if self.start.request_id:
            if update is not None and update.id == self.start.request_id:
                return
        elif self.start.plan is not None and not self.start.adopt_customer_id:
            return
        if self.state.status == Status.CANCELED:  # a new order waits for this run to end
            raise ApplicationError(
                "the subscription is ending", type=Failure.SUBSCRIPTION_ENDING, non_retryable=True
            )
        raise _invalid("the user already has a live subscription")

    @workflow.update
    async def change_plan(self, req: ChangePlan) -> SubscriptionView:
        async with self.lock:
            self._check_change(req)
            s = self.state
            plan, interval = req.plan or s.plan or Plan.STARTER, req.interval or s.interval
            sub = await calls.stripe(
                StripeActivities.change_subscription,
                ChangeSubscription(
                    subscription_id=s.subscription_id or "",
                    plan=plan,
                    interval=interval,
                    proration_behavior=req.proration_behavior,
                    idempotency_key=self._next_idempotency_key(
                        f"change-{plan.value}-{interval.value}"
                    ),
                ),
                f"change plan to {plan.value}/{interval.value} ({req.proration_behavior.value})",
            )
            self._apply(sub)
            if sub.latest_invoice_id and req.proration_behavior.value == "always_invoice":
                await self._check_invoice(sub.latest_invoice_id)
            self.changed = True
        return self._view()

    @change_plan.validator
    def _check_change(self, req: ChangePlan) -> None:
        s = self.state
        if req.plan is None and req.interval is None:
            raise ApplicationError(
                "give a plan, an interval or both", type=Failure.INVALID_REQUEST, non_retryable=True
            )
        if s.status not in (Status.TRIALING, Status.ACTIVE):
            raise _invalid(f"cannot change the plan of a subscription that is {s.status.value}")
        if (req.plan or s.plan) is None:
            raise ApplicationError(
                "give the plan to change to", type=Failure.INVALID_REQUEST, non_retryable=True
            )
        if (req.plan or s.plan, req.interval or s.interval) == (s.plan, s.interval):
            raise _invalid(f"the subscription is already on {s.plan}/{s.interval.value}")

    @workflow.update
    async def cancel(self, req: Cancel) -> SubscriptionView:
        async with self.lock:
            self._check_cancel(req)
            s = self.state
            sub = await calls.stripe(
                StripeActivities.cancel_subscription,
                CancelSubscription(
                    subscription_id=s.subscription_id or "",
                    at_period_end=req.at_period_end,
                    idempotency_key=self._next_idempotency_key(
                        "cancel-at-period-end" if req.at_period_end else "cancel-now"
                    ),
                ),
                "cancel at period end" if req.at_period_end else "cancel now",
            )
            self._apply(sub)
            when = (
                f"Your subscription stays active until {day(s.current_period_end)} and then ends."
                if req.at_period_end and s.current_period_end
                else "Your subscription has ended today."
            )
            self.outbox.email(EmailKind.CANCELED, f"{s.writes}", {"when": when})
            self.changed = True
        return self._view()

    @cancel.validator
    def _check_cancel(self, req: Cancel) -> None:
        s = self.state
        if s.status == Status.CANCELED or not s.subscription_id:
            raise _invalid(f"there is no live subscription to cancel ({s.status.value})")
        if req.at_period_end and s.status == Status.INCOMPLETE:
            raise _invalid("an incomplete subscription can only be cancelled now")
        if req.at_period_end and s.cancel_at_period_end:
            raise _invalid("the subscription is already set to cancel at the end of the period")

    @workflow.update
    async def resume(self) -> SubscriptionView:
        async with self.lock:
            self._check_resume()
            sub = await calls.stripe(
                StripeActivities.resume_subscription,
                ResumeSubscription(
                    subscription_id=self.state.subscription_id or "",
                    idempotency_key=self._next_idempotency_key("resume"),
                ),
                "undo the scheduled cancel",
            )
            self._apply(sub)
            self.changed = True
        return self._view()

    @resume.validator
    def _check_resume(self) -> None:
        s = self.state
        if s.status == Status.CANCELED or not s.cancel_at_period_end:
            raise _invalid("there is no scheduled cancel to undo")

    @workflow.update
    async def retry_payment_now(self) -> SubscriptionView:
        """Operators: retry the unpaid invoice now instead of at the scheduled time."""
        async with self.lock:
            self._check_retry()
            await self._retry_payment()
            self.changed = True
        return self._view()

    @retry_payment_now.validator
    def _check_retry(self) -> None:
        if self.state.status == Status.CANCELED or not self.state.dunning_invoice_id:
            raise _invalid("there is no failed payment to retry")

    @workflow.update
    async def set_payment_method(self, req: SetPaymentMethod) -> PaymentMethodInfo:
        """Attach a card and make it the default; in dunning, retry the payment with it now."""
        async with self.lock:
            self._check_live()
            info = await self._attach(req.payment_method_id)
            if self.state.dunning_invoice_id:
                await self._retry_payment()
            self.changed = True
        return info

    @set_payment_method.validator
    def _check_set_payment_method(self, req: SetPaymentMethod) -> None:
        self._check_live()

    @workflow.update
    async def remove_payment_method(self, req: RemovePaymentMethod) -> None:
        async with self.lock:
            self._check_remove(req)
            await calls.stripe(
                StripeActivities.detach_payment_method,
                DetachPaymentMethod(
                    payment_method_id=req.payment_method_id,
                    idempotency_key=self._next_idempotency_key(f"detach-{req.payment_method_id}"),
                ),
                f"detach payment method {req.payment_method_id}",
            )

    @remove_payment_method.validator
    def _check_remove(self, req: RemovePaymentMethod) -> None:
        s = self.state
        if req.payment_method_id == s.default_payment_method and s.status != Status.CANCELED:
            raise _invalid("this is the subscription's default payment method: set another first")

    def _check_live(self) -> None:
        if self.state.status == Status.CANCELED or not self.state.customer_id:
            raise _invalid("there is no live subscription")

    @workflow.query
    def view(self) -> SubscriptionView:
        return self.ended_view or self._view()

    def _view(self) -> SubscriptionView:
        s = self.state
        return SubscriptionView(
            user_id=s.user_id,
            status=s.status,
            plan=s.plan,
            interval=s.interval,
            trial_end=s.trial_end,
            current_period_end=s.current_period_end,
            cancel_at_period_end=s.cancel_at_period_end,
            failed_payment_attempts=s.failed_payment_attempts,
            next_payment_retry_at=s.next_retry_at,
            stripe_customer_id=s.customer_id,
            stripe_subscription_id=s.subscription_id,
            workflow_id=workflow.info().workflow_id,
            access=self._access(),
            last_payment_error=s.last_payment_error,
            action_required=s.action_required,
        )


def fold_next(pending: list[StripeEventRef]) -> tuple[StripeEventRef, list[StripeEventRef]]:
    """The next event to handle, with the later ones about the same object folded into it (one
    re-read answers them all: an event says "it changed", never how), and what is left."""
    ref, *rest = pending
    same = [other for other in rest if _about(other) == _about(ref)]
    if not same:
        return ref, rest
    reminder = [e for e in (ref, *same) if e.type == "customer.subscription.trial_will_end"]
    return (reminder[0] if reminder else ref), [e for e in rest if _about(e) != _about(ref)]


def _about(ref: StripeEventRef) -> tuple[str, str]:
    """What an event makes the workflow re-read: the invoice, subscription, customer or
    charge it names (a burst of `customer.updated` is one re-read of the customer)."""
    for kind in ("invoice.", "customer.subscription.", "customer.updated", "charge.refunded"):
        if ref.type.startswith(kind):
            return kind, ref.object_id
    return ref.type, ref.id  # nothing to re-read: never folded
