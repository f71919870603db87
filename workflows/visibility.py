"""What an operator sees of a customer in the Temporal UI: search attributes to filter on and
the workflow's current details. Presentation only: it reads the state, never changes it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeKey, SearchAttributeUpdate

with workflow.unsafe.imports_passed_through():
    from core.payloads import Access, Status
    from core.state import BillingState

# Search attributes operators filter on in the Temporal UI (registered on the server).
CUSTOMER_ID = SearchAttributeKey.for_keyword("BillingCustomerId")
USER_ID = SearchAttributeKey.for_keyword("BillingUserId")
STATUS = SearchAttributeKey.for_keyword("BillingStatus")
PLAN = SearchAttributeKey.for_keyword("BillingPlan")
# The failed payments of the current dunning (`failed_payment_attempts` in the view).
DUNNING_ATTEMPT = SearchAttributeKey.for_int("BillingDunningAttempt")
NEXT_ACTION_AT = SearchAttributeKey.for_datetime("BillingNextActionAt")
# What the SalesFlow app grants (full, grace, restricted, none) and why a payment is failing.
ACCESS = SearchAttributeKey.for_keyword("BillingAccess")
LAST_DECLINE_CODE = SearchAttributeKey.for_keyword("BillingLastDeclineCode")
SEARCH_ATTRIBUTES = (
    CUSTOMER_ID,
    USER_ID,
    STATUS,
    PLAN,
    DUNNING_ATTEMPT,
    NEXT_ACTION_AT,
    ACCESS,
    LAST_DECLINE_CODE,
)


class Visibility:
    """Keeps the search attributes and current details of one run in step with its state,
    upserting only the attributes that changed."""

    def __init__(self) -> None:
        self.published: dict[str, Any] = {}

    def publish(
        self,
        s: BillingState,
        max_failures: int,
        access: Access,
        due: datetime | None,
        what: str,
        decline_aware: bool = True,
    ) -> None:
        error = s.last_payment_error
        wanted: dict[str, Any] = {
            USER_ID.name: s.user_id,
            STATUS.name: s.status.value,
            PLAN.name: s.plan.value if s.plan else "",
            DUNNING_ATTEMPT.name: s.failed_payment_attempts,
            NEXT_ACTION_AT.name: due,
        }
        if decline_aware:  # runs started before these attributes existed do not upsert them
            wanted[ACCESS.name] = access.value
            wanted[LAST_DECLINE_CODE.name] = error.reason if error else None
        if s.customer_id:
            wanted[CUSTOMER_ID.name] = s.customer_id
        updates: list[SearchAttributeUpdate[Any]] = []
        for key in SEARCH_ATTRIBUTES:
            if key.name in wanted and self.published.get(key.name) != wanted[key.name]:
                value = wanted[key.name]
                updates.append(key.value_unset() if value is None else key.value_set(value))
        if updates:
            workflow.upsert_search_attributes(updates)
            self.published.update(wanted)
        next_line = (
            f"**Next:** {what} at {due.isoformat()}" if due else "**Next:** nothing scheduled"
        )
        if s.status == Status.CANCELED:
            ended = f" ({s.cancellation_reason})" if s.cancellation_reason else ""
            next_line = f"**Ended**{ended}."
        why = ""
        if error and s.failed_payment_attempts:
            code = " / ".join(c for c in (error.code, error.decline_code) if c) or "declined"
            why = f"\n\n**Last payment failed:** `{code}`: {error.message or '(no message)'}"
        if s.action_required:
            why += (
                f"\n\n**Waiting for the customer:** {s.action_required.reason.value} "
                f"at {s.action_required.url}"
            )
        workflow.set_current_details(
            f"**{s.status.value}** · access **{access.value}** · {s.plan}/{s.interval.value} · "
            f"failed payments {s.failed_payment_attempts} of {max_failures}"
            f"{' · cancels at period end' if s.cancel_at_period_end else ''}\n\n"
            f"Stripe customer `{s.customer_id}`, subscription `{s.subscription_id}`"
            f"{why}\n\n{next_line}"
        )
