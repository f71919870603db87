"""Stripe webhooks: verify the raw body, record the event once, signal-with-start, answer.

No Stripe call and no waiting on the workflow here: the workflow re-reads what the event
points at. 2xx only once the event is recorded and handed to Temporal; 503 otherwise, so
Stripe retries. Every validly signed event, of any type, API version or shape, is 200 (an
event we do not handle is "ignored", never 4xx); reading and parsing the body is
`api.stripe_events`.
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import Any

import structlog
from fastapi import APIRouter, HTTPException, Request
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import col, select
from temporalio.client import RPCTimeoutOrCancelledError
from temporalio.service import RPCError

from api.deps import EngineDep, SessionsDep, SettingsDep, TemporalDep
from api.metrics import count_webhook
from api.schemas import Outcome, Problem, WebhookOut
from api.stripe_events import WebhookRefused, parse_event, read_body, verify_signature
from core.db import Customer, WebhookEvent, dialect_insert
from core.payloads import HANDLED_EVENT_TYPES, StripeEventRef, is_user_id
from workflows import handover

router = APIRouter(prefix="/stripe/webhooks", tags=["webhooks"])
log = structlog.get_logger("api.webhooks")


@router.post(
    "",
    response_model=WebhookOut,
    responses={
        400: {
            "model": Problem,
            "description": "Missing or bad signature, timestamp outside the tolerance, not an event",
        },
        413: {"model": Problem, "description": "The body is over 1 MiB"},
        503: {
            "model": Problem,
            "description": "Could not record the event or hand it to Temporal; Stripe retries",
        },
    },
)
async def receive(
    request: Request,
    settings: SettingsDep,
    client: TemporalDep,
    sessions: SessionsDep,
    engine: EngineDep,
) -> WebhookOut:
    """Receive one Stripe event."""
    try:
        body = await read_body(request.headers.get("content-length"), request.stream())
        text = verify_signature(
            body,
            request.headers.get("Stripe-Signature"),
            [secret.get_secret_value() for secret in settings.stripe_webhook_secrets],
            settings.webhook_tolerance_seconds,
        )
        event = parse_event(text)
    except WebhookRefused as refused:
        count_webhook("refused")
        raise HTTPException(refused.status, refused.detail) from None
    bound = log.bind(event_id=event.id, event_type=event.type)
    obj = event.object
    # The workflow re-reads what the event points at: without an object id there is nothing,
    # except `invoice.upcoming` (an invoice not made yet), which names its subscription.
    target = obj.subscription_id if event.type == "invoice.upcoming" else obj.id
    handled_type = event.type in HANDLED_EVENT_TYPES and not event.thin and target is not None
    user_id = obj.user_id
    if obj.refused_user_id is not None:
        bound.warning("webhook metadata user_id is not a user id", value=obj.refused_user_id)
    elif user_id is None and handled_type and obj.customer_id:
        user_id = await _stored_user(sessions, obj.customer_id)
    handled = handled_type and user_id is not None
    row = WebhookEvent(
        event_id=event.id,
        type=event.type,
        user_id=user_id,
        object_id=obj.id,
        outcome="processed" if handled else "ignored",
    )
    bound = bound.bind(user_id=user_id)
    # Recorded and handed over side by side, each on its own (no transaction spans the
    # Temporal call). Every delivery of a handled event is handed over, a redelivery too: the
    # first may have failed after it was recorded, and the workflow ignores an event id it
    # already has. 2xx only once both are done.
    recording = asyncio.ensure_future(_record(engine, row))
    taken = False
    if handled and user_id and target:
        ref = StripeEventRef(
            id=event.id,
            type=event.type,
            created=event.created_at,
            object_id=target,
            customer_id=obj.customer_id,
            subscription_id=obj.subscription_id,
        )
        try:
            async with asyncio.timeout(settings.temporal_rpc_timeout_seconds):
                taken = await handover.hand_over(client, settings, user_id, ref)
        except (RPCError, RPCTimeoutOrCancelledError, TimeoutError) as err:
            await asyncio.wait([recording])
            bound.warning("webhook not handed to Temporal", error=str(err))
            count_webhook("unavailable", event.type)
            raise HTTPException(503, "could not hand the event to the billing engine") from err
    try:
        first_outcome = await recording
    except SQLAlchemyError as err:
        bound.warning("webhook not recorded", error=str(err))
        count_webhook("unavailable", event.type)
        raise HTTPException(503, "could not record the event; Stripe retries") from err
    duplicate = first_outcome is not None
    if handled and not taken and not duplicate:
        handled = False
        bound.info("webhook for a subscription that has ended: a late event")
        await _set_outcome(sessions, event.id, "ignored")
    status: Outcome = "duplicate" if duplicate else "processed" if handled else "ignored"
    bound.info("webhook " + status)
    count_webhook(status, event.type)
    return WebhookOut(status=status, event_type=event.type)


async def _record(engine: EngineDep, row: WebhookEvent) -> str | None:
    """Record the event once, one statement committing itself (never a transaction held
    across the Temporal call): None if it is new, else the outcome recorded the first time."""
    async with engine.connect() as connection:
        autocommit = await connection.execution_options(isolation_level="AUTOCOMMIT")
        values = row.model_dump(exclude={"id"})
        statement = _record_statement(connection.dialect.name)
        if (await autocommit.execute(statement, values)).first() is not None:
            return None
        first = await autocommit.execute(
            select(WebhookEvent.outcome).where(col(WebhookEvent.event_id) == row.event_id)
        )
        return str(first.scalar_one())


@cache
def _record_statement(dialect: str) -> Any:
    """INSERT ... ON CONFLICT DO NOTHING RETURNING id, built once per dialect (not per event:
    building it was a fifth of the route's time)."""
    insert = dialect_insert(dialect)(WebhookEvent)
    return insert.on_conflict_do_nothing().returning(col(WebhookEvent.id))


async def _set_outcome(sessions: SessionsDep, event_id: str, outcome: str) -> None:
    async with sessions() as session:
        await session.exec(
            update(WebhookEvent)
            .where(col(WebhookEvent.event_id) == event_id)
            .values(outcome=outcome)
        )
        await session.commit()


async def _stored_user(sessions: SessionsDep, customer_id: str) -> str | None:
    """The user a Stripe customer belongs to, from the stored mapping (objects without our
    metadata, e.g. an invoice made by hand in the dashboard)."""
    async with sessions() as session:
        row = await session.exec(select(Customer).where(Customer.stripe_customer_id == customer_id))
        customer = row.first()
    return customer.user_id if customer and is_user_id(customer.user_id) else None


@router.get("/health")
async def webhooks_health() -> dict[str, str]:
    return {"status": "healthy", "service": "stripe-webhooks"}
