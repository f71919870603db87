"""The emulated Stripe account: objects, billing rules, test clocks and events.

Everything runs on the event loop's thread, one request at a time, so no locks are needed.
Objects are kept as Stripe's JSON; keys starting with "_" are internal and never rendered.
"""

from __future__ import annotations

import calendar
import json
import secrets
import string
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stripe._api_version import _ApiVersion

from emulator.cards import DECLINE_MESSAGES, TEST_PAYMENT_METHODS
from emulator.errors import StripeApiError, invalid, missing

Obj = dict[str, Any]
DAY = 86_400
# Stripe sends customer.subscription.trial_will_end three days before the trial ends.
TRIAL_WILL_END_BEFORE = 3 * DAY
# An `incomplete` subscription whose first invoice is not paid in 23 hours expires.
INCOMPLETE_EXPIRES_AFTER = 23 * 3600

_ALPHABET = string.ascii_letters + string.digits
_PREFIX = {
    "customer": "cus",
    "payment_method": "pm",
    "product": "prod",
    "price": "price",
    "subscription": "sub",
    "subscription_item": "si",
    "invoice": "in",
    "line_item": "il",
    "invoiceitem": "ii",
    "charge": "ch",
    "event": "evt",
    "test_helpers.test_clock": "clock",
    "billing.meter": "mtr",
    "billing.meter_event": "mevt",
    "webhook_endpoint": "we",
}


def new_id(kind: str) -> str:
    return f"{_PREFIX[kind]}_1{''.join(secrets.choice(_ALPHABET) for _ in range(23))}"


def render(value: Any) -> Any:
    """Stripe's JSON for an object: internal keys dropped, a deep copy."""
    if isinstance(value, dict):
        return {k: render(v) for k, v in value.items() if not k.startswith("_")}
    if isinstance(value, list):
        return [render(v) for v in value]
    return value


def add_interval(ts: int, interval: str, count: int = 1) -> int:
    """Calendar arithmetic Stripe uses for billing periods (day clamped to month end)."""
    at = datetime.fromtimestamp(ts, UTC)
    if interval in ("day", "week"):
        return ts + count * (7 if interval == "week" else 1) * DAY
    months = count * (12 if interval == "year" else 1)
    month0 = at.month - 1 + months
    year, month = at.year + month0 // 12, month0 % 12 + 1
    day = min(at.day, calendar.monthrange(year, month)[1])
    return int(at.replace(year=year, month=month, day=day).timestamp())


