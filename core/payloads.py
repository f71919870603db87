"""Wire payloads: what goes into Temporal history. Evolve only by adding fields with defaults."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict

# API.md: a user id is 1 to 64 characters of `A-Z a-z 0-9 _ . @ : -` (it names the workflow,
# `subscription-<user id>`). Use it whole (`re.fullmatch`, or pydantic's `pattern=`).
USER_ID_PATTERN = r"^[A-Za-z0-9_.@:-]{1,64}$"
_USER_ID = re.compile(USER_ID_PATTERN)


def is_user_id(value: object) -> bool:
    """True if `value` is a user id by API.md's rule."""
    return isinstance(value, str) and _USER_ID.fullmatch(value) is not None


class Plan(StrEnum):
    STARTER = "starter"
    PRO = "pro"
    ENTERPRISE = "enterprise"


class Interval(StrEnum):
    MONTHLY = "monthly"
    YEARLY = "yearly"


class ProrationBehavior(StrEnum):
    CREATE_PRORATIONS = "create_prorations"
    ALWAYS_INVOICE = "always_invoice"
    NONE = "none"


class Payload(BaseModel):
    model_config = ConfigDict(frozen=True)


class Idempotent(Payload):
    """A Stripe write; the key is derived by the caller from the workflow and the step."""

    idempotency_key: str


# --- inputs -----------------------------------------------------------------------------


class EnsureCustomer(Idempotent):
    user_id: str
    email: str
    name: str | None = None


class AttachPaymentMethod(Idempotent):
    customer_id: str
    payment_method_id: str


class DetachPaymentMethod(Idempotent):
    payment_method_id: str


class SetDefaultPaymentMethod(Idempotent):
    customer_id: str
    payment_method_id: str
    subscription_id: str | None = None


class CreateSubscription(Idempotent):
    customer_id: str
    user_id: str
    plan: Plan
    interval: Interval = Interval.MONTHLY
    trial_days: int = 0
    payment_method_id: str | None = None


class ChangeSubscription(Idempotent):
    subscription_id: str
    plan: Plan
    interval: Interval
    proration_behavior: ProrationBehavior = ProrationBehavior.CREATE_PRORATIONS


class CancelSubscription(Idempotent):
    subscription_id: str
    at_period_end: bool


class ResumeSubscription(Idempotent):
    subscription_id: str


class PayInvoice(Idempotent):
    invoice_id: str
    # The card to charge (None: Stripe's choice, the invoice's or the customer's default): the
    # workflow names the one it means, so a card it must not charge again never is.
    payment_method: str | None = None


class MeterEvent(Payload):
    event_name: str
    customer_id: str
    value: int
    timestamp: datetime
    # Stripe dedupes meter events on this; it doubles as the request's idempotency key.
    identifier: str


class ReportUsage(Payload):
    events: list[MeterEvent]


class DateRange(Payload):
    start: datetime
    end: datetime


# --- outputs ----------------------------------------------------------------------------


class CustomerRef(Payload):
    id: str
    user_id: str
    email: str | None = None
    # Its default payment method (`invoice_settings.default_payment_method`), when read.
    default_payment_method: str | None = None
    # Made by this call (so it has no subscription yet), not found.
    created: bool = False


class Card(Payload):
    brand: str
    last4: str
    exp_month: int
    exp_year: int


class PaymentMethodInfo(Payload):
    id: str
    type: str
    card: Card | None = None


class SubscriptionState(Payload):
    id: str
    customer_id: str
    status: str
    price_id: str
    plan: Plan | None = None
    interval: Interval | None = None
    cancel_at_period_end: bool = False
    current_period_start: datetime | None = None
    current_period_end: datetime | None = None
    trial_end: datetime | None = None
    canceled_at: datetime | None = None
    default_payment_method: str | None = None
    latest_invoice_id: str | None = None
    # The recurring price of its item, in minor units per interval.
    amount_minor: int = 0
    currency: str = "usd"
    started_at: datetime | None = None
    # Stripe's `cancellation_details.reason` once ended (payment_failed, cancellation_requested).
    cancellation_reason: str | None = None
    # The latest invoice itself, when Stripe answered with it (a create expands it).
    latest_invoice: InvoiceState | None = None


