"""Stripe's test payment methods and how each behaves (docs.stripe.com/testing)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TestCard:
    brand: str
    last4: str
    # Declined at attach time (a card error with this decline code), or never.
    attach_decline: str | None = None
    # Attaches, but every charge is declined with this decline code.
    charge_decline: str | None = None
    funding: str = "credit"


DECLINE_MESSAGES = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
}

TEST_PAYMENT_METHODS: dict[str, TestCard] = {
    "pm_card_visa": TestCard("visa", "4242"),
    "pm_card_visa_debit": TestCard("visa", "5556", funding="debit"),
    "pm_card_mastercard": TestCard("mastercard", "4444"),
    "pm_card_amex": TestCard("amex", "8431"),
    # 4000 0000 0000 0341: attaching succeeds, charging the customer fails.
    "pm_card_chargeCustomerFail": TestCard("visa", "0341", charge_decline="generic_decline"),
    # 4000 0000 0000 0002 and 4000 0000 0000 9995: declined, so they cannot be attached.
    "pm_card_visa_chargeDeclined": TestCard("visa", "0002", attach_decline="generic_decline"),
    "pm_card_visa_chargeDeclinedInsufficientFunds": TestCard(
        "visa", "9995", attach_decline="insufficient_funds"
    ),
}
