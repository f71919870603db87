"""The worker's billing counters, recorded through the Temporal SDK's own metric meter.

One exporter serves them with the SDK's metrics (`WORKER_METRICS_ADDRESS`, Prometheus text): an
activity counts through `activity.metric_meter()`, which labels it with the namespace, task
queue and activity type; the workflow through `workflow.metric_meter()`, which the SDK leaves
silent while a history is replayed, so a replay never counts twice. Prometheus sees each name
with `_total` appended (the runtime is built with `counters_total_suffix`).

Each counter is counted where its fact becomes durable exactly once: a ledger row inserted (not
one that was already there), an email handed to SMTP (not one skipped as already sent).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from temporalio import activity
from temporalio.common import MetricMeter
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)


@dataclass(frozen=True)
class Counter:
    name: str
    description: str
    labels: tuple[str, ...] = ()

    def add(self, meter: MetricMeter, amount: int = 1, **labels: str) -> None:
        """Count `amount`, with exactly the declared labels (a typo fails in the tests, not in
        a dashboard that stays empty)."""
        if set(labels) != set(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, not {tuple(labels)}")
        if amount:
            meter.create_counter(self.name, self.description).add(amount, labels)

    @property
    def exported(self) -> str:
        """The name Prometheus scrapes."""
        return f"{self.name}_total"


PAYMENT_ATTEMPTS_FAILED = Counter(
    "billing_payment_attempts_failed",
    "Failed invoice payment attempts, by Stripe decline code (else error code)",
    ("decline_code",),
)
PAYMENTS_RECOVERED = Counter(
    "billing_payments_recovered",
    "Invoices paid after failing, by the decline code of their last failure",
    ("decline_code",),
)
DUNNING_CANCELLATIONS = Counter(
    "billing_dunning_cancellations",
    "Subscriptions cancelled because dunning ran out of attempts, by plan",
    ("plan",),
)
EMAILS_SENT = Counter("billing_emails_sent", "Emails handed to SMTP, by kind", ("kind",))
RECONCILE_DRIFT = Counter(
    "billing_reconcile_drift",
    "What reconciliation found differing from Stripe and repaired or reported, by action",
    ("action",),
)
ACTIVITY_RETRIES = Counter(
    "billing_activity_retries",
    "Activity attempts after the first (Temporal retrying a Stripe, database or SMTP call)",
)
COUNTERS = (
    PAYMENT_ATTEMPTS_FAILED,
    PAYMENTS_RECOVERED,
    DUNNING_CANCELLATIONS,
    EMAILS_SENT,
    RECONCILE_DRIFT,
    ACTIVITY_RETRIES,
)
NO_DECLINE_CODE = "none"


def activity_meter() -> MetricMeter:
    """The running activity's meter; a no-op outside one (an activity method called directly)."""
    return activity.metric_meter() if activity.in_activity() else MetricMeter.noop


class CountRetries(Interceptor):
    """Counts every activity attempt after the first (`billing_activity_retries_total`), the
    sign of an outside system failing that an alert watches. Declines and other business
    outcomes fail without retrying, so they do not count."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _CountRetries(next)


class _CountRetries(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if activity.info().attempt > 1:
            ACTIVITY_RETRIES.add(activity.metric_meter())
        return await self.next.execute_activity(input)


def prometheus_runtime(bind_address: str) -> Runtime:
    """A Temporal runtime exporting the SDK's metrics and the billing counters at
    `http://<bind_address>/metrics`, named as Prometheus expects (`_total` on counters,
    durations in seconds)."""
    return Runtime(
        telemetry=TelemetryConfig(
            metrics=PrometheusConfig(
                bind_address=bind_address, counters_total_suffix=True, durations_as_seconds=True
            )
        )
    )