class PaymentError(Payload):
    """Why a payment attempt failed, in Stripe's words (a PaymentIntent's `last_payment_error`
    or a card error): `code` (card_declined, authentication_required, expired_card, ...), the
    issuer's `decline_code` (insufficient_funds, lost_card, ...), Stripe's `advice_code`
    (try_again_later, do_not_try_again, confirm_card_data) and the message."""

    code: str | None = None
    decline_code: str | None = None
    advice_code: str | None = None
    message: str | None = None
    # The payment method that was declined.
    payment_method: str | None = None
    # When the workflow learnt of it (the view's `last_payment_error.at`).
    at: datetime | None = None

    @property
    def reason(self) -> str | None:
        """The decline code, else the error code (`expired_card` has no decline code): what
        the read model and the search attribute name as the last decline."""
        return self.decline_code or self.code


class InvoiceState(Payload):
    id: str
    customer_id: str | None
    subscription_id: str | None
    status: str | None
    amount_due: int
    amount_paid: int
    currency: str
    attempt_count: int
    billing_reason: str | None = None
    created: datetime
    next_payment_attempt: datetime | None = None
    # Stripe's page where the customer can pay or authenticate the invoice.
    hosted_invoice_url: str | None = None
    # Why its latest payment attempt failed, if it did.
    last_payment_error: PaymentError | None = None
    # Its payment waits for the customer (3-D Secure): the PaymentIntent is `requires_action`.
    requires_action: bool = False


class ChargeInfo(Payload):
    id: str
    customer_id: str | None
    amount: int
    amount_refunded: int
    currency: str
    status: str
    created: datetime
    failure_code: str | None = None


class Refund(Payload):
    id: str
    amount: int
    created: datetime
    status: str


class ChargeRefunds(Payload):
    """A charge's refunds, oldest first, and the invoice the charge paid."""

    charge_id: str
    customer_id: str | None
    invoice_id: str | None
    currency: str
    refunds: list[Refund] = []


class UsageReported(Payload):
    sent: int


class FoundSubscription(Payload):
    customer: CustomerRef
    # The customer's newest subscription that has not ended, if any.
    subscription: SubscriptionState | None = None
    # Its invoices Stripe has already been paid (newest first), for the ledger on adoption.
    paid_invoices: list[InvoiceState] = []


# --- the subscription workflow ---------------------------------------------------------------


class Failure(StrEnum):
    """The types of the ApplicationErrors the activities and the workflow raise; the API maps
    each to its status code (api/errors.py)."""

    # The current state forbids the request (409).
    INVALID_STATE = "InvalidState"
    # Stripe or the workflow refused the request as given (422).
    INVALID_REQUEST = "InvalidRequest"
    # Stripe declined the card (402).
    CARD_DECLINED = "CardDeclined"
    # The same idempotency key with other parameters (409).
    IDEMPOTENCY_CONFLICT = "IdempotencyConflict"
    # An order sent to a run that is ending (canceled, last writes pending) (409).
    SUBSCRIPTION_ENDING = "SubscriptionEnding"
    # Stripe did not answer within the call's retries (502).
    STRIPE_UNAVAILABLE = "StripeUnavailable"


class Status(StrEnum):
    """Stripe's names for where a subscription stands."""

    INCOMPLETE = "incomplete"
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"


# Stripe statuses after which a subscription bills no more. Every other status is live:
# `unpaid` and `paused` still exist in Stripe and can bill again, so a second subscription
# next to one of them would be a duplicate.
ENDED_STATUSES = frozenset({"canceled", "incomplete_expired"})


def status_of(stripe_status: str) -> Status:
    """Stripe's status in the API's five: ended is `canceled`; `unpaid` and `paused`
    (live, collecting nothing) are `past_due`; an unknown future status too, never a crash."""
    if stripe_status in ENDED_STATUSES:
        return Status.CANCELED
    try:
        return Status(stripe_status)
    except ValueError:
        return Status.PAST_DUE


