"""Invoices, and the Charges that pay them (docs.stripe.com/api/invoices, /api/charges)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulator.cards import DECLINE_MESSAGES, TEST_PAYMENT_METHODS
from emulator.errors import StripeApiError, invalid
from emulator.store import Obj, Store, new_id


class InvoicesMixin(Store):
    if TYPE_CHECKING:  # from SubscriptionsMixin and PaymentMethodsMixin

        def _period(self, sub: Obj) -> tuple[int, int]: ...
        def _set_status(self, sub: Obj, status: str, now: int) -> None: ...
        def _owned_pm(self, customer: Obj, ident: str, param: str) -> Obj: ...

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
