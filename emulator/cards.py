"""Stripe's test payment methods, card numbers and decline codes, and how each behaves.

Test cards: docs.stripe.com/testing ("Cards by brand", "Declined payments", "Authentication and
3D Secure"). Decline codes and their descriptions: docs.stripe.com/declines/codes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Decline:
    """A card error as the API answers it (`error.code`, `error.decline_code`, `error.message`).

    Most issuer declines answer `code=card_declined` with the reason in `decline_code`; a few
    reasons are error codes of their own with no decline code (the testing page's "Declined
    payments" table gives 4000000000000069 the error code `expired_card` and no decline code).
    """

    code: str
    decline_code: str | None
    message: str
    # The "Description" column of docs.stripe.com/declines/codes.
    description: str


# The messages are the ones the API answers for Stripe's own test cards (recorded answers of
# docs.stripe.com/testing's "Declined payments" cards); reasons without a test card answer the
# generic "Your card was declined.".
_DECLINED = "Your card was declined."
DECLINES: dict[str, Decline] = {
    "authentication_required": Decline(
        "authentication_required",
        "authentication_required",
        "Your card was declined. This transaction requires authentication.",
        "The card was declined because the transaction requires authentication such as 3D Secure.",
    ),
    "card_not_supported": Decline(
        "card_declined",
        "card_not_supported",
        "Your card does not support this type of purchase.",
        "The card does not support this type of purchase.",
    ),
    "card_velocity_exceeded": Decline(
        "card_declined",
        "card_velocity_exceeded",
        "Your card was declined for making repeated attempts too frequently or exceeding its "
        "amount limit.",
        "The customer has exceeded the balance, credit limit, or transaction amount limit "
        "available on their card.",
    ),
    "currency_not_supported": Decline(
        "card_declined",
        "currency_not_supported",
        _DECLINED,
        "The card does not support the specified currency.",
    ),
    "do_not_honor": Decline(
        "card_declined",
        "do_not_honor",
        _DECLINED,
        "The card was declined for an unknown reason.",
    ),
    "expired_card": Decline(
        "expired_card", None, "Your card has expired.", "The card has expired."
    ),
    "fraudulent": Decline(
        "card_declined",
        "fraudulent",
        _DECLINED,
        "The payment was declined because Stripe suspects that it's fraudulent.",
    ),
    "generic_decline": Decline(
        "card_declined",
        "generic_decline",
        _DECLINED,
        "The card was declined for an unknown reason or Stripe Radar blocked the payment.",
    ),
    "incorrect_cvc": Decline(
        "incorrect_cvc",
        None,
        "Your card's security code is incorrect.",
        "The CVC number is incorrect.",
    ),
    "incorrect_number": Decline(
        "incorrect_number",
        None,
        "Your card number is incorrect.",
        "The card number is incorrect.",
    ),
    "insufficient_funds": Decline(
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
        "The card has insufficient funds to complete the purchase.",
    ),
    "invalid_account": Decline(
        "card_declined",
        "invalid_account",
        _DECLINED,
        "The card, or account the card is connected to, is invalid.",
    ),
    "lost_card": Decline(
        "card_declined",
        "lost_card",
        _DECLINED,
        "The payment was declined because the card is reported lost.",
    ),
    "new_account_information_available": Decline(
        "card_declined",
        "new_account_information_available",
        _DECLINED,
        "The card, or account the card is connected to, is invalid.",
    ),
    "pickup_card": Decline(
        "card_declined",
        "pickup_card",
        _DECLINED,
        "The customer can't use this card to make this payment (it's possible it was reported "
        "lost or stolen).",
    ),
    "processing_error": Decline(
        "processing_error",
        None,
        "An error occurred while processing your card. Try again in a little bit.",
        "An error occurred while processing the card.",
    ),
    "restricted_card": Decline(
        "card_declined",
        "restricted_card",
        _DECLINED,
        "The customer can't use this card to make this payment (it's possible it was reported "
        "lost or stolen).",
    ),
    "stolen_card": Decline(
        "card_declined",
        "stolen_card",
        _DECLINED,
        "The payment was declined because the card is reported stolen.",
    ),
    "try_again_later": Decline(
        "card_declined",
        "try_again_later",
        _DECLINED,
        "The card was declined for an unknown reason.",
    ),
    "withdrawal_count_limit_exceeded": Decline(
        "card_declined",
        "withdrawal_count_limit_exceeded",
        _DECLINED,
        "The customer has exceeded the balance or credit limit available on their card.",
    ),
}


@dataclass(frozen=True)
class TestCard:
    brand: str
    number: str
    # Declined at attach time with this reason (a key of DECLINES), or never.
    attach_decline: str | None = None
    # Attaches, but every charge is declined with this reason.
    charge_decline: str | None = None
    # Every charge needs 3D Secure: an off-session attempt ends in `requires_action`; once the
    # customer authenticates, `charge_decline` (if any) applies.
    authentication_required: bool = False
    funding: str = "credit"

    @property
    def last4(self) -> str:
        return self.number[-4:]


TEST_PAYMENT_METHODS: dict[str, TestCard] = {
    "pm_card_visa": TestCard("visa", "4242424242424242"),
    "pm_card_visa_debit": TestCard("visa", "4000056655665556", funding="debit"),
    "pm_card_mastercard": TestCard("mastercard", "5555555555554444"),
    "pm_card_amex": TestCard("amex", "371449635398431"),
    # 4000 0000 0000 0341: attaching succeeds, charging the customer fails.
    "pm_card_chargeCustomerFail": TestCard(
        "visa", "4000000000000341", charge_decline="generic_decline"
    ),
    # "Declined payments": declined, so they cannot be attached either.
    "pm_card_visa_chargeDeclined": TestCard(
        "visa", "4000000000000002", attach_decline="generic_decline"
    ),
    "pm_card_visa_chargeDeclinedInsufficientFunds": TestCard(
        "visa", "4000000000009995", attach_decline="insufficient_funds"
    ),
    "pm_card_visa_chargeDeclinedLostCard": TestCard(
        "visa", "4000000000009987", attach_decline="lost_card"
    ),
    "pm_card_visa_chargeDeclinedStolenCard": TestCard(
        "visa", "4000000000009979", attach_decline="stolen_card"
    ),
    "pm_card_chargeDeclinedExpiredCard": TestCard(
        "visa", "4000000000000069", attach_decline="expired_card"
    ),
    "pm_card_chargeDeclinedIncorrectCvc": TestCard(
        "visa", "4000000000000127", attach_decline="incorrect_cvc"
    ),
    "pm_card_chargeDeclinedProcessingError": TestCard(
        "visa", "4000000000000119", attach_decline="processing_error"
    ),
    "pm_card_visa_chargeDeclinedVelocityLimitExceeded": TestCard(
        "visa", "4000000000006975", attach_decline="card_velocity_exceeded"
    ),
    # "Authentication and 3D Secure": 4000 0027 6000 3184 requires authentication on all
    # transactions, regardless of how the card is set up.
    "pm_card_authenticationRequired": TestCard(
        "visa", "4000002760003184", authentication_required=True
    ),
    # 4000 0082 6000 3178: requires authentication, then the charge is declined for
    # insufficient funds.
    "pm_card_authenticationRequiredChargeDeclinedInsufficientFunds": TestCard(
        "visa",
        "4000008260003178",
        authentication_required=True,
        charge_decline="insufficient_funds",
    ),
}

# Raw card numbers (`POST /v1/payment_methods` with `card[number]`) -> the test token that
# behaves the same.
TOKEN_FOR_NUMBER: dict[str, str] = {
    card.number: token for token, card in TEST_PAYMENT_METHODS.items()
}


def luhn_valid(number: str) -> bool:
    digits = [int(d) for d in number]
    odd, even = digits[-1::-2], digits[-2::-2]
    return (sum(odd) + sum(sum(divmod(2 * d, 10)) for d in even)) % 10 == 0
