"""PaymentIntents: each attempt to pay an invoice confirms the invoice's PaymentIntent
(docs.stripe.com/api/payment_intents, docs.stripe.com/payments/paymentintents/lifecycle)."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from emulator.cards import DECLINES, Decline, TestCard
from emulator.errors import doc_url
from emulator.store import Obj, Store, render


class PaymentIntentsMixin(Store):
    if TYPE_CHECKING:  # from PaymentMethodsMixin and ChargesMixin

        def _test_card(self, pm: Obj) -> TestCard | None: ...
        def _card_expired(self, pm: Obj, now: int) -> bool: ...
        def _create_charge(
            self,
            pi: Obj,
            pm: Obj,
            decline: Decline | None,
            now: int,
            description: str | None = None,
        ) -> Obj: ...

    def _create_payment_intent(self, customer: str, amount: int, currency: str, now: int) -> Obj:
        pi = self._create(
            "payment_intent",
            {
                "amount": amount,
                "amount_capturable": 0,
                "amount_received": 0,
                "canceled_at": None,
                "cancellation_reason": None,
                "capture_method": "automatic",
                "confirmation_method": "automatic",
                "currency": currency,
                "customer": customer,
                "description": None,
                "last_payment_error": None,
                "latest_charge": None,
                "metadata": {},
                "next_action": None,
                "payment_method": None,
                "payment_method_types": ["card"],
                "setup_future_usage": None,
                "status": "requires_payment_method",
            },
            now,
        )
        pi["client_secret"] = f"{pi['id']}_secret_{secrets.token_urlsafe(18)}"
        self.emit("payment_intent.created", pi, now=now)
        return pi

    def _confirm(
        self,
        pi: Obj,
        customer: Obj,
        pm: Obj,
        now: int,
        customer_present: bool,
        description: str | None = None,
    ) -> Decline | None:
        """One payment attempt: a Charge, and the PaymentIntent's new status. Answers the decline,
        or None when the payment succeeded.

        A declined attempt leaves the PaymentIntent in `requires_payment_method`, its payment
        method cleared and `last_payment_error` set; an attempt that needs 3D Secure leaves it in
        `requires_action` with its payment method kept, for the customer to authenticate."""
        decline = self._decline_for(customer, pm, now, customer_present)
        charge = self._create_charge(pi, pm, decline, now, description)
        pi["latest_charge"] = charge["id"]
        if decline is None:
            pi.update(
                status="succeeded",
                amount_received=pi["amount"],
                payment_method=pm["id"],
                last_payment_error=None,
                next_action=None,
            )
            self.emit("payment_intent.succeeded", pi, now=now)
            return None
        error: Obj = {"type": "card_error", "code": decline.code}
        if decline.decline_code:
            error["decline_code"] = decline.decline_code
        error.update(
            message=decline.message,
            doc_url=doc_url(decline.code),
            charge=charge["id"],
            payment_method=render(pm),
        )
        pi["last_payment_error"] = error
        if decline.code == "authentication_required":
            pi.update(
                status="requires_action",
                payment_method=pm["id"],
                next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {}},
            )
            self.emit("payment_intent.requires_action", pi, now=now)
        else:
            pi.update(status="requires_payment_method", payment_method=None, next_action=None)
            self.emit("payment_intent.payment_failed", pi, now=now)
        return decline

    def _decline_for(
        self, customer: Obj, pm: Obj, now: int, customer_present: bool
    ) -> Decline | None:
        """Why this charge fails, if it does: a decline forced on the customer (emulator
        control), an expired card, a card that needs 3D Secure while the customer is away,
        or the test card's own decline."""
        forced = self._take_forced_decline(customer["id"])
        if forced and not (customer_present and forced.code == "authentication_required"):
            return forced
        if self._card_expired(pm, now):
            return DECLINES["expired_card"]
        card = self._test_card(pm)
        if card and card.authentication_required and not customer_present:
            return DECLINES["authentication_required"]
        if card and card.charge_decline:
            return DECLINES[card.charge_decline]
        return None

    def _take_forced_decline(self, customer_id: str) -> Decline | None:
        forced = self.declines.get(customer_id)
        if not forced:
            return None
        if forced["remaining"] is not None:
            forced["remaining"] -= 1
            if forced["remaining"] <= 0:
                del self.declines[customer_id]
        return DECLINES[forced["decline_code"]]

    def _cancel_payment_intent(self, pi: Obj, reason: str, now: int) -> None:
        if pi["status"] in ("succeeded", "canceled"):
            return
        pi.update(status="canceled", canceled_at=now, cancellation_reason=reason, next_action=None)
        self.emit("payment_intent.canceled", pi, now=now)
