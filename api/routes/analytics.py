"""Revenue analytics for admins."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import AdminDep, SessionsDep
from api.errors import DATABASE_UNAVAILABLE, reading_database
from api.problems import invalid, problems
from api.schemas import RevenueOut
from core.analytics import revenue

router = APIRouter(prefix="/analytics", tags=["analytics"])


@router.get(
    "/revenue",
    response_model=RevenueOut,
    responses=problems(
        401,
        403,
        422,
        503,
        described={422: "Bad dates, or end before start", 503: DATABASE_UNAVAILABLE},
    ),
)
async def revenue_report(
    _: AdminDep,
    sessions: SessionsDep,
    start: Annotated[date, Query(description="First day, inclusive (YYYY-MM-DD)")],
    end: Annotated[date, Query(description="Last day, inclusive (YYYY-MM-DD)")],
    currency: Annotated[str, Query(pattern="^[a-z]{3}$")] = "usd",
) -> RevenueOut:
    """Revenue net of refunds, payments, MRR, churn (all and for non-payment), first-attempt
    failures and dunning recovery (by decline code) over [start, end]."""
    if end < start:
        raise invalid(("query", "end"), "end is before start")
    async with reading_database(), sessions() as session:
        return RevenueOut.of(await revenue(session, start, end, currency))
