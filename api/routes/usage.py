"""Metered usage: recorded here, reported to Stripe in batches by a scheduled workflow.

Usage never goes through the customer's workflow one event at a time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from api.deps import PrincipalDep, SessionsDep, SettingsDep
from api.errors import NOT_FOUND
from api.problems import invalid, problems
from api.routes.subscriptions import owned
from api.schemas import UsageOut, UsageRequest, UserId
from core.db import Customer, UsageRecord
from core.settings import Settings

router = APIRouter(prefix="/stripe/subscriptions", tags=["usage"])

# Stripe accepts meter events from the past 35 days up to 5 minutes ahead.
OLDEST = timedelta(days=35)
AHEAD = timedelta(minutes=5)


def document_metrics(app: FastAPI, settings: Settings) -> None:
    """Name the configured metrics in `/openapi.json`: any other is 422."""
    previous = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = previous()
        if settings.stripe_meter_events:
            metric = spec["components"]["schemas"]["UsageRequest"]["properties"]["metric"]
            metric["enum"] = sorted(settings.stripe_meter_events)
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


@router.post(
    "/{user_id}/usage",
    status_code=202,
    response_model=UsageOut,
    responses=problems(
        401,
        404,
        422,
        described={
            404: "No billing customer for this user (or not yours)",
            422: "Unknown metric, bad quantity or time",
        },
    ),
)
async def record_usage(
    user_id: UserId,
    body: UsageRequest,
    principal: PrincipalDep,
    sessions: SessionsDep,
    settings: SettingsDep,
) -> UsageOut:
    """Record usage; the same idempotency key twice counts once."""
    owned(principal, user_id)
    event_name = settings.stripe_meter_events.get(body.metric)
    if event_name is None:
        known = ", ".join(sorted(settings.stripe_meter_events))
        raise invalid(("body", "metric"), f"unknown metric; known: {known}")
    now = datetime.now(UTC)
    occurred = body.timestamp or now
    if occurred.tzinfo is None:
        occurred = occurred.replace(tzinfo=UTC)
    if not now - OLDEST <= occurred <= now + AHEAD:
        raise invalid(
            ("body", "timestamp"), "must be within the past 35 days (and not in the future)"
        )
    key = body.idempotency_key or f"auto-{uuid.uuid4()}"
    async with sessions() as session:
        customer = (await session.exec(select(Customer).where(Customer.user_id == user_id))).first()
        if customer is None:
            raise HTTPException(404, NOT_FOUND)
        session.add(
            UsageRecord(
                idempotency_key=f"{user_id}:{key}",
                user_id=user_id,
                stripe_customer_id=customer.stripe_customer_id,
                metric=body.metric,
                event_name=event_name,
                quantity=body.quantity,
                occurred_at=occurred,
            )
        )
        try:
            await session.commit()
        except IntegrityError:
            return UsageOut(status="duplicate", idempotency_key=key)
    return UsageOut(status="accepted", idempotency_key=key)
