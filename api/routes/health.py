"""Liveness and readiness."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

from api.deps import SessionsDep, TemporalDep
from api.problems import problem, problems

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """200 while the process runs."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses=problems(
        503, described={503: "The database or Temporal does not answer (`database`, `temporal`)"}
    ),
)
async def readyz(sessions: SessionsDep, client: TemporalDep) -> JSONResponse:
    """200 only when the database and Temporal both answer."""
    checks = {"database": "ok", "temporal": "ok"}
    try:
        async with asyncio.timeout(2), sessions() as session:
            await session.exec(text("SELECT 1"))  # type: ignore[call-overload]
    except Exception as err:  # any failure means not ready; the reason is reported
        checks["database"] = f"error: {type(err).__name__}"
    try:
        await client.workflow_service.get_system_info(
            GetSystemInfoRequest(), timeout=timedelta(seconds=2)
        )
    except Exception as err:  # likewise
        checks["temporal"] = f"error: {type(err).__name__}"
    if all(value == "ok" for value in checks.values()):
        return JSONResponse({"status": "ready", **checks})
    # A problem like every error answer; what failed rides along as extension members.
    failing = ", ".join(name for name, value in checks.items() if value != "ok")
    return problem(503, f"not ready: {failing}", **checks)
