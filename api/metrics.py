"""The API's Prometheus metrics (prometheus-client), served at `GET /metrics` with the process's
own (CPU, memory, open files, garbage collection)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest

from core.payloads import HANDLED_EVENT_TYPES

WEBHOOKS = Counter(
    "billing_webhooks",
    "Stripe webhook deliveries, by outcome (processed, duplicate, ignored, refused: 4xx, "
    "unavailable: 503 so Stripe retries) and event type (other: a type not handled)",
    ["outcome", "event_type"],
)
REQUEST_SECONDS = Histogram(
    "billing_api_request_duration_seconds",
    "HTTP request time, by method, route (its path template) and status",
    ["method", "route", "status"],
)
# Label for what no route matched, and for a webhook refused before its type was read.
UNMATCHED = "unmatched"
UNKNOWN = "unknown"

router = APIRouter(tags=["health"])


def count_webhook(outcome: str, event_type: str = UNKNOWN) -> None:
    """One delivery; the type is a label only when it is one we handle (the set is bounded
    whatever a sender writes)."""
    shown = event_type if event_type in HANDLED_EVENT_TYPES or event_type == UNKNOWN else "other"
    WEBHOOKS.labels(outcome=outcome, event_type=shown).inc()


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics() -> Response:
    """Prometheus text format: webhooks by outcome and type, request time by route and status,
    and the process's own metrics."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
