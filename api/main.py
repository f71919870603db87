"""The FastAPI app: one Temporal client and one database engine, made in the lifespan."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request, Response
from temporalio.client import Client

from api import problems
from api.cards import RefuseCardNumbers
from api.routes import analytics, health, subscriptions, usage, webhooks
from core.db import make_engine, sessions
from core.logging import redact
from core.settings import Settings, get_settings
from core.temporal import connect

log = structlog.get_logger("api")

# Signed by Stripe, carrying no card numbers: not searched for them.
CARD_CHECK_EXEMPT = ("/stripe/webhooks",)


def create_app(settings: Settings | None = None, temporal: Client | None = None) -> FastAPI:
    """The app; tests pass their own settings and Temporal client."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url)
        app.state.sessions = sessions(engine)
        # Lazy: the API starts while Temporal is down and /readyz says so.
        app.state.temporal = temporal or await connect(settings, lazy=True)
        yield
        await engine.dispose()

    app = FastAPI(
        title="SalesFlow Billing",
        version="0.1.0",
        summary="Subscriptions, dunning and Stripe webhooks on Temporal.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(subscriptions.router)
    app.include_router(usage.router)
    app.include_router(webhooks.router)
    app.include_router(analytics.router)
    app.include_router(health.router)
    app.add_middleware(RefuseCardNumbers, exempt=CARD_CHECK_EXEMPT)
    problems.install(app, exempt=CARD_CHECK_EXEMPT)
    usage.document_metrics(app, settings)

    @app.middleware("http")
    async def access_log(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        log.info(
            "request",
            method=request.method,
            path=redact(request.url.path),
            status=response.status_code,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return response

    return app
