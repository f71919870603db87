"""The HTTP contract (../shared/API.md): request and answer bodies, mapped to wire payloads."""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Annotated, Literal

import email_validator
from fastapi import Path
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    model_validator,
)
from temporalio.client import WorkflowExecutionStatus

from core.analytics import DeclineRecovery, Revenue
from core.db import Payment, SubscriptionRecord
from core.payloads import (
    USER_ID_PATTERN,
    Access,
    ActionReason,
    ActionRequired,
    Drift,
    DriftAction,
    Interval,
    PaymentError,
    PaymentKind,
    PaymentMethodInfo,
    Plan,
    ProrationBehavior,
    ReconcileReport,
    Status,
    SubscriptionView,
    status_of,
)
from core.settings import get_settings

PAYMENT_METHOD_ID_PATTERN = r"^pm_[A-Za-z0-9_]+$"
USER_ID_RULE = "1 to 64 characters of A-Z a-z 0-9 _ . @ : -"

UserId = Annotated[
    str,
    Path(pattern=USER_ID_PATTERN, max_length=64, description=f"The user id: {USER_ID_RULE}."),
]


def valid_email(value: str) -> str:
    """The normalized address; ValueError if it is not one.

    Syntax only, no DNS. email-validator's own options admit the `.test` domains (RFC 6761) that
    clients and tests use; other special-use names (`.invalid`, `.local`, `localhost`, `.onion`)
    and dotless domains stay refused: mail to them can never be delivered.
    """
    try:
        checked = email_validator.validate_email(
            value, check_deliverability=False, test_environment=True
        )
    except email_validator.EmailNotValidError as err:
        raise ValueError(f"value is not a valid email address: {err}") from None
    return checked.normalized


Email = Annotated[
    str,
    AfterValidator(valid_email),
    WithJsonSchema({"type": "string", "format": "email", "maxLength": 254}),
]


def _not_bool(value: object) -> object:
    if isinstance(value, bool):
        raise ValueError("Input should be a valid integer, not a boolean")
    return value


def _text(value: object) -> object:
    if not isinstance(value, str | datetime):
        raise ValueError("Input should be an ISO 8601 date-time string")
    return value


# What the document says, no more: pydantic's lax mode would also take `true` for 1 and a
# number for a Unix time.
Integer = Annotated[int, BeforeValidator(_not_bool)]
Timestamp = Annotated[datetime, BeforeValidator(_text)]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateSubscriptionRequest(Body):
    """`email` may be left out when acting for oneself (no `user_id`) with a token that carries
    an `email` claim."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"properties": {"user_id": {"type": "null"}}},
                {"required": ["email"], "properties": {"email": {"type": "string"}}},
            ]
        },
    )

    plan: Plan
    interval: Interval = Interval.MONTHLY
    trial_days: Integer = Field(default=14, ge=0, le=730)
    payment_method_id: str | None = Field(
        default=None, pattern=PAYMENT_METHOD_ID_PATTERN, max_length=255
    )
    email: Email | None = Field(
        default=None,
        description="Required with `user_id`, and otherwise unless the bearer token carries "
        "an `email` claim.",
    )
    name: str | None = Field(default=None, max_length=255)
    user_id: str | None = Field(
        default=None,
        pattern=USER_ID_PATTERN,
        max_length=64,
        description=f"Admins only: act for this user ({USER_ID_RULE}).",
    )


class ChangeSubscriptionRequest(Body):
    """A new plan, interval or both (at least one of them, not null)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": [field], "properties": {field: {"not": {"type": "null"}}}}
                for field in ("plan", "interval")
            ]
        },
    )

    plan: Plan | None = None
    interval: Interval | None = None
    proration_behavior: ProrationBehavior = ProrationBehavior.CREATE_PRORATIONS

    @model_validator(mode="after")
    def _changes_something(self) -> ChangeSubscriptionRequest:
        if self.plan is None and self.interval is None:
            raise ValueError("give a plan, an interval or both")
        return self


class PaymentMethodRequest(Body):
    payment_method_id: str = Field(pattern=PAYMENT_METHOD_ID_PATTERN, max_length=255)


