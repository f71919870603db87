"""Compact Stripe webhook payloads of our own, in the real shapes and types.

Each object is modelled on Stripe's example objects in github.com/stripe/openapi,
`openapi/fixtures3.json` (the `resources` map), keeping the fields that matter here:

- CURRENT: commit f6c2a48fbac2819d1feba8143d942ffc65e1c0d2 (2026-08-21); invoices carry the
  subscription and its metadata in `parent.subscription_details`, periods sit on the items.
- ACACIA: commit ffec61d1d5aa437b81ac4679c13ac2295616092e (2024-12-14, the 2024 acacia
  versions); invoices carry top-level `subscription` and `subscription_details.metadata`,
  subscriptions their own `current_period_*`.

The v2 thin event follows `EventNotification` and `Event` in the stripe SDK (16.1.0,
`stripe/v2/core/_event.py`) and Stripe's event-destination docs: id, type, an ISO 8601
`created`, `related_object`, no `data.object`.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

CURRENT = "2026-10-28.endive"
ACACIA = "2024-11-20.acacia"
VERSIONS = (CURRENT, ACACIA)


def envelope(
    type_: str, obj: dict[str, Any], api_version: str = CURRENT, event_id: str | None = None
) -> dict[str, Any]:
    """A v1 snapshot event (fixtures3.json `resources.event`)."""
    return {
        "id": event_id or f"evt_1Pgc76B7WZ01zg{uuid.uuid4().hex[:10]}",
        "object": "event",
        "api_version": api_version,
        "created": int(time.time()),
        "data": {"object": obj},
        "livemode": False,
        "pending_webhooks": 1,
        "request": {"id": None, "idempotency_key": None},
        "type": type_,
    }


def body(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def invoice(
    user_id: str | None,
    api_version: str = CURRENT,
    invoice_id: str | None = "in_1Pgc6tB7WZ01zgkWu9fdqL6I",
    subscription: str = "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw",
    customer: str = "cus_QXg1o8vcGmoR32",
) -> dict[str, Any]:
    """An invoice of a subscription; `invoice_id=None` is `invoice.upcoming`'s, which has none."""
    metadata = {} if user_id is None else {"user_id": user_id}
    inv: dict[str, Any] = {
        "object": "invoice",
        "amount_due": 1000,
        "amount_paid": 0,
        "attempt_count": 1,
        "attempted": True,
        "billing_reason": "subscription_cycle",
        "collection_method": "charge_automatically",
        "created": 1234567890,
        "currency": "usd",
        "customer": customer,
        "metadata": {},
        "status": "open",
        "status_transitions": {
            "finalized_at": 1234567890,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        "total": 1000,
    }
    if invoice_id is not None:
        inv["id"] = invoice_id
    if api_version == ACACIA:
        inv |= {
            "charge": "ch_3Pgc6tB7WZ01zgkW0xLbGHmR",
            "paid": False,
            "payment_intent": "pi_3Pgc6tB7WZ01zgkW0Z9TQ3Ur",
            "subscription": subscription,
            "subscription_details": {"metadata": metadata},
        }
    else:
        inv |= {
            "parent": {
                "quote_details": None,
                "subscription_details": {"metadata": metadata, "subscription": subscription},
                "type": "subscription_details",
            },
            # fixtures3.json still lists the removed top-level field, as null.
            "subscription": None,
        }
    return inv


def subscription(
    user_id: str | None,
    api_version: str = CURRENT,
    subscription_id: str = "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw",
    customer: str = "cus_QXg1o8vcGmoR32",
) -> dict[str, Any]:
    item: dict[str, Any] = {
        "id": "si_QXhVnC2h0Jczwc",
        "object": "subscription_item",
        "price": {
            "id": "price_1PgafmB7WZ01zgkW6dKueIc5",
            "object": "price",
            "currency": "usd",
            "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
            "unit_amount": 2000,
        },
        "quantity": 1,
        "subscription": subscription_id,
    }
    sub: dict[str, Any] = {
        "id": subscription_id,
        "object": "subscription",
        "cancel_at_period_end": False,
        "created": 1234567890,
        "currency": "usd",
        "customer": customer,
        "items": {
            "object": "list",
            "data": [item],
            "has_more": False,
            "url": "/v1/subscription_items",
        },
        "latest_invoice": "in_1Pgc6tB7WZ01zgkWu9fdqL6I",
        "metadata": {} if user_id is None else {"user_id": user_id},
        "status": "active",
    }
    if api_version == ACACIA:
        sub |= {"current_period_end": 1234567890, "current_period_start": 1234567890}
    else:
        item |= {"current_period_end": 1234567890, "current_period_start": 1234567890}
    return sub


def customer(user_id: str | None, customer_id: str = "cus_QXg1o8vcGmoR32") -> dict[str, Any]:
    return {
        "id": customer_id,
        "object": "customer",
        "balance": 0,
        "created": 1234567890,
        "currency": "usd",
        "email": None,
        "invoice_settings": {"custom_fields": None, "default_payment_method": None},
        "livemode": False,
        "metadata": {} if user_id is None else {"user_id": user_id},
    }


def objects_without_id(api_version: str = CURRENT) -> list[tuple[str, dict[str, Any]]]:
    """Event types whose `data.object` has no `id`, with such an object."""
    return [
        ("invoice.upcoming", invoice("upcoming-user", api_version, invoice_id=None)),
        (
            "balance.available",
            {
                "object": "balance",
                "available": [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}],
                "connect_reserved": [{"amount": 0, "currency": "usd"}],
                "livemode": False,
                "pending": [{"amount": 0, "currency": "usd", "source_types": {"card": 0}}],
            },
        ),
        (
            "cash_balance.funds_available",
            {
                "object": "cash_balance",
                "available": {"eur": 10000},
                "customer": "cus_QXg1o8vcGmoR32",
                "livemode": False,
                "settings": {"reconciliation_mode": "automatic", "using_merchant_default": True},
            },
        ),
        (
            "entitlements.active_entitlement_summary.updated",
            {
                "object": "entitlements.active_entitlement_summary",
                "customer": "cus_QXg1o8vcGmoR32",
                "entitlements": {"object": "list", "data": [], "has_more": False, "url": "url"},
                "livemode": True,
            },
        ),
        (
            "billing.alert.triggered",
            {
                "object": "billing.alert_triggered",
                "alert": {
                    "id": "alrt_1Pgc6rB7WZ01zgkW",
                    "object": "billing.alert",
                    "alert_type": "usage_threshold",
                    "status": "active",
                    "title": "title",
                },
                "created": 1028554472,
                "customer": "cus_QXg1o8vcGmoR32",
                "livemode": True,
                "value": 111972721,
            },
        ),
        (
            "tax.settings.updated",
            {
                "object": "tax.settings",
                "defaults": {"tax_behavior": None, "tax_code": "txcd_10000000"},
                "head_office": {"address": {"country": "US", "state": "CA"}},
                "livemode": False,
                "status": "active",
                "status_details": {"active": {}},
            },
        ),
    ]


def thin_event(event_id: str | None = None) -> dict[str, Any]:
    """A v2 thin event notification: a reference to what changed, no snapshot."""
    return {
        "id": event_id or f"evt_test_65R9Ijk8Z4Vjv0ciDJx{uuid.uuid4().hex[:12]}",
        "object": "v2.core.event",
        "type": "v1.billing.meter.error_report_triggered",
        "livemode": False,
        "created": "2026-11-24T10:15:04.246Z",
        "context": None,
        "reason": {"type": "request", "request": {"id": "req_v2Qg", "idempotency_key": "k-1"}},
        "related_object": {
            "id": "mtr_test_61R9Ijk8Z4Vjv0ciDJx",
            "type": "billing.meter",
            "url": "/v1/billing/meters/mtr_test_61R9Ijk8Z4Vjv0ciDJx",
        },
    }