def _int(value: Any, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid(f"Invalid integer: {value}", param=param) from None


def _bool(value: Any) -> bool:
    return value in (True, "true", "True", "1")


class Account:
    """One emulated Stripe account in test mode."""

    def __init__(self, state_file: Path | None = None) -> None:
        self.objects: dict[str, Obj] = {}
        # Indexes, so that nothing scans every object as the account fills: objects by kind,
        # and ids by (kind, field, value) for the fields lists and searches filter on.
        self.by_kind: dict[str, dict[str, Obj]] = {}
        self.by_field: dict[tuple[str, str, str], list[str]] = {}
        self.idempotency: dict[str, Obj] = {}
        self.meter_usage: dict[str, int] = {}  # identifiers already counted
        self.on_event: Callable[[Obj], None] = lambda event: None
        self._state_file = state_file
        self.dirty = False
        if state_file and state_file.exists():
            saved = json.loads(state_file.read_text())
            self.idempotency = saved["idempotency"]
            for obj in saved["objects"].values():
                self._add(obj)
            self.dirty = False

    def save(self) -> None:
        """Write the state file now, if anything changed since the last save."""
        if self._state_file and self.dirty:
            self.dirty = False
            tmp = self._state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps({"objects": self.objects, "idempotency": self.idempotency}))
            tmp.replace(self._state_file)

    def reset(self) -> None:
        self.objects.clear()
        self.by_kind.clear()
        self.by_field.clear()
        self.idempotency.clear()
        self.dirty = True
        self.save()

    def _add(self, obj: Obj) -> None:
        kind = obj["object"]
        self.dirty = True
        self.objects[obj["id"]] = obj
        self.by_kind.setdefault(kind, {})[obj["id"]] = obj
        for field in INDEXED.get(kind, ()):
            self.index(kind, field, _field(obj, field), obj["id"])
        if kind == "customer":
            for key, value in (obj.get("metadata") or {}).items():
                self.index(kind, f"metadata.{key}", value, obj["id"])

    def index(self, kind: str, field: str, value: Any, ident: str) -> None:
        """Note that `ident` may have `field` = `value` (candidates are checked again)."""
        if isinstance(value, str) and value:
            self.by_field.setdefault((kind, field, value), []).append(ident)

    def all(self, kind: str) -> Iterable[Obj]:
        return self.by_kind.get(kind, {}).values()

    def candidates(self, kind: str, field: str, value: str) -> list[Obj]:
        """The objects of `kind` that may have `field` = `value` (a superset: filter them)."""
        return [self.objects[i] for i in dict.fromkeys(self.by_field.get((kind, field, value), []))]

    # --- plumbing ------------------------------------------------------------------------

    def get(self, kind: str, ident: str, param: str = "id") -> Obj:
        obj = self.objects.get(ident)
        if obj is None or obj["object"] != kind or obj.get("deleted"):
            raise missing(kind.split(".")[-1].replace("_", " "), ident, param)
        return obj

    def _create(self, kind: str, fields: Obj, now: int | None = None) -> Obj:
        obj: Obj = {"id": new_id(kind), "object": kind}
        obj.update(fields)
        obj.setdefault("created", now if now is not None else int(time.time()))
        obj.setdefault("livemode", False)
        obj["_seq"] = len(self.objects)
        self._add(obj)
        return obj

    def now_for(self, customer: Obj | None) -> int:
        """The customer's time: its test clock's frozen time, or the wall clock."""
        clock_id = customer.get("test_clock") if customer else None
        if clock_id:
            return int(self.objects[clock_id]["frozen_time"])
        return int(time.time())

    def emit(
        self, type_: str, obj: Obj, previous: Obj | None = None, now: int | None = None
    ) -> None:
        data: Obj = {"object": render(obj)}
        if previous:
            data["previous_attributes"] = previous
        event = self._create(
            "event",
            {
                "type": type_,
                "api_version": _ApiVersion.CURRENT,
                "data": data,
                "pending_webhooks": 0,
                "request": {"id": None, "idempotency_key": None},
            },
            now,
        )
        self.on_event(render(event))

    def paginate(
        self, kind: str, params: Obj, match: Callable[[Obj], bool] = lambda o: True
    ) -> Obj:
        """Stripe's list envelope: newest first, cursor pagination, `has_more`."""
        indexed = [f for f in INDEXED.get(kind, ()) if isinstance(params.get(f), str)]
        pool = self.candidates(kind, indexed[0], params[indexed[0]]) if indexed else self.all(kind)
        rows = [o for o in pool if not o.get("deleted")]
        rows = [o for o in rows if match(o) and _created_matches(o, params.get("created"))]
        rows.sort(key=lambda o: (o["created"], o["_seq"]), reverse=True)
        limit = _int(params.get("limit", 10), "limit")
        if not 1 <= limit <= 100:
            raise invalid("Invalid limit: must be between 1 and 100", param="limit")
        if after := params.get("starting_after"):
            ids = [o["id"] for o in rows]
            if after not in ids:
                raise missing("object", after, "starting_after")
            rows = rows[ids.index(after) + 1 :]
        elif before := params.get("ending_before"):
            ids = [o["id"] for o in rows]
            if before not in ids:
                raise missing("object", before, "ending_before")
            rows = rows[: ids.index(before)][-limit:]
        page = rows[:limit]
        return {
            "object": "list",
            "data": [render(o) for o in page],
            "has_more": len(rows) > limit,
            "url": f"/v1/{kind.replace('.', '/')}s",
        }

    # --- products and prices ---------------------------------------------------------------

    def create_product(self, p: Obj) -> Obj:
        if "name" not in p:
            raise invalid("Missing required param: name.", param="name", code="parameter_missing")
        fields = {
            "name": p["name"],
            "active": _bool(p.get("active", True)),
            "metadata": p.get("metadata") or {},
            "description": p.get("description"),
        }
        if p.get("id"):
            if p["id"] in self.objects:
                raise invalid("Product already exists.", param="id", code="resource_already_exists")
            product = self._create("product", fields)
            del self.objects[product["id"]], self.by_kind["product"][product["id"]]
            product["id"] = p["id"]
            self._add(product)
            return product
        return self._create("product", fields)

    def create_price(self, p: Obj) -> Obj:
        if "currency" not in p:
            raise invalid(
                "Missing required param: currency.", param="currency", code="parameter_missing"
            )
        if "product" in p:
            product = self.get("product", p["product"], "product")
        elif "product_data" in p:
            product = self.create_product(p["product_data"])
        else:
            raise invalid(
                "Missing required param: product.", param="product", code="parameter_missing"
            )
        if lookup := p.get("lookup_key"):
            for other in self.all("price"):
                if other.get("lookup_key") == lookup:
                    if not _bool(p.get("transfer_lookup_key")):
                        raise invalid(
                            f"A price (`{other['id']}`) already uses that lookup key.",
                            param="lookup_key",
                        )
                    other["lookup_key"] = None
        recurring = p.get("recurring")
        if recurring:
            recurring = {
                "interval": recurring["interval"],
                "interval_count": _int(
                    recurring.get("interval_count", 1), "recurring[interval_count]"
                ),
                "usage_type": recurring.get("usage_type", "licensed"),
                "meter": recurring.get("meter"),
            }
        return self._create(
            "price",
            {
                "active": True,
                "currency": p["currency"].lower(),
                "product": product["id"],
                "unit_amount": _int(p.get("unit_amount", 0), "unit_amount"),
                "recurring": recurring,
                "type": "recurring" if recurring else "one_time",
                "lookup_key": p.get("lookup_key"),
                "nickname": p.get("nickname"),
                "metadata": p.get("metadata") or {},
                "billing_scheme": "per_unit",
            },
        )

    def list_prices(self, p: Obj) -> Obj:
        keys = p.get("lookup_keys")
        return self.paginate(
            "price",
            p,
            lambda o: (
                (not keys or o.get("lookup_key") in keys)
                and (p.get("product") in (None, o["product"]))
                and ("active" not in p or o["active"] == _bool(p["active"]))
            ),
        )

    # --- customers ---------------------------------------------------------------------------

    def create_customer(self, p: Obj) -> Obj:
        clock = (
            self.get("test_helpers.test_clock", p["test_clock"], "test_clock")
            if p.get("test_clock")
            else None
        )
        customer = self._create(
            "customer",
            {
                "email": p.get("email"),
                "name": p.get("name"),
                "description": p.get("description"),
                "metadata": p.get("metadata") or {},
                "invoice_settings": {
                    "default_payment_method": None,
                    "custom_fields": None,
                    "footer": None,
                    "rendering_options": None,
                },
                "test_clock": clock["id"] if clock else None,
                "balance": 0,
                "currency": None,
                "delinquent": False,
            },
            int(clock["frozen_time"]) if clock else None,
        )
        if pm := p.get("payment_method"):
            self.attach_payment_method(pm, {"customer": customer["id"]})
        if default := (p.get("invoice_settings") or {}).get("default_payment_method"):
            customer["invoice_settings"]["default_payment_method"] = self._owned_pm(
                customer, default, "invoice_settings[default_payment_method]"
            )["id"]
        self.emit("customer.created", customer, now=self.now_for(customer))
        return customer

    def update_customer(self, ident: str, p: Obj) -> Obj:
        customer = self.get("customer", ident)
        before = render(customer)
        for key in ("email", "name", "description"):
            if key in p:
                customer[key] = p[key] or None
        if "metadata" in p:
            customer["metadata"] = _merge_metadata(customer["metadata"], p["metadata"])
            for key, value in customer["metadata"].items():
                self.index("customer", f"metadata.{key}", value, customer["id"])
        settings = p.get("invoice_settings") or {}
        if "default_payment_method" in settings:
            pm = settings["default_payment_method"]
            customer["invoice_settings"]["default_payment_method"] = (
                self._owned_pm(customer, pm, "invoice_settings[default_payment_method]")["id"]
                if pm
                else None
            )
        self._emit_updated("customer.updated", customer, before)
        return customer

    def search_customers(self, p: Obj) -> Obj:
        query = p.get("query")
        if not query:
            raise invalid("Missing required param: query.", param="query", code="parameter_missing")
        clauses = _parse_search(query)
        pool: Iterable[Obj] = self.all("customer")
        for path, wanted in clauses:
            if path[0] == "metadata":
                pool = self.candidates("customer", f"metadata.{path[1]}", wanted)
                break
        rows = [
            o
            for o in pool
            if not o.get("deleted") and all(_equals(path, wanted)(o) for path, wanted in clauses)
        ]
        rows.sort(key=lambda o: (o["created"], o["_seq"]), reverse=True)
        limit = _int(p.get("limit", 10), "limit")
        return {
            "object": "search_result",
            "data": [render(o) for o in rows[:limit]],
            "has_more": len(rows) > limit,
            "next_page": None,
            "url": "/v1/customers/search",
        }

    # --- payment methods -----------------------------------------------------------------------

    def retrieve_payment_method(self, ident: str) -> Obj:
        if ident in TEST_PAYMENT_METHODS:
            return self._payment_method_from_token(ident)
        return self.get("payment_method", ident)

    def _payment_method_from_token(self, token: str) -> Obj:
        card = TEST_PAYMENT_METHODS[token]
        return self._create(
            "payment_method",
            {
                "type": "card",
                "customer": None,
                "billing_details": {"address": None, "email": None, "name": None, "phone": None},
                "card": {
                    "brand": card.brand,
                    "last4": card.last4,
                    "exp_month": 12,
                    "exp_year": datetime.now(UTC).year + 3,
                    "funding": card.funding,
                    "country": "US",
                },
                "metadata": {},
                "_token": token,
            },
        )

    def attach_payment_method(self, ident: str, p: Obj) -> Obj:
        if not p.get("customer"):
            raise invalid(
                "Missing required param: customer.", param="customer", code="parameter_missing"
            )
        customer = self.get("customer", p["customer"], "customer")
        if ident in TEST_PAYMENT_METHODS:
            card = TEST_PAYMENT_METHODS[ident]
            if card.attach_decline:
                raise StripeApiError(
                    402,
                    DECLINE_MESSAGES[card.attach_decline],
                    type="card_error",
                    code="card_declined",
                    decline_code=card.attach_decline,
                )
            pm = self._payment_method_from_token(ident)
        else:
            pm = self.get("payment_method", ident)
            if pm["customer"] and pm["customer"] != customer["id"]:
                raise invalid(
                    "The payment method you provided has already been attached to a customer.",
                    code="payment_method_unexpected_state",
                )
        pm["customer"] = customer["id"]
        self.index("payment_method", "customer", customer["id"], pm["id"])
        self.emit("payment_method.attached", pm, now=self.now_for(customer))
        return pm

    def detach_payment_method(self, ident: str) -> Obj:
        pm = self.get("payment_method", ident)
        if not pm["customer"]:
            raise invalid(
                "The payment method you provided is not attached to a customer so detachment is impossible.",
                code="payment_method_unexpected_state",
            )
        customer = self.objects[pm["customer"]]
        if customer["invoice_settings"]["default_payment_method"] == ident:
            customer["invoice_settings"]["default_payment_method"] = None
        pm["customer"] = None
        self.emit(
            "payment_method.detached", pm, {"customer": customer["id"]}, self.now_for(customer)
        )
        return pm

    def list_payment_methods(self, p: Obj) -> Obj:
        return self.paginate(
            "payment_method",
            p,
            lambda o: o["customer"] == p.get("customer") and p.get("type") in (None, o["type"]),
        )

    def _owned_pm(self, customer: Obj, ident: str, param: str) -> Obj:
        pm = self.objects.get(ident)
        if not pm or pm["object"] != "payment_method" or pm["customer"] != customer["id"]:
            raise invalid(
                f"The customer does not have a payment method with the ID {ident}. The payment "
                "method must be attached to the customer.",
                param=param,
                code="resource_missing",
            )
        return pm

    # --- subscriptions -----------------------------------------------------------------------------

    def create_subscription(self, p: Obj) -> Obj:
        if not p.get("customer"):
            raise invalid(
                "Missing required param: customer.", param="customer", code="parameter_missing"
            )
        customer = self.get("customer", p["customer"], "customer")
        items = p.get("items") or []
        if not items:
            raise invalid("Missing required param: items.", param="items", code="parameter_missing")
        now = self.now_for(customer)
        if pm := p.get("default_payment_method"):
            self._owned_pm(customer, pm, "default_payment_method")
        sub = self._create(
            "subscription",
            {
                "customer": customer["id"],
                "status": "incomplete",
                "metadata": p.get("metadata") or {},
                "cancel_at_period_end": False,
                "cancel_at": None,
                "canceled_at": None,
                "ended_at": None,
                "cancellation_details": {"comment": None, "feedback": None, "reason": None},
                "collection_method": p.get("collection_method", "charge_automatically"),
                "currency": None,
                "default_payment_method": pm or None,
                "latest_invoice": None,
                "start_date": now,
                "billing_cycle_anchor": now,
                "trial_start": None,
                "trial_end": None,
                "test_clock": customer["test_clock"],
                "pending_update": None,
                "pause_collection": None,
                "items": {"object": "list", "data": [], "has_more": False, "total_count": 0},
            },
            now,
        )
        for i, item in enumerate(items):
            price = self.get("price", item.get("price", ""), f"items[{i}][price]")
            if not price["recurring"]:
                raise invalid(
                    "The price specified is not recurring. Subscriptions require recurring prices.",
                    param=f"items[{i}][price]",
                )
            sub["items"]["data"].append(
                {
                    "id": new_id("subscription_item"),
                    "object": "subscription_item",
                    "created": now,
                    "price": render(price),
                    "quantity": _int(item.get("quantity", 1), f"items[{i}][quantity]"),
                    "subscription": sub["id"],
                    "metadata": item.get("metadata") or {},
                    "current_period_start": now,
                    "current_period_end": now,
                    "discounts": [],
                    "tax_rates": [],
                }
            )
        sub["items"]["total_count"] = len(sub["items"]["data"])
        sub["currency"] = sub["items"]["data"][0]["price"]["currency"]
        trial_end = None
        if days := p.get("trial_period_days"):
            trial_end = now + _int(days, "trial_period_days") * DAY
        elif p.get("trial_end") and p["trial_end"] != "now":
            trial_end = _int(p["trial_end"], "trial_end")
        behavior = p.get("payment_behavior", "allow_incomplete")
        if trial_end and trial_end > now:
            sub.update(status="trialing", trial_start=now, trial_end=trial_end)
            self._set_period(sub, now, trial_end)
            self.emit("customer.subscription.created", sub, now=now)
            invoice = self._invoice(sub, "subscription_create", now, amount_lines=False)
            self._collect(invoice, now)
            if trial_end - now <= TRIAL_WILL_END_BEFORE:
                self._trial_will_end(sub, now)
            return sub
        self._set_period(sub, now, self._period_end(sub, now))
        self.emit("customer.subscription.created", sub, now=now)
        invoice = self._invoice(sub, "subscription_create", now)
        if behavior == "default_incomplete":
            return sub
        paid = self._collect(invoice, now, raise_decline=behavior == "error_if_incomplete")
        if paid:
            self._set_status(sub, "active", now)
        return sub

    def update_subscription(self, ident: str, p: Obj) -> Obj:
        sub = self.get("subscription", ident)
        ended = sub["status"] in ("canceled", "incomplete_expired")
        if ended and set(p) - {"metadata", "cancellation_details", "expand"}:
            raise invalid(
                "A canceled subscription can only update its cancellation_details and metadata."
            )
        customer = self.objects[sub["customer"]]
        now = self.now_for(customer)
        before = render(sub)
        if "metadata" in p:
            sub["metadata"] = _merge_metadata(sub["metadata"], p["metadata"])
        if "cancel_at_period_end" in p:
            flag = _bool(p["cancel_at_period_end"])
            sub["cancel_at_period_end"] = flag
            sub["cancel_at"] = self._period(sub)[1] if flag else None
            sub["canceled_at"] = now if flag else None
        if "default_payment_method" in p:
            pm = p["default_payment_method"]
            sub["default_payment_method"] = (
                self._owned_pm(customer, pm, "default_payment_method")["id"] if pm else None
            )
        if p.get("trial_end") == "now" and sub["status"] == "trialing":
            self._end_trial(sub, now)
        if "items" in p:
            self._change_items(
                sub, p["items"], p.get("proration_behavior", "create_prorations"), now
            )
        self._emit_updated("customer.subscription.updated", sub, before, now)
        return sub

    def cancel_subscription(self, ident: str, p: Obj) -> Obj:
        sub = self.get("subscription", ident)
        if sub["status"] == "canceled":
            raise invalid(f"No such subscription: '{ident}'", code="resource_missing", param="id")
        self._cancel(
            sub, self.now_for(self.objects[sub["customer"]]), p.get("cancellation_details")
        )
        return sub

    def _cancel(self, sub: Obj, now: int, details: Obj | None = None) -> None:
        sub.update(
            status="canceled", canceled_at=sub["canceled_at"] or now, ended_at=now, cancel_at=None
        )
        sub["cancel_at_period_end"] = False
        if details:
            sub["cancellation_details"].update(details)
        sub["cancellation_details"].setdefault("reason", "cancellation_requested")
        self.emit("customer.subscription.deleted", sub, now=now)

    def _change_items(self, sub: Obj, changes: list[Obj], proration: str, now: int) -> None:
        for i, change in enumerate(changes):
            item = next((it for it in sub["items"]["data"] if it["id"] == change.get("id")), None)
            if item is None:
                raise invalid(
                    f"Invalid subscription item: {change.get('id')}", param=f"items[{i}][id]"
                )
            if "price" not in change:
                continue
            old = item["price"]
            new = render(self.get("price", change["price"], f"items[{i}][price]"))
            if new["id"] == old["id"]:
                continue
            quantity = item["quantity"]
            item["price"] = new
            if sub["status"] == "trialing":
                continue  # nothing is billed during a trial
            start, end = self._period(sub)
            lines: list[Obj] = []
            interval_changed = (
                old["recurring"]["interval"],
                old["recurring"]["interval_count"],
            ) != (new["recurring"]["interval"], new["recurring"]["interval_count"])
            if proration != "none" and end > start:
                unused = (end - now) / (end - start)
                lines.append(
                    _line(
                        f"Unused time on {old['id']}",
                        -round(old["unit_amount"] * quantity * unused),
                        old,
                        start=now,
                        end=end,
                        proration=True,
                    )
                )
                if not interval_changed:
                    lines.append(
                        _line(
                            f"Remaining time on {new['id']}",
                            round(new["unit_amount"] * quantity * unused),
                            new,
                            start=now,
                            end=end,
                            proration=True,
                        )
                    )
            if interval_changed:
                # A new interval resets the billing cycle anchor: bill the new price now.
                self._set_period(
                    sub,
                    now,
                    add_interval(
                        now, new["recurring"]["interval"], new["recurring"]["interval_count"]
                    ),
                )
                sub["billing_cycle_anchor"] = now
                self._pending_items(sub, lines, now)
                self._collect(self._invoice(sub, "subscription_update", now), now)
            elif proration == "always_invoice" and lines:
                self._pending_items(sub, lines, now)
                self._collect(
                    self._invoice(sub, "subscription_update", now, amount_lines=False), now
                )
            else:
                self._pending_items(sub, lines, now)

    def _pending_items(self, sub: Obj, lines: list[Obj], now: int) -> None:
        for line in lines:
            self._create(
                "invoiceitem",
                {"customer": sub["customer"], "subscription": sub["id"], "invoice": None, **line},
                now,
            )

    # --- periods, invoices and payment ----------------------------------------------------------------

    def _period(self, sub: Obj) -> tuple[int, int]:
        item = sub["items"]["data"][0]
        return item["current_period_start"], item["current_period_end"]

    def _set_period(self, sub: Obj, start: int, end: int) -> None:
        for item in sub["items"]["data"]:
            item["current_period_start"], item["current_period_end"] = start, end

    def _period_end(self, sub: Obj, start: int) -> int:
        recurring = sub["items"]["data"][0]["price"]["recurring"]
        return add_interval(start, recurring["interval"], recurring["interval_count"])

    def _invoice(self, sub: Obj, reason: str, now: int, amount_lines: bool = True) -> Obj:
        start, end = self._period(sub)
        lines = []
        if amount_lines:
            for item in sub["items"]["data"]:
                price = item["price"]
                if price["recurring"]["usage_type"] == "metered":
                    continue
                lines.append(
                    _line(
                        f"{item['quantity']} x {price.get('nickname') or price['id']}",
                        price["unit_amount"] * item["quantity"],
                        price,
                        start=start,
                        end=end,
                    )
                )
        elif sub["status"] == "trialing":
            item = sub["items"]["data"][0]
            lines.append(_line("Trial period", 0, item["price"], start=start, end=end))
        for pending in self.candidates("invoiceitem", "subscription", sub["id"]):
            if pending["subscription"] == sub["id"] and pending["invoice"] is None:
                lines.append(
                    {
                        k: pending[k]
                        for k in (
                            "description",
                            "amount",
                            "currency",
                            "period",
                            "pricing",
                            "proration",
                        )
                    }
                )
        total = sum(line["amount"] for line in lines)
        invoice = self._create(
            "invoice",
            {
                "customer": sub["customer"],
                "status": "draft",
                "billing_reason": reason,
                "collection_method": "charge_automatically",
                "currency": sub["currency"],
                "subtotal": total,
                "total": total,
                "amount_due": max(total, 0),
                "amount_paid": 0,
                "amount_remaining": max(total, 0),
                "attempt_count": 0,
                "attempted": False,
                "auto_advance": True,
                "next_payment_attempt": None,
                "period_start": start,
                "period_end": end,
                "default_payment_method": None,
                "test_clock": sub["test_clock"],
                "metadata": {},
                "number": None,
                "parent": {
                    "type": "subscription_details",
                    "quote_details": None,
                    "subscription_details": {
                        "subscription": sub["id"],
                        "metadata": dict(sub["metadata"]),
                    },
                },
                "lines": {
                    "object": "list",
                    "data": [],
                    "has_more": False,
                    "total_count": len(lines),
                },
                "status_transitions": {
                    "finalized_at": None,
                    "paid_at": None,
                    "voided_at": None,
                    "marked_uncollectible_at": None,
                },
            },
            now,
        )
        for line in lines:
            invoice["lines"]["data"].append(
                {"id": new_id("line_item"), "object": "line_item", "invoice": invoice["id"], **line}
            )
        for pending in self.candidates("invoiceitem", "subscription", sub["id"]):
            if pending["subscription"] == sub["id"] and pending["invoice"] is None:
                pending["invoice"] = invoice["id"]
        sub["latest_invoice"] = invoice["id"]
        self.emit("invoice.created", invoice, now=now)
        invoice.update(status="open", number=f"SFB-{invoice['_seq']:06d}")
        invoice["status_transitions"]["finalized_at"] = now
        self.emit("invoice.finalized", invoice, now=now)
        return invoice

    def pay_invoice(self, ident: str, p: Obj) -> Obj:
        invoice = self.get("invoice", ident)
        if invoice["status"] == "paid":
            raise invalid("Invoice is already paid")
        if invoice["status"] != "open":
            raise invalid(
                f"You can only pay an invoice that is open. This invoice is {invoice['status']}."
            )
        customer = self.objects[invoice["customer"]]
        now = self.now_for(customer)
        pm = p.get("payment_method")
        if pm:
            self._owned_pm(customer, pm, "payment_method")
        self._collect(invoice, now, raise_decline=True, payment_method=pm)
        return invoice

    def _collect(
        self, invoice: Obj, now: int, raise_decline: bool = False, payment_method: str | None = None
    ) -> bool:
        """Attempt payment of an open invoice; True when it ends paid."""
        sub = (
            self.objects.get(invoice["parent"]["subscription_details"]["subscription"])
            if invoice.get("parent")
            else None
        )
        customer = self.objects[invoice["customer"]]
        if invoice["amount_due"] <= 0:
            self._mark_paid(invoice, sub, now)
            return True
        pm_id = (
            payment_method
            or invoice.get("default_payment_method")
            or (sub or {}).get("default_payment_method")
            or customer["invoice_settings"]["default_payment_method"]
        )
        invoice["attempt_count"] += 1
        invoice["attempted"] = True
        if not pm_id:
            decline = None
            message = "This customer has no attached payment source or default payment method."
        else:
            pm = self.objects[pm_id]
            card = TEST_PAYMENT_METHODS.get(pm.get("_token", ""))
            decline = card.charge_decline if card else None
            message = DECLINE_MESSAGES.get(decline or "", "")
        succeeded = bool(pm_id) and decline is None
        charge = self._create(
            "charge",
            {
                "amount": invoice["amount_due"],
                "amount_captured": invoice["amount_due"] if succeeded else 0,
                "amount_refunded": 0,
                "currency": invoice["currency"],
                "customer": customer["id"],
                "description": f"Invoice {invoice['number']}",
                "paid": succeeded,
                "captured": succeeded,
                "refunded": False,
                "status": "succeeded" if succeeded else "failed",
                "payment_method": pm_id,
                "failure_code": None if succeeded else "card_declined",
                "failure_message": None if succeeded else message,
                "outcome": {
                    "type": "authorized" if succeeded else "issuer_declined",
                    "network_status": "approved_by_network" if succeeded else "declined_by_network",
                    "reason": None if succeeded else decline,
                    "seller_message": "Payment complete."
                    if succeeded
                    else "The bank did not return any further details with this decline.",
                },
                "metadata": {},
                "_invoice": invoice["id"],
            },
            now,
        )
        if succeeded:
            self.emit("charge.succeeded", charge, now=now)
            invoice["amount_paid"] = invoice["amount_due"]
            invoice["amount_remaining"] = 0
            self._mark_paid(invoice, sub, now)
            return True
        self.emit("charge.failed", charge, now=now)
        self.emit("invoice.payment_failed", invoice, now=now)
        if sub and sub["status"] in ("active", "trialing"):
            self._set_status(sub, "past_due", now)
        if raise_decline:
            if not pm_id:
                raise invalid(message)
            raise StripeApiError(
                402,
                message,
                type="card_error",
                code="card_declined",
                decline_code=decline,
                extra={"charge": charge["id"]},
            )
        return False

    def _mark_paid(self, invoice: Obj, sub: Obj | None, now: int) -> None:
        invoice["status"] = "paid"
        invoice["status_transitions"]["paid_at"] = now
        self.emit("invoice.paid", invoice, now=now)
        self.emit("invoice.payment_succeeded", invoice, now=now)
        if (
            sub
            and sub["status"] in ("incomplete", "past_due")
            and sub["latest_invoice"] == invoice["id"]
        ):
            self._set_status(sub, "active", now)

    def _set_status(self, sub: Obj, status: str, now: int) -> None:
        if sub["status"] == status:
            return
        before = render(sub)
        sub["status"] = status
        self._emit_updated("customer.subscription.updated", sub, before, now)

    def _emit_updated(self, type_: str, obj: Obj, before: Obj, now: int | None = None) -> None:
        after = render(obj)
        previous = {k: before.get(k) for k in after if after[k] != before.get(k)}
        if previous:
            self.emit(type_, obj, previous, now)

    def _trial_will_end(self, sub: Obj, now: int) -> None:
        if not sub.get("_trial_will_end_sent"):
            sub["_trial_will_end_sent"] = True
            self.emit("customer.subscription.trial_will_end", sub, now=now)

    def _end_trial(self, sub: Obj, now: int) -> None:
        self._trial_will_end(sub, now)
        before = render(sub)
        sub.update(trial_end=now, billing_cycle_anchor=now, status="active")
        self._set_period(sub, now, self._period_end(sub, now))
        self._emit_updated("customer.subscription.updated", sub, before, now)
        # A declined first charge after the trial moves the subscription on to past_due.
        self._collect(self._invoice(sub, "subscription_cycle", now), now)

    def _renew(self, sub: Obj, now: int) -> None:
        if sub["cancel_at_period_end"]:
            self._cancel(sub, now)
            return
        _, end = self._period(sub)
        before = render(sub)
        self._set_period(sub, end, self._period_end(sub, end))
        self._emit_updated("customer.subscription.updated", sub, before, now)
        self._collect(self._invoice(sub, "subscription_cycle", now), now)

    def _expire_incomplete(self, sub: Obj, now: int) -> None:
        invoice = self.objects.get(sub["latest_invoice"] or "")
        if invoice and invoice["status"] == "open":
            invoice["status"] = "void"
            invoice["status_transitions"]["voided_at"] = now
            self.emit("invoice.voided", invoice, now=now)
        self._set_status(sub, "incomplete_expired", now)

    # --- test clocks -----------------------------------------------------------------------------------

    def create_test_clock(self, p: Obj) -> Obj:
        if "frozen_time" not in p:
            raise invalid(
                "Missing required param: frozen_time.",
                param="frozen_time",
                code="parameter_missing",
            )
        frozen = _int(p["frozen_time"], "frozen_time")
        return self._create(
            "test_helpers.test_clock",
            {
                "frozen_time": frozen,
                "name": p.get("name"),
                "status": "ready",
                "deletes_after": frozen + 30 * DAY,
                "status_details": {},
            },
        )

    def advance_test_clock(self, ident: str, p: Obj) -> Obj:
        clock = self.get("test_helpers.test_clock", ident)
        target = _int(p.get("frozen_time"), "frozen_time")
        if target <= clock["frozen_time"]:
            raise invalid(
                "The frozen time must be after the test clock's current frozen time.",
                param="frozen_time",
            )
        while (step := self._next_transition(clock["id"], target)) is not None:
            at, sub, action = step
            clock["frozen_time"] = at
            action(sub, at)
        clock["frozen_time"] = target
        self.emit("test_helpers.test_clock.ready", clock, now=target)
        return clock

    def _next_transition(
        self, clock_id: str, target: int
    ) -> tuple[int, Obj, Callable[[Obj, int], None]] | None:
        due: list[tuple[int, int, Obj, Callable[[Obj, int], None]]] = []
        for sub in self._subscriptions_on(clock_id):
            status = sub["status"]
            if status == "trialing":
                if not sub.get("_trial_will_end_sent"):
                    due.append(
                        (
                            max(sub["trial_end"] - TRIAL_WILL_END_BEFORE, sub["trial_start"]),
                            sub["_seq"],
                            sub,
                            self._trial_will_end,
                        )
                    )
                due.append((sub["trial_end"], sub["_seq"], sub, self._end_trial))
            elif status in ("active", "past_due", "unpaid"):
                due.append((self._period(sub)[1], sub["_seq"], sub, self._renew))
            elif status == "incomplete":
                due.append(
                    (
                        sub["created"] + INCOMPLETE_EXPIRES_AFTER,
                        sub["_seq"],
                        sub,
                        self._expire_incomplete,
                    )
                )
        due = [d for d in due if d[0] <= target]
        if not due:
            return None
        at, _, sub, action = min(due, key=lambda d: (d[0], d[1]))
        return at, sub, action

    def _subscriptions_on(self, clock_id: str) -> Iterable[Obj]:
        return [o for o in self.all("subscription") if o["test_clock"] == clock_id]

    # --- billing meters --------------------------------------------------------------------------------

    def create_meter(self, p: Obj) -> Obj:
        for key in ("display_name", "event_name", "default_aggregation"):
            if key not in p:
                raise invalid(
                    f"Missing required param: {key}.", param=key, code="parameter_missing"
                )
        if any(
            o["event_name"] == p["event_name"] and o["status"] == "active"
            for o in self.all("billing.meter")
        ):
            raise invalid(
                f"An active meter with event_name `{p['event_name']}` already exists.",
                param="event_name",
            )
        return self._create(
            "billing.meter",
            {
                "display_name": p["display_name"],
                "event_name": p["event_name"],
                "status": "active",
                "default_aggregation": {"formula": p["default_aggregation"]["formula"]},
                "customer_mapping": p.get("customer_mapping")
                or {"event_payload_key": "stripe_customer_id", "type": "by_id"},
                "value_settings": p.get("value_settings") or {"event_payload_key": "value"},
                "event_time_window": p.get("event_time_window"),
                "status_transitions": {"deactivated_at": None},
                "updated": int(time.time()),
            },
        )

    def create_meter_event(self, p: Obj) -> Obj:
        for key in ("event_name", "payload"):
            if key not in p:
                raise invalid(
                    f"Missing required param: {key}.", param=key, code="parameter_missing"
                )
        meter = next(
            (
                o
                for o in self.all("billing.meter")
                if o["event_name"] == p["event_name"] and o["status"] == "active"
            ),
            None,
        )
        if meter is None:
            raise invalid(
                f"No active meter found for event_name `{p['event_name']}`.", param="event_name"
            )
        payload = p["payload"]
        customer_key = meter["customer_mapping"]["event_payload_key"]
        value_key = meter["value_settings"]["event_payload_key"]
        if customer_key not in payload:
            raise invalid(
                f"Missing required field `{customer_key}` in payload.",
                param=f"payload[{customer_key}]",
            )
        customer = self.get("customer", payload[customer_key], f"payload[{customer_key}]")
        now = self.now_for(customer)
        identifier = p.get("identifier") or new_id("billing.meter_event")
        value = _int(payload.get(value_key, 1), f"payload[{value_key}]")
        event = {
            "object": "billing.meter_event",
            "event_name": p["event_name"],
            "identifier": identifier,
            "payload": payload,
            "timestamp": _int(p.get("timestamp", now), "timestamp"),
            "created": now,
            "livemode": False,
        }
        # Stripe enforces identifier uniqueness (at least 24 hours): a repeat is not counted.
        if identifier not in self.meter_usage:
            self.meter_usage[identifier] = value
            self._create(
                "billing.meter_event",
                {**event, "_meter": meter["id"], "_customer": customer["id"], "_value": value},
                now,
            )
        return event

    def meter_event_summaries(self, meter_id: str, p: Obj) -> Obj:
        meter = self.get("billing.meter", meter_id)
        for key in ("customer", "start_time", "end_time"):
            if key not in p:
                raise invalid(
                    f"Missing required param: {key}.", param=key, code="parameter_missing"
                )
        start, end = _int(p["start_time"], "start_time"), _int(p["end_time"], "end_time")
        values = [
            o["_value"]
            for o in self.all("billing.meter_event")
            if o["_meter"] == meter["id"]
            and o["_customer"] == p["customer"]
            and start <= o["timestamp"] < end
        ]
        formula = meter["default_aggregation"]["formula"]
        total = (
            len(values)
            if formula == "count"
            else (values[-1] if formula == "last" and values else sum(values))
        )
        summary = {
            "id": f"mtrusg_{meter['id'][4:]}{start}",
            "object": "billing.meter_event_summary",
            "aggregated_value": total,
            "start_time": start,
            "end_time": end,
            "meter": meter["id"],
            "livemode": False,
        }
        return {
            "object": "list",
            "data": [summary],
            "has_more": False,
            "url": f"/v1/billing/meters/{meter['id']}/event_summaries",
        }

    # --- webhook endpoints ---------------------------------------------------------------------------

    def create_webhook_endpoint(self, p: Obj, secret: str | None = None) -> Obj:
        if "url" not in p:
            raise invalid("Missing required param: url.", param="url", code="parameter_missing")
        events = p.get("enabled_events") or []
        if not events:
            raise invalid(
                "Missing required param: enabled_events.",
                param="enabled_events",
                code="parameter_missing",
            )
        endpoint = self._create(
            "webhook_endpoint",
            {
                "url": p["url"],
                "enabled_events": events,
                "status": "enabled",
                "description": p.get("description"),
                "metadata": p.get("metadata") or {},
                "api_version": p.get("api_version"),
                "application": None,
                "_secret": secret or f"whsec_{secrets.token_hex(24)}",
            },
        )
        return endpoint

    def endpoints_for(self, event_type: str) -> list[Obj]:
        return [
            o
            for o in self.all("webhook_endpoint")
            if not o.get("deleted")
            and o["status"] == "enabled"
            and ("*" in o["enabled_events"] or event_type in o["enabled_events"])
        ]


