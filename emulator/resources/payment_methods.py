"""PaymentMethods, from Stripe's test tokens or test card numbers
(docs.stripe.com/api/payment_methods, docs.stripe.com/testing)."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

from emulator.cards import DECLINES, TEST_PAYMENT_METHODS, TOKEN_FOR_NUMBER, TestCard, luhn_valid
from emulator.errors import card_error, invalid
from emulator.store import Obj, Store, _int


class PaymentMethodsMixin(Store):
    def retrieve_payment_method(self, ident: str) -> Obj:
        if ident in TEST_PAYMENT_METHODS:
            return self._payment_method_from_token(ident)
        return self.get("payment_method", ident)

    def create_payment_method(self, p: Obj) -> Obj:
        """`type=card` with `card[number]`, `card[exp_month]`, `card[exp_year]`: the raw card
        data API, for Stripe's test card numbers only (as in test mode)."""
        if p.get("type") != "card":
            raise invalid(
                "Missing required param: type." if "type" not in p else "Invalid type",
                param="type",
                code="parameter_missing" if "type" not in p else None,
            )
        card = p.get("card")
        if not isinstance(card, dict):
            raise invalid("Missing required param: card.", param="card", code="parameter_missing")
        for field in ("number", "exp_month", "exp_year"):
            if not card.get(field):
                raise invalid(
                    f"Missing required param: card[{field}].",
                    param=f"card[{field}]",
                    code="parameter_missing",
                )
        number = "".join(str(card["number"]).split())
        if not number.isdigit() or not luhn_valid(number):
            decline = DECLINES["incorrect_number"]
            raise card_error(decline.message, decline.code, param="number")
        month = _int(card["exp_month"], "card[exp_month]")
        year = _int(card["exp_year"], "card[exp_year]")
        year += 2000 if year < 100 else 0
        today = datetime.now(UTC)
        if not 1 <= month <= 12:
            raise card_error(
                "Your card's expiration month is invalid.",
                "invalid_expiry_month",
                param="exp_month",
            )
        if year < today.year:
            raise card_error(
                "Your card's expiration year is invalid.", "invalid_expiry_year", param="exp_year"
            )
        if (year, month) < (today.year, today.month):
            raise card_error(
                "Your card's expiration month is invalid.",
                "invalid_expiry_month",
                param="exp_month",
            )
        token = TOKEN_FOR_NUMBER.get(number)
        if token is None:
            # Test mode takes Stripe's test numbers only.
            raise card_error(
                "Your card was declined. Your request was in test mode, but used a non test "
                "(live) card. For a list of valid test cards, visit: "
                "https://stripe.com/docs/testing.",
                "card_declined",
                decline_code="test_mode_live_card",
            )
        pm = self._payment_method_from_token(token, exp=(month, year))
        if p.get("billing_details"):
            pm["billing_details"].update(p["billing_details"])
        if p.get("metadata"):
            pm["metadata"] = dict(p["metadata"])
        return pm

    def _payment_method_from_token(self, token: str, exp: tuple[int, int] | None = None) -> Obj:
        card = TEST_PAYMENT_METHODS[token]
        # A test token's card expires in the future, as Stripe's do.
        month, year = exp or (12, datetime.now(UTC).year + 3)
        return self._create(
            "payment_method",
            {
                "type": "card",
                "customer": None,
                "billing_details": {"address": None, "email": None, "name": None, "phone": None},
                "card": {
                    "brand": card.brand,
                    "last4": card.last4,
                    "exp_month": month,
                    "exp_year": year,
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
            self._check_attach(TEST_PAYMENT_METHODS[ident])
            pm = self._payment_method_from_token(ident)
        else:
            pm = self.get("payment_method", ident)
            if pm["customer"] and pm["customer"] != customer["id"]:
                raise invalid(
                    "The payment method you provided has already been attached to a customer.",
                    code="payment_method_unexpected_state",
                )
            if card := self._test_card(pm):
                self._check_attach(card)
        pm["customer"] = customer["id"]
        self.index("payment_method", "customer", customer["id"], pm["id"])
        self.emit("payment_method.attached", pm, now=self.now_for(customer))
        return pm

    def _check_attach(self, card: TestCard) -> None:
        if card.attach_decline:
            decline = DECLINES[card.attach_decline]
            raise card_error(decline.message, decline.code, decline.decline_code)

    def _test_card(self, pm: Obj) -> TestCard | None:
        return TEST_PAYMENT_METHODS.get(pm.get("_token", ""))

    def _card_expired(self, pm: Obj, now: int) -> bool:
        """A card is good through the last day of its expiry month."""
        card = pm.get("card") or {}
        month, year = card.get("exp_month"), card.get("exp_year")
        if not isinstance(month, int) or not isinstance(year, int):
            return False
        last_day = calendar.monthrange(year, month)[1]
        good_through = datetime(year, month, last_day, 23, 59, 59, tzinfo=UTC).timestamp()
        return now > good_through

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
