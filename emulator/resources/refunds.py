"""Refunds of card charges (docs.stripe.com/api/refunds).

A card refund succeeds at once. Stripe's event descriptions (the SDK's Events): `charge.refunded`
"occurs whenever a charge is refunded, including partial refunds. Listen to `refund.created` for
information about the refund"; `charge.refund.updated` only when a refund is later updated.
"""

from __future__ import annotations

from emulator.errors import invalid
from emulator.store import Obj, Store, _int, render

_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£"}


def _money(amount: int, currency: str) -> str:
    value = f"{amount / 100:.2f}"
    symbol = _SYMBOLS.get(currency)
    return f"{symbol}{value}" if symbol else f"{value} {currency.upper()}"


class RefundsMixin(Store):
    def create_refund(self, p: Obj) -> Obj:
        charge = self._refunded_charge(p)
        remaining = charge["amount"] - charge["amount_refunded"]
        if remaining <= 0:
            raise invalid(
                f"Charge {charge['id']} has already been refunded.",
                code="charge_already_refunded",
            )
        amount = _int(p.get("amount", remaining), "amount")
        if amount <= 0:
            raise invalid("This value must be greater than or equal to 1.", param="amount")
        if amount > remaining:
            # As Stripe words it: "Refund amount ($25.00) is greater than unrefunded amount on
            # charge ($21.45)", or "... greater than charge amount (...)" before any refund.
            against = (
                f"charge amount ({_money(charge['amount'], charge['currency'])})"
                if charge["amount_refunded"] == 0
                else f"unrefunded amount on charge ({_money(remaining, charge['currency'])})"
            )
            raise invalid(
                f"Refund amount ({_money(amount, charge['currency'])}) is greater than {against}",
                param="amount",
            )
        customer = self.objects.get(charge["customer"] or "")
        now = self.now_for(customer)
        refund = self._create(
            "refund",
            {
                "amount": amount,
                "charge": charge["id"],
                "currency": charge["currency"],
                "customer": charge["customer"],
                "metadata": p.get("metadata") or {},
                "payment_intent": charge.get("payment_intent"),
                "payment_method": charge.get("payment_method"),
                "reason": p.get("reason"),
                "status": "succeeded",
            },
            now,
        )
        before = render(charge)
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        self._emit_updated("charge.refunded", charge, before, now)
        self.emit("refund.created", refund, now=now)
        return refund

    def _refunded_charge(self, p: Obj) -> Obj:
        if not p.get("charge") and not p.get("payment_intent"):
            raise invalid(
                "One of `charge` or `payment_intent` is required.", code="parameter_missing"
            )
        if p.get("charge"):
            charge = self.get("charge", p["charge"], "charge")
            if p.get("payment_intent") not in (None, charge.get("payment_intent")):
                raise invalid(
                    f"The charge {charge['id']} does not belong to the PaymentIntent "
                    f"{p['payment_intent']}.",
                    param="payment_intent",
                )
        else:
            pi = self.get("payment_intent", p["payment_intent"], "payment_intent")
            if pi["status"] != "succeeded" or not pi["latest_charge"]:
                raise invalid(
                    f"This PaymentIntent ({pi['id']}) does not have a successful charge to refund.",
                    param="payment_intent",
                )
            charge = self.objects[pi["latest_charge"]]
        if charge["status"] != "succeeded":
            raise invalid(
                f"Charge {charge['id']} cannot be refunded because it has not succeeded.",
                code="charge_not_refundable",
            )
        return charge

    def list_refunds(self, p: Obj) -> Obj:
        return self.paginate(
            "refund",
            p,
            lambda o: (
                p.get("charge") in (None, o["charge"])
                and p.get("payment_intent") in (None, o["payment_intent"])
            ),
        )

    def _charge_refunds(self, charge_id: str) -> Obj:
        """A charge's `refunds`, when asked for with `expand[]=refunds`."""
        page = self.paginate("refund", {"charge": charge_id, "limit": 100})
        page["url"] = f"/v1/charges/{charge_id}/refunds"
        return page
