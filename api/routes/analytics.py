"""Revenue analytics for admins."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import AdminDep, SessionsDep
from api.problems import invalid, problems
from core.analytics import Revenue, revenue

router = APIRouter(prefix="/analytics", tags=["analytics"])


@router.get(
    "/revenue",
    response_model=Revenue,
    responses=problems(401, 403, 422, described={422: "Bad dates, or end before start"}),
)
async def revenue_report(
    _: AdminDep,
    sessions: SessionsDep,
    start: Annotated[date, Query(description="First day, inclusive (YYYY-MM-DD)")],
    end: Annotated[date, Query(description="Last day, inclusive (YYYY-MM-DD)")],
    currency: Annotated[str, Query(pattern="^[a-z]{3}$")] = "usd",
) -> Revenue:
    """Revenue net of refunds, payments, MRR, churn and dunning recovery over [start, end]."""
    if end < start:
        raise invalid(("query", "end"), "end is before start")
    async with sessions() as session:
        return await revenue(session, start, end, currency)
