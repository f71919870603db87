"""Customers, with their search (docs.stripe.com/api/customers)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from emulator.errors import invalid
from emulator.store import Obj, Store, _int, _merge_metadata, render


class CustomersMixin(Store):
    if TYPE_CHECKING:  # from PaymentMethodsMixin

        def attach_payment_method(self, ident: str, p: Obj) -> Obj: ...
        def _owned_pm(self, customer: Obj, ident: str, param: str) -> Obj: ...

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
