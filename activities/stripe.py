"""How we talk to Stripe: one activity per API call, over the official SDK's async methods."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import stripe
from stripe import RequestOptions
from stripe.params import CustomerCreateParams, InvoicePayParams
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.payloads import (
    ENDED_STATUSES,
    AttachPaymentMethod,
    CancelSubscription,
    Card,
    ChangeSubscription,
    ChargeInfo,
    ChargeRefunds,
    CreateSubscription,
    CustomerRef,
    DateRange,
    DetachPaymentMethod,
    EnsureCustomer,
    Failure,
    FoundSubscription,
    InvoiceState,
    PayInvoice,
    PaymentError,
    PaymentMethodInfo,
    Refund,
    ReportUsage,
    ResumeSubscription,
    SetDefaultPaymentMethod,
    SubscriptionState,
    UsageReported,
)
from core.settings import Settings


@asynccontextmanager
async def stripe_client(settings: Settings) -> AsyncIterator[stripe.StripeClient]:
    """The one StripeClient of a process, pointed at Stripe or at the local emulator.

    It talks over the SDK's aiohttp transport: an eighth of the CPU of its httpx one per call
    (0.23 ms against 1.8 ms, 16 calls at a time on this machine), which was most of a worker's
    Stripe cost. The session opens on first use, in the running loop, and closes on exit.
    """
    http = stripe.AIOHTTPClient(timeout=settings.stripe_timeout_seconds)
    try:
        yield stripe.StripeClient(
            settings.stripe_api_key.get_secret_value(),
            base_addresses={
                "api": settings.stripe_api_base,
                "meter_events": settings.stripe_api_base,
            },
            max_network_retries=settings.stripe_max_network_retries,
            http_client=http,
        )
    finally:
        await http.close_async()


def _ts(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


def _id(value: Any) -> str | None:
    """An expandable field's id, whether or not it came back expanded."""
    if value is None or isinstance(value, str):
        return value
    return str(value.id)


@asynccontextmanager
async def _translated() -> AsyncIterator[None]:
    """Turn Stripe's business errors into typed, non-retryable failures.

    Declines and invalid requests will fail the same way on every retry, so they end the
    activity at once and the workflow decides (dunning, a 4xx to the caller). Rate limits,
    connection errors and 5xx are left as they are: Temporal's retry policy backs off.
    """
    try:
        yield
    except stripe.CardError as err:
        raise _business_error(Failure.CARD_DECLINED, err) from err
    except stripe.IdempotencyError as err:
        raise _business_error(Failure.IDEMPOTENCY_CONFLICT, err) from err
    except stripe.InvalidRequestError as err:
        raise _business_error(Failure.INVALID_REQUEST, err) from err


def _business_error(kind: Failure, err: stripe.StripeError) -> ApplicationError:
    error = err.error
    details = {
        "code": err.code,
        "decline_code": getattr(error, "decline_code", None) if error else None,
        "param": getattr(error, "param", None) if error else None,
        "http_status": err.http_status,
        "request_id": err.request_id,
    }
    return ApplicationError(err.user_message or str(err), details, type=kind, non_retryable=True)


# The customer's metadata key holding the idempotency key of the call that made it.
MADE_BY = "salesflow_made_by"


def _key(key: str) -> RequestOptions:
    return {"idempotency_key": key}


