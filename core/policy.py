"""The dunning schedule as data: production runs it in days, a demo or a test in seconds."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from core.settings import Settings


class DunningPolicy(BaseModel):
    """Carried in the workflow's input, so a running workflow keeps the policy it started with."""

    model_config = ConfigDict(frozen=True)

    # Delay after failure n before retry n; the last one repeats if there are more retries.
    retry_delays: list[timedelta] = Field(
        default_factory=lambda: [timedelta(days=3), timedelta(days=5)], min_length=1
    )
    max_failures: int = Field(default=3, ge=1)
    trial_reminder_before: timedelta = timedelta(days=3)
    # After a period ends, re-read the subscription from Stripe this much later, in case a
    # webhook never arrived (then once a day until the period moves on).
    period_end_sync_after: timedelta = timedelta(hours=1)

    def delay_after(self, failures: int) -> timedelta:
        """How long to wait after the n-th failed attempt before retrying the payment."""
        return self.retry_delays[min(failures, len(self.retry_delays)) - 1]

    @classmethod
    def from_settings(cls, settings: Settings) -> DunningPolicy:
        return cls(
            retry_delays=settings.dunning_retry_delays,
            max_failures=settings.dunning_max_failures,
            trial_reminder_before=settings.dunning_trial_reminder_before,
        )
