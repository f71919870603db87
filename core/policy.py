"""The dunning schedule as data: production runs it in days, a demo or a test in seconds."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field

from core.payloads import Access, Plan, Status
from core.settings import Settings


class DunningPolicy(BaseModel):
    """Carried in the workflow's input, so a running workflow keeps the policy it started with.

    The production default spreads three failures over two weeks (a failure, a retry a week
    later, the last a week after that): Stripe's own default retries for three weeks and
    Recurly advises 14 to 28 days. `plans` holds a whole policy per plan where one differs
    (by default enterprise waits three weeks); `for_plan` picks it.
    """

    model_config = ConfigDict(frozen=True)

    # Delay after failure n before retry n; the last one repeats if there are more retries.
    # After a hard decline or a request to authenticate, the same delay is the customer's
    # window to act: when it runs out the workflow counts it as the next failure.
    retry_delays: list[timedelta] = Field(
        default_factory=lambda: [timedelta(days=7), timedelta(days=7)], min_length=1
    )
    max_failures: int = Field(default=3, ge=1)
    # Access while a payment is failing: `grace` from this failure on, `restricted` from that.
    grace_from_failure: int = Field(default=1, ge=1)
    restricted_from_failure: int = Field(default=2, ge=1)
    trial_reminder_before: timedelta = timedelta(days=3)
    # Before dunning: a reminder this long before a yearly renewal, and one this long before a
    # renewal that the default card will not live to see.
    renewal_reminder_before: timedelta = timedelta(days=7)
    card_expiry_reminder_before: timedelta = timedelta(days=14)
    # Where a customer adds a card after a hard decline (the SalesFlow app's page). Empty (runs
    # started before it existed): the deployment's APP_UPDATE_PAYMENT_METHOD_URL, filled in
    # where the link leaves the system (the email activity, the API's view).
    update_payment_method_url: str = ""
    # After a period ends, re-read the subscription from Stripe this much later, in case a
    # webhook never arrived (then once a day until the period moves on).
    period_end_sync_after: timedelta = timedelta(hours=1)
    # Per plan, a whole policy where it differs from this one.
    plans: dict[Plan, DunningPolicy] = Field(default_factory=dict)

    def for_plan(self, plan: Plan | None) -> DunningPolicy:
        return self.plans.get(plan, self) if plan else self

    def delay_after(self, failures: int) -> timedelta:
        """How long to wait after the n-th failed attempt before retrying the payment."""
        return self.retry_delays[min(failures, len(self.retry_delays)) - 1]

    def access(self, status: Status, failures: int) -> Access:
        """What the SalesFlow app should grant a customer in this state."""
        if status in (Status.CANCELED, Status.INCOMPLETE):
            return Access.NONE
        if failures >= self.restricted_from_failure:
            return Access.RESTRICTED
        if failures >= self.grace_from_failure or status == Status.PAST_DUE:
            return Access.GRACE  # Stripe says past due even with no failure counted here
        return Access.FULL

    @classmethod
    def from_settings(cls, settings: Settings) -> DunningPolicy:
        base = cls(
            retry_delays=settings.dunning_retry_delays,
            max_failures=settings.dunning_max_failures,
            trial_reminder_before=settings.dunning_trial_reminder_before,
            renewal_reminder_before=settings.dunning_renewal_reminder_before,
            card_expiry_reminder_before=settings.dunning_card_expiry_reminder_before,
            update_payment_method_url=settings.app_update_payment_method_url,
        )
        plans = {
            plan: base.model_copy(update={"retry_delays": delays})
            for plan, delays in settings.dunning_plan_retry_delays.items()
        }
        return base.model_copy(update={"plans": plans})