def _line(
    description: str, amount: int, price: Obj, *, start: int, end: int, proration: bool = False
) -> Obj:
    return {
        "description": description,
        "amount": amount,
        "currency": price["currency"],
        "period": {"start": start, "end": end},
        "pricing": {
            "type": "price_details",
            "price_details": {"price": price["id"], "product": price["product"]},
            "unit_amount_decimal": str(price["unit_amount"]),
        },
        "proration": proration,
    }


def _merge_metadata(current: Obj, update: Any) -> Obj:
    if update == "":
        return {}
    merged = {**current, **update}
    return {k: v for k, v in merged.items() if v != ""}


def _created_matches(obj: Obj, spec: Any) -> bool:
    if spec is None:
        return True
    created = obj["created"]
    if not isinstance(spec, dict):
        return created == _int(spec, "created")
    checks = {
        "gt": created.__gt__,
        "gte": created.__ge__,
        "lt": created.__lt__,
        "lte": created.__le__,
    }
    for op, value in spec.items():
        if op not in checks:
            raise StripeApiError(
                400,
                f"Received unknown parameter: created[{op}]",
                code="parameter_unknown",
                param=f"created[{op}]",
            )
        if not checks[op](_int(value, f"created[{op}]")):
            return False
    return True


# The fields lists filter on, indexed per kind (an invoice's subscription is its parent's).
INDEXED: dict[str, tuple[str, ...]] = {
    "subscription": ("customer",),
    "invoice": ("customer", "subscription"),
    "invoiceitem": ("subscription",),
    "charge": ("customer",),
    "payment_method": ("customer",),
}


