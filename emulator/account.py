"""The emulated Stripe account: every resource's mixin over the shared store."""

from __future__ import annotations

from emulator.resources.catalog import CatalogMixin
from emulator.resources.customers import CustomersMixin
from emulator.resources.invoices import InvoicesMixin
from emulator.resources.meters import MetersMixin
from emulator.resources.payment_methods import PaymentMethodsMixin
from emulator.resources.subscription_items import SubscriptionItemsMixin
from emulator.resources.subscriptions import SubscriptionsMixin
from emulator.resources.test_clocks import TestClocksMixin
from emulator.resources.webhook_endpoints import WebhookEndpointsMixin


class Account(
    CatalogMixin,
    CustomersMixin,
    PaymentMethodsMixin,
    SubscriptionsMixin,
    SubscriptionItemsMixin,
    InvoicesMixin,
    TestClocksMixin,
    MetersMixin,
    WebhookEndpointsMixin,
):
    """One emulated Stripe account in test mode."""