# The Stripe event types handed to a customer's workflow (every other signed event is
# recorded and answered `ignored`).
HANDLED_EVENT_TYPES = frozenset(
    {
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "customer.subscription.trial_will_end",
        "invoice.payment_succeeded",
        "invoice.paid",
        "invoice.payment_failed",
        "invoice.payment_action_required",
        # No invoice id: the workflow is handed the subscription's id instead.
        "invoice.upcoming",
        "charge.refunded",
        "customer.created",
        "customer.updated",
    }
)


class StripeEventRef(Payload):
    """What a webhook signal carries: enough to dedupe and to re-read, never the payload."""

    id: str
    type: str
    created: datetime
    object_id: str
    customer_id: str | None = None
    # The subscription the object is or belongs to (an invoice's), when the event names one.
    subscription_id: str | None = None


class Access(StrEnum):
    """What the SalesFlow app should grant, set by the dunning policy (Kill Bill's overdue
    states): everything, everything while a payment is late, the essentials, nothing."""

    FULL = "full"
    GRACE = "grace"
    RESTRICTED = "restricted"
    NONE = "none"


class ActionReason(StrEnum):
    # A hard decline: the card cannot be charged again; the customer must add another.
    NEW_PAYMENT_METHOD = "new_payment_method"
    # The bank asks the customer to authenticate the payment (3-D Secure).
    AUTHENTICATION_REQUIRED = "authentication_required"


class ActionRequired(Payload):
    """What the customer must do for the payment to go through, and where."""

    reason: ActionReason
    url: str


class ChangePlan(Payload):
    plan: Plan | None = None
    interval: Interval | None = None
    proration_behavior: ProrationBehavior = ProrationBehavior.CREATE_PRORATIONS


class Cancel(Payload):
    at_period_end: bool = True


class SetPaymentMethod(Payload):
    payment_method_id: str


class RemovePaymentMethod(Payload):
    payment_method_id: str


class SubscriptionView(Payload):
    """The subscription as the HTTP API shows it (API.md)."""

    user_id: str
    status: Status
    plan: Plan | None = None
    interval: Interval = Interval.MONTHLY
    trial_end: datetime | None = None
    current_period_end: datetime | None = None
    cancel_at_period_end: bool = False
    failed_payment_attempts: int = 0
    next_payment_retry_at: datetime | None = None
    stripe_customer_id: str | None = None
    stripe_subscription_id: str | None = None
    workflow_id: str
    access: Access = Access.FULL
    last_payment_error: PaymentError | None = None
    action_required: ActionRequired | None = None


class EmailKind(StrEnum):
    TRIAL_ENDING = "trial_ending"
    RECEIPT = "receipt"
    PAYMENT_FAILED = "payment_failed"
    # A hard decline: add another card (the link goes to the app's payment-method page).
    NEW_CARD_NEEDED = "new_card_needed"
    # The bank wants the customer to authenticate (the link goes to Stripe's invoice page).
    AUTHENTICATION_REQUIRED = "authentication_required"
    FINAL_NOTICE = "final_notice"
    CANCELED = "canceled"
    # Before dunning: a yearly renewal is coming; the default card expires before it.
    RENEWAL_REMINDER = "renewal_reminder"
    CARD_EXPIRING = "card_expiring"


class Email(Payload):
    kind: EmailKind
    to: str
    # The same key on every retry: a retried activity does not mail twice.
    idempotency_key: str
    context: dict[str, str] = {}


# --- the database (ledger and read model), written by activities ----------------------------


class CustomerEntry(Payload):
    user_id: str
    stripe_customer_id: str
    email: str | None = None


