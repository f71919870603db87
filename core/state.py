"""The subscription workflow's state and input: pydantic models that go into history.

Loaded once per worker process (passed through Temporal's sandbox with the rest of `core`),
not once per workflow: building pydantic models is most of what a cached workflow costs.
Evolve only by adding fields with defaults; renaming one needs an alias.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import AliasChoices, BaseModel, Field, computed_field

from core.payloads import (
    ActionRequired,
    Email,
    Interval,
    PaymentError,
    Plan,
    Record,
    Status,
    StripeEventRef,
    SubscriptionView,
)
from core.policy import DunningPolicy


class BillingState(BaseModel):
    """Where the customer stands; carried across continue-as-new."""

    user_id: str
    email: str
    name: str | None = None
    plan: Plan | None
    interval: Interval
    status: Status = Status.INCOMPLETE
    customer_id: str | None = None
    subscription_id: str | None = None
    default_payment_method: str | None = None
    cancel_at_period_end: bool = False
    trial_end: datetime | None = None
    current_period_end: datetime | None = None
    amount_minor: int = 0
    currency: str = "usd"
    started_at: datetime | None = None
    canceled_at: datetime | None = None
    # Failed payment attempts in the current dunning (the view's `failed_payment_attempts`).
    # Called `failures` before: runs carrying the old name across continue-as-new keep it, and
    # the state is written under both names (`failures` below) so that a worker still on the
    # old code during a rolling deploy, or after a rollback, reads the count instead of 0.
    failed_payment_attempts: int = Field(
        default=0, validation_alias=AliasChoices("failed_payment_attempts", "failures")
    )
    dunning_invoice_id: str | None = None
    next_retry_at: datetime | None = None
    # Why the latest payment attempt of this dunning failed, and what the customer must do
    # (after a hard decline or a request to authenticate; the retry then waits for them).
    last_payment_error: PaymentError | None = None
    action_required: ActionRequired | None = None
    # The card a hard decline was for: a new default other than it is worth a retry.
    declined_payment_method: str | None = None
    # The failing invoice is the subscription's first: never paid, so no access yet.
    unpaid_from_start: bool = False
    # When the default card stops working (the first instant after its expiry month).
    card_expires_at: datetime | None = None
    card_expiry_known_for: str | None = None
    # Pre-dunning reminders sent: for the renewal at this period end; for this card and period.
    renewal_reminder_sent_for: datetime | None = None
    card_reminder_sent_for: str | None = None
    # Stripe's `cancellation_details.reason` words: payment_failed or cancellation_requested.
    cancellation_reason: str | None = None
    trial_reminder_sent_for: datetime | None = None
    next_sync_at: datetime | None = None
    counted_attempts: list[str] = Field(default_factory=list)
    receipted_invoices: list[str] = Field(default_factory=list)
    recent_event_ids: list[str] = Field(default_factory=list)
    pending_events: list[StripeEventRef] = Field(default_factory=list)
    # Emails waiting to go out; sent one by one in the background so a mail outage never
    # holds up a payment step or an API call.
    outbox: list[Email] = Field(default_factory=list)
    # Ledger and read-model writes waiting to go to the database, in order, likewise.
    records: list[Record] = Field(default_factory=list)
    writes: int = 0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def failures(self) -> int:
        """The old name of `failed_payment_attempts`, written for workers on the old code."""
        return self.failed_payment_attempts


class StartSubscription(BaseModel):
    """The workflow's one input: the order, the policy, and (after continue-as-new) the state."""

    user_id: str
    email: str = ""
    name: str | None = None
    plan: Plan | None = None
    interval: Interval = Interval.MONTHLY
    trial_days: int = Field(default=14, ge=0, le=730)
    payment_method_id: str | None = None
    # Started by a Stripe event for a customer with no running workflow: take over what Stripe
    # has (a subscription made in the dashboard), or end quietly (a late event).
    adopt_customer_id: str | None = None
    # The view of the customer's previous run, when a late event started this one: if Stripe
    # has nothing live to adopt, the run ends showing that view, as if it had never started.
    previous: SubscriptionView | None = None
    # The id of the API request that started the run (its `subscription_ready` update id):
    # a retry of that request gets its answer again, any other create is refused (409).
    request_id: str | None = None
    policy: DunningPolicy = Field(default_factory=DunningPolicy)
    signals_before_continue_as_new: int = 1_000
    state: BillingState | None = None