class WorkflowStatus(StrEnum):
    """Whether the customer's workflow runs, or how it ended (Temporal's names, lower case)."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELED = "canceled"
    TERMINATED = "terminated"
    CONTINUED_AS_NEW = "continued_as_new"
    TIMED_OUT = "timed_out"

    @classmethod
    def of(cls, status: WorkflowExecutionStatus | None) -> WorkflowStatus:
        """Temporal's status; one this API does not name (None, or e.g. paused) is open."""
        if status is None:
            return cls.RUNNING
        try:
            return cls(status.name.lower())
        except ValueError:
            return cls.RUNNING


class PaymentErrorOut(BaseModel):
    """Why the latest payment attempt failed, in Stripe's words."""

    code: str | None = Field(
        description="Stripe's error code: `card_declined`, `authentication_required`, "
        "`expired_card`, ..."
    )
    decline_code: str | None = Field(
        description="The issuer's reason for a card decline: `insufficient_funds`, "
        "`lost_card`, `do_not_honor`, ..."
    )
    advice_code: str | None = Field(
        description="Stripe's advice on retrying: `try_again_later`, `do_not_try_again`, "
        "`confirm_card_data`"
    )
    message: str | None = Field(description="Stripe's message, fit to show the customer")
    payment_method: str | None = Field(
        description="The payment method that was declined (`pm_...`), when Stripe names it"
    )
    at: datetime | None = Field(description="When the failure was learnt of")

    @classmethod
    def of(cls, error: PaymentError) -> PaymentErrorOut:
        return cls(
            code=error.code,
            decline_code=error.decline_code,
            advice_code=error.advice_code,
            message=error.message,
            payment_method=error.payment_method,
            at=error.at,
        )


class ActionRequiredOut(BaseModel):
    """What the customer must do for the payment to go through, and where."""

    reason: ActionReason = Field(
        description="`new_payment_method`: a hard decline, the card cannot be charged again; "
        "`authentication_required`: the bank asks the customer to authenticate (3-D Secure)"
    )
    url: str = Field(
        description="Where to do it: the app's page to add a card, or Stripe's hosted invoice "
        "page to authenticate"
    )

    @classmethod
    def of(cls, action: ActionRequired) -> ActionRequiredOut:
        # Runs older than the setting carry no URL: the deployment's page.
        return cls(
            reason=action.reason, url=action.url or get_settings().app_update_payment_method_url
        )


ACCESS = (
    "What the SalesFlow app should grant: `full`; `grace` (a payment failed, features still "
    "on); `restricted` (later in dunning, per the policy); `none` (canceled or incomplete)."
)


class SubscriptionOut(BaseModel):
    """The subscription view. Times are ISO 8601 in UTC."""

    user_id: str
    status: Status
    plan: Plan | None
    interval: Interval
    trial_end: datetime | None
    current_period_end: datetime | None
    cancel_at_period_end: bool
    failed_payment_attempts: int
    next_payment_retry_at: datetime | None
    stripe_customer_id: str | None
    stripe_subscription_id: str | None
    workflow_id: str
    access: Access = Field(description=ACCESS)
    last_payment_error: PaymentErrorOut | None = Field(
        description="The latest failed payment attempt's error; null once a payment succeeds "
        "or when none failed"
    )
    action_required: ActionRequiredOut | None = Field(
        description="Set when the customer must act for the payment to go through (add a new "
        "card after a hard decline, or authenticate); null otherwise"
    )
    workflow_status: WorkflowStatus = Field(
        description="`running`, or how the customer's workflow ended: a stopped workflow is "
        "never reported as live."
    )

    @classmethod
    def of(
        cls, view: SubscriptionView, workflow_status: WorkflowStatus = WorkflowStatus.RUNNING
    ) -> SubscriptionOut:
        error, action = view.last_payment_error, view.action_required
        return cls(
            user_id=view.user_id,
            status=view.status,
            plan=view.plan,
            interval=view.interval,
            trial_end=view.trial_end,
            current_period_end=view.current_period_end,
            cancel_at_period_end=view.cancel_at_period_end,
            failed_payment_attempts=view.failed_payment_attempts,
            next_payment_retry_at=view.next_payment_retry_at,
            stripe_customer_id=view.stripe_customer_id,
            stripe_subscription_id=view.stripe_subscription_id,
            workflow_id=view.workflow_id,
            access=view.access,
            last_payment_error=PaymentErrorOut.of(error) if error else None,
            action_required=ActionRequiredOut.of(action) if action else None,
            workflow_status=workflow_status,
        )


