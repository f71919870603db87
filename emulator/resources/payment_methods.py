"""PaymentMethods, from Stripe's test tokens (docs.stripe.com/api/payment_methods)."""

from __future__ import annotations

from datetime import UTC, datetime

from emulator.cards import DECLINE_MESSAGES, TEST_PAYMENT_METHODS
from emulator.errors import StripeApiError, invalid
from emulator.store import Obj, Store


class PaymentMethodsMixin(Store):
    def retrieve_payment_method(self, ident: str) -> Obj:
        if ident in TEST_PAYMENT_METHODS:
            return self._payment_method_from_token(ident)
        return self.get("payment_method", ident)

    def _payment_method_from_token(self, token: str) -> Obj:
        card = TEST_PAYMENT_METHODS[token]
        return self._create(
            "payment_method",
            {
                "type": "card",
                "customer": None,
                "billing_details": {"address": None, "email": None, "name": None, "phone": None},
                "card": {
                    "brand": card.brand,
                    "last4": card.last4,
                    "exp_month": 12,
                    "exp_year": datetime.now(UTC).year + 3,
                    "funding": card.funding,
                    "country": "US",
                },
                "metadata": {},
                "_token": token,
            },
        )

    def attach_payment_method(self, ident: str, p: Obj) -> Obj:
        if not p.get("customer"):
            raise invalid(
                "Missing required param: customer.", param="customer", code="parameter_missing"
            )
        customer = self.get("customer", p["customer"], "customer")
        if ident in TEST_PAYMENT_METHODS:
            card = TEST_PAYMENT_METHODS[ident]
            if card.attach_decline:
                raise StripeApiError(
                    402,
                    DECLINE_MESSAGES[card.attach_decline],
                    type="card_error",
                    code="card_declined",
                    decline_code=card.attach_decline,
                )
            pm = self._payment_method_from_token(ident)
        else:
            pm = self.get("payment_method", ident)
            if pm["customer"] and pm["customer"] != customer["id"]:
                raise invalid(
                    "The payment method you provided has already been attached to a customer.",
                    code="payment_method_unexpected_state",
                )
        pm["customer"] = customer["id"]
        self.index("payment_method", "customer", customer["id"], pm["id"])
        self.emit("payment_method.attached", pm, now=self.now_for(customer))
        return pm

    def detach_payment_method(self, ident: str) -> Obj:
        pm = self.get("payment_method", ident)
        if not pm["customer"]:
            raise invalid(
                "The payment method you provided is not attached to a customer so detachment is impossible.",
                code="payment_method_unexpected_state",
            )
        customer = self.objects[pm["customer"]]
        if customer["invoice_settings"]["default_payment_method"] == ident:
            customer["invoice_settings"]["default_payment_method"] = None
        pm["customer"] = None
        self.emit(
            "payment_method.detached", pm, {"customer": customer["id"]}, self.now_for(customer)
        )
        return pm

    def list_payment_methods(self, p: Obj) -> Obj:
        return self.paginate(
            "payment_method",
            p,
            lambda o: o["customer"] == p.get("customer") and p.get("type") in (None, o["type"]),
        )

    def _owned_pm(self, customer: Obj, ident: str, param: str) -> Obj:
        pm = self.objects.get(ident)
        if not pm or pm["object"] != "payment_method" or pm["customer"] != customer["id"]:
            raise invalid(
                f"The customer does not have a payment method with the ID {ident}. The payment "
                "method must be attached to the customer.",
                param=param,
                code="resource_missing",
            )
        return pm