class StripeActivities:
    """Every Stripe call the lifecycle makes."""

    def __init__(self, client: stripe.StripeClient, settings: Settings) -> None:
        self._stripe = client.v1
        self._settings = settings

    # --- customers and payment methods -----------------------------------------------------

    @activity.defn(name="stripe.ensure_customer")
    async def ensure_customer(self, req: EnsureCustomer) -> CustomerRef:
        """Find the customer for a user by metadata.user_id, or create it."""
        async with _translated():
            # Customer.list cannot filter on metadata; search can. Search is eventually
            # consistent, so a just-created customer may be missed: the idempotency key
            # then returns that same customer instead of a second one.
            found = await self._stripe.customers.search_async(
                {"query": f"metadata['user_id']:'{_quote(req.user_id)}'", "limit": 1}
            )
            if found.data:
                customer = found.data[0]
                # Made by this very step, in an attempt whose answer was lost (a worker that
                # crashed before recording it): still "created", so nothing made since is
                # mistaken for a subscription from elsewhere.
                metadata = customer.metadata
                made_by = metadata[MADE_BY] if metadata and MADE_BY in metadata else None
                created = made_by == req.idempotency_key
            else:
                created = True
                params: CustomerCreateParams = {
                    "email": req.email,
                    "metadata": {"user_id": req.user_id, MADE_BY: req.idempotency_key},
                }
                if req.name:
                    params["name"] = req.name
                customer = await self._stripe.customers.create_async(
                    params, _key(req.idempotency_key)
                )
        return CustomerRef(
            id=customer.id, user_id=req.user_id, email=customer.email, created=created
        )

    @activity.defn(name="stripe.get_customer")
    async def get_customer(self, customer_id: str) -> CustomerRef:
        """Re-read a customer: its user and its default payment method."""
        async with _translated():
            customer = await self._stripe.customers.retrieve_async(customer_id)
        metadata = customer.metadata
        settings = customer.invoice_settings
        return CustomerRef(
            id=customer.id,
            user_id=metadata["user_id"] if metadata and "user_id" in metadata else "",
            email=customer.email,
            default_payment_method=_id(settings.default_payment_method) if settings else None,
        )

    @activity.defn(name="stripe.get_payment_method")
    async def get_payment_method(self, payment_method_id: str) -> PaymentMethodInfo:
        """Read a payment method (a card's brand, last 4 digits and expiry)."""
        async with _translated():
            pm = await self._stripe.payment_methods.retrieve_async(payment_method_id)
        return _payment_method(pm)

    @activity.defn(name="stripe.attach_payment_method")
    async def attach_payment_method(self, req: AttachPaymentMethod) -> PaymentMethodInfo:
        """Attach a payment method to the customer."""
        async with _translated():
            pm = await self._stripe.payment_methods.attach_async(
                req.payment_method_id, {"customer": req.customer_id}, _key(req.idempotency_key)
            )
        return _payment_method(pm)

    @activity.defn(name="stripe.detach_payment_method")
    async def detach_payment_method(self, req: DetachPaymentMethod) -> PaymentMethodInfo:
        """Detach a payment method from its customer."""
        async with _translated():
            pm = await self._stripe.payment_methods.detach_async(
                req.payment_method_id, None, _key(req.idempotency_key)
            )
        return _payment_method(pm)

    @activity.defn(name="stripe.set_default_payment_method")
    async def set_default_payment_method(self, req: SetDefaultPaymentMethod) -> None:
        """Make a payment method the customer's (and the subscription's) default."""
        async with _translated():
            await self._stripe.customers.update_async(
                req.customer_id,
                {"invoice_settings": {"default_payment_method": req.payment_method_id}},
                _key(f"{req.idempotency_key}:customer"),
            )
            if req.subscription_id:
                await self._stripe.subscriptions.update_async(
                    req.subscription_id,
                    {"default_payment_method": req.payment_method_id},
                    _key(f"{req.idempotency_key}:subscription"),
                )

    # --- subscriptions ---------------------------------------------------------------------

    @activity.defn(name="stripe.create_subscription")
    async def create_subscription(self, req: CreateSubscription) -> SubscriptionState:
        """Create the subscription on the plan's price, with an optional trial."""
        params: dict[str, Any] = {
            "customer": req.customer_id,
            "items": [{"price": self._settings.price_id(req.plan, req.interval)}],
            "metadata": {"user_id": req.user_id, "plan": req.plan, "interval": req.interval},
            # A first invoice that cannot be paid leaves the subscription `incomplete`
            # instead of failing the call: the workflow's dunning takes it from there.
            "payment_behavior": "allow_incomplete",
            "off_session": True,
            # The first invoice comes back with it: no second call to learn how it went.
            "expand": ["latest_invoice"],
        }
        if req.trial_days:
            params["trial_period_days"] = req.trial_days
        if req.payment_method_id:
            params["default_payment_method"] = req.payment_method_id
        async with _translated():
            sub = await self._stripe.subscriptions.create_async(
                params,  # type: ignore[arg-type]
                _key(req.idempotency_key),
            )
        return self._subscription(sub)

    @activity.defn(name="stripe.change_subscription")
    async def change_subscription(self, req: ChangeSubscription) -> SubscriptionState:
        """Move the subscription's one item to another plan or interval."""
        async with _translated():
            current = await self._stripe.subscriptions.retrieve_async(req.subscription_id)
            item = current["items"].data[0]
            sub = await self._stripe.subscriptions.update_async(
                req.subscription_id,
                {
                    "items": [
                        {"id": item.id, "price": self._settings.price_id(req.plan, req.interval)}
                    ],
                    "proration_behavior": req.proration_behavior.value,
                    "metadata": {"plan": req.plan, "interval": req.interval},
                },
                _key(req.idempotency_key),
            )
        return self._subscription(sub)

    @activity.defn(name="stripe.cancel_subscription")
    async def cancel_subscription(self, req: CancelSubscription) -> SubscriptionState:
        """Cancel now, or schedule the cancel for the end of the period."""
        async with _translated():
            if req.at_period_end:
                sub = await self._stripe.subscriptions.update_async(
                    req.subscription_id, {"cancel_at_period_end": True}, _key(req.idempotency_key)
                )
            else:
                # Stripe ignores idempotency keys on DELETE: a retry after a lost answer
                # would fail on the canceled subscription, so look before cancelling.
                sub = await self._stripe.subscriptions.retrieve_async(req.subscription_id)
                if sub.status not in ENDED_STATUSES:
                    sub = await self._stripe.subscriptions.cancel_async(
                        req.subscription_id, None, _key(req.idempotency_key)
                    )
        return self._subscription(sub)

    @activity.defn(name="stripe.resume_subscription")
    async def resume_subscription(self, req: ResumeSubscription) -> SubscriptionState:
        """Undo a cancel scheduled for the end of the period."""
        async with _translated():
            sub = await self._stripe.subscriptions.update_async(
                req.subscription_id, {"cancel_at_period_end": False}, _key(req.idempotency_key)
            )
        return self._subscription(sub)

    @activity.defn(name="stripe.get_subscription")
    async def get_subscription(self, subscription_id: str) -> SubscriptionState:
        """Re-read a subscription (webhooks arrive late and out of order)."""
        async with _translated():
            sub = await self._stripe.subscriptions.retrieve_async(subscription_id)
        return self._subscription(sub)

    @activity.defn(name="stripe.find_subscription")
    async def find_subscription(self, customer_id: str) -> FoundSubscription:
        """The customer, its newest live subscription and what Stripe was paid for it.

        Used before creating a subscription (never a second live one) and to adopt one made
        elsewhere (the dashboard); the paid invoices let the ledger catch up on adoption.
        """
        async with _translated():
            customer = await self._stripe.customers.retrieve_async(customer_id)
            subs = await self._stripe.subscriptions.list_async(
                {"customer": customer_id, "status": "all", "limit": 100}
            )
            # Newest first, every page: the first that has not ended is the live one.
            live = None
            async for sub in subs.auto_paging_iter():
                if sub.status not in ENDED_STATUSES:
                    live = sub
                    break
            paid: list[InvoiceState] = []
            if live:
                invoices = await self._stripe.invoices.list_async(
                    {"subscription": live.id, "status": "paid", "limit": 100}
                )
                paid = [_invoice(inv) async for inv in invoices.auto_paging_iter()]
        metadata = customer.metadata
        user_id = metadata["user_id"] if metadata and "user_id" in metadata else ""
        return FoundSubscription(
            customer=CustomerRef(id=customer.id, user_id=user_id, email=customer.email),
            subscription=self._subscription(live) if live else None,
            paid_invoices=paid,
        )

    # --- invoices ----------------------------------------------------------------------------

    @activity.defn(name="stripe.get_invoice")
    async def get_invoice(self, invoice_id: str) -> InvoiceState:
        """Re-read an invoice, with why its latest payment attempt failed (its PaymentIntent's
        `last_payment_error`, and whether the customer must authenticate)."""
        async with _translated():
            inv = await self._stripe.invoices.retrieve_async(
                invoice_id, {"expand": [INVOICE_PAYMENT_INTENTS]}
            )
        return _invoice(inv)

    @activity.defn(name="stripe.get_charge_refunds")
    async def get_charge_refunds(self, charge_id: str) -> ChargeRefunds:
        """A charge's refunds, oldest first, and the invoice it paid (through its PaymentIntent's
        invoice payment: current API versions keep no invoice on the charge)."""
        async with _translated():
            charge = await self._stripe.charges.retrieve_async(charge_id)
            page = await self._stripe.refunds.list_async({"charge": charge_id, "limit": 100})
            refunds = [
                Refund(
                    id=r.id,
                    amount=r.amount,
                    created=datetime.fromtimestamp(r.created, UTC),
                    status=r.status or "pending",
                )
                async for r in page.auto_paging_iter()
            ]
            invoice_id = None
            if intent := _id(charge.payment_intent):
                found = await self._stripe.invoice_payments.list_async(
                    {"payment": {"type": "payment_intent", "payment_intent": intent}, "limit": 1}
                )
                invoice_id = _id(found.data[0].invoice) if found.data else None
        return ChargeRefunds(
            charge_id=charge.id,
            customer_id=_id(charge.customer),
            invoice_id=invoice_id,
            currency=charge.currency,
            # Stripe lists the newest first (even within one second): oldest first here.
            refunds=refunds[::-1],
        )

    @activity.defn(name="stripe.pay_invoice")
    async def pay_invoice(self, req: PayInvoice) -> InvoiceState:
        """Attempt payment of an open invoice; a decline fails with `CardDeclined`."""
        async with _translated():
            params: InvoicePayParams = {"off_session": True}
            if req.payment_method:
                params["payment_method"] = req.payment_method
            inv = await self._stripe.invoices.pay_async(
                req.invoice_id, params, _key(req.idempotency_key)
            )
        return _invoice(inv)

    @activity.defn(name="stripe.list_paid_invoices")
    async def list_paid_invoices(self, req: DateRange) -> list[InvoiceState]:
        """Every paid invoice created in the range, all pages."""
        params: dict[str, Any] = {"status": "paid", "created": _created(req), "limit": 100}
        async with _translated():
            page = await self._stripe.invoices.list_async(params)  # type: ignore[arg-type]
            return [_invoice(inv) async for inv in page.auto_paging_iter()]

    @activity.defn(name="stripe.list_charges")
    async def list_charges(self, req: DateRange) -> list[ChargeInfo]:
        """Every charge created in the range (succeeded, failed, refunded), all pages."""
        params: dict[str, Any] = {"created": _created(req), "limit": 100}
        async with _translated():
            page = await self._stripe.charges.list_async(params)  # type: ignore[arg-type]
            return [
                ChargeInfo(
                    id=ch.id,
                    customer_id=_id(ch.customer),
                    amount=ch.amount,
                    amount_refunded=ch.amount_refunded,
                    currency=ch.currency,
                    status=ch.status,
                    created=datetime.fromtimestamp(ch.created, UTC),
                    failure_code=ch.failure_code,
                )
                async for ch in page.auto_paging_iter()
            ]

    # --- usage -------------------------------------------------------------------------------

    @activity.defn(name="stripe.report_usage")
    async def report_usage(self, req: ReportUsage) -> UsageReported:
        """Send usage as billing meter events; each identifier counts once at Stripe."""
        for event in req.events:
            activity.heartbeat(event.identifier)
            async with _translated():
                await self._stripe.billing.meter_events.create_async(
                    {
                        "event_name": event.event_name,
                        "identifier": event.identifier,
                        "timestamp": int(event.timestamp.timestamp()),
                        "payload": {
                            "stripe_customer_id": event.customer_id,
                            "value": str(event.value),
                        },
                    },
                    _key(f"meter-event:{event.identifier}"),
                )
        return UsageReported(sent=len(req.events))

    def _subscription(self, sub: stripe.Subscription) -> SubscriptionState:
        return subscription_state(sub, self._settings)


