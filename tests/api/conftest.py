"""The app over HTTP (httpx against the ASGI app) with a real Temporal test server and worker."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities import activities_of
from activities.store import StoreActivities
from api.auth import mint
from api.main import create_app
from core.db import make_engine, sessions
from core.settings import Settings
from tests.workflows.fakes import FakeMailbox, FakeStripe
from workflows.subscription import SubscriptionWorkflow

SECRET = "whsec_test_primary"
ROLLED = "whsec_test_rolled"


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """Stripe's scheme, written here independently of the code under test."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def event(type_: str, obj: dict[str, Any], event_id: str | None = None) -> bytes:
    return json.dumps(
        {
            "id": event_id or f"evt_{uuid.uuid4().hex[:16]}",
            "object": "event",
            "type": type_,
            "created": int(time.time()),
            "api_version": "2026-10-28.endive",
            "data": {"object": obj},
        }
    ).encode()


@dataclass
class Api:
    http: httpx.AsyncClient
    stripe: FakeStripe
    mail: FakeMailbox
    settings: Settings
    env: WorkflowEnvironment
    app: FastAPI

    def stripe_now(self) -> Any:
        from datetime import UTC, datetime, timedelta

        return datetime.now(UTC) + timedelta(days=30)

    def auth(self, user_id: str, admin: bool = False) -> dict[str, str]:
        return {"Authorization": f"Bearer {mint(user_id, self.settings, admin=admin)}"}

    async def webhook(self, payload: bytes, secret: str = SECRET, **kwargs: Any) -> httpx.Response:
        return await self.http.post(
            "/stripe/webhooks",
            content=payload,
            headers={
                "Stripe-Signature": sign(payload, secret, **kwargs),
                "Content-Type": "application/json",
            },
        )

    async def subscribe(self, user_id: str, **body: Any) -> httpx.Response:
        payload = {
            "plan": "starter",
            "email": f"{user_id}@example.com",
            "trial_days": 0,
            "payment_method_id": "pm_card_visa",
            **body,
        }
        return await self.http.post(
            "/stripe/subscriptions", json=payload, headers=self.auth(user_id)
        )


def app_settings(database_url: str, queue: str) -> Settings:
    return Settings(  # type: ignore[call-arg]
        _env_file=None,
        temporal_task_queue=queue,
        database_url=database_url,
        stripe_webhook_secrets=[SecretStr(SECRET), SecretStr(ROLLED)],
        dunning_retry_delays="2d,3d",
        api_wait_seconds=10,
        temporal_rpc_timeout_seconds=2,
    )


@pytest.fixture
async def api(env: WorkflowEnvironment, database_url: str) -> AsyncIterator[Api]:
    queue = f"billing-{uuid.uuid4()}"
    settings = app_settings(database_url, queue)
    stripe, mail = FakeStripe(clock=env.get_current_time), FakeMailbox()
    engine = make_engine(database_url)
    store = StoreActivities(sessions(engine))
    app = create_app(settings, temporal=env.client)
    async with (
        Worker(
            env.client,
            task_queue=queue,
            workflows=[SubscriptionWorkflow],
            activities=[*stripe.activities(), mail.send_email, *activities_of(store)],
            # The HTTP layer's tests: the workflow's sandbox is proven by tests/workflows. Its
            # module compiling in worker threads beside schemathesis's ast parsing in another
            # thread trips CPython 3.11's "AST constructor recursion depth mismatch".
            workflow_runner=UnsandboxedWorkflowRunner(),
        ),
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://billing.test"
        ) as http,
    ):
        yield Api(http, stripe, mail, settings, env, app)
    await engine.dispose()
