"""The app over HTTP (httpx against the ASGI app) with a real Temporal test server and worker."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from activities import activities_of
from activities.store import StoreActivities
from api.main import create_app
from core.db import make_engine, sessions
from tests.api.helpers import Api, app_settings
from tests.workflows.fakes import FakeMailbox, FakeStripe
from workflows.subscription import SubscriptionWorkflow


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
