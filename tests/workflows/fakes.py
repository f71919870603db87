"""Fake activities under the real names: a tiny Stripe and a mailbox, recording every call."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.payloads import (
    ENDED_STATUSES,
    AttachPaymentMethod,
    CancelSubscription,
    Card,
    ChangeSubscription,
    ChargeRefunds,
    CreateSubscription,
    CustomerRef,
    DetachPaymentMethod,
    Email,
    EnsureCustomer,
    Failure,
    FoundSubscription,
    Interval,
    InvoiceState,
    PayInvoice,
    Payload,
    PaymentError,
    PaymentMethodInfo,
    Plan,
    Record,
    ResumeSubscription,
    SetDefaultPaymentMethod,
    SubscriptionState,
)

R = TypeVar("R", bound=Payload)


@dataclass(frozen=True)
class Call:
    """One activity call the fake Stripe answered: its name and its request (or id)."""

    name: str
    arg: Payload | str


@dataclass(frozen=True)
class Sent:
    """One email the fake mailbox sent, at the server's time of the activity."""

    at: datetime
    email: Email


def idempotent(method: Any) -> Any:
    """Like Stripe: a write retried with the same idempotency key gets the first answer."""

    @functools.wraps(method)
    async def replay(self: FakeStripe, req: Any) -> Any:
        key = req.idempotency_key
        if key not in self.replies:
            try:
                self.replies[key] = (await method(self, req), None)
            except ApplicationError as err:
                self.replies[key] = (None, err)
        result, error = self.replies[key]
        if error:
            raise error
        return result

    return replay


PRICES = {Plan.STARTER: 2_900, Plan.PRO: 9_900, Plan.ENTERPRISE: 49_900}


def now() -> datetime:
    """The (time-skipping) server's time at which this activity attempt was scheduled. A local
    activity's times are the worker's wall clock: see `FakeStripe.now`."""
    return activity.info().current_attempt_scheduled_time


def declined(error: PaymentError | None = None) -> ApplicationError:
    error = error or DECLINES["Fail"]
    return ApplicationError(
        error.message or "",
        {"code": error.code, "decline_code": error.decline_code},
        type=Failure.CARD_DECLINED,
        non_retryable=True,
    )


# How a payment method whose id contains the key is declined (Stripe's words).
DECLINES = {
    "Fail": PaymentError(
        code="card_declined", decline_code="generic_decline", message="Your card was declined."
    ),
    "InsufficientFunds": PaymentError(
        code="card_declined",
        decline_code="insufficient_funds",
        message="Your card has insufficient funds.",
    ),
    "LostCard": PaymentError(
        code="card_declined", decline_code="lost_card", message="Your card has been declined."
    ),
    "authenticationRequired": PaymentError(
        code="authentication_required",
        decline_code="authentication_required",
        message="Your card was declined. This transaction requires authentication.",
    ),
}


def decline_of(payment_method: str | None) -> PaymentError | None:
    """How a charge to this payment method fails (None: it succeeds)."""
    if not payment_method:
        return PaymentError(message="This customer has no default payment method.")
    error = next((e for key, e in DECLINES.items() if key in payment_method), None)
    return error.model_copy(update={"payment_method": payment_method}) if error else None


