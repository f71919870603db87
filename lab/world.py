"""The simulated world the real workflow runs against: Stripe, the mailbox, the database and the
customers, behind the real activity names.

Stripe is lazy: a subscription renews when the workflow reads it after its period end (the
workflow re-reads Stripe an hour after each period end), and that renewal's first attempt fails
with the mix's chance and a decline code drawn from it. Every draw comes from its own random
stream, named by the seed, the customer and the step, so a run's figures do not depend on the
order in which concurrent activities happen to run.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.payloads import (
    AttachPaymentMethod,
    CancelSubscription,
    Card,
    CreateSubscription,
    CustomerRef,
    Email,
    EmailKind,
    EnsureCustomer,
    Failure,
    FoundSubscription,
    Interval,
    InvoiceState,
    PayInvoice,
    PaymentError,
    PaymentMethodInfo,
    Plan,
    Record,
    SetDefaultPaymentMethod,
    SubscriptionState,
)
from lab.mix import CodeBehaviour, DeclineMix

PRICES = {Plan.STARTER: 2_900, Plan.PRO: 9_900, Plan.ENTERPRISE: 49_900}
PERIOD = timedelta(days=30)
# The emails that are part of dunning (counted per recovered invoice).
DUNNING_EMAILS = frozenset(
    {
        EmailKind.PAYMENT_FAILED,
        EmailKind.NEW_CARD_NEEDED,
        EmailKind.AUTHENTICATION_REQUIRED,
        EmailKind.FINAL_NOTICE,
    }
)


@dataclass
class Invoice:
    id: str
    user_id: str
    amount: int
    created: datetime
    code: str | None = None  # the decline code of its first failure
    attempts: int = 0
    status: str = "open"
    first_failed_at: datetime | None = None
    paid_at: datetime | None = None
    # How a failed invoice was recovered: retry, new_card or authenticated.
    recovered_by: str | None = None


@dataclass
class Customer:
    user_id: str
    plan: Plan
    period_end: datetime
    status: str = "active"
    card: str = ""
    # A card the customer added after a decline: it works.
    good_cards: set[str] = field(default_factory=set)
    latest_invoice: str | None = None
    canceled_at: datetime | None = None
    involuntary: bool = False


@dataclass
class Action:
    """Something a customer will do in answer to an email, when the harness gets to it."""

    at: datetime
    user_id: str
    kind: str  # new_card or authenticate
    invoice_id: str


@dataclass
class World:
    mix: DeclineMix
    seed: int
    clock: Callable[[], Awaitable[datetime]]
    customers: dict[str, Customer] = field(default_factory=dict)
    invoices: dict[str, Invoice] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)
    emails: dict[str, int] = field(default_factory=dict)
    # Per customer, the read model's access over time (from the workflow's own rows).
    access: dict[str, list[tuple[datetime, str]]] = field(default_factory=dict)
    # Set once `expected` subscriptions exist.
    expected: int = 0
    all_created: asyncio.Event = field(default_factory=asyncio.Event)

    def draw(self, *key: object) -> random.Random:
        """The random stream of one step (same seed and step, same draws)."""
        # A simulation's dice, not a secret: reproducible on purpose.
        return random.Random(":".join(str(part) for part in (self.seed, *key)))  # noqa: S311

    def behaviour(self, invoice: Invoice) -> CodeBehaviour:
        return self.mix.codes[invoice.code or ""]

    # --- Stripe ------------------------------------------------------------------------------

    @activity.defn(name="stripe.ensure_customer")
    async def ensure_customer(self, req: EnsureCustomer) -> CustomerRef:
        return CustomerRef(id=f"cus_{req.user_id}", user_id=req.user_id, created=True)

    @activity.defn(name="stripe.attach_payment_method")
    async def attach_payment_method(self, req: AttachPaymentMethod) -> PaymentMethodInfo:
        customer = self.customers.get(req.customer_id.removeprefix("cus_"))
        if customer and req.payment_method_id.startswith("pm_new"):
            customer.good_cards.add(req.payment_method_id)
        return _card(req.payment_method_id)

    @activity.defn(name="stripe.get_payment_method")
    async def get_payment_method(self, payment_method_id: str) -> PaymentMethodInfo:
        return _card(payment_method_id)

    @activity.defn(name="stripe.set_default_payment_method")
    async def set_default_payment_method(self, req: SetDefaultPaymentMethod) -> None:
        customer = self.customers.get(req.customer_id.removeprefix("cus_"))
        if customer:  # else it is set again on the subscription at its creation
            customer.card = req.payment_method_id

    @activity.defn(name="stripe.get_customer")
    async def get_customer(self, customer_id: str) -> CustomerRef:
        customer = self.customers[customer_id.removeprefix("cus_")]
        return CustomerRef(
            id=customer_id, user_id=customer.user_id, default_payment_method=customer.card
        )

    @activity.defn(name="stripe.create_subscription")
    async def create_subscription(self, req: CreateSubscription) -> SubscriptionState:
        now = await self.clock()
        customer = self.customers.setdefault(
            req.user_id,
            Customer(req.user_id, req.plan, now + PERIOD, card=req.payment_method_id or ""),
        )
        if len(self.customers) >= self.expected:
            self.all_created.set()
        # The first invoice is paid: the population starts as paying customers.
        invoice = self._invoice(customer, now)
        invoice.status, invoice.paid_at, invoice.attempts = "paid", now, 1
        return self._state(customer, latest=self._invoice_state(invoice))

    @activity.defn(name="stripe.get_subscription")
    async def get_subscription(self, subscription_id: str) -> SubscriptionState:
        customer = self.customers[subscription_id.removeprefix("sub_")]
        now = await self.clock()
        open_invoice = self._open_invoice(customer)
        # Renew, unless an invoice is still being collected (then the next renewal waits: the
        # simulation keeps one dunning at a time per customer).
        while customer.status != "canceled" and now >= customer.period_end and not open_invoice:
            at = customer.period_end
            customer.period_end += PERIOD
            invoice = self._invoice(customer, at)
            invoice.attempts = 1
            draw = self.draw(customer.user_id, invoice.id, "first")
            if draw.random() < self.mix.first_attempt_failure_rate:
                codes = list(self.mix.codes)
                invoice.code = draw.choices(codes, [self.mix.codes[c].share for c in codes])[0]
                invoice.first_failed_at = at
                customer.status = "past_due"
                open_invoice = invoice
            else:
                invoice.status, invoice.paid_at = "paid", at
        return self._state(customer)

    @activity.defn(name="stripe.get_invoice")
    async def get_invoice(self, invoice_id: str) -> InvoiceState:
        invoice = self.invoices[invoice_id]
        return self._invoice_state(invoice)

    @activity.defn(name="stripe.pay_invoice")
    async def pay_invoice(self, req: PayInvoice) -> InvoiceState:
        invoice = self.invoices[req.invoice_id]
        customer = self.customers[invoice.user_id]
        if invoice.status != "open":
            raise ApplicationError(
                "Invoice is already paid", type=Failure.INVALID_REQUEST, non_retryable=True
            )
        now = await self.clock()
        invoice.attempts += 1
        assert invoice.first_failed_at is not None
        days = (now - invoice.first_failed_at) / timedelta(days=1)
        new_card = customer.card in customer.good_cards
        odds = self.behaviour(invoice).retry_succeeds(days)
        if new_card or self.draw(invoice.id, "retry", invoice.attempts).random() < odds:
            self._paid(invoice, customer, now, "new_card" if new_card else "retry")
            return self._invoice_state(invoice)
        error = self._error(invoice)
        raise ApplicationError(
            error.message or "",
            {"code": error.code, "decline_code": error.decline_code},
            type=Failure.CARD_DECLINED,
            non_retryable=True,
        )

    @activity.defn(name="stripe.cancel_subscription")
    async def cancel_subscription(self, req: CancelSubscription) -> SubscriptionState:
        customer = self.customers[req.subscription_id.removeprefix("sub_")]
        if customer.status != "canceled":
            customer.status = "canceled"
            customer.canceled_at = await self.clock()
            customer.involuntary = self._open_invoice(customer) is not None
        return self._state(customer)

    @activity.defn(name="stripe.find_subscription")
    async def find_subscription(self, customer_id: str) -> FoundSubscription:
        return FoundSubscription(customer=CustomerRef(id=customer_id, user_id=""))

    # --- the mailbox and the database --------------------------------------------------------

    @activity.defn(name="notify.send_email")
    async def send_email(self, email: Email) -> bool:
        """Count it; a dunning email may move the customer to act (the harness carries it out)."""
        user_id = email.idempotency_key.split("/", 1)[0].removeprefix("subscription-")
        self.emails[email.kind] = self.emails.get(email.kind, 0) + 1
        invoice_id = email.context.get("invoice_id", "")
        invoice = self.invoices.get(invoice_id)
        if email.kind not in DUNNING_EMAILS or email.kind == EmailKind.FINAL_NOTICE or not invoice:
            return True
        behaviour = self.behaviour(invoice)
        # Keyed by what the email is about, not by its idempotency key (which holds a run id).
        draw = self.draw(user_id, email.kind, invoice_id, email.context.get("attempt"))
        # How long the customer takes: exponential, `reaction_days` on average.
        at = await self.clock() + timedelta(days=draw.expovariate(1 / self.mix.reaction_days))
        asked = email.kind == EmailKind.AUTHENTICATION_REQUIRED
        if asked and draw.random() < behaviour.authenticate_per_reminder:
            self.actions.append(Action(at, user_id, "authenticate", invoice_id))
            return True
        if draw.random() < behaviour.new_card_per_reminder:
            self.actions.append(Action(at, user_id, "new_card", invoice_id))
        return True

    @activity.defn(name="store.record")
    async def record(self, record: Record) -> None:
        row = record.subscription
        if row:
            history = self.access.setdefault(row.user_id, [])
            if not history or history[-1][1] != row.access:
                history.append((await self.clock(), row.access))

    # --- what the harness calls ----------------------------------------------------------------

    def authenticate(self, action: Action) -> bool:
        """The customer confirms the payment on Stripe's page; False if nothing to pay."""
        invoice = self.invoices[action.invoice_id]
        if invoice.status != "open":
            return False
        self._paid(invoice, self.customers[invoice.user_id], action.at, "authenticated")
        return True

    def activities(self) -> list[Callable[..., Any]]:
        return [
            self.ensure_customer,
            self.attach_payment_method,
            self.get_payment_method,
            self.set_default_payment_method,
            self.get_customer,
            self.create_subscription,
            self.get_subscription,
            self.get_invoice,
            self.pay_invoice,
            self.cancel_subscription,
            self.find_subscription,
            self.send_email,
            self.record,
        ]

    # --- the books -----------------------------------------------------------------------------

    def _invoice(self, customer: Customer, at: datetime) -> Invoice:
        ident = f"in_{customer.user_id}_{at:%Y%m%d}"
        invoice = Invoice(ident, customer.user_id, PRICES[customer.plan], at)
        self.invoices[ident] = invoice
        customer.latest_invoice = ident
        return invoice

    def _open_invoice(self, customer: Customer) -> Invoice | None:
        latest = self.invoices.get(customer.latest_invoice or "")
        return latest if latest and latest.status == "open" else None

    def _paid(self, invoice: Invoice, customer: Customer, at: datetime, how: str) -> None:
        invoice.status, invoice.paid_at, invoice.recovered_by = "paid", at, how
        if customer.status == "past_due":
            customer.status = "active"

    def _error(self, invoice: Invoice) -> PaymentError:
        behaviour = self.behaviour(invoice)
        return PaymentError(
            code=behaviour.code, decline_code=invoice.code, message=behaviour.message
        )

    def _invoice_state(self, invoice: Invoice) -> InvoiceState:
        failing = invoice.status == "open" and invoice.code is not None
        return InvoiceState(
            id=invoice.id,
            customer_id=f"cus_{invoice.user_id}",
            subscription_id=f"sub_{invoice.user_id}",
            status=invoice.status,
            amount_due=invoice.amount,
            amount_paid=invoice.amount if invoice.status == "paid" else 0,
            currency="usd",
            attempt_count=invoice.attempts,
            created=invoice.created,
            hosted_invoice_url=f"https://invoice.stripe.test/i/{invoice.id}",
            last_payment_error=self._error(invoice) if failing else None,
            requires_action=failing and invoice.code == "authentication_required",
        )

    def _state(self, customer: Customer, latest: InvoiceState | None = None) -> SubscriptionState:
        return SubscriptionState(
            id=f"sub_{customer.user_id}",
            customer_id=f"cus_{customer.user_id}",
            status=customer.status,
            price_id=f"price_{customer.plan.value}",
            plan=customer.plan,
            interval=Interval.MONTHLY,
            current_period_end=customer.period_end,
            default_payment_method=customer.card or None,
            latest_invoice_id=customer.latest_invoice,
            amount_minor=PRICES[customer.plan],
            canceled_at=customer.canceled_at,
            cancellation_reason="payment_failed" if customer.involuntary else None,
            latest_invoice=latest,
        )


def _card(payment_method_id: str) -> PaymentMethodInfo:
    return PaymentMethodInfo(
        id=payment_method_id,
        type="card",
        card=Card(brand="visa", last4="4242", exp_month=12, exp_year=2099),
    )