def _field(obj: Obj, field: str) -> Any:
    if obj["object"] == "invoice" and field == "subscription":
        return ((obj.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    return obj.get(field)


def _parse_search(query: str) -> list[tuple[tuple[str, ...], str]]:
    """The part of Stripe's search language this project uses: `field:'v'` AND `metadata['k']:'v'`."""
    clauses: list[tuple[tuple[str, ...], str]] = []
    for raw in query.split(" AND "):
        field, sep, value = raw.strip().partition(":")
        if not sep or len(value) < 2 or value[0] != "'" or value[-1] != "'":
            raise invalid(f"Invalid search query: {query}", param="query")
        wanted = value[1:-1].replace("\\'", "'").replace("\\\\", "\\")
        if field.startswith("metadata[") and field.endswith("]"):
            clauses.append((("metadata", field[len("metadata[") : -1].strip("'\"")), wanted))
        elif field in ("email", "name", "phone"):
            clauses.append(((field,), wanted))
        else:
            raise invalid(
                f"Field `{field}` is an unsupported search field for resource `customers`.",
                param="query",
            )
    return clauses


def _equals(path: tuple[str, ...], wanted: str) -> Callable[[Obj], bool]:
    def match(obj: Obj) -> bool:
        value: Any = obj
        for part in path:
            value = (value or {}).get(part)
        return bool(value == wanted)

    return match