@dataclass
class FakeStripe:
    """Enough of Stripe for the lifecycle: one customer, one subscription, its invoices.

    A payment method whose id contains a key of DECLINES declines every charge that way
    ("authenticationRequired": the bank wants 3-D Secure, see `authenticate`); one containing
    "Declined" cannot be attached. `expiry` gives a card's (month, year); `refunds` a charge's.
    """

    calls: list[Call] = field(default_factory=list)
    sub: dict[str, Any] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_pm: str | None = None
    fail_next_calls: int = 0
    # Stripe slower than the API's wait: create_subscription answers after this many seconds.
    slow_create_seconds: float = 0
    replies: dict[str, tuple[Any, ApplicationError | None]] = field(default_factory=dict)
    # The server's clock (`WorkflowEnvironment.get_current_time`): the Stripe calls are local
    # activities, whose info carries the wall clock, not the time-skipping server's time.
    clock: Callable[[], Awaitable[datetime]] | None = None
    expiry: dict[str, tuple[int, int]] = field(default_factory=dict)
    customer_gone: bool = False
    refunds: dict[str, ChargeRefunds] = field(default_factory=dict)

    async def now(self) -> datetime:
        if self.clock and activity.info().is_local:
            return await self.clock()
        return now()

    def names(self) -> list[str]:
        return [call.name for call in self.calls]

    def requests(self, kind: type[R]) -> list[R]:
        """The requests of that type Stripe was sent, in order."""
        return [call.arg for call in self.calls if isinstance(call.arg, kind)]

    def _record(self, name: str, arg: Payload | str) -> None:
        if self.fail_next_calls:  # Stripe is down: a retryable error, as a 5xx would be
            self.fail_next_calls -= 1
            raise RuntimeError("Stripe answered 500")
        self.calls.append(Call(name, arg))

    # --- test controls ----------------------------------------------------------------------

    def live_elsewhere(
        self,
        subscription_id: str,
        customer_id: str,
        period_end: datetime,
        plan: Plan = Plan.PRO,
        interval: Interval = Interval.MONTHLY,
    ) -> None:
        """A live subscription Stripe has that no workflow made (one from the dashboard)."""
        self.sub = {
            "id": subscription_id,
            "customer": customer_id,
            "plan": plan,
            "interval": interval,
            "status": "active",
            "cancel_at_period_end": False,
            "trial_end": None,
            "period_end": period_end,
        }

    def new_invoice(self, amount: int, charge: bool = True, created: datetime | None = None) -> str:
        ident = f"in_{len(self.invoices) + 1}"
        self.invoices[ident] = {
            "status": "open",
            "amount": amount,
            "attempts": 0,
            "created": created or now_or_epoch(),
        }
        self.sub["latest_invoice"] = ident
        if charge:
            self._charge(ident)
        return ident

    def renew(self, *, paid: bool, card: str = "pm_chargeCustomerFail") -> str:
        """Stripe renews the period and attempts the invoice with the default card (`card`
        when it is not to be paid)."""
        start = self.sub["period_end"]
        self.sub["period_end"] = start + timedelta(
            days=365 if self.sub["interval"] == Interval.YEARLY else 30
        )
        if not paid:
            self.default_pm = card
        ident = self.new_invoice(PRICES[self.sub["plan"]])
        if self.invoices[ident]["status"] != "paid":
            self.sub["status"] = "past_due"
        return ident

    def end_trial(self, *, paid: bool) -> str:
        self.sub["status"] = "active"
        self.sub["trial_end"] = self.sub["period_end"]
        return self.renew(paid=paid)

    def authenticate(self, ident: str) -> None:
        """The customer confirms the payment on Stripe's page: the invoice is paid."""
        self.invoices[ident].update(status="paid", error=None)
        if self.sub.get("status") in ("incomplete", "past_due"):
            self.sub["status"] = "active"

    def _charge(self, ident: str, card: str | None = None) -> bool:
        invoice = self.invoices[ident]
        invoice["attempts"] += 1
        invoice["error"] = decline_of(card or self.default_pm)
        ok = invoice["error"] is None
        if ok:
            invoice["status"] = "paid"
            if (
                self.sub.get("status") in ("incomplete", "past_due")
                and self.sub["latest_invoice"] == ident
            ):
                self.sub["status"] = "active"
        return ok

    def state(self) -> SubscriptionState:
        s = self.sub
        return SubscriptionState(
            id=s["id"],
            customer_id=s["customer"],
            status=s["status"],
            price_id=f"price_{s['plan']}_{s['interval']}",
            plan=s["plan"],
            interval=s["interval"],
            cancel_at_period_end=s["cancel_at_period_end"],
            current_period_end=s["period_end"],
            trial_end=s.get("trial_end"),
            default_payment_method=self.default_pm,
            latest_invoice_id=s.get("latest_invoice"),
            amount_minor=PRICES[s["plan"]] * (10 if s["interval"] == Interval.YEARLY else 1),
            started_at=s.get("started_at"),
        )

    def invoice(self, ident: str) -> InvoiceState:
        inv = self.invoices[ident]
        return InvoiceState(
            id=ident,
            customer_id=self.sub["customer"],
            subscription_id=self.sub["id"],
            status=inv["status"],
            amount_due=inv["amount"],
            amount_paid=inv["amount"] if inv["status"] == "paid" else 0,
            currency="usd",
            attempt_count=inv["attempts"],
            created=inv["created"],
            hosted_invoice_url=f"https://invoice.stripe.test/i/{ident}",
            last_payment_error=inv.get("error") if inv["status"] == "open" else None,
            requires_action=inv["status"] == "open"
            and "authenticationRequired" in str(self.default_pm),
        )

    # --- the activities -----------------------------------------------------------------------

    @activity.defn(name="stripe.ensure_customer")
    async def ensure_customer(self, req: EnsureCustomer) -> CustomerRef:
        self._record("ensure_customer", req)
        return CustomerRef(id=f"cus_{req.user_id}", user_id=req.user_id, email=req.email)

    @activity.defn(name="stripe.attach_payment_method")
    @idempotent
    async def attach_payment_method(self, req: AttachPaymentMethod) -> PaymentMethodInfo:
        self._record("attach_payment_method", req)
        if "Declined" in req.payment_method_id:
            raise declined()
        return self._payment_method(f"{req.payment_method_id}_attached")

    def _payment_method(self, ident: str) -> PaymentMethodInfo:
        month, year = self.expiry.get(ident.removesuffix("_attached"), (12, 2030))
        return PaymentMethodInfo(
            id=ident,
            type="card",
            card=Card(brand="visa", last4="4242", exp_month=month, exp_year=year),
        )

    @activity.defn(name="stripe.get_payment_method")
    async def get_payment_method(self, payment_method_id: str) -> PaymentMethodInfo:
        self._record("get_payment_method", payment_method_id)
        return self._payment_method(payment_method_id)

    @activity.defn(name="stripe.get_customer")
    async def get_customer(self, customer_id: str) -> CustomerRef:
        self._record("get_customer", customer_id)
        if self.customer_gone:  # as Stripe answers for a deleted customer
            raise ApplicationError(
                f"No such customer: '{customer_id}'",
                type=Failure.INVALID_REQUEST,
                non_retryable=True,
            )
        return CustomerRef(id=customer_id, user_id="", default_payment_method=self.default_pm)

    @activity.defn(name="stripe.get_charge_refunds")
    async def get_charge_refunds(self, charge_id: str) -> ChargeRefunds:
        self._record("get_charge_refunds", charge_id)
        if charge_id not in self.refunds:
            raise ApplicationError(
                f"No such charge: '{charge_id}'", type=Failure.INVALID_REQUEST, non_retryable=True
            )
        return self.refunds[charge_id]

    @activity.defn(name="stripe.detach_payment_method")
    @idempotent
    async def detach_payment_method(self, req: DetachPaymentMethod) -> PaymentMethodInfo:
        self._record("detach_payment_method", req)
        return PaymentMethodInfo(id=req.payment_method_id, type="card")

    @activity.defn(name="stripe.set_default_payment_method")
    @idempotent
    async def set_default_payment_method(self, req: SetDefaultPaymentMethod) -> None:
        self._record("set_default_payment_method", req)
        self.default_pm = req.payment_method_id

    @activity.defn(name="stripe.create_subscription")
    @idempotent
    async def create_subscription(self, req: CreateSubscription) -> SubscriptionState:
        self._record("create_subscription", req)
        await asyncio.sleep(self.slow_create_seconds)
        if self.sub:  # the idempotency key returns the first result
            return self.state()
        start = await self.now()
        trial = req.trial_days > 0
        self.sub = {
            "id": f"sub_{req.user_id}",
            "customer": req.customer_id,
            "plan": req.plan,
            "interval": req.interval,
            "status": "trialing" if trial else "incomplete",
            "cancel_at_period_end": False,
            "trial_end": start + timedelta(days=req.trial_days) if trial else None,
            "period_end": start
            + timedelta(
                days=req.trial_days if trial else 365 if req.interval == Interval.YEARLY else 30
            ),
            "started_at": start,
        }
        if not trial:
            invoice = self.new_invoice(PRICES[req.plan], created=start)
            if self.invoices[invoice]["status"] == "paid":
                self.sub["status"] = "active"
        return self.state()

    @activity.defn(name="stripe.change_subscription")
    @idempotent
    async def change_subscription(self, req: ChangeSubscription) -> SubscriptionState:
        self._record("change_subscription", req)
        self.sub.update(plan=req.plan, interval=req.interval)
        if req.proration_behavior.value == "always_invoice":
            self.new_invoice(PRICES[req.plan] - PRICES[Plan.STARTER])
        return self.state()

    @activity.defn(name="stripe.cancel_subscription")
    @idempotent
    async def cancel_subscription(self, req: CancelSubscription) -> SubscriptionState:
        self._record("cancel_subscription", req)
        if req.at_period_end:
            self.sub["cancel_at_period_end"] = True
        else:
            self.sub["status"] = "canceled"
        return self.state()

    @activity.defn(name="stripe.resume_subscription")
    @idempotent
    async def resume_subscription(self, req: ResumeSubscription) -> SubscriptionState:
        self._record("resume_subscription", req)
        self.sub["cancel_at_period_end"] = False
        return self.state()

    @activity.defn(name="stripe.get_subscription")
    async def get_subscription(self, subscription_id: str) -> SubscriptionState:
        self._record("get_subscription", subscription_id)
        return self.state()

    @activity.defn(name="stripe.find_subscription")
    async def find_subscription(self, customer_id: str) -> FoundSubscription:
        self._record("find_subscription", customer_id)
        live = self.sub.get("customer") == customer_id and self.sub["status"] not in ENDED_STATUSES
        return FoundSubscription(
            customer=CustomerRef(id=customer_id, user_id="", email="adopted@example.com"),
            subscription=self.state() if live else None,
        )

    @activity.defn(name="stripe.get_invoice")
    async def get_invoice(self, invoice_id: str) -> InvoiceState:
        self._record("get_invoice", invoice_id)
        if invoice_id not in self.invoices:  # as Stripe answers: 404 resource_missing
            raise ApplicationError(
                f"No such invoice: '{invoice_id}'", type=Failure.INVALID_REQUEST, non_retryable=True
            )
        return self.invoice(invoice_id)

    @activity.defn(name="stripe.pay_invoice")
    @idempotent
    async def pay_invoice(self, req: PayInvoice) -> InvoiceState:
        self._record("pay_invoice", req)
        if self.invoices[req.invoice_id]["status"] == "paid":
            raise ApplicationError(
                "Invoice is already paid", type=Failure.INVALID_REQUEST, non_retryable=True
            )
        if not self._charge(req.invoice_id, req.payment_method):
            raise declined(self.invoices[req.invoice_id]["error"])
        return self.invoice(req.invoice_id)

    def activities(self) -> list[Any]:
        return [
            self.ensure_customer,
            self.attach_payment_method,
            self.detach_payment_method,
            self.set_default_payment_method,
            self.create_subscription,
            self.change_subscription,
            self.cancel_subscription,
            self.resume_subscription,
            self.get_subscription,
            self.find_subscription,
            self.get_invoice,
            self.get_customer,
            self.get_payment_method,
            self.get_charge_refunds,
            self.pay_invoice,
        ]


def now_or_epoch() -> datetime:
    try:
        return now()
    except RuntimeError:  # called from the test, outside an activity
        return datetime.fromtimestamp(0).astimezone()


@dataclass
class FakeMailbox:
    """`notify.send_email`, deduplicated by idempotency key like the real one."""

    sent: list[Sent] = field(default_factory=list)

    @activity.defn(name="notify.send_email")
    async def send_email(self, email: Email) -> bool:
        if any(s.email.idempotency_key == email.idempotency_key for s in self.sent):
            return False
        self.sent.append(Sent(now(), email))
        return True

    def kinds(self) -> list[str]:
        return [s.email.kind.value for s in self.sent]


@dataclass
class FakeStore:
    """`store.*` under the real names, kept in memory."""

    records: list[Record] = field(default_factory=list)

    @activity.defn(name="store.record")
    async def record(self, record: Record) -> None:
        self.records.append(record)
