"""Stripe's API routes the emulator serves: each a handler over the account, grouped by resource
(one page of Stripe's API reference each, as in emulator/resources/)."""

from __future__ import annotations

from collections.abc import Callable

from emulator.account import Account
from emulator.store import Obj, render

Handler = Callable[[Account, dict[str, str], Obj], Obj]

# Each handler takes the account, the path's parameters and the decoded request parameters.

# --- products and prices --------------------------------------------------------------------


def product_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.create_product(p)


def product_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.paginate("product", p)


def product_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("product", k["id"])


def price_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.create_price(p)


def price_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.list_prices(p)


def price_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("price", k["id"])


# --- customers -------------------------------------------------------------------------------


def customer_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.create_customer(p)


def customer_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.paginate(
        "customer",
        p,
        lambda o: (
            p.get("email") in (None, o["email"]) and p.get("test_clock") in (None, o["test_clock"])
        ),
    )


def customer_search(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.search_customers(p)


def customer_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("customer", k["id"])


def customer_update(a: Account, k: dict[str, str], p: Obj) -> Obj:
    return a.update_customer(k["id"], p)


# --- payment methods -------------------------------------------------------------------------


def customer_payment_method_list(a: Account, k: dict[str, str], p: Obj) -> Obj:
    return a.list_payment_methods({**p, "customer": a.get("customer", k["id"])["id"]})


def payment_method_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.list_payment_methods(p)


def payment_method_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.create_payment_method(p)


def payment_method_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.retrieve_payment_method(k["id"])


def payment_method_attach(a: Account, k: dict[str, str], p: Obj) -> Obj:
    return a.attach_payment_method(k["id"], p)


def payment_method_detach(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.detach_payment_method(k["id"])


# --- subscriptions ---------------------------------------------------------------------------


def subscription_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.create_subscription(p)


def subscription_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.paginate(
        "subscription",
        p,
        lambda o: (
            p.get("customer") in (None, o["customer"])
            and p.get("test_clock") in (None, o["test_clock"])
            and (
                o["status"] == p["status"]
                if p.get("status", "all") != "all"
                else "status" in p or o["status"] not in ("canceled", "incomplete_expired")
            )
        ),
    )


def subscription_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("subscription", k["id"])


def subscription_update(a: Account, k: dict[str, str], p: Obj) -> Obj:
    return a.update_subscription(k["id"], p)


def subscription_cancel(a: Account, k: dict[str, str], p: Obj) -> Obj:
    return a.cancel_subscription(k["id"], p)


# --- invoices and charges --------------------------------------------------------------------


def invoice_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.paginate(
        "invoice",
        p,
        lambda o: (
            p.get("customer") in (None, o["customer"])
            and p.get("status") in (None, o["status"])
            and p.get("subscription") in (None, o["parent"]["subscription_details"]["subscription"])
        ),
    )


def invoice_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("invoice", k["id"])


def invoice_pay(a: Account, k: dict[str, str], p: Obj) -> Obj:
    return a.pay_invoice(k["id"], p)


def charge_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.list_charges(p)


def charge_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("charge", k["id"])


def charge_list_refunds(a: Account, k: dict[str, str], p: Obj) -> Obj:
    page = a.list_refunds({**p, "charge": a.get("charge", k["id"])["id"]})
    page["url"] = f"/v1/charges/{k['id']}/refunds"
    return page


# --- payment intents and invoice payments ----------------------------------------------------


def payment_intent_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("payment_intent", k["id"])


def invoice_payment_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.list_invoice_payments(p)


def invoice_payment_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("invoice_payment", k["id"])


# --- refunds ---------------------------------------------------------------------------------


def refund_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.create_refund(p)


def refund_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.list_refunds(p)


def refund_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("refund", k["id"])


# --- events ----------------------------------------------------------------------------------


def event_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.paginate(
        "event",
        p,
        lambda o: (
            p.get("type") in (None, o["type"]) and (not p.get("types") or o["type"] in p["types"])
        ),
    )


def event_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("event", k["id"])


# --- test clocks -----------------------------------------------------------------------------


def test_clock_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.create_test_clock(p)


def test_clock_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.paginate("test_helpers.test_clock", p)


def test_clock_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("test_helpers.test_clock", k["id"])


def test_clock_advance(a: Account, k: dict[str, str], p: Obj) -> Obj:
    return a.advance_test_clock(k["id"], p)


def test_clock_delete(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return _delete(a, "test_helpers.test_clock", k["id"])


# --- billing meters --------------------------------------------------------------------------


def meter_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.create_meter(p)


def meter_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.paginate("billing.meter", p, lambda o: p.get("status") in (None, o["status"]))


def meter_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("billing.meter", k["id"])


def meter_list_event_summaries(a: Account, k: dict[str, str], p: Obj) -> Obj:
    return a.meter_event_summaries(k["id"], p)


def meter_event_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.create_meter_event(p)


# --- webhook endpoints -----------------------------------------------------------------------


def webhook_endpoint_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    endpoint = a.create_webhook_endpoint(p)
    return {**render(endpoint), "secret": endpoint["_secret"]}


def webhook_endpoint_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.paginate("webhook_endpoint", p)


def webhook_endpoint_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("webhook_endpoint", k["id"])


def webhook_endpoint_delete(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return _delete(a, "webhook_endpoint", k["id"])


def _delete(account: Account, kind: str, ident: str) -> Obj:
    account.get(kind, ident)["deleted"] = True
    return {"id": ident, "object": kind, "deleted": True}


# (method, path, parameter schema in stripe.params, handler)
ROUTES: list[tuple[str, str, str, Handler]] = [
    ("POST", "/v1/products", "product_create", product_create),
    ("GET", "/v1/products", "product_list", product_list),
    ("GET", "/v1/products/{id}", "product_retrieve", product_retrieve),
    ("POST", "/v1/prices", "price_create", price_create),
    ("GET", "/v1/prices", "price_list", price_list),
    ("GET", "/v1/prices/{id}", "price_retrieve", price_retrieve),
    ("POST", "/v1/customers", "customer_create", customer_create),
    ("GET", "/v1/customers", "customer_list", customer_list),
    ("GET", "/v1/customers/search", "customer_search", customer_search),
    ("GET", "/v1/customers/{id}", "customer_retrieve", customer_retrieve),
    ("POST", "/v1/customers/{id}", "customer_update", customer_update),
    (
        "GET",
        "/v1/customers/{id}/payment_methods",
        "customer_payment_method_list",
        customer_payment_method_list,
    ),
    ("POST", "/v1/payment_methods", "payment_method_create", payment_method_create),
    ("GET", "/v1/payment_methods", "payment_method_list", payment_method_list),
    ("GET", "/v1/payment_methods/{id}", "payment_method_retrieve", payment_method_retrieve),
    ("POST", "/v1/payment_methods/{id}/attach", "payment_method_attach", payment_method_attach),
    ("POST", "/v1/payment_methods/{id}/detach", "payment_method_detach", payment_method_detach),
    ("POST", "/v1/subscriptions", "subscription_create", subscription_create),
    ("GET", "/v1/subscriptions", "subscription_list", subscription_list),
    ("GET", "/v1/subscriptions/{id}", "subscription_retrieve", subscription_retrieve),
    ("POST", "/v1/subscriptions/{id}", "subscription_update", subscription_update),
    ("DELETE", "/v1/subscriptions/{id}", "subscription_cancel", subscription_cancel),
    ("GET", "/v1/invoices", "invoice_list", invoice_list),
    ("GET", "/v1/invoices/{id}", "invoice_retrieve", invoice_retrieve),
    ("POST", "/v1/invoices/{id}/pay", "invoice_pay", invoice_pay),
    ("GET", "/v1/charges", "charge_list", charge_list),
    ("GET", "/v1/charges/{id}", "charge_retrieve", charge_retrieve),
    ("GET", "/v1/charges/{id}/refunds", "charge_list_refunds", charge_list_refunds),
    ("GET", "/v1/payment_intents/{id}", "payment_intent_retrieve", payment_intent_retrieve),
    ("GET", "/v1/invoice_payments", "invoice_payment_list", invoice_payment_list),
    ("GET", "/v1/invoice_payments/{id}", "invoice_payment_retrieve", invoice_payment_retrieve),
    ("POST", "/v1/refunds", "refund_create", refund_create),
    ("GET", "/v1/refunds", "refund_list", refund_list),
    ("GET", "/v1/refunds/{id}", "refund_retrieve", refund_retrieve),
    ("GET", "/v1/events", "event_list", event_list),
    ("GET", "/v1/events/{id}", "event_retrieve", event_retrieve),
    ("POST", "/v1/test_helpers/test_clocks", "test_helpers.test_clock_create", test_clock_create),
    ("GET", "/v1/test_helpers/test_clocks", "test_helpers.test_clock_list", test_clock_list),
    (
        "GET",
        "/v1/test_helpers/test_clocks/{id}",
        "test_helpers.test_clock_retrieve",
        test_clock_retrieve,
    ),
    (
        "POST",
        "/v1/test_helpers/test_clocks/{id}/advance",
        "test_helpers.test_clock_advance",
        test_clock_advance,
    ),
    (
        "DELETE",
        "/v1/test_helpers/test_clocks/{id}",
        "test_helpers.test_clock_delete",
        test_clock_delete,
    ),
    ("POST", "/v1/billing/meters", "billing.meter_create", meter_create),
    ("GET", "/v1/billing/meters", "billing.meter_list", meter_list),
    ("GET", "/v1/billing/meters/{id}", "billing.meter_retrieve", meter_retrieve),
    (
        "GET",
        "/v1/billing/meters/{id}/event_summaries",
        "billing.meter_list_event_summaries",
        meter_list_event_summaries,
    ),
    ("POST", "/v1/billing/meter_events", "billing.meter_event_create", meter_event_create),
    ("POST", "/v1/webhook_endpoints", "webhook_endpoint_create", webhook_endpoint_create),
    ("GET", "/v1/webhook_endpoints", "webhook_endpoint_list", webhook_endpoint_list),
    ("GET", "/v1/webhook_endpoints/{id}", "webhook_endpoint_retrieve", webhook_endpoint_retrieve),
    ("DELETE", "/v1/webhook_endpoints/{id}", "webhook_endpoint_delete", webhook_endpoint_delete),
]
