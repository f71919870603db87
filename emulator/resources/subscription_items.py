"""Subscription items: price changes, prorations (docs.stripe.com/api/subscription_items)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulator.errors import invalid
from emulator.resources.invoices import _line
from emulator.resources.subscriptions import add_interval
from emulator.store import Obj, Store, render


class SubscriptionItemsMixin(Store):
    if TYPE_CHECKING:  # from SubscriptionsMixin and InvoicesMixin

        def _period(self, sub: Obj) -> tuple[int, int]: ...
        def _set_period(self, sub: Obj, start: int, end: int) -> None: ...
        def _invoice(self, sub: Obj, reason: str, now: int, amount_lines: bool = True) -> Obj: ...
        def _collect(
            self,
            invoice: Obj,
            now: int,
            raise_for: str = "",
            payment_method: str | None = None,
            customer_present: bool = False,
        ) -> bool: ...

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
