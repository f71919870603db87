"""What every resource shares: objects, ids, indexes, Events (docs.stripe.com/api/events), lists.

Everything runs on the event loop's thread, one request at a time, so no locks are needed.
Objects are kept as Stripe's JSON; keys starting with "_" are internal and never rendered.
"""

from __future__ import annotations

import json
import secrets
import string
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from stripe._api_version import _ApiVersion

from emulator.errors import StripeApiError, invalid, missing

Obj = dict[str, Any]
DAY = 86_400

# Where the emulator is reached from outside, for the URLs it hands out (hosted invoice pages).
DEFAULT_PUBLIC_URL = "http://127.0.0.1:12111"
# Days before a renewal that `invoice.upcoming` is sent. Stripe reads this from the Dashboard's
# subscription settings (docs.stripe.com/billing/subscriptions/webhooks); the Stripe CLI's own
# `invoice.upcoming` trigger advances a fresh test account's clock to 3 days before the renewal.
DEFAULT_UPCOMING_INVOICE_DAYS = 3

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
    "payment_intent": "pi",
    "invoice_payment": "inpay",
    "refund": "re",
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


def _int(value: Any, param: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise invalid(f"Invalid integer: {value}", param=param) from None


def _bool(value: Any) -> bool:
    return value in (True, "true", "True", "1")


class Store:
    """What every resource shares: the objects, their indexes, events, lists, the state file."""

    def __init__(
        self,
        state_file: Path | None = None,
        *,
        public_url: str = DEFAULT_PUBLIC_URL,
        upcoming_invoice_days: int = DEFAULT_UPCOMING_INVOICE_DAYS,
    ) -> None:
        self.public_url = public_url.rstrip("/")
        self.upcoming_invoice_days = upcoming_invoice_days
        self.objects: dict[str, Obj] = {}
        # Indexes, so that nothing scans every object as the account fills: objects by kind,
        # and ids by (kind, field, value) for the fields lists and searches filter on.
        self.by_kind: dict[str, dict[str, Obj]] = {}
        self.by_field: dict[tuple[str, str, str], list[str]] = {}
        self.idempotency: dict[str, Obj] = {}
        self.meter_usage: dict[str, int] = {}  # identifiers already counted
        # Emulator-only: declines forced on a customer's next charges (customer id ->
        # {"decline_code", "remaining"}), set through /_emulator/customers/{id}/declines.
        self.declines: dict[str, Obj] = {}
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
        self.declines.clear()
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
        self,
        kind: str,
        params: Obj,
        match: Callable[[Obj], bool] = lambda o: True,
        pool: Iterable[Obj] | None = None,
    ) -> Obj:
        """Stripe's list envelope: newest first, cursor pagination, `has_more`.

        `pool` (already narrowed by an index) replaces the objects of `kind` to filter."""
        indexed = [f for f in INDEXED.get(kind, ()) if isinstance(params.get(f), str)]
        if pool is None:
            pool = (
                self.candidates(kind, indexed[0], params[indexed[0]]) if indexed else self.all(kind)
            )
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

    def _emit_updated(self, type_: str, obj: Obj, before: Obj, now: int | None = None) -> None:
        after = render(obj)
        previous = {k: before.get(k) for k in after if after[k] != before.get(k)}
        if previous:
            self.emit(type_, obj, previous, now)


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
# An invoice payment's payment intent is its `payment`'s.
INDEXED: dict[str, tuple[str, ...]] = {
    "subscription": ("customer", "test_clock"),
    "invoice": ("customer", "subscription"),
    "invoiceitem": ("subscription",),
    "charge": ("customer", "payment_intent"),
    "payment_method": ("customer",),
    "payment_intent": ("customer",),
    "invoice_payment": ("invoice", "payment_intent"),
    "refund": ("charge", "payment_intent"),
}


def _field(obj: Obj, field: str) -> Any:
    if obj["object"] == "invoice" and field == "subscription":
        return ((obj.get("parent") or {}).get("subscription_details") or {}).get("subscription")
    if obj["object"] == "invoice_payment" and field == "payment_intent":
        return (obj.get("payment") or {}).get("payment_intent")
    return obj.get(field)
