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
from collections.abc import Callable
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
from emulator.store import Obj, render
from emulator.webhooks import Dispatcher

# How often the state file (if any) is written: it holds everything acknowledged before.
SAVE_EVERY_SECONDS = 1.0

Handler = Callable[[Account, dict[str, str], Obj], Obj]

# Each handler takes the account, the path's parameters and the decoded request parameters.

# --- products and prices --------------------------------------------------------------------


def product_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.create_product(p)


def product_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.paginate("product", p)


def product_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("product", k["id"])


def price_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.create_price(p)


def price_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.list_prices(p)


def price_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("price", k["id"])


# --- customers -------------------------------------------------------------------------------


def customer_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.create_customer(p)


def customer_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.paginate(
        "customer",
        p,
        lambda o: (
            p.get("email") in (None, o["email"]) and p.get("test_clock") in (None, o["test_clock"])
        ),
    )


def customer_search(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.search_customers(p)


def customer_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("customer", k["id"])


def customer_update(a: Account, k: dict[str, str], p: Obj) -> Obj:
    return a.update_customer(k["id"], p)


# --- payment methods -------------------------------------------------------------------------


def customer_payment_method_list(a: Account, k: dict[str, str], p: Obj) -> Obj:
    return a.list_payment_methods({**p, "customer": a.get("customer", k["id"])["id"]})


def payment_method_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.list_payment_methods(p)


def payment_method_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.retrieve_payment_method(k["id"])


def payment_method_attach(a: Account, k: dict[str, str], p: Obj) -> Obj:
    return a.attach_payment_method(k["id"], p)


def payment_method_detach(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.detach_payment_method(k["id"])


# --- subscriptions ---------------------------------------------------------------------------


def subscription_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.create_subscription(p)


def subscription_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.paginate(
        "subscription",
        p,
        lambda o: (
            p.get("customer") in (None, o["customer"])
            and p.get("test_clock") in (None, o["test_clock"])
            and (
                o["status"] == p["status"]
                if p.get("status", "all") != "all"
                else "status" in p or o["status"] not in ("canceled", "incomplete_expired")
            )
        ),
    )


def subscription_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("subscription", k["id"])


def subscription_update(a: Account, k: dict[str, str], p: Obj) -> Obj:
    return a.update_subscription(k["id"], p)


def subscription_cancel(a: Account, k: dict[str, str], p: Obj) -> Obj:
    return a.cancel_subscription(k["id"], p)


# --- invoices and charges --------------------------------------------------------------------


def invoice_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.paginate(
        "invoice",
        p,
        lambda o: (
            p.get("customer") in (None, o["customer"])
            and p.get("status") in (None, o["status"])
            and p.get("subscription") in (None, o["parent"]["subscription_details"]["subscription"])
        ),
    )


def invoice_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("invoice", k["id"])


def invoice_pay(a: Account, k: dict[str, str], p: Obj) -> Obj:
    return a.pay_invoice(k["id"], p)


def charge_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.paginate("charge", p, lambda o: p.get("customer") in (None, o["customer"]))


def charge_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("charge", k["id"])


# --- events ----------------------------------------------------------------------------------


def event_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.paginate(
        "event",
        p,
        lambda o: (
            p.get("type") in (None, o["type"]) and (not p.get("types") or o["type"] in p["types"])
        ),
    )


def event_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("event", k["id"])


# --- test clocks -----------------------------------------------------------------------------


def test_clock_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.create_test_clock(p)


def test_clock_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.paginate("test_helpers.test_clock", p)


def test_clock_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("test_helpers.test_clock", k["id"])


def test_clock_advance(a: Account, k: dict[str, str], p: Obj) -> Obj:
    return a.advance_test_clock(k["id"], p)


def test_clock_delete(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return _delete(a, "test_helpers.test_clock", k["id"])


# --- billing meters --------------------------------------------------------------------------


def meter_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.create_meter(p)


def meter_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.paginate("billing.meter", p, lambda o: p.get("status") in (None, o["status"]))


def meter_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("billing.meter", k["id"])


def meter_list_event_summaries(a: Account, k: dict[str, str], p: Obj) -> Obj:
    return a.meter_event_summaries(k["id"], p)


def meter_event_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.create_meter_event(p)


# --- webhook endpoints -----------------------------------------------------------------------


def webhook_endpoint_create(a: Account, _: dict[str, str], p: Obj) -> Obj:
    endpoint = a.create_webhook_endpoint(p)
    return {**render(endpoint), "secret": endpoint["_secret"]}


def webhook_endpoint_list(a: Account, _: dict[str, str], p: Obj) -> Obj:
    return a.paginate("webhook_endpoint", p)


def webhook_endpoint_retrieve(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return a.get("webhook_endpoint", k["id"])


def webhook_endpoint_delete(a: Account, k: dict[str, str], _: Obj) -> Obj:
    return _delete(a, "webhook_endpoint", k["id"])


def _delete(account: Account, kind: str, ident: str) -> Obj:
    account.get(kind, ident)["deleted"] = True
    return {"id": ident, "object": kind, "deleted": True}


# (method, path, parameter schema in stripe.params, handler)
ROUTES: list[tuple[str, str, str, Handler]] = [
    ("POST", "/v1/products", "product_create", product_create),
    ("GET", "/v1/products", "product_list", product_list),
    ("GET", "/v1/products/{id}", "product_retrieve", product_retrieve),
    ("POST", "/v1/prices", "price_create", price_create),
    ("GET", "/v1/prices", "price_list", price_list),
    ("GET", "/v1/prices/{id}", "price_retrieve", price_retrieve),
    ("POST", "/v1/customers", "customer_create", customer_create),
    ("GET", "/v1/customers", "customer_list", customer_list),
    ("GET", "/v1/customers/search", "customer_search", customer_search),
    ("GET", "/v1/customers/{id}", "customer_retrieve", customer_retrieve),
    ("POST", "/v1/customers/{id}", "customer_update", customer_update),
    (
        "GET",
        "/v1/customers/{id}/payment_methods",
        "customer_payment_method_list",
        customer_payment_method_list,
    ),
    ("GET", "/v1/payment_methods", "payment_method_list", payment_method_list),
    ("GET", "/v1/payment_methods/{id}", "payment_method_retrieve", payment_method_retrieve),
    ("POST", "/v1/payment_methods/{id}/attach", "payment_method_attach", payment_method_attach),
    ("POST", "/v1/payment_methods/{id}/detach", "payment_method_detach", payment_method_detach),
    ("POST", "/v1/subscriptions", "subscription_create", subscription_create),
    ("GET", "/v1/subscriptions", "subscription_list", subscription_list),
    ("GET", "/v1/subscriptions/{id}", "subscription_retrieve", subscription_retrieve),
    ("POST", "/v1/subscriptions/{id}", "subscription_update", subscription_update),
    ("DELETE", "/v1/subscriptions/{id}", "subscription_cancel", subscription_cancel),
    ("GET", "/v1/invoices", "invoice_list", invoice_list),
    ("GET", "/v1/invoices/{id}", "invoice_retrieve", invoice_retrieve),
    ("POST", "/v1/invoices/{id}/pay", "invoice_pay", invoice_pay),
    ("GET", "/v1/charges", "charge_list", charge_list),
    ("GET", "/v1/charges/{id}", "charge_retrieve", charge_retrieve),
    ("GET", "/v1/events", "event_list", event_list),
    ("GET", "/v1/events/{id}", "event_retrieve", event_retrieve),
    ("POST", "/v1/test_helpers/test_clocks", "test_helpers.test_clock_create", test_clock_create),
    ("GET", "/v1/test_helpers/test_clocks", "test_helpers.test_clock_list", test_clock_list),
    (
        "GET",
        "/v1/test_helpers/test_clocks/{id}",
        "test_helpers.test_clock_retrieve",
        test_clock_retrieve,
    ),
    (
        "POST",
        "/v1/test_helpers/test_clocks/{id}/advance",
        "test_helpers.test_clock_advance",
        test_clock_advance,
    ),
    (
        "DELETE",
        "/v1/test_helpers/test_clocks/{id}",
        "test_helpers.test_clock_delete",
        test_clock_delete,
    ),
    ("POST", "/v1/billing/meters", "billing.meter_create", meter_create),
    ("GET", "/v1/billing/meters", "billing.meter_list", meter_list),
    ("GET", "/v1/billing/meters/{id}", "billing.meter_retrieve", meter_retrieve),
    (
        "GET",
        "/v1/billing/meters/{id}/event_summaries",
        "billing.meter_list_event_summaries",
        meter_list_event_summaries,
    ),
    ("POST", "/v1/billing/meter_events", "billing.meter_event_create", meter_event_create),
    ("POST", "/v1/webhook_endpoints", "webhook_endpoint_create", webhook_endpoint_create),
    ("GET", "/v1/webhook_endpoints", "webhook_endpoint_list", webhook_endpoint_list),
    ("GET", "/v1/webhook_endpoints/{id}", "webhook_endpoint_retrieve", webhook_endpoint_retrieve),
    ("DELETE", "/v1/webhook_endpoints/{id}", "webhook_endpoint_delete", webhook_endpoint_delete),
]


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
            status, body = 200, _expand(self.account, render(obj), params.get("expand") or [])
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


def _expand(account: Account, body: Any, paths: list[str]) -> Any:
    """`expand[]=latest_invoice` and `expand[]=data.customer`: ids replaced by objects."""
    for path in paths:
        head, _, rest = path.partition(".")
        if head == "data" and isinstance(body.get("data"), list):
            body["data"] = [_expand(account, row, [rest]) for row in body["data"]]
            continue
        value = body.get(head)
        if isinstance(value, str) and value in account.objects:
            body[head] = _expand(account, render(account.objects[value]), [rest] if rest else [])
    return body