class SubscriptionSnapshot(Payload):
    stripe_subscription_id: str
    user_id: str
    status: str
    plan: str | None
    interval: str
    amount_minor: int
    currency: str
    current_period_end: datetime | None
    cancel_at_period_end: bool
    dunning_attempt: int
    started_at: datetime
    canceled_at: datetime | None = None
    access: Access = Access.FULL
    last_decline_code: str | None = None
    cancellation_reason: str | None = None


class PaymentKind(StrEnum):
    """What a ledger row records: an attempt that succeeded or failed, or a refund."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    REFUNDED = "refunded"


class LedgerEntry(Payload):
    invoice_id: str
    attempt: int
    kind: PaymentKind
    amount_minor: int
    currency: str
    user_id: str
    stripe_customer_id: str | None = None
    recovered: bool = False
    failure_code: str | None = None
    decline_code: str | None = None
    hosted_invoice_url: str | None = None
    occurred_at: datetime


class Record(Payload):
    """One write for the database, queued by the workflow and sent in order."""

    customer: CustomerEntry | None = None
    subscription: SubscriptionSnapshot | None = None
    payment: LedgerEntry | None = None


class UsageItem(Payload):
    id: int
    # Stable for the usage it names (derived from its idempotency key), unique across databases.
    identifier: str
    event_name: str
    stripe_customer_id: str
    quantity: int
    occurred_at: datetime


class UsageRun(Payload):
    batch_size: int = 100
    max_batches: int = 50


# --- reconciliation with Stripe ----------------------------------------------------------------


class DriftAction(StrEnum):
    """What reconciliation did about a subscription that differed."""

    # Live in Stripe, no running workflow followed it: a run was started to adopt it.
    ADOPTED = "adopted"
    # The workflow's view differed: it was told to re-read Stripe.
    RESYNCED = "resynced"
    # Stripe ended it and the workflow still ran: told to re-read, it ends.
    ENDED = "ended"
    # Reported only: no user for it, or the customer's workflow follows another subscription.
    UNMATCHED = "unmatched"


class Drift(Payload):
    """A customer whose workflow disagreed with Stripe: each field as [workflow, Stripe]."""

    user_id: str | None = None
    stripe_subscription_id: str
    action: DriftAction
    fields: dict[str, list[str | bool | None]] = {}


class ReconcileTotals(Payload):
    checked: int = 0
    adopted: int = 0
    resynced: int = 0
    ended: int = 0
    # Live subscriptions whose customer names no user (no metadata, no stored mapping).
    unmatched: int = 0
    # Customers table rows written for a customer Stripe has and the table did not.
    customers_repaired: int = 0
    # Read-model rows written where the workflow was in step but its row missing or stale.
    read_model_repaired: int = 0
    pages: int = 0

    def plus(self, other: ReconcileTotals) -> ReconcileTotals:
        return ReconcileTotals(
            **{
                name: getattr(self, name) + getattr(other, name)
                for name in ReconcileTotals.model_fields
            }
        )


class ReconcileRun(Payload):
    """The reconciliation workflow's input; after continue-as-new, where it was."""

    page_size: int = 100
    pages_per_run: int = 20
    # Per-subscription checks running at once within a page.
    concurrency: int = 8
    # The last subscription of the previous page (Stripe's `starting_after`).
    cursor: str | None = None
    started_at: datetime | None = None
    totals: ReconcileTotals = ReconcileTotals()
    drift: list[Drift] = []
    drift_not_listed: int = 0


class ReconcilePage(Payload):
    # Names the signals' event ids: the same on every retry of the page, new on each run.
    run_id: str
    cursor: str | None = None
    page_size: int = 100
    concurrency: int = 8


class ReconciledPage(Payload):
    totals: ReconcileTotals
    drift: list[Drift] = []
    # The last subscription of the page, and whether Stripe has more after it.
    last_id: str | None = None
    has_more: bool = False


class ReconcileReport(Payload):
    run_id: str
    started_at: datetime
    finished_at: datetime
    totals: ReconcileTotals
    drift: list[Drift] = []
    # Drift entries left out of `drift` (it keeps the first MAX_DRIFT_LISTED).
    drift_not_listed: int = 0
