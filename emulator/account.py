"""The emulated Stripe account: every resource's mixin over the shared store."""

from __future__ import annotations

from emulator.resources.catalog import CatalogMixin
from emulator.resources.charges import ChargesMixin
from emulator.resources.customers import CustomersMixin
from emulator.resources.invoice_payments import InvoicePaymentsMixin
from emulator.resources.invoices import InvoicesMixin
from emulator.resources.meters import MetersMixin
from emulator.resources.payment_intents import PaymentIntentsMixin
from emulator.resources.payment_methods import PaymentMethodsMixin
from emulator.resources.refunds import RefundsMixin
from emulator.resources.subscription_items import SubscriptionItemsMixin
from emulator.resources.subscriptions import SubscriptionsMixin
from emulator.resources.test_clocks import TestClocksMixin
from emulator.resources.webhook_endpoints import WebhookEndpointsMixin
from emulator.store import Obj


class Account(
    CatalogMixin,
    CustomersMixin,
    PaymentMethodsMixin,
    SubscriptionsMixin,
    SubscriptionItemsMixin,
    InvoicesMixin,
    InvoicePaymentsMixin,
    PaymentIntentsMixin,
    ChargesMixin,
    RefundsMixin,
    TestClocksMixin,
    MetersMixin,
    WebhookEndpointsMixin,
):
    """One emulated Stripe account in test mode."""

    def includable(self, obj: Obj, field: str) -> Obj | None:
        """A list Stripe leaves out of `obj` unless asked with `expand[]=<field>`."""
        if obj.get("object") == "invoice" and field == "payments" and obj.get("id"):
            return self._included_payments(obj["id"])
        if obj.get("object") == "charge" and field == "refunds":
            return self._charge_refunds(obj["id"])
        return None