def subscription_state(sub: stripe.Subscription, settings: Settings) -> SubscriptionState:
    """A Stripe subscription as the workflows read it (plan and interval from its price)."""
    # Current API versions keep the period on the subscription's items.
    item = sub["items"].data[0]
    known = settings.plan_for_price(item.price.id)
    return SubscriptionState(
        id=sub.id,
        customer_id=_id(sub.customer) or "",
        status=sub.status,
        price_id=item.price.id,
        plan=known[0] if known else None,
        interval=known[1] if known else None,
        cancel_at_period_end=sub.cancel_at_period_end,
        current_period_start=_ts(item.current_period_start),
        current_period_end=_ts(item.current_period_end),
        trial_end=_ts(sub.trial_end),
        canceled_at=_ts(sub.canceled_at),
        default_payment_method=_id(sub.default_payment_method),
        latest_invoice_id=_id(sub.latest_invoice),
        amount_minor=(item.price.unit_amount or 0) * (item.quantity or 1),
        currency=sub.currency,
        started_at=_ts(sub.start_date),
        cancellation_reason=sub.cancellation_details.reason if sub.cancellation_details else None,
        latest_invoice=_invoice(sub.latest_invoice)
        if isinstance(sub.latest_invoice, stripe.Invoice)
        else None,
    )


