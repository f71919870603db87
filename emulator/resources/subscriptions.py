"""Subscriptions: create, update, cancel, status changes (docs.stripe.com/api/subscriptions)."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from emulator.errors import invalid
from emulator.store import DAY, Obj, Store, _bool, _int, _merge_metadata, new_id, render

# Stripe sends customer.subscription.trial_will_end three days before the trial ends.
TRIAL_WILL_END_BEFORE = 3 * DAY
# An `incomplete` subscription whose first invoice is not paid in 23 hours expires.
INCOMPLETE_EXPIRES_AFTER = 23 * 3600


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


class SubscriptionsMixin(Store):
    if TYPE_CHECKING:  # from PaymentMethodsMixin, SubscriptionItemsMixin and InvoicesMixin

        def _owned_pm(self, customer: Obj, ident: str, param: str) -> Obj: ...
        def _change_items(self, sub: Obj, changes: list[Obj], proration: str, now: int) -> None: ...
        def _invoice(self, sub: Obj, reason: str, now: int, amount_lines: bool = True) -> Obj: ...
        def _collect(
            self,
            invoice: Obj,
            now: int,
            raise_for: str = "",
            payment_method: str | None = None,
            customer_present: bool = False,
        ) -> bool: ...
        def _void(self, invoice: Obj, now: int) -> None: ...
        def _invoice_preview(self, sub: Obj, now: int) -> Obj: ...

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
        paid = self._collect(
            invoice, now, raise_for="subscription" if behavior == "error_if_incomplete" else ""
        )
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

    def _period(self, sub: Obj) -> tuple[int, int]:
        item = sub["items"]["data"][0]
        return item["current_period_start"], item["current_period_end"]

    def _set_period(self, sub: Obj, start: int, end: int) -> None:
        for item in sub["items"]["data"]:
            item["current_period_start"], item["current_period_end"] = start, end

    def _period_end(self, sub: Obj, start: int) -> int:
        recurring = sub["items"]["data"][0]["price"]["recurring"]
        return add_interval(start, recurring["interval"], recurring["interval_count"])

    def _set_status(self, sub: Obj, status: str, now: int) -> None:
        if sub["status"] == status:
            return
        before = render(sub)
        sub["status"] = status
        self._emit_updated("customer.subscription.updated", sub, before, now)

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
            self._void(invoice, now)
        self._set_status(sub, "incomplete_expired", now)

    def _renews_charged(self, sub: Obj) -> bool:
        """Whether the subscription's next renewal creates an invoice that is charged
        automatically (what `invoice.upcoming` announces): not once it is set to cancel."""
        if sub["collection_method"] != "charge_automatically" or sub["cancel_at_period_end"]:
            return False
        if sub["status"] not in ("trialing", "active", "past_due"):
            return False
        return sub["cancel_at"] is None or sub["cancel_at"] > self._period(sub)[1]

    def _invoice_upcoming(self, sub: Obj, now: int) -> None:
        """`invoice.upcoming`: "Occurs X number of days before a subscription is scheduled to
        create an invoice that is automatically charged" (the SDK's Event types), once per
        renewal."""
        sub["_upcoming_sent_for"] = self._period(sub)[1]
        self.emit("invoice.upcoming", self._invoice_preview(sub, now), now=now)
