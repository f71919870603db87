"""Stripe's HTTP surface over the emulated account: auth, form decoding, idempotency, errors."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
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
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from emulator import forms
from emulator.account import Account
from emulator.cards import DECLINES
from emulator.errors import StripeApiError, invalid
from emulator.expand import expand
from emulator.routes import ROUTES, Handler
from emulator.store import Obj, render
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
                Route(
                    "/_emulator/customers/{customer_id}/declines",
                    self._declines,
                    methods=["GET", "POST", "DELETE"],
                ),
                Route(
                    "/_emulator/hosted_invoices/{invoice_id}",
                    self._hosted_invoice,
                    methods=["GET", "POST"],
                ),
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

    async def _declines(self, request: Request) -> Response:
        """Force declines on a customer's next charges: POST `{decline_code, count?}` (JSON or
        form; no count = until cleared), DELETE clears, GET shows what is set."""
        customer_id = request.path_params["customer_id"]
        customer = self.account.objects.get(customer_id)
        if not customer or customer["object"] != "customer" or customer.get("deleted"):
            return _control_error(404, f"No such customer: '{customer_id}'")
        if request.method == "DELETE":
            self.account.declines.pop(customer_id, None)
        elif request.method == "POST":
            body = await _body(request)
            code = body.get("decline_code")
            if code not in DECLINES:
                return _control_error(
                    400, f"decline_code must be one of: {', '.join(sorted(DECLINES))}"
                )
            count = body.get("count")
            if count is not None:
                try:
                    count = int(count)
                except (TypeError, ValueError):
                    count = 0
                if count < 1:
                    return _control_error(400, "count must be a positive integer")
            self.account.declines[customer_id] = {"decline_code": code, "remaining": count}
        forced = self.account.declines.get(customer_id) or {}
        return JSONResponse(
            {
                "customer": customer_id,
                "decline_code": forced.get("decline_code"),
                "remaining": forced.get("remaining"),
            }
        )

    async def _hosted_invoice(self, request: Request) -> Response:
        """The hosted invoice page (`invoice.hosted_invoice_url`). GET shows it; POST is the
        customer paying there, completing 3D Secure: JSON in, JSON out (the invoice, or
        Stripe's error body), or the page's own form, answered with the page again."""
        invoice_id = request.path_params["invoice_id"]
        invoice = self.account.objects.get(invoice_id)
        if not invoice or invoice["object"] != "invoice" or "hosted_invoice_url" not in invoice:
            return _control_error(404, f"No such invoice: '{invoice_id}'")
        from_page = request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        )
        if request.method == "GET":
            return HTMLResponse(_hosted_page(invoice, self.account.objects))
        body = await _body(request)
        try:
            self.account.pay_hosted_invoice(
                invoice_id,
                {"payment_method": body["payment_method"]} if body.get("payment_method") else {},
            )
            status, answer = 200, render(invoice)
        except StripeApiError as err:
            status, answer = err.status, err.response(f"req_{secrets.token_hex(7)}")
        self.account.dirty = True
        if from_page:
            return RedirectResponse(str(request.url), status_code=303)
        return JSONResponse(answer, status_code=status)


async def _body(request: Request) -> Obj:
    """A control's parameters: a JSON object, or a form."""
    raw = await request.body()
    if not raw:
        return {}
    if request.headers.get("content-type", "").startswith("application/json"):
        parsed = json.loads(raw)
        return parsed if isinstance(parsed, dict) else {}
    return forms.decode(raw.decode())


def _control_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message}}, status_code=status)


def _hosted_page(invoice: Obj, objects: dict[str, Obj]) -> str:
    pi = objects.get(invoice.get("_payment_intent", ""))
    state = invoice["status"]
    if state == "open" and pi and pi["status"] == "requires_action":
        state = "open: your bank asks you to authenticate this payment"
    elif state == "open" and pi and pi["last_payment_error"]:
        state = f"open: {pi['last_payment_error']['message']}"
    amount = f"{invoice['amount_due'] / 100:.2f} {invoice['currency'].upper()}"
    form = (
        '<form method="post"><button type="submit">Authenticate and pay</button></form>'
        if invoice["status"] == "open"
        else ""
    )
    return (
        "<!doctype html><html><head><title>Invoice</title></head><body>"
        f"<h1>Invoice {html.escape(invoice['number'] or invoice['id'])}</h1>"
        f"<p>Amount due: {html.escape(amount)}</p>"
        f"<p>Status: {html.escape(state)}</p>{form}"
        "<p><small>Stripe emulator: a stand-in for Stripe's hosted invoice page.</small></p>"
        "</body></html>"
    )
