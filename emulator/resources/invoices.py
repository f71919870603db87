"""Invoices, finalized with a PaymentIntent to pay them (docs.stripe.com/api/invoices).

Each payment attempt confirms the invoice's PaymentIntent (see payment_intents.py). A declined
attempt leaves the invoice `open` and sends `invoice.payment_failed`; one that needs 3D Secure
also sends `invoice.payment_action_required` ("an invoice payment attempt requires further user
action to complete") and leaves the PaymentIntent in `requires_action`, for the customer to
finish on the invoice's `hosted_invoice_url` ("the hosted invoice page, which allows customers
to view and pay an invoice").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from emulator.cards import TEST_PAYMENT_METHODS, Decline
from emulator.errors import StripeApiError, card_error, invalid
from emulator.store import Obj, Store, new_id, render

# Stripe's answers when an attempt ends in `requires_action`: `invoice.pay` says so with this
# card error (github.com/stripe/stripe-node/issues/628), a subscription created with
# `payment_behavior=error_if_incomplete` with the second (github.com/dotpngn/
# flutter-stripe-subscription/issues/1).
INVOICE_REQUIRES_ACTION = (
    "This payment requires additional user action before it can be completed successfully. "
    "Payment can be completed using the PaymentIntent associated with the invoice. For more "
    "details see: https://stripe.com/docs/billing/subscriptions/overview#requires-action"
)
SUBSCRIPTION_REQUIRES_ACTION = (
    "Payment for this subscription requires additional user action before it can be completed "
    "successfully. Payment can be completed using the PaymentIntent associated with "
    "`subscription.latest_invoice`. Additional information is available here: "
    "https://stripe.com/docs/billing/subscriptions/overview#requires-action"
)


class InvoicesMixin(Store):
    if TYPE_CHECKING:  # from the Subscriptions, PaymentMethods, PaymentIntents mixins

        def _period(self, sub: Obj) -> tuple[int, int]: ...
        def _period_end(self, sub: Obj, start: int) -> int: ...
        def _set_status(self, sub: Obj, status: str, now: int) -> None: ...
        def _owned_pm(self, customer: Obj, ident: str, param: str) -> Obj: ...
        def attach_payment_method(self, ident: str, p: Obj) -> Obj: ...
        def _create_payment_intent(
            self, customer: str, amount: int, currency: str, now: int
        ) -> Obj: ...
        def _confirm(
            self,
            pi: Obj,
            customer: Obj,
            pm: Obj,
            now: int,
            customer_present: bool,
            description: str | None = None,
        ) -> Decline | None: ...
        def _cancel_payment_intent(self, pi: Obj, reason: str, now: int) -> None: ...
        def _open_invoice_payment(self, invoice: Obj, pi: Obj, now: int) -> Obj: ...
        def _invoice_payment_paid(self, payment: Obj, amount: int, now: int) -> None: ...
        def _invoice_payment_canceled(self, payment: Obj, now: int) -> None: ...

    def _invoice_draft(
        self, sub: Obj, reason: str, start: int, end: int, amount_lines: bool = True
    ) -> tuple[Obj, list[Obj]]:
        """The fields and lines of the invoice `sub` would have for [start, end]."""
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
        fields: Obj = {
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
        }
        return fields, lines

    def _invoice(self, sub: Obj, reason: str, now: int, amount_lines: bool = True) -> Obj:
        start, end = self._period(sub)
        fields, lines = self._invoice_draft(sub, reason, start, end, amount_lines)
        invoice = self._create("invoice", fields, now)
        invoice["lines"]["url"] = f"/v1/invoices/{invoice['id']}/lines"
        for line in lines:
            invoice["lines"]["data"].append(
                {"id": new_id("line_item"), "object": "line_item", "invoice": invoice["id"], **line}
            )
        for pending in self.candidates("invoiceitem", "subscription", sub["id"]):
            if pending["subscription"] == sub["id"] and pending["invoice"] is None:
                pending["invoice"] = invoice["id"]
        sub["latest_invoice"] = invoice["id"]
        self.emit("invoice.created", invoice, now=now)
        self._finalize(invoice, now)
        return invoice

    def _finalize(self, invoice: Obj, now: int) -> None:
        """Open the invoice, with its hosted page and, when there is something to pay, the
        PaymentIntent and default InvoicePayment that Stripe creates at finalization."""
        invoice.update(
            status="open",
            number=f"SFB-{invoice['_seq']:06d}",
            hosted_invoice_url=f"{self.public_url}/_emulator/hosted_invoices/{invoice['id']}",
        )
        invoice["status_transitions"]["finalized_at"] = now
        if invoice["amount_due"] > 0:
            pi = self._create_payment_intent(
                invoice["customer"], invoice["amount_due"], invoice["currency"], now
            )
            payment = self._open_invoice_payment(invoice, pi, now)
            invoice["_payment_intent"] = pi["id"]
            invoice["_invoice_payment"] = payment["id"]
        self.emit("invoice.finalized", invoice, now=now)

    def _invoice_payment_intent(self, invoice: Obj, now: int) -> Obj:
        """The invoice's PaymentIntent (made now for an invoice finalized before the emulator
        made them, from an older state file)."""
        if "_payment_intent" not in invoice:
            made = self._create_payment_intent(
                invoice["customer"], invoice["amount_due"], invoice["currency"], now
            )
            invoice["_payment_intent"] = made["id"]
            invoice["_invoice_payment"] = self._open_invoice_payment(invoice, made, now)["id"]
        pi: Obj = self.objects[invoice["_payment_intent"]]
        return pi

    def pay_invoice(self, ident: str, p: Obj) -> Obj:
        invoice = self._open_invoice(ident)
        customer = self.objects[invoice["customer"]]
        now = self.now_for(customer)
        pm = p.get("payment_method")
        if pm:
            self._owned_pm(customer, pm, "payment_method")
        self._collect(invoice, now, raise_for="invoice", payment_method=pm)
        return invoice

    def pay_hosted_invoice(self, ident: str, p: Obj) -> Obj:
        """The customer pays on the hosted invoice page (emulator only): with the card the
        payment is waiting on (completing 3D Secure), or with another card.

        The customer is present, so a card that needs authentication is authenticated. The
        attempt is the customer's, not the retry schedule's: it does not count in
        `attempt_count`, except as the invoice's first attempt (the SDK's `attempt_count`)."""
        invoice = self._open_invoice(ident)
        customer = self.objects[invoice["customer"]]
        now = self.now_for(customer)
        pm = p.get("payment_method")
        if pm in TEST_PAYMENT_METHODS:
            pm = self.attach_payment_method(pm, {"customer": customer["id"]})["id"]
        elif pm:
            self._owned_pm(customer, pm, "payment_method")
        self._collect(
            invoice,
            now,
            raise_for="invoice",
            payment_method=pm,
            customer_present=True,
        )
        return invoice

    def _open_invoice(self, ident: str) -> Obj:
        invoice = self.get("invoice", ident)
        if invoice["status"] == "paid":
            raise invalid("Invoice is already paid")
        if invoice["status"] != "open":
            raise invalid(
                f"You can only pay an invoice that is open. This invoice is {invoice['status']}."
            )
        return invoice

    def _collect(
        self,
        invoice: Obj,
        now: int,
        raise_for: str = "",
        payment_method: str | None = None,
        customer_present: bool = False,
    ) -> bool:
        """Attempt payment of an open invoice; True when it ends paid.

        `raise_for` ("invoice" or "subscription") answers a failed attempt with Stripe's error
        for that request instead of returning False."""
        sub = (
            self.objects.get(invoice["parent"]["subscription_details"]["subscription"])
            if invoice.get("parent")
            else None
        )
        customer = self.objects[invoice["customer"]]
        if invoice["amount_due"] <= 0:
            self._mark_paid(invoice, sub, now)
            return True
        pi = self._invoice_payment_intent(invoice, now)
        pm_id = (
            payment_method
            or (pi["payment_method"] if pi["status"] == "requires_action" else None)
            or invoice.get("default_payment_method")
            or (sub or {}).get("default_payment_method")
            or customer["invoice_settings"]["default_payment_method"]
        )
        # "Any payment attempt counts as the first attempt, and subsequently only automatic
        # retries increment the attempt count" (the SDK's `Invoice.attempt_count`): the
        # emulator makes no automatic retries, so `invoice.pay` and the hosted page leave it.
        if invoice["attempt_count"] == 0:
            invoice["attempt_count"] += 1
        invoice["attempted"] = True
        if not pm_id:
            self.emit("invoice.payment_failed", invoice, now=now)
            self._past_due(sub, now)
            if raise_for:
                raise invalid(
                    "This customer has no attached payment source or default payment method."
                )
            return False
        decline = self._confirm(
            pi,
            customer,
            self.objects[pm_id],
            now,
            customer_present,
            description=f"Invoice {invoice['number']}",
        )
        if decline is None:
            invoice["amount_paid"] = invoice["amount_due"]
            invoice["amount_remaining"] = 0
            self._invoice_payment_paid(
                self.objects[invoice["_invoice_payment"]], invoice["amount_due"], now
            )
            self._mark_paid(invoice, sub, now)
            return True
        self.emit("invoice.payment_failed", invoice, now=now)
        if pi["status"] == "requires_action":
            self.emit("invoice.payment_action_required", invoice, now=now)
        self._past_due(sub, now)
        if raise_for:
            raise self._payment_error(pi, decline, raise_for)
        return False

    def _payment_error(self, pi: Obj, decline: Decline, raise_for: str) -> StripeApiError:
        if pi["status"] == "requires_action":
            return card_error(
                INVOICE_REQUIRES_ACTION if raise_for == "invoice" else SUBSCRIPTION_REQUIRES_ACTION,
                f"{raise_for}_payment_intent_requires_action",
                extra={"payment_intent": render(pi)},
            )
        return card_error(
            decline.message,
            decline.code,
            decline.decline_code,
            extra={"charge": pi["latest_charge"], "payment_intent": render(pi)},
        )

    def _past_due(self, sub: Obj | None, now: int) -> None:
        """A failed renewal makes the subscription past_due; a first invoice leaves it
        incomplete."""
        if sub and sub["status"] in ("active", "trialing"):
            self._set_status(sub, "past_due", now)

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

    def _void(self, invoice: Obj, now: int) -> None:
        """Void an open invoice; its PaymentIntent is canceled with it."""
        invoice["status"] = "void"
        invoice["status_transitions"]["voided_at"] = now
        if pi := self.objects.get(invoice.get("_payment_intent", "")):
            self._cancel_payment_intent(pi, "void_invoice", now)
            self._invoice_payment_canceled(self.objects[invoice["_invoice_payment"]], now)
        self.emit("invoice.voided", invoice, now=now)

    def _invoice_preview(self, sub: Obj, now: int) -> Obj:
        """The invoice `sub`'s next renewal will create, as `invoice.upcoming` carries it: not
        stored, and with no id ("The received Invoice object will not have an invoice ID")."""
        _, start = self._period(sub)
        end = self._period_end(sub, start)
        fields, lines = self._invoice_draft(sub, "upcoming", start, end)
        fields.update(object="invoice", created=now, livemode=False, next_payment_attempt=start)
        fields["lines"]["data"] = [
            {"id": f"il_tmp_{new_id('line_item')[3:]}", "object": "line_item", "invoice": None}
            | line
            for line in lines
        ]
        return fields


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
