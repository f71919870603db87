"""Invoice Payments: what ties an invoice to the PaymentIntent that pays it
(docs.stripe.com/api/invoice-payment).

Stripe creates a default InvoicePayment when it finalizes an invoice (`is_default`), in
`status=open` until its PaymentIntent succeeds. An invoice leaves out its `payments` unless
asked for them: the SDK's InvoicePayment docs reach them "by expanding the `payments` field on
the Invoice resource", and `GET /v1/invoice_payments` lists all of them.
"""

from __future__ import annotations

from emulator.errors import invalid
from emulator.store import Obj, Store, render

# How many payments an expanded `invoice.payments` holds ("the first handful"); the rest are
# paged through GET /v1/invoice_payments?invoice=...
INCLUDED_PAYMENTS = 10


class InvoicePaymentsMixin(Store):
    def _open_invoice_payment(self, invoice: Obj, pi: Obj, now: int) -> Obj:
        return self._create(
            "invoice_payment",
            {
                "amount_paid": None,
                "amount_requested": pi["amount"],
                "currency": pi["currency"],
                "invoice": invoice["id"],
                "is_default": True,
                "payment": {"type": "payment_intent", "payment_intent": pi["id"]},
                "status": "open",
                "status_transitions": {"canceled_at": None, "paid_at": None},
            },
            now,
        )

    def _invoice_payment_paid(self, payment: Obj, amount: int, now: int) -> None:
        payment.update(status="paid", amount_paid=amount)
        payment["status_transitions"]["paid_at"] = now
        self.emit("invoice_payment.paid", payment, now=now)

    def _invoice_payment_canceled(self, payment: Obj, now: int) -> None:
        if payment["status"] == "open":
            payment["status"] = "canceled"
            payment["status_transitions"]["canceled_at"] = now

    def list_invoice_payments(self, p: Obj) -> Obj:
        wanted = p.get("payment") or {}
        if "payment" in p and not wanted.get("type"):
            raise invalid(
                "Missing required param: payment[type].",
                param="payment[type]",
                code="parameter_missing",
            )
        pool = None
        if isinstance(wanted.get("payment_intent"), str) and not isinstance(p.get("invoice"), str):
            pool = self.candidates("invoice_payment", "payment_intent", wanted["payment_intent"])
        return self.paginate(
            "invoice_payment",
            p,
            lambda o: (
                p.get("invoice") in (None, o["invoice"])
                and p.get("status") in (None, o["status"])
                and wanted.get("type") in (None, o["payment"]["type"])
                and wanted.get("payment_intent") in (None, o["payment"].get("payment_intent"))
                and wanted.get("payment_record") in (None, o["payment"].get("payment_record"))
            ),
            pool,
        )

    def _included_payments(self, invoice_id: str) -> Obj:
        """An invoice's `payments`, when asked for with `expand[]=payments`."""
        rows = [
            o
            for o in self.candidates("invoice_payment", "invoice", invoice_id)
            if o["invoice"] == invoice_id
        ]
        rows.sort(key=lambda o: (o["created"], o["_seq"]), reverse=True)
        return {
            "object": "list",
            "data": [render(o) for o in rows[:INCLUDED_PAYMENTS]],
            "has_more": len(rows) > INCLUDED_PAYMENTS,
            "url": f"/v1/invoice_payments?invoice={invoice_id}",
        }
