"""How the subscription workflow calls out: Stripe, the mailer and our database.

Plumbing only; what to call and when is decided in `workflows/subscription.py`. Each kind of
call has its timeout and retry policy here, and a failed call raises one of `CALL_FAILED`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.notify import NotifyActivities
    from activities.store import StoreActivities
    from core.payloads import Email, Failure, Record

# Stripe calls: business failures are non-retryable ApplicationErrors raised by the activity;
# everything else (rate limits, 5xx, Stripe down) is retried with backoff until it works.
STRIPE_TIMEOUT = timedelta(seconds=30)
STRIPE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(minutes=5),
)
STORE_TIMEOUT = timedelta(seconds=30)
STORE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1), maximum_interval=timedelta(minutes=5)
)
EMAIL_TIMEOUT = timedelta(seconds=60)
EMAIL_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=5), maximum_interval=timedelta(minutes=10)
)

# What a failed call raises in the workflow: an activity's failure wraps its ApplicationError
# in an ActivityError; a local activity's (every Stripe call and store write now) arrives as the
# ApplicationError itself. Both still appear in the recorded histories.
CALL_FAILED = (ActivityError, ApplicationError)

T = TypeVar("T")


def business_error(err: ActivityError | ApplicationError) -> ApplicationError | None:
    """The typed failure (declined, invalid request...) behind a failed call, if it was one."""
    if isinstance(err, ApplicationError):
        return err
    return err.cause if isinstance(err.cause, ApplicationError) else None


def business_type(err: ActivityError | ApplicationError) -> str | None:
    business = business_error(err)
    return business.type if business else None


def as_business_error(err: ActivityError | ApplicationError) -> ApplicationError:
    """A call's typed failure, re-raised to an update's caller (the API maps its type)."""
    business = business_error(err)
    if business:
        return ApplicationError(business.message, type=business.type, non_retryable=True)
    return ApplicationError(str(err), type=Failure.STRIPE_UNAVAILABLE, non_retryable=True)


async def contained(step: Awaitable[None], what: str) -> None:
    """Run one step driven by outside input (an event, a timer, a queued write); a business
    failure (an object Stripe no longer has, a 4xx to a re-read, a write refused for good) is
    logged and the customer carries on."""
    try:
        await step
    except CALL_FAILED as err:
        workflow.logger.warning(
            "%s not applied: %s (%s)", what, business_error(err) or err, business_type(err)
        )


async def stripe_read(fn: Callable[[Any, Any], Awaitable[T]], arg: Any, summary: str) -> T:
    """A Stripe read (a GET, harmless to repeat)."""
    return await stripe(fn, arg, summary, patch="local-stripe-reads")


async def stripe(
    fn: Callable[[Any, Any], Awaitable[T]],
    arg: Any,
    summary: str,
    patch: str = "local-stripe-writes",
) -> T:
    """One Stripe call: a local activity, run inside the workflow task with the same timeout
    and retries (backoff past a minute waits on a timer in the history), so it costs no round
    trip through the server. Every write carries its idempotency key, so a retry or a
    workflow task run again after a worker crash never doubles it. (Reads, then writes, were
    full activities before; the patches keep those histories replaying.)"""
    if workflow.patched(patch):
        return await workflow.execute_local_activity_method(
            fn,
            arg,
            start_to_close_timeout=STRIPE_TIMEOUT,
            retry_policy=STRIPE_RETRY,
            summary=summary,
        )
    return await workflow.execute_activity_method(
        fn,
        arg,
        start_to_close_timeout=STRIPE_TIMEOUT,
        retry_policy=STRIPE_RETRY,
        summary=summary,
    )


async def send_email(email: Email) -> None:
    """Hand one queued email to the mailer (its idempotency key makes a resend a no-op)."""
    await workflow.execute_activity_method(
        NotifyActivities.send_email,
        email,
        start_to_close_timeout=EMAIL_TIMEOUT,
        retry_policy=EMAIL_RETRY,
        summary=email.context.get("summary") or f"email: {email.kind.value}",
    )


async def write_record(record: Record) -> None:
    """Write one queued ledger, read-model or customer-mapping row to our database."""
    what = (
        f"ledger: {record.payment.kind} {record.payment.invoice_id}"
        if record.payment
        else "read model: subscription"
        if record.subscription
        else "customer mapping"
    )
    if workflow.patched("local-store-writes"):
        # A short, idempotent write to our own database: a local activity, run inside the
        # workflow task, costs no round trip through the server (a third of a customer's
        # history before). Retried the same way; an outage only delays the read model.
        await workflow.execute_local_activity_method(
            StoreActivities.record,
            record,
            start_to_close_timeout=STORE_TIMEOUT,
            retry_policy=STORE_RETRY,
            summary=what,
        )
        return
    await workflow.execute_activity_method(
        StoreActivities.record,
        record,
        start_to_close_timeout=STORE_TIMEOUT,
        retry_policy=STORE_RETRY,
        summary=what,
    )
