"""The FastAPI app: one Temporal client and one database engine, made in the lifespan."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client

from api import problems
from api.cards import RefuseCardNumbers
from api.routes import analytics, health, listings, reconcile, subscriptions, usage, webhooks
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
        app.state.engine = engine
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
    app.include_router(listings.router)
    app.include_router(usage.router)
    app.include_router(webhooks.router)
    app.include_router(analytics.router)
    app.include_router(reconcile.router)
    app.include_router(health.router)
    app.add_middleware(RefuseCardNumbers, exempt=CARD_CHECK_EXEMPT)
    problems.install(app, exempt=CARD_CHECK_EXEMPT)
    usage.document_metrics(app, settings)

    app.add_middleware(AccessLog)
    return app


class AccessLog:
    """One log line per request (method, scrubbed path, status, time), as plain ASGI: the
    decorator form wraps each request in a task group and memory streams, a cost the webhook
    route pays on every event."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Webhooks log one line of their own (event, user, outcome): one line per request.
        if scope["type"] != "http" or scope["path"] == webhooks.router.prefix:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            log.info(
                "request",
                method=scope["method"],
                path=redact(scope["path"]),
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 1),
            )
