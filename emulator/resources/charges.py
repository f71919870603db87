"""Charges: one per payment attempt of a PaymentIntent (docs.stripe.com/api/charges)."""

from __future__ import annotations

from emulator.cards import Decline
from emulator.store import Obj, Store, render


class ChargesMixin(Store):
    def _create_charge(
        self,
        pi: Obj,
        pm: Obj,
        decline: Decline | None,
        now: int,
        description: str | None = None,
    ) -> Obj:
        succeeded = decline is None
        charge = self._create(
            "charge",
            {
                "amount": pi["amount"],
                "amount_captured": pi["amount"] if succeeded else 0,
                "amount_refunded": 0,
                "billing_details": render(pm["billing_details"]),
                "captured": succeeded,
                "currency": pi["currency"],
                "customer": pi["customer"],
                "description": description,
                "disputed": False,
                "failure_code": decline.code if decline else None,
                "failure_message": decline.message if decline else None,
                "metadata": {},
                "outcome": _outcome(decline),
                "paid": succeeded,
                "payment_intent": pi["id"],
                "payment_method": pm["id"],
                "refunded": False,
                "status": "succeeded" if succeeded else "failed",
            },
            now,
        )
        self.emit("charge.succeeded" if succeeded else "charge.failed", charge, now=now)
        return charge

    def list_charges(self, p: Obj) -> Obj:
        return self.paginate(
            "charge",
            p,
            lambda o: (
                p.get("customer") in (None, o["customer"])
                and p.get("payment_intent") in (None, o.get("payment_intent"))
            ),
        )


def _outcome(decline: Decline | None) -> Obj:
    if decline is None:
        return {
            "type": "authorized",
            "network_status": "approved_by_network",
            "reason": None,
            "seller_message": "Payment complete.",
        }
    reason = decline.decline_code or decline.code
    return {
        "type": "issuer_declined",
        "network_status": "declined_by_network",
        "reason": reason,
        "seller_message": "The bank did not return any further details with this decline."
        if reason == "generic_decline"
        else f"The bank returned the decline code `{reason}`.",
    }