def _in_utc(value: datetime) -> datetime:
    # SQLite hands back the stored UTC times without their zone.
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# A time read from the database, answered in UTC.
UtcTime = Annotated[datetime, AfterValidator(_in_utc)]

# A payment's `id`: opaque to clients, the ledger row's key to this service.
PAYMENT_ID_PREFIX = "pay_"
PAYMENT_ID_PATTERN = rf"^{PAYMENT_ID_PREFIX}[1-9][0-9]{{0,17}}$"


def payment_id(row_id: int) -> str:
    """The `id` a client sees for a ledger row."""
    return f"{PAYMENT_ID_PREFIX}{row_id}"


def payment_row(payment_id: str) -> int:
    """The ledger row an `id` (one matching PAYMENT_ID_PATTERN) names."""
    return int(payment_id.removeprefix(PAYMENT_ID_PREFIX))


class PaymentOut(BaseModel):
    """One row of the customer's payments ledger: a payment attempt of an invoice (succeeded or
    failed) or a refund of the charge that paid it."""

    id: str = Field(
        description="Opaque: pass it as `starting_after` for the rows after this one",
        pattern=PAYMENT_ID_PATTERN,
    )
    invoice_id: str
    attempt: int = Field(
        description="The invoice's payment attempt (1, 2, ...); for a refund, its ordinal among "
        "the refunds of the charge"
    )
    kind: PaymentKind
    amount_minor: int = Field(
        description="In the currency's minor units: the amount paid, due, or refunded"
    )
    currency: str
    recovered: bool = Field(description="A success that ended dunning (the invoice had failed)")
    failure_code: str | None = Field(
        description="A failure's Stripe error code (`card_declined`, `expired_card`, ...)"
    )
    decline_code: str | None = Field(
        description="A declined card's issuer reason (`insufficient_funds`, `lost_card`, ...)"
    )
    hosted_invoice_url: str | None = Field(
        description="Stripe's page where the customer can pay or authenticate the invoice"
    )
    occurred_at: UtcTime

    @classmethod
    def of(cls, row: Payment) -> PaymentOut:
        assert row.id is not None, "a row read from the database has its key"
        return cls(
            id=payment_id(row.id),
            invoice_id=row.invoice_id,
            attempt=row.attempt,
            kind=PaymentKind(row.kind),
            amount_minor=row.amount_minor,
            currency=row.currency,
            recovered=row.recovered,
            failure_code=row.failure_code,
            decline_code=row.decline_code,
            hosted_invoice_url=row.hosted_invoice_url,
            occurred_at=row.occurred_at,
        )


HAS_MORE = "Whether more rows follow: ask again with `starting_after` set to the last one's "


class PaymentsPage(BaseModel):
    data: list[PaymentOut] = Field(description="Newest first")
    has_more: bool = Field(description=HAS_MORE + "`id`")


class SubscriptionRecordOut(BaseModel):
    """A subscription as the read model holds it: the database the customers' workflows keep
    current, read without asking Temporal. It has the view's fields the read model knows; those
    only the workflow knows (`trial_end`, `next_payment_retry_at`, `last_payment_error`,
    `action_required`, `workflow_status`) are left out rather than guessed: read them with
    `GET /stripe/subscriptions/{user_id}`. A user who subscribed again after a cancellation has
    a record for each subscription. Times are ISO 8601 in UTC."""

    user_id: str
    status: Status
    plan: Plan | None
    interval: Interval
    current_period_end: UtcTime | None
    cancel_at_period_end: bool
    failed_payment_attempts: int = Field(description="Failed attempts in the current dunning")
    stripe_customer_id: str | None
    stripe_subscription_id: str = Field(
        description="Also this record's cursor: pass it as `starting_after` for the records "
        "after this one"
    )
    workflow_id: str
    access: Access = Field(description=ACCESS)
    last_decline_code: str | None = Field(
        description="The decline code of the latest failed payment of the current dunning"
    )
    cancellation_reason: str | None = Field(
        description="Stripe's words once canceled: `payment_failed` (dunning gave up) or "
        "`cancellation_requested`; null while live"
    )
    amount_minor: int = Field(description="The recurring price per interval, in minor units")
    currency: str
    started_at: UtcTime
    canceled_at: UtcTime | None
    updated_at: UtcTime = Field(description="When the workflow last wrote this record")

    @classmethod
    def of(
        cls, row: SubscriptionRecord, *, stripe_customer_id: str | None, workflow_id: str
    ) -> SubscriptionRecordOut:
        return cls(
            user_id=row.user_id,
            status=status_of(row.status),
            plan=Plan(row.plan) if row.plan else None,
            interval=Interval(row.interval),
            current_period_end=row.current_period_end,
            cancel_at_period_end=row.cancel_at_period_end,
            failed_payment_attempts=row.dunning_attempt,
            stripe_customer_id=stripe_customer_id,
            stripe_subscription_id=row.stripe_subscription_id,
            workflow_id=workflow_id,
            access=Access(row.access),
            last_decline_code=row.last_decline_code,
            cancellation_reason=row.cancellation_reason,
            amount_minor=row.amount_minor,
            currency=row.currency,
            started_at=row.started_at,
            canceled_at=row.canceled_at,
            updated_at=row.updated_at,
        )


