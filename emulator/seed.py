"""Create SalesFlow's catalog (products, prices, usage meters) in a Stripe account.

It uses the official SDK, so it works against the emulator and against a real test-mode
account alike. Running it twice changes nothing: prices are found by their lookup keys.
"""

from __future__ import annotations

import stripe

from core.payloads import Interval, Plan

# Amounts in cents; yearly is ten months' price.
CATALOG: dict[Plan, tuple[str, int]] = {
    Plan.STARTER: ("SalesFlow Starter", 2_900),
    Plan.PRO: ("SalesFlow Pro", 9_900),
    Plan.ENTERPRISE: ("SalesFlow Enterprise", 49_900),
}
METERS = {"leads_generated": "Leads generated", "api_calls": "API calls"}


def lookup_key(plan: Plan, interval: Interval) -> str:
    return f"salesflow_{plan.value}_{interval.value}"


async def seed(client: stripe.StripeClient) -> dict[str, str]:
    """Ensure the catalog exists; answer the settings that point at it (env name -> value)."""
    v1 = client.v1
    keys = [lookup_key(plan, interval) for plan in Plan for interval in Interval]
    existing = await v1.prices.list_async({"lookup_keys": keys, "active": True, "limit": 100})
    found = {price.lookup_key: price.id for price in existing.data}
    env: dict[str, str] = {}
    for plan, (name, monthly) in CATALOG.items():
        product_id = f"salesflow_{plan.value}"
        try:
            await v1.products.retrieve_async(product_id)
        except stripe.InvalidRequestError:
            await v1.products.create_async({"id": product_id, "name": name})
        for interval in Interval:
            key = lookup_key(plan, interval)
            if key not in found:
                price = await v1.prices.create_async(
                    {
                        "product": product_id,
                        "currency": "usd",
                        "unit_amount": monthly * (10 if interval is Interval.YEARLY else 1),
                        "recurring": {
                            "interval": "year" if interval is Interval.YEARLY else "month"
                        },
                        "lookup_key": key,
                        "nickname": f"{name} ({interval.value})",
                    },
                    {"idempotency_key": f"seed-price-{key}"},
                )
                found[key] = price.id
            env[f"STRIPE_PRICE_{plan.value.upper()}_{interval.value.upper()}"] = found[key]
    meters = await v1.billing.meters.list_async({"status": "active", "limit": 100})
    have = {meter.event_name for meter in meters.data}
    for event_name, display in METERS.items():
        if event_name not in have:
            await v1.billing.meters.create_async(
                {
                    "display_name": display,
                    "event_name": event_name,
                    "default_aggregation": {"formula": "sum"},
                },
                {"idempotency_key": f"seed-meter-{event_name}"},
            )
    return env
