"""Signed webhook delivery with Stripe's scheme, retried with backoff on non-2xx."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx

from emulator.account import Account

log = logging.getLogger("emulator.webhooks")


def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header: `t=<unix>,v1=<hex HMAC-SHA256 of "t.payload">`."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


@dataclass
class Delivery:
    endpoint_id: str
    event: dict[str, Any]
    attempt: int = 0


@dataclass
class Dispatcher:
    """Queues each event for every enabled endpoint and delivers it in the background.

    Stripe retries failed deliveries for up to three days with exponential backoff; here the
    base delay and number of attempts are settings, so tests and demos see retries in seconds.
    """

    account: Account
    retry_base_seconds: float = 1.0
    max_attempts: int = 8
    timeout_seconds: float = 10.0
    log: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=10_000))
    _queue: asyncio.Queue[Delivery] = field(default_factory=asyncio.Queue)
    _task: asyncio.Task[None] | None = None
    _client: httpx.AsyncClient | None = None

    def enqueue(self, event: dict[str, Any]) -> None:
        for endpoint in self.account.endpoints_for(event["type"]):
            self._queue.put_nowait(Delivery(endpoint["id"], event))

    async def start(self) -> None:
        self._client = httpx.AsyncClient(timeout=self.timeout_seconds)
        self._task = asyncio.create_task(self._run(), name="webhook-dispatcher")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        if self._client:
            await self._client.aclose()

    async def _run(self) -> None:
        while True:
            delivery = await self._queue.get()
            try:
                await self._deliver(delivery)
            except Exception:  # a broken endpoint must never stop delivery to the others
                log.exception("webhook delivery crashed")
            finally:
                self._queue.task_done()

    async def _deliver(self, delivery: Delivery) -> None:
        endpoint = self.account.objects.get(delivery.endpoint_id)
        if not endpoint or endpoint.get("deleted"):
            return
        assert self._client is not None
        delivery.attempt += 1
        payload = json.dumps(delivery.event, indent=2)
        status: int | None = None
        try:
            response = await self._client.post(
                endpoint["url"],
                content=payload,
                headers={
                    "Content-Type": "application/json; charset=utf-8",
                    "Stripe-Signature": sign(payload, endpoint["_secret"]),
                    "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
                },
            )
            status = response.status_code
        except httpx.HTTPError as err:
            log.warning("webhook %s to %s failed: %s", delivery.event["id"], endpoint["url"], err)
        self.log.append(
            {
                "event": delivery.event["id"],
                "type": delivery.event["type"],
                "endpoint": endpoint["id"],
                "attempt": delivery.attempt,
                "status": status,
            }
        )
        if status is not None and 200 <= status < 300:
            return
        if delivery.attempt >= self.max_attempts:
            log.error(
                "webhook %s gave up after %d attempts", delivery.event["id"], delivery.attempt
            )
            return
        delay = self.retry_base_seconds * 2 ** (delivery.attempt - 1)
        asyncio.get_running_loop().call_later(delay, self._queue.put_nowait, delivery)