def _payment_method(pm: stripe.PaymentMethod) -> PaymentMethodInfo:
    card = pm.card
    return PaymentMethodInfo(
        id=pm.id,
        type=pm.type,
        card=Card(
            brand=card.brand, last4=card.last4, exp_month=card.exp_month, exp_year=card.exp_year
        )
        if card
        else None,
    )


# Expanded on an invoice: its payments' PaymentIntents, which say why a payment failed.
INVOICE_PAYMENT_INTENTS = "payments.data.payment.payment_intent"


def _last_payment(inv: stripe.Invoice) -> tuple[PaymentError | None, bool]:
    """Why the invoice's latest payment attempt failed, and whether it waits for the customer
    to authenticate, from its default payment's PaymentIntent (when expanded)."""
    # Absent unless asked for: `payments` is an includable field (only the expand returns it).
    payments = inv.payments.data if "payments" in inv and inv.payments else []
    chosen = next((p for p in payments if p.is_default), payments[0] if payments else None)
    intent = chosen.payment.payment_intent if chosen else None
    if not isinstance(intent, stripe.PaymentIntent):
        return None, False
    err = intent.last_payment_error
    # Stripe leaves out what does not apply (an `expired_card` error has no decline code).
    error = (
        PaymentError(
            code=err.code if "code" in err else None,
            decline_code=err.decline_code if "decline_code" in err else None,
            advice_code=err.advice_code if "advice_code" in err else None,
            message=err.message if "message" in err else None,
            payment_method=err.payment_method.id
            if "payment_method" in err and err.payment_method
            else None,
        )
        if err
        else None
    )
    return error, intent.status == "requires_action"


def _invoice(inv: stripe.Invoice) -> InvoiceState:
    parent = inv.parent
    details = parent.subscription_details if parent else None
    error, requires_action = _last_payment(inv)
    return InvoiceState(
        id=inv.id or "",
        customer_id=_id(inv.customer),
        subscription_id=_id(details.subscription) if details else None,
        status=inv.status,
        amount_due=inv.amount_due,
        amount_paid=inv.amount_paid,
        currency=inv.currency,
        attempt_count=inv.attempt_count,
        billing_reason=inv.billing_reason,
        created=datetime.fromtimestamp(inv.created, UTC),
        next_payment_attempt=_ts(inv.next_payment_attempt),
        hosted_invoice_url=inv.hosted_invoice_url,
        last_payment_error=error if inv.status == "open" else None,
        requires_action=requires_action and inv.status == "open",
    )


def _created(req: DateRange) -> dict[str, int]:
    return {"gte": int(req.start.timestamp()), "lte": int(req.end.timestamp())}


def _quote(value: str) -> str:
    """Escape a value for Stripe's search query language."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