class SubscriptionsPage(BaseModel):
    data: list[SubscriptionRecordOut] = Field(description="Newest first")
    has_more: bool = Field(description=HAS_MORE + "`stripe_subscription_id`")


class CardOut(BaseModel):
    brand: str
    last4: str
    exp_month: int
    exp_year: int


class PaymentMethodOut(BaseModel):
    id: str
    type: str
    card: CardOut | None

    @classmethod
    def of(cls, info: PaymentMethodInfo) -> PaymentMethodOut:
        return cls(
            id=info.id,
            type=info.type,
            card=CardOut(**info.card.model_dump()) if info.card else None,
        )


Outcome = Literal["processed", "duplicate", "ignored"]


class WebhookOut(BaseModel):
    status: Outcome
    event_type: str


class FieldError(BaseModel):
    """Where a request is invalid and why; never the offending input."""

    loc: list[str | int]
    msg: str


class Problem(BaseModel):
    """Every error answer: an RFC 9457 problem, served as `application/problem+json`."""

    type: str = Field(default="about:blank", description="A URI naming the kind of problem")
    title: str = Field(description="The HTTP status phrase")
    status: int
    detail: str = Field(description="What went wrong, for a human")
    errors: list[FieldError] | None = Field(default=None, description="Validation errors only")
    code: str | None = Field(default=None, description="A machine-readable reason, when one helps")


class UsageRequest(Body):
    metric: str = Field(max_length=100, description="A configured metric, e.g. leads_generated")
    # The ledger column is a 32-bit integer on PostgreSQL: a larger count is a 422, not a 500.
    quantity: Integer = Field(gt=0, le=2_147_483_647)
    timestamp: Timestamp | None = Field(
        default=None,
        description="When it happened (default now): within the past 35 days, not in the future",
    )
    idempotency_key: str | None = Field(default=None, max_length=200)


class UsageOut(BaseModel):
    status: Literal["accepted", "duplicate"]
    idempotency_key: str


RATE = "A share from 0 to 1, rounded to 4 places; 0 when there is nothing to divide by. "


class DeclineRecoveryOut(BaseModel):
    failed: int = Field(
        description="Invoices with a failed payment attempt in the range whose first failure in "
        "the range had this code"
    )
    recovered: int = Field(description="How many of them have been paid since")

    @classmethod
    def of(cls, figures: DeclineRecovery) -> DeclineRecoveryOut:
        return cls(failed=figures.failed, recovered=figures.recovered)


