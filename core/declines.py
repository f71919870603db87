"""Which declines are worth retrying with the same card: data from Stripe's decline-code table.

Source: https://docs.stripe.com/declines/codes ("Card decline codes", the "Next steps" column)
and https://docs.stripe.com/declines/card ("advice codes"). A code whose next step is "the
customer needs to use another card" or "contact their card issuer", or that reports a lost,
stolen, fraudulent, closed or unsupported card, is hard: Stripe's own retries skip them, and
retrying them only adds declines to the card's record. Every other code (insufficient funds,
generic and processing errors, "try again later") is soft and retried on the policy's schedule.
"""

from __future__ import annotations

from enum import StrEnum

from core.payloads import PaymentError


class DeclineKind(StrEnum):
    SOFT = "soft"
    HARD = "hard"
    # The issuer wants the customer to authenticate (3-D Secure): only they can.
    AUTHENTICATION = "authentication"


# Decline codes (and the card-error codes Stripe gives without one) not to retry.
HARD_DECLINE_CODES = frozenset(
    {
        "call_issuer",
        "card_not_supported",
        "currency_not_supported",
        "do_not_try_again",
        "expired_card",
        "fraudulent",
        "incorrect_cvc",
        "incorrect_number",
        "incorrect_pin",
        "incorrect_zip",
        "invalid_account",
        "invalid_cvc",
        "invalid_expiry_month",
        "invalid_expiry_year",
        "invalid_number",
        "invalid_pin",
        "lost_card",
        "merchant_blacklist",
        "new_account_information_available",
        "not_permitted",
        "pickup_card",
        "pin_try_exceeded",
        "restricted_card",
        "revocation_of_all_authorizations",
        "revocation_of_authorization",
        "security_violation",
        "service_not_allowed",
        "stolen_card",
        "stop_payment_order",
        "testmode_decline",
        "transaction_not_allowed",
    }
)

# Stripe's advice codes: `do_not_try_again` and `confirm_card_data` need the customer;
# `try_again_later` is a soft decline whatever its code.
HARD_ADVICE_CODES = frozenset({"do_not_try_again", "confirm_card_data"})

AUTHENTICATION_CODES = frozenset({"authentication_required"})


def kind_of(error: PaymentError | None, requires_action: bool = False) -> DeclineKind:
    """How to go on after a failed payment attempt."""
    if requires_action:
        return DeclineKind.AUTHENTICATION
    if error is None:
        return DeclineKind.SOFT
    reason = error.reason
    if reason in AUTHENTICATION_CODES or error.code in AUTHENTICATION_CODES:
        return DeclineKind.AUTHENTICATION
    if error.advice_code == "try_again_later":
        return DeclineKind.SOFT
    if error.advice_code in HARD_ADVICE_CODES or reason in HARD_DECLINE_CODES:
        return DeclineKind.HARD
    return DeclineKind.SOFT
