"""Revenue analytics for admins."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query

from api.deps import AdminDep, SessionsDep
from api.schemas import Problem
from core.analytics import Revenue, revenue

router = APIRouter(prefix="/analytics", tags=["analytics"])


@router.get(
    "/revenue",
    response_model=Revenue,
    responses={
        401: {"model": Problem, "description": "Missing or invalid bearer token"},
        403: {"model": Problem, "description": "Admins only"},
        422: {"model": Problem, "description": "Bad dates, or end before start"},
    },
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
        raise HTTPException(422, "end is before start")
    async with sessions() as session:
        return await revenue(session, start, end, currency)