class RevenueOut(BaseModel):
    """Figures over the inclusive range [start, end] (UTC days), in one currency, computed over
    every record in the range. Payments are counted when they happened, refunds when they were
    made; subscriptions from the read model."""

    currency: str
    start: date
    end: date
    period_days: int
    total_revenue_minor: int = Field(
        description="Successful payments minus refunds made in the range, in minor units"
    )
    successful_payments: int
    failed_payments: int = Field(description="Failed payment attempts (each attempt counts)")
    refunded_payments: int = Field(description="Refunds (each refund of a charge counts)")
    success_rate: float = Field(description=RATE + "Successful over all payment attempts.")
    mrr_minor: int = Field(
        description="Monthly recurring revenue of the active subscriptions now (yearly / 12)"
    )
    active_subscriptions: int = Field(description="Active now")
    new_subscriptions: int = Field(description="Started in the range")
    canceled_subscriptions: int = Field(description="Canceled in the range")
    churn_rate: float = Field(
        description=RATE + "Subscriptions canceled in the range over those live at its start."
    )
    recovered_payments: int = Field(
        description="Invoices with a failed attempt in the range that have been paid since"
    )
    recovery_rate: float = Field(
        description=RATE + "Recovered over invoices with a failed attempt in the range."
    )
    first_attempt_failure_rate: float = Field(
        description=RATE + "Invoices whose first payment attempt (in the range) failed, over "
        "invoices whose first payment attempt was in the range."
    )
    involuntary_churn_rate: float = Field(
        description=RATE + "Subscriptions canceled in the range for non-payment (Stripe's "
        "`payment_failed`: dunning gave up) over those live at its start."
    )
    recovery_by_decline_code: dict[str, DeclineRecoveryOut] = Field(
        description="Per decline code (the issuer's, else Stripe's error code, else `unknown`) "
        "of each invoice's first failure in the range: its invoices, and those paid since. "
        "They add up to `recovered_payments` and its denominator."
    )

    @classmethod
    def of(cls, revenue: Revenue) -> RevenueOut:
        return cls(
            currency=revenue.currency,
            start=revenue.start,
            end=revenue.end,
            period_days=revenue.period_days,
            total_revenue_minor=revenue.total_revenue_minor,
            successful_payments=revenue.successful_payments,
            failed_payments=revenue.failed_payments,
            refunded_payments=revenue.refunded_payments,
            success_rate=revenue.success_rate,
            mrr_minor=revenue.mrr_minor,
            active_subscriptions=revenue.active_subscriptions,
            new_subscriptions=revenue.new_subscriptions,
            canceled_subscriptions=revenue.canceled_subscriptions,
            churn_rate=revenue.churn_rate,
            recovered_payments=revenue.recovered_payments,
            recovery_rate=revenue.recovery_rate,
            first_attempt_failure_rate=revenue.first_attempt_failure_rate,
            involuntary_churn_rate=revenue.involuntary_churn_rate,
            recovery_by_decline_code={
                code: DeclineRecoveryOut.of(figures)
                for code, figures in revenue.recovery_by_decline_code.items()
            },
        )


class ReconcileStartedOut(BaseModel):
    """A reconciliation asked for: the one started now, or the one already running."""

    workflow_id: str
    run_id: str | None = Field(description="Its first run's id (continue-as-new keeps it)")
    already_running: bool = Field(
        description="True when a reconciliation asked for earlier is still running: that one "
        "is answered, and no second one starts"
    )


class DriftOut(BaseModel):
    user_id: str | None = Field(description="The customer, when one could be found")
    stripe_subscription_id: str
    action: DriftAction = Field(
        description="adopted (live in Stripe, no workflow followed it), resynced (the workflow "
        "was told to re-read Stripe), ended (Stripe ended it, the workflow ends too), unmatched "
        "(reported only: no user for it, or the workflow follows another subscription)"
    )
    fields: dict[str, list[str | bool | None]] = Field(
        description="Each field that differed: [the workflow's value, Stripe's value]"
    )

    @classmethod
    def of(cls, drift: Drift) -> DriftOut:
        return cls(
            user_id=drift.user_id,
            stripe_subscription_id=drift.stripe_subscription_id,
            action=drift.action,
            fields=drift.fields,
        )


class ReconcileReportOut(BaseModel):
    """The latest finished reconciliation of Stripe with the workflows."""

    run_id: str
    started_at: datetime
    finished_at: datetime
    checked: int = Field(description="Stripe subscriptions compared, every status")
    adopted: int
    resynced: int
    ended: int
    unmatched: int
    customers_repaired: int = Field(description="Customers table rows written from Stripe")
    pages: int
    drift: list[DriftOut] = Field(description="What differed (the first 500)")
    drift_not_listed: int = Field(description="Drift beyond the first 500, counted only")

    @classmethod
    def of(cls, report: ReconcileReport) -> ReconcileReportOut:
        totals = report.totals
        return cls(
            run_id=report.run_id,
            started_at=report.started_at,
            finished_at=report.finished_at,
            checked=totals.checked,
            adopted=totals.adopted,
            resynced=totals.resynced,
            ended=totals.ended,
            unmatched=totals.unmatched,
            customers_repaired=totals.customers_repaired,
            pages=totals.pages,
            drift=[DriftOut.of(d) for d in report.drift],
            drift_not_listed=report.drift_not_listed,
        )
