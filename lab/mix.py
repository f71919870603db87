"""A decline mix: how payments fail, and how each kind of failure behaves afterwards (data)."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

DEFAULT_MIX = Path(__file__).resolve().parent / "default_mix.json"


class CodeBehaviour(BaseModel):
    """One decline code: its share of first failures and what happens after it."""

    # Its share of the renewals whose first attempt fails (the shares add up to 1).
    share: float = Field(ge=0, le=1)
    # Stripe's error code for it (`card_declined`, or `authentication_required`).
    code: str = "card_declined"
    message: str = "Your card was declined."
    # The chance that a retry of the same card succeeds, by days since the first failure: the
    # entry for the largest day not after the retry counts (a key of 0 covers every retry).
    retry_success: dict[int, float] = Field(default_factory=dict)
    # After each dunning email, the chance the customer adds a new card that works.
    new_card_per_reminder: float = Field(default=0, ge=0, le=1)
    # After each request to authenticate, the chance the customer does.
    authenticate_per_reminder: float = Field(default=0, ge=0, le=1)

    def retry_succeeds(self, days: float) -> float:
        """The chance a retry `days` after the first failure succeeds."""
        due = [day for day in self.retry_success if day <= days]
        return self.retry_success[max(due)] if due else 0.0


class DeclineMix(BaseModel):
    """Where the figures come from (`sources`), how often a renewal's first attempt fails,
    the mix of decline codes, and how long a customer takes to act on an email."""

    sources: list[str] = Field(default_factory=list)
    first_attempt_failure_rate: float = Field(ge=0, le=1)
    # How long a customer takes to act on an email, on average (exponentially distributed).
    reaction_days: float = Field(default=2.0, gt=0)
    codes: dict[str, CodeBehaviour]

    @model_validator(mode="after")
    def _shares_add_up(self) -> DeclineMix:
        total = sum(code.share for code in self.codes.values())
        if self.codes and abs(total - 1) > 1e-6:
            raise ValueError(f"the decline codes' shares add up to {total}, not 1")
        return self

    @classmethod
    def load(cls, path: Path) -> DeclineMix:
        return cls.model_validate(json.loads(path.read_text()))
