"""What the Stripe activity tests share: calling an activity in context, a fresh key, a customer
with a card made through the activities themselves."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar

from activities.stripe import StripeActivities
from core.payloads import (
    AttachPaymentMethod,
    EnsureCustomer,
    SetDefaultPaymentMethod,
)

DAY = 86_400


P = ParamSpec("P")
R = TypeVar("R")


class Run(Protocol):
    """`ActivityEnvironment.run`: call an activity in an activity's context."""

    def __call__(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R: ...


def key() -> str:
    return f"test-{uuid.uuid4()}"


async def customer_with_card(
    acts: StripeActivities, run: Run, card: str = "pm_card_visa", **extra: Any
) -> tuple[str, str]:
    user = f"user-{uuid.uuid4().hex[:8]}"
    customer = await run(
        acts.ensure_customer,
        EnsureCustomer(user_id=user, email=f"{user}@example.com", idempotency_key=key(), **extra),
    )
    pm = await run(
        acts.attach_payment_method,
        AttachPaymentMethod(customer_id=customer.id, payment_method_id=card, idempotency_key=key()),
    )
    await run(
        acts.set_default_payment_method,
        SetDefaultPaymentMethod(
            customer_id=customer.id, payment_method_id=pm.id, idempotency_key=key()
        ),
    )
    return customer.id, pm.id
