"""Stripe's HTTP surface over the emulated account: auth, form decoding, idempotency, errors."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import time
from collections import deque
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator import forms
from emulator.account import Account
from emulator.errors import StripeApiError, invalid
from emulator.expand import expand
from emulator.routes import ROUTES, Handler
from emulator.store import render
from emulator.webhooks import Dispatcher

# How often the state file (if any) is written: it holds everything acknowledged before.
SAVE_EVERY_SECONDS = 1.0


def _compile(path: str) -> re.Pattern[str]:
    return re.compile("^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$")


_COMPILED = [(method, _compile(path), schema, handler) for method, path, schema, handler in ROUTES]


@dataclass
class Fault:
    """An injected failure (emulator only): an error status, or a slow answer after the work."""

    method: str
    path: str
    times: int = 1
    status: int | None = None
    delay_seconds: float = 0.0


class Emulator:
    """The ASGI app and what it needs: the account, the webhook dispatcher, injected faults."""

    def __init__(
        self, account: Account, dispatcher: Dispatcher, api_key: str | None = None
    ) -> None:
        self.account = account
        self.dispatcher = dispatcher
        self.api_key = api_key
        self.faults: list[Fault] = []
        self.requests: deque[dict[str, Any]] = deque(maxlen=10_000)
        account.on_event = dispatcher.enqueue

        @asynccontextmanager
        async def lifespan(_: Starlette) -> Any:
            await dispatcher.start()
            saver = asyncio.create_task(self._save_every(SAVE_EVERY_SECONDS))
            try:
                yield
            finally:
                saver.cancel()
                await dispatcher.stop()
                account.save()

        self.app = Starlette(
            routes=[
                Route("/_emulator/faults", self._add_fault, methods=["POST"]),
                Route("/_emulator/faults", self._clear_faults, methods=["DELETE"]),
                Route("/_emulator/requests", self._list_requests, methods=["GET"]),
                Route("/_emulator/webhook_deliveries", self._list_deliveries, methods=["GET"]),
                Route("/_emulator/reset", self._reset, methods=["POST"]),
                Route("/healthz", lambda _: JSONResponse({"status": "ok"}), methods=["GET"]),
                Route("/v1/{path:path}", self._api, methods=["GET", "POST", "DELETE"]),
            ],
            lifespan=lifespan,
        )

    async def _save_every(self, seconds: float) -> None:
        """The state file is written at most once a period, not after every write: its cost
        grows with the account, a request's must not."""
        while True:
            await asyncio.sleep(seconds)
            self.account.save()

    # --- the API ---------------------------------------------------------------------------

    async def _api(self, request: Request) -> Response:
        request_id = f"req_{secrets.token_hex(7)}"
        key = request.headers.get("Idempotency-Key")
        status, body, replayed = await self._handle(request, request_id, key)
        self.requests.append(
            {
                "method": request.method,
                "path": request.url.path,
                "idempotency_key": key,
                "status": status,
                "replayed": replayed,
            }
        )
        headers = {
            "Request-Id": request_id,
            "Stripe-Version": request.headers.get("Stripe-Version", ""),
        }
        if key:
            headers["Idempotency-Key"] = key
        if replayed:
            headers["Idempotent-Replayed"] = "true"
        fault = self._take_fault(request.method, request.url.path, slow=True)
        if fault:
            # The work is done and stored; only the answer is late, as in a network timeout.
            await asyncio.sleep(fault.delay_seconds)
        return JSONResponse(body, status_code=status, headers=headers)

    async def _handle(
        self, request: Request, request_id: str, key: str | None
    ) -> tuple[int, Any, bool]:
        try:
            self._authenticate(request.headers.get("Authorization", ""))
            fault = self._take_fault(request.method, request.url.path, slow=False)
            if fault:
                raise StripeApiError(
                    fault.status or 500,
                    "Too many requests hit the API too quickly."
                    if fault.status == 429
                    else "An unknown error occurred",
                    type="invalid_request_error" if fault.status == 429 else "api_error",
                    code="rate_limit" if fault.status == 429 else None,
                )
            method, schema, handler, kwargs = self._route(request.method, request.url.path)
            raw = (await request.body()).decode() if method == "POST" else request.url.query
            params = forms.decode(raw)
            forms.check(params, schema)
        except StripeApiError as err:
            return err.status, err.response(request_id), False

        fingerprint = hashlib.sha256(
            json.dumps([method, request.url.path, params], sort_keys=True).encode()
        ).hexdigest()
        if method == "POST" and key:
            seen = self.account.idempotency.get(key)
            if seen is not None:
                if seen["fingerprint"] != fingerprint:
                    conflict = StripeApiError(
                        400,
                        "Keys for idempotent requests can only be used with the same parameters "
                        f"they were first used with. Try using a key other than '{key}' if you "
                        "meant to execute a different request.",
                        type="idempotency_error",
                    )
                    return conflict.status, conflict.response(request_id), False
                return seen["status"], seen["body"], True

        try:
            obj = handler(self.account, kwargs, params)
            body = render(obj)
            if "expand" in params:
                expand(self.account.objects, self.account.includable, body, params["expand"])
            status = 200
        except StripeApiError as err:
            status, body = err.status, err.response(request_id)
        if method == "POST" and key:
            self.account.idempotency[key] = {
                "fingerprint": fingerprint,
                "status": status,
                "body": body,
                "at": time.time(),
            }
        if method != "GET":
            self.account.dirty = True  # saved within a second (and on a clean stop)
        return status, body, False

    def _authenticate(self, header: str) -> None:
        scheme, _, credential = header.partition(" ")
        if scheme == "Basic":
            credential = base64.b64decode(credential).decode().partition(":")[0]
        elif scheme != "Bearer":
            credential = ""
        valid = credential.startswith("sk_test_") and (
            self.api_key is None or secrets.compare_digest(credential, self.api_key)
        )
        if not valid:
            shown = f"{credential[:8]}{'*' * 4}{credential[-4:]}" if credential else ""
            raise StripeApiError(
                401,
                f"Invalid API Key provided: {shown}"
                if credential
                else "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
            )

    def _route(self, method: str, path: str) -> tuple[str, str, Handler, dict[str, str]]:
        allowed = False
        for route_method, pattern, schema, handler in _COMPILED:
            match = pattern.match(path)
            if match:
                allowed = True
                if route_method == method:
                    return method, schema, handler, match.groupdict()
        if allowed:
            raise invalid(f"Unrecognized request URL ({method}: {path}).")
        raise StripeApiError(404, f"Unrecognized request URL ({method}: {path}).")

    def _take_fault(self, method: str, path: str, *, slow: bool) -> Fault | None:
        for fault in self.faults:
            if (
                fault.method == method
                and path.startswith(fault.path)
                and (fault.delay_seconds > 0) == slow
            ):
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    # --- the emulator's own controls (not part of Stripe's API) -----------------------------

    async def _add_fault(self, request: Request) -> Response:
        self.faults.append(Fault(**await request.json()))
        return JSONResponse({"faults": len(self.faults)})

    async def _clear_faults(self, _: Request) -> Response:
        self.faults.clear()
        return JSONResponse({"faults": 0})

    async def _list_requests(self, _: Request) -> Response:
        return JSONResponse(list(self.requests))

    async def _list_deliveries(self, _: Request) -> Response:
        return JSONResponse(list(self.dispatcher.log))

    async def _reset(self, _: Request) -> Response:
        self.account.reset()
        self.faults.clear()
        self.requests.clear()
        self.dispatcher.log.clear()
        return JSONResponse({"reset": True})
