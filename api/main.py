"""The FastAPI app: one Temporal client and one database engine, made in the lifespan."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client

from api import metrics, problems
from api.cards import RefuseCardNumbers
from api.routes import analytics, health, listings, reconcile, subscriptions, usage, webhooks
from core.db import make_engine, sessions
from core.logging import redact
from core.settings import Settings, get_settings
from core.temporal import connect

log = structlog.get_logger("api")

# Methods labelled as themselves in the request metrics (any other is `other`: a client
# chooses the method, and each label value is a series kept for ever).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Webhooks log one line of their own (event, user, outcome); Prometheus scrapes every few
# seconds: no access log line for either.
UNLOGGED = frozenset({webhooks.router.prefix, "/metrics"})
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
    app.include_router(metrics.router)
    app.add_middleware(RefuseCardNumbers, exempt=CARD_CHECK_EXEMPT)
    problems.install(app, exempt=CARD_CHECK_EXEMPT)
    usage.document_metrics(app, settings)

    app.add_middleware(AccessLog)
    return app


class AccessLog:
    """Per request, its time in `billing_api_request_duration_seconds` and one log line
    (method, scrubbed path, status, time), as plain ASGI: the decorator form wraps each request
    in a task group and memory streams, a cost the webhook route pays on every event."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
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
            seconds = time.perf_counter() - started
            # The route's template (never the path: user ids would make a series each).
            route = scope.get("route")
            metrics.REQUEST_SECONDS.labels(
                method=scope["method"] if scope["method"] in METHODS else "other",
                route=route.path if isinstance(route, Route) else metrics.UNMATCHED,
                status=str(status),
            ).observe(seconds)
            if scope["path"] not in UNLOGGED:
                self._log(scope, status, seconds)

    @staticmethod
    def _log(scope: Scope, status: int, seconds: float) -> None:
        log.info(
            "request",
            method=scope["method"],
            path=redact(scope["path"]),
            status=status,
            ms=round(seconds * 1000, 1),
        )
