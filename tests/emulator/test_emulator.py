"""The emulator behaves like Stripe test mode, seen through the official SDK over HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import stripe
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from activities.stripe import stripe_client
from core.settings import Settings
from emulator.__main__ import arguments, build
from emulator.account import Account
from emulator.app import Emulator
from emulator.resources.subscriptions import add_interval
from emulator.webhooks import Dispatcher
from tests.helpers import API_KEY, ROOT, T0, advance, eventually, free_port, wait_for_http

DAY = 86_400


async def clock_customer(
    sdk: stripe.StripeClient, pm: str | None = "pm_card_visa"
) -> tuple[str, str]:
    """A test clock and a customer on it, with `pm` attached as the default."""
    clock = await sdk.v1.test_helpers.test_clocks.create_async({"frozen_time": T0})
    customer = await sdk.v1.customers.create_async(
        {"email": "c@example.com", "test_clock": clock.id, "metadata": {"user_id": "u-clock"}}
    )
    if pm:
        attached = await sdk.v1.payment_methods.attach_async(pm, {"customer": customer.id})
        await sdk.v1.customers.update_async(
            customer.id, {"invoice_settings": {"default_payment_method": attached.id}}
        )
    return clock.id, customer.id


async def test_requests_without_a_valid_test_key_are_refused(emulator_url: str) -> None:
    for key in ("sk_live_nope", "sk_test_wrong"):
        client = stripe.StripeClient(
            key, base_addresses={"api": emulator_url}, http_client=stripe.HTTPXClient()
        )
        with pytest.raises(stripe.AuthenticationError) as err:
            await client.v1.customers.list_async()
        assert err.value.http_status == 401
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{emulator_url}/v1/customers")
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert "API key" in response.json()["error"]["message"]


async def test_unknown_parameter_is_rejected_by_name(stripe_sdk: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as err:
        await stripe_sdk.v1.customers.create_async({"email": "a@b.c", "colour": "red"})  # type: ignore[arg-type]  # unknown on purpose
    assert err.value.http_status == 400
    assert err.value.param == "colour"
    assert err.value.code == "parameter_unknown"
    with pytest.raises(stripe.InvalidRequestError) as nested:
        await stripe_sdk.v1.subscriptions.create_async(
            {"customer": "cus_x", "items": [{"price": "p", "colour": "red"}]}  # type: ignore[arg-type]  # unknown on purpose
        )
    assert nested.value.param == "items[0][colour]"


async def test_missing_object_is_a_404_resource_missing(stripe_sdk: stripe.StripeClient) -> None:
    with pytest.raises(stripe.InvalidRequestError) as err:
        await stripe_sdk.v1.customers.retrieve_async("cus_doesnotexist")
    assert err.value.http_status == 404
    assert err.value.code == "resource_missing"


async def test_idempotency_keys_replay_and_conflict(
    stripe_sdk: stripe.StripeClient, emulator: httpx.AsyncClient
) -> None:
    first = await stripe_sdk.v1.customers.create_async(
        {"email": "i@example.com"}, {"idempotency_key": "idem-1"}
    )
    again = await stripe_sdk.v1.customers.create_async(
        {"email": "i@example.com"}, {"idempotency_key": "idem-1"}
    )
    assert again.id == first.id
    log = (await emulator.get("/_emulator/requests")).json()
    assert [r["replayed"] for r in log if r["idempotency_key"] == "idem-1"] == [False, True]
    with pytest.raises(stripe.IdempotencyError) as err:
        await stripe_sdk.v1.customers.create_async(
            {"email": "other@example.com"}, {"idempotency_key": "idem-1"}
        )
    assert err.value.http_status == 400
    assert "same parameters" in str(err.value)


@pytest.mark.parametrize(
    ("token", "decline_code"),
    [
        ("pm_card_visa_chargeDeclined", "generic_decline"),
        ("pm_card_visa_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ],
)
async def test_declined_test_cards_cannot_be_attached(
    stripe_sdk: stripe.StripeClient, token: str, decline_code: str
) -> None:
    customer = await stripe_sdk.v1.customers.create_async({"email": "d@example.com"})
    with pytest.raises(stripe.CardError) as err:
        await stripe_sdk.v1.payment_methods.attach_async(token, {"customer": customer.id})
    assert err.value.http_status == 402
    assert err.value.code == "card_declined"
    assert err.value.error is not None
    assert err.value.error.decline_code == decline_code


async def test_test_cards_attach_as_new_payment_methods(stripe_sdk: stripe.StripeClient) -> None:
    customer = await stripe_sdk.v1.customers.create_async({"email": "v@example.com"})
    visa = await stripe_sdk.v1.payment_methods.attach_async(
        "pm_card_visa", {"customer": customer.id}
    )
    master = await stripe_sdk.v1.payment_methods.attach_async(
        "pm_card_mastercard", {"customer": customer.id}
    )
    assert visa.id.startswith("pm_")
    assert visa.id != "pm_card_visa"
    assert visa.card is not None
    assert (visa.card.brand, visa.card.last4) == ("visa", "4242")
    assert master.card is not None
    assert (master.card.brand, master.card.last4) == ("mastercard", "4444")
    listed = await stripe_sdk.v1.customers.payment_methods.list_async(customer.id)
    assert {pm.id for pm in listed.data} == {visa.id, master.id}


async def test_charge_customer_fail_leaves_first_invoice_open_and_subscription_incomplete(
    stripe_sdk: stripe.StripeClient, settings: Settings
) -> None:
    customer = await stripe_sdk.v1.customers.create_async({"email": "f@example.com"})
    pm = await stripe_sdk.v1.payment_methods.attach_async(
        "pm_card_chargeCustomerFail", {"customer": customer.id}
    )
    sub = await stripe_sdk.v1.subscriptions.create_async(
        {
            "customer": customer.id,
            "items": [{"price": settings.stripe_price_pro_monthly}],
            "default_payment_method": pm.id,
            "payment_behavior": "allow_incomplete",
        }
    )
    assert sub.status == "incomplete"
    invoice = await stripe_sdk.v1.invoices.retrieve_async(str(sub.latest_invoice))
    assert (invoice.status, invoice.attempt_count, invoice.amount_due) == ("open", 1, 9_900)
    with pytest.raises(stripe.CardError) as err:
        await stripe_sdk.v1.invoices.pay_async(invoice.id or "")
    assert err.value.code == "card_declined"
    visa = await stripe_sdk.v1.payment_methods.attach_async(
        "pm_card_visa", {"customer": customer.id}
    )
    paid = await stripe_sdk.v1.invoices.pay_async(invoice.id or "", {"payment_method": visa.id})
    # Manual attempts after the first leave `attempt_count` (only automatic retries count).
    assert (paid.status, paid.attempt_count, paid.amount_paid) == ("paid", 1, 9_900)
    assert (await stripe_sdk.v1.subscriptions.retrieve_async(sub.id)).status == "active"
    charges = await stripe_sdk.v1.charges.list_async({"customer": customer.id})
    assert [c.status for c in charges.data] == ["succeeded", "failed", "failed"]


async def test_test_clock_moves_a_trial_to_active_and_a_failed_renewal_to_past_due(
    stripe_sdk: stripe.StripeClient, settings: Settings
) -> None:
    clock, customer = await clock_customer(stripe_sdk)
    sub = await stripe_sdk.v1.subscriptions.create_async(
        {
            "customer": customer,
            "items": [{"price": settings.stripe_price_starter_monthly}],
            "trial_period_days": 14,
        }
    )
    assert sub.status == "trialing"
    assert sub.trial_end == T0 + 14 * DAY
    assert sub["items"].data[0].current_period_end == T0 + 14 * DAY

    await advance(stripe_sdk, clock, T0 + 15 * DAY)
    sub = await stripe_sdk.v1.subscriptions.retrieve_async(sub.id)
    assert sub.status == "active"
    item = sub["items"].data[0]
    assert (item.current_period_start, item.current_period_end) == (
        T0 + 14 * DAY,
        add_interval(T0 + 14 * DAY, "month"),
    )
    first = await stripe_sdk.v1.invoices.retrieve_async(str(sub.latest_invoice))
    assert (first.status, first.amount_paid, first.billing_reason) == (
        "paid",
        2_900,
        "subscription_cycle",
    )

    # The card starts failing; the next renewal cannot be paid.
    failing = await stripe_sdk.v1.payment_methods.attach_async(
        "pm_card_chargeCustomerFail", {"customer": customer}
    )
    await stripe_sdk.v1.customers.update_async(
        customer, {"invoice_settings": {"default_payment_method": failing.id}}
    )
    await advance(stripe_sdk, clock, item.current_period_end + DAY)
    sub = await stripe_sdk.v1.subscriptions.retrieve_async(sub.id)
    assert sub.status == "past_due"
    renewal = await stripe_sdk.v1.invoices.retrieve_async(str(sub.latest_invoice))
    assert (renewal.status, renewal.attempt_count, renewal.billing_reason) == (
        "open",
        1,
        "subscription_cycle",
    )
    events = await stripe_sdk.v1.events.list_async(
        {"type": "customer.subscription.trial_will_end", "limit": 100}
    )
    assert any(e.data.object["id"] == sub.id for e in events.data)
    failed = await stripe_sdk.v1.events.list_async({"type": "invoice.payment_failed", "limit": 100})
    assert any(e.data.object["id"] == renewal.id for e in failed.data)


async def test_cancel_at_period_end_ends_the_subscription_at_renewal(
    stripe_sdk: stripe.StripeClient, settings: Settings
) -> None:
    clock, customer = await clock_customer(stripe_sdk)
    sub = await stripe_sdk.v1.subscriptions.create_async(
        {"customer": customer, "items": [{"price": settings.stripe_price_starter_yearly}]}
    )
    assert sub.status == "active"
    sub = await stripe_sdk.v1.subscriptions.update_async(sub.id, {"cancel_at_period_end": True})
    assert sub.cancel_at_period_end
    assert sub.cancel_at == add_interval(T0, "year")
    await advance(stripe_sdk, clock, T0 + 400 * DAY)
    sub = await stripe_sdk.v1.subscriptions.retrieve_async(sub.id)
    assert (sub.status, sub.ended_at) == ("canceled", add_interval(T0, "year"))
    with pytest.raises(stripe.InvalidRequestError):
        await stripe_sdk.v1.subscriptions.update_async(sub.id, {"cancel_at_period_end": False})


async def test_proration_on_plan_change(
    stripe_sdk: stripe.StripeClient, settings: Settings
) -> None:
    clock, customer = await clock_customer(stripe_sdk)
    sub = await stripe_sdk.v1.subscriptions.create_async(
        {"customer": customer, "items": [{"price": settings.stripe_price_starter_monthly}]}
    )
    period_end = sub["items"].data[0].current_period_end
    half = T0 + (period_end - T0) // 2
    await advance(stripe_sdk, clock, half)
    changed = await stripe_sdk.v1.subscriptions.update_async(
        sub.id,
        {
            "items": [{"id": sub["items"].data[0].id, "price": settings.stripe_price_pro_monthly}],
            "proration_behavior": "always_invoice",
        },
    )
    assert changed["items"].data[0].price.id == settings.stripe_price_pro_monthly
    invoice = await stripe_sdk.v1.invoices.retrieve_async(str(changed.latest_invoice))
    assert invoice.billing_reason == "subscription_update"
    # Half a period left: credit half of 29.00, charge half of 99.00.
    assert [line.amount for line in invoice.lines.data] == [-1_450, 4_950]
    assert (invoice.status, invoice.amount_paid) == ("paid", 3_500)


async def test_meter_events_count_each_identifier_once(stripe_sdk: stripe.StripeClient) -> None:
    customer = await stripe_sdk.v1.customers.create_async({"email": "m@example.com"})
    for identifier, value in (("use-1", 5), ("use-1", 5), ("use-2", 2)):
        await stripe_sdk.v1.billing.meter_events.create_async(
            {
                "event_name": "api_calls",
                "identifier": identifier,
                "payload": {"stripe_customer_id": customer.id, "value": str(value)},
            }
        )
    meter = next(
        m
        for m in (await stripe_sdk.v1.billing.meters.list_async()).data
        if m.event_name == "api_calls"
    )
    summaries = await stripe_sdk.v1.billing.meters.event_summaries.list_async(
        meter.id, {"customer": customer.id, "start_time": 0, "end_time": 4_000_000_000}
    )
    assert summaries.data[0].aggregated_value == 7


class Receiver:
    """A webhook endpoint that verifies with the SDK and fails its first delivery."""

    def __init__(self) -> None:
        self.secret = ""
        self.verified: list[dict[str, Any]] = []
        self.statuses: list[int] = []

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        try:
            event = stripe.Webhook.construct_event(
                body, request.headers.get("Stripe-Signature"), self.secret
            )
        except stripe.SignatureVerificationError:
            self.statuses.append(400)
            return Response(status_code=400)
        status = 500 if not self.statuses else 200
        self.statuses.append(status)
        if status == 200:
            self.verified.append(json.loads(body))
        assert event.id
        return Response(status_code=status)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    import asyncio

    handler = Receiver()
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            Starlette(routes=[Route("/hook", handler.handle, methods=["POST"])]),
            host="127.0.0.1",
            port=port,
            log_level="warning",
        )
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    yield handler, f"http://127.0.0.1:{port}/hook"
    server.should_exit = True
    await task


async def test_webhooks_are_signed_and_retried(
    stripe_sdk: stripe.StripeClient, receiver: tuple[Receiver, str], emulator: httpx.AsyncClient
) -> None:
    handler, url = receiver
    endpoint = await stripe_sdk.v1.webhook_endpoints.create_async(
        {"url": url, "enabled_events": ["customer.created"]}
    )
    assert endpoint.secret is not None
    assert endpoint.secret.startswith("whsec_")
    handler.secret = endpoint.secret
    try:
        customer = await stripe_sdk.v1.customers.create_async({"email": "w@example.com"})
        received = await eventually(
            lambda: _async(
                [e for e in handler.verified if e["data"]["object"]["id"] == customer.id]
            )
        )
        assert received[0]["type"] == "customer.created"
        assert handler.statuses[:2] == [500, 200]  # the first delivery failed and was retried
        log = (await emulator.get("/_emulator/webhook_deliveries")).json()
        mine = [d for d in log if d["endpoint"] == endpoint.id]
        assert [(d["attempt"], d["status"]) for d in mine] == [(1, 500), (2, 200)]
    finally:
        await stripe_sdk.v1.webhook_endpoints.delete_async(endpoint.id)


async def _async(value: Any) -> Any:
    return value


def test_serve_makes_one_endpoint_per_webhook_url() -> None:
    # The stack gives each API replica its own endpoint: every event reaches each of them.
    urls = ["http://127.0.0.1:1/hook", "http://127.0.0.1:2/hook"]
    args = arguments().parse_args(
        ["serve", "--webhook-secret", "whsec_both", *(f"--webhook-url={url}" for url in urls)]
    )
    objects = build(args).account.objects.values()
    endpoints = [(o["url"], o["_secret"]) for o in objects if o["object"] == "webhook_endpoint"]
    assert sorted(endpoints) == [(url, "whsec_both") for url in urls]


def test_state_file_survives_a_restart(tmp_path: Any) -> None:
    path = tmp_path / "stripe.json"
    account = Account(path)
    customer = account.create_customer({"email": "s@example.com", "metadata": {"user_id": "u-s"}})
    account.save()
    again = Account(path)
    assert again.get("customer", customer["id"])["metadata"] == {"user_id": "u-s"}
    assert API_KEY.startswith("sk_test_")


def test_an_acknowledged_write_survives_a_clean_stop(tmp_path: Any) -> None:
    # The state file is written on a timer, not after every write: a clean stop (SIGTERM)
    # still writes everything that was answered.

    path, port = tmp_path / "stripe.json", free_port()
    command = [sys.executable, "-m", "emulator", "serve", "--port", str(port)]
    command += ["--api-key", API_KEY, "--state-file", str(path)]
    url = f"http://127.0.0.1:{port}"
    auth = {"Authorization": f"Bearer {API_KEY}"}
    first = subprocess.Popen(command, cwd=ROOT)
    try:
        wait_for_http(f"{url}/healthz", first)
        made = httpx.post(f"{url}/v1/customers", data={"email": "kept@example.com"}, headers=auth)
        assert made.status_code == 200
    finally:
        first.terminate()  # uvicorn stops cleanly, then re-raises SIGTERM
        first.wait(10)
    again = subprocess.Popen(command, cwd=ROOT)
    try:
        wait_for_http(f"{url}/healthz", again)
        kept = httpx.get(f"{url}/v1/customers/{made.json()['id']}", headers=auth)
        assert kept.status_code == 200
        assert kept.json()["email"] == "kept@example.com"
    finally:
        again.terminate()
        again.wait(10)


# --- payments: PaymentIntents, InvoicePayments, declines, 3D Secure, refunds ------------------


async def events_for(sdk: stripe.StripeClient, type_: str, object_id: str) -> list[stripe.Event]:
    """The events of `type_` whose object is `object_id`, oldest first."""
    page = await sdk.v1.events.list_async({"type": type_, "limit": 100})
    return [e for e in reversed(page.data) if e.data.object.to_dict().get("id") == object_id]


async def test_invoice_payments_tie_each_invoice_to_its_payment_intent(
    stripe_sdk: stripe.StripeClient, settings: Settings
) -> None:
    _, customer = await clock_customer(stripe_sdk)
    sub = await stripe_sdk.v1.subscriptions.create_async(
        {"customer": customer, "items": [{"price": settings.stripe_price_starter_monthly}]}
    )
    invoice = await stripe_sdk.v1.invoices.retrieve_async(str(sub.latest_invoice))
    # `payments` is includable: left out unless asked for.
    assert "payments" not in invoice
    assert invoice.hosted_invoice_url is not None
    assert invoice.hosted_invoice_url.endswith(f"/_emulator/hosted_invoices/{invoice.id}")

    expanded = await stripe_sdk.v1.invoices.retrieve_async(
        invoice.id or "", {"expand": ["payments.data.payment.payment_intent"]}
    )
    assert expanded.payments is not None
    [payment] = expanded.payments.data
    assert (payment.status, payment.is_default, payment.invoice) == ("paid", True, invoice.id)
    assert (payment.amount_requested, payment.amount_paid) == (2_900, 2_900)
    assert payment.payment.type == "payment_intent"
    pi = payment.payment.payment_intent
    assert isinstance(pi, stripe.PaymentIntent)
    assert (pi.status, pi.amount_received, pi.last_payment_error) == ("succeeded", 2_900, None)

    charge = await stripe_sdk.v1.charges.retrieve_async(str(pi.latest_charge))
    assert (charge.payment_intent, charge.paid, charge.amount) == (pi.id, True, 2_900)
    assert (await stripe_sdk.v1.payment_intents.retrieve_async(pi.id)).status == "succeeded"
    by_invoice = await stripe_sdk.v1.invoice_payments.list_async({"invoice": invoice.id or ""})
    by_pi = await stripe_sdk.v1.invoice_payments.list_async(
        {"payment": {"type": "payment_intent", "payment_intent": pi.id}}
    )
    assert [p.id for p in by_invoice.data] == [p.id for p in by_pi.data] == [payment.id]
    with pytest.raises(stripe.InvalidRequestError) as untyped:
        await stripe_sdk.v1.invoice_payments.list_async(
            {"payment": {"payment_intent": pi.id}}  # type: ignore[arg-type]  # untyped on purpose
        )
    assert untyped.value.param == "payment[type]"
    assert (await stripe_sdk.v1.invoice_payments.retrieve_async(payment.id)).status == "paid"
    events = await stripe_sdk.v1.events.list_async({"type": "invoice_payment.paid", "limit": 100})
    assert [e async for e in events.auto_paging_iter() if e.data.object["id"] == payment.id]

    # What Stripe cannot expand is refused, as it refuses it.
    for path, refused in (
        ("payment_intent", "payment_intent"),  # no longer on the invoice
        ("status_transitions", "status_transitions"),  # a plain sub-object
        ("metadata", "metadata"),
    ):
        with pytest.raises(stripe.InvalidRequestError) as err:
            await stripe_sdk.v1.invoices.retrieve_async(invoice.id or "", {"expand": [path]})
        assert err.value.http_status == 400
        assert f"This property cannot be expanded ({refused})." in str(err.value)
    with pytest.raises(stripe.InvalidRequestError) as deep:
        await stripe_sdk.v1.subscriptions.retrieve_async(
            sub.id, {"expand": ["latest_invoice.payments.data.payment.payment_intent"]}
        )
    assert "more than 4 levels" in str(deep.value)
    listed = await stripe_sdk.v1.invoices.list_async(
        {"customer": customer, "expand": ["data.payments"]}
    )
    assert all(inv.payments is not None for inv in listed.data)
    with pytest.raises(stripe.InvalidRequestError) as hint:
        await stripe_sdk.v1.invoices.list_async({"customer": customer, "expand": ["payments"]})
    assert "You may want to try expanding 'data.payments' instead." in str(hint.value)


async def test_an_always_authenticate_card_waits_for_the_customer_on_the_hosted_page(
    stripe_sdk: stripe.StripeClient, settings: Settings
) -> None:
    clock, customer = await clock_customer(stripe_sdk, "pm_card_authenticationRequired")
    sub = await stripe_sdk.v1.subscriptions.create_async(
        {"customer": customer, "items": [{"price": settings.stripe_price_pro_monthly}]}
    )
    assert sub.status == "incomplete"  # a first invoice leaves it incomplete
    invoice = await stripe_sdk.v1.invoices.retrieve_async(
        str(sub.latest_invoice), {"expand": ["payments.data.payment.payment_intent"]}
    )
    assert (invoice.status, invoice.attempt_count) == ("open", 1)
    assert invoice.payments is not None
    pi = invoice.payments.data[0].payment.payment_intent
    assert isinstance(pi, stripe.PaymentIntent)
    assert pi.status == "requires_action"
    error = pi.last_payment_error
    assert error is not None
    assert (error.type, error.code, error.decline_code) == (
        "card_error",
        "authentication_required",
        "authentication_required",
    )
    assert error.charge == pi.latest_charge
    assert error.payment_method is not None
    assert error.payment_method.id == pi.payment_method
    # Both invoice events, and the PaymentIntent's own.
    for type_ in ("invoice.payment_failed", "invoice.payment_action_required"):
        assert len(await events_for(stripe_sdk, type_, invoice.id or "")) == 1
    assert await events_for(stripe_sdk, "payment_intent.requires_action", pi.id)

    # Paying again off-session needs the customer too: Stripe's card error says so.
    with pytest.raises(stripe.CardError) as err:
        await stripe_sdk.v1.invoices.pay_async(invoice.id or "", {"off_session": True})
    assert (err.value.http_status, err.value.code) == (
        402,
        "invoice_payment_intent_requires_action",
    )
    assert err.value.error is not None
    assert err.value.error.payment_intent is not None
    assert err.value.error.payment_intent.id == pi.id
    reread = await stripe_sdk.v1.invoices.retrieve_async(invoice.id or "")
    assert (reread.status, reread.attempt_count) == ("open", 1)  # a manual attempt

    # The customer opens the hosted invoice page and authenticates.
    assert reread.hosted_invoice_url is not None
    async with httpx.AsyncClient() as http:
        page = await http.get(reread.hosted_invoice_url)
        assert page.status_code == 200
        assert "authenticate" in page.text
        done = await http.post(reread.hosted_invoice_url, json={})
    assert done.status_code == 200
    assert done.json()["status"] == "paid"
    paid = await stripe_sdk.v1.invoices.retrieve_async(invoice.id or "")
    assert (paid.status, paid.amount_paid, paid.attempt_count) == ("paid", 9_900, 1)
    assert (await stripe_sdk.v1.subscriptions.retrieve_async(sub.id)).status == "active"
    assert (await stripe_sdk.v1.payment_intents.retrieve_async(pi.id)).status == "succeeded"
    async with httpx.AsyncClient() as http:  # the page's own form comes back to the page
        again = await http.post(
            reread.hosted_invoice_url,
            content=b"",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
    assert (again.status_code, again.headers["location"]) == (303, reread.hosted_invoice_url)
    for type_ in ("invoice.paid", "invoice.payment_succeeded"):
        assert len(await events_for(stripe_sdk, type_, invoice.id or "")) == 1
    assert await events_for(stripe_sdk, "payment_intent.succeeded", pi.id)
    updates = await events_for(stripe_sdk, "customer.subscription.updated", sub.id)
    assert updates[-1].data.object["status"] == "active"

    # A subscription that must be paid at once is refused with the subscription's error.
    _, other = await clock_customer(stripe_sdk, "pm_card_authenticationRequired")
    with pytest.raises(stripe.CardError) as refused:
        await stripe_sdk.v1.subscriptions.create_async(
            {
                "customer": other,
                "items": [{"price": settings.stripe_price_pro_monthly}],
                "payment_behavior": "error_if_incomplete",
            }
        )
    assert refused.value.code == "subscription_payment_intent_requires_action"

    # The renewal needs authentication again: the subscription goes past_due.
    period_end = (
        (await stripe_sdk.v1.subscriptions.retrieve_async(sub.id))["items"]
        .data[0]
        .current_period_end
    )
    await advance(stripe_sdk, clock, period_end + DAY)
    sub = await stripe_sdk.v1.subscriptions.retrieve_async(
        sub.id, {"expand": ["latest_invoice.payments"]}
    )
    assert sub.status == "past_due"
    renewal = sub.latest_invoice
    assert isinstance(renewal, stripe.Invoice)
    assert (renewal.status, renewal.attempt_count) == ("open", 1)
    assert renewal.payments is not None
    renewal_pi = await stripe_sdk.v1.payment_intents.retrieve_async(
        str(renewal.payments.data[0].payment.payment_intent)
    )
    assert renewal_pi.status == "requires_action"
    assert (
        len(await events_for(stripe_sdk, "invoice.payment_action_required", renewal.id or "")) == 1
    )


async def test_forced_declines_fail_a_customers_next_charges_with_stripes_error(
    stripe_sdk: stripe.StripeClient, settings: Settings, emulator: httpx.AsyncClient
) -> None:
    _, customer = await clock_customer(stripe_sdk)
    declines = f"/_emulator/customers/{customer}/declines"
    forced = await emulator.post(declines, json={"decline_code": "insufficient_funds", "count": 1})
    assert forced.json() == {
        "customer": customer,
        "decline_code": "insufficient_funds",
        "remaining": 1,
    }
    sub = await stripe_sdk.v1.subscriptions.create_async(
        {"customer": customer, "items": [{"price": settings.stripe_price_starter_monthly}]}
    )
    assert sub.status == "incomplete"
    invoice = await stripe_sdk.v1.invoices.retrieve_async(
        str(sub.latest_invoice), {"expand": ["payments.data.payment.payment_intent"]}
    )
    assert invoice.payments is not None
    pi = invoice.payments.data[0].payment.payment_intent
    assert isinstance(pi, stripe.PaymentIntent)
    assert (pi.status, pi.payment_method) == ("requires_payment_method", None)
    assert pi.last_payment_error is not None
    assert (pi.last_payment_error.code, pi.last_payment_error.decline_code) == (
        "card_declined",
        "insufficient_funds",
    )
    assert pi.last_payment_error.message == "Your card has insufficient funds."
    charge = await stripe_sdk.v1.charges.retrieve_async(str(pi.latest_charge))
    assert (charge.status, charge.failure_code) == ("failed", "card_declined")
    assert charge.outcome is not None
    assert charge.outcome.reason == "insufficient_funds"
    assert (await emulator.get(declines)).json()["decline_code"] is None  # the count is used up
    paid = await stripe_sdk.v1.invoices.pay_async(invoice.id or "")
    assert paid.status == "paid"

    # Until cleared, and in Stripe's own shape: an expired card is an error code of its own.
    await emulator.post(declines, data={"decline_code": "expired_card"})  # a form works too
    renewal = await stripe_sdk.v1.subscriptions.update_async(
        sub.id,
        {
            "items": [{"id": sub["items"].data[0].id, "price": settings.stripe_price_pro_yearly}],
        },
    )
    assert renewal.status == "past_due"
    for _ in range(2):
        with pytest.raises(stripe.CardError) as err:
            await stripe_sdk.v1.invoices.pay_async(str(renewal.latest_invoice))
        assert (err.value.code, err.value.error and err.value.error.decline_code) == (
            "expired_card",
            None,
        )
        assert err.value.user_message == "Your card has expired."
    assert (await emulator.get(declines)).json()["remaining"] is None
    await emulator.delete(declines)
    assert (await stripe_sdk.v1.invoices.pay_async(str(renewal.latest_invoice))).status == "paid"

    unknown = await emulator.post(declines, json={"decline_code": "not_a_reason"})
    assert unknown.status_code == 400
    assert "insufficient_funds" in unknown.json()["error"]["message"]
    nobody = await emulator.post(
        "/_emulator/customers/cus_nobody/declines", json={"decline_code": "lost_card"}
    )
    assert nobody.status_code == 404


async def test_refunds_update_the_charge_and_refuse_more_than_is_left(
    stripe_sdk: stripe.StripeClient, settings: Settings, emulator_url: str
) -> None:
    _, customer = await clock_customer(stripe_sdk)
    sub = await stripe_sdk.v1.subscriptions.create_async(
        {"customer": customer, "items": [{"price": settings.stripe_price_pro_monthly}]}
    )
    charges = await stripe_sdk.v1.charges.list_async({"customer": customer})
    [charge] = charges.data
    assert charge.payment_intent is not None

    first = await stripe_sdk.v1.refunds.create_async(
        {"charge": charge.id, "amount": 1_000, "reason": "requested_by_customer"},
        {"idempotency_key": f"refund-{charge.id}"},
    )
    again = await stripe_sdk.v1.refunds.create_async(
        {"charge": charge.id, "amount": 1_000, "reason": "requested_by_customer"},
        {"idempotency_key": f"refund-{charge.id}"},
    )
    assert again.id == first.id
    assert (first.status, first.amount, first.payment_intent) == (
        "succeeded",
        1_000,
        charge.payment_intent,
    )
    partly = await stripe_sdk.v1.charges.retrieve_async(charge.id)
    assert (partly.amount_refunded, partly.refunded) == (1_000, False)
    with pytest.raises(stripe.InvalidRequestError) as err:
        await stripe_sdk.v1.refunds.create_async({"charge": charge.id, "amount": 9_000})
    assert err.value.http_status == 400
    assert "Refund amount ($90.00) is greater than unrefunded amount on charge ($89.00)" in str(
        err.value
    )

    rest = await stripe_sdk.v1.refunds.create_async({"payment_intent": str(charge.payment_intent)})
    assert (rest.amount, rest.charge) == (8_900, charge.id)
    refunded = await stripe_sdk.v1.charges.retrieve_async(charge.id, {"expand": ["refunds"]})
    assert (refunded.amount_refunded, refunded.refunded) == (9_900, True)
    assert refunded.refunds is not None
    assert {r.id for r in refunded.refunds.data} == {first.id, rest.id}
    listed = await stripe_sdk.v1.refunds.list_async({"charge": charge.id})
    assert [r.id for r in listed.data] == [rest.id, first.id]
    assert (await stripe_sdk.v1.refunds.retrieve_async(first.id)).amount == 1_000
    async with httpx.AsyncClient() as http:
        nested = await http.get(
            f"{emulator_url}/v1/charges/{charge.id}/refunds",
            headers={"Authorization": f"Bearer {API_KEY}"},
        )
    assert [r["id"] for r in nested.json()["data"]] == [rest.id, first.id]
    with pytest.raises(stripe.InvalidRequestError) as done:
        await stripe_sdk.v1.refunds.create_async({"charge": charge.id})
    assert done.value.code == "charge_already_refunded"

    refunded_events = await events_for(stripe_sdk, "charge.refunded", charge.id)
    assert [e.data.object["amount_refunded"] for e in refunded_events] == [1_000, 9_900]
    for refund in (first, rest):
        assert len(await events_for(stripe_sdk, "refund.created", refund.id)) == 1
    assert not await events_for(stripe_sdk, "charge.refund.updated", first.id)
    # The invoice stays paid: a refund does not reopen it.
    invoice = await stripe_sdk.v1.invoices.retrieve_async(str(sub.latest_invoice))
    assert invoice.status == "paid"


async def upcoming_for(sdk: stripe.StripeClient, sub_id: str) -> list[dict[str, Any]]:
    page = await sdk.v1.events.list_async({"type": "invoice.upcoming", "limit": 100})
    return [
        e.data.object.to_dict()
        for e in reversed(page.data)
        if e.data.object["parent"]["subscription_details"]["subscription"] == sub_id
    ]


async def test_invoice_upcoming_announces_each_charged_renewal_days_before(
    stripe_sdk: stripe.StripeClient, settings: Settings
) -> None:
    clock, customer = await clock_customer(stripe_sdk)
    sub = await stripe_sdk.v1.subscriptions.create_async(
        {"customer": customer, "items": [{"price": settings.stripe_price_starter_monthly}]}
    )
    ending = await stripe_sdk.v1.subscriptions.create_async(
        {"customer": customer, "items": [{"price": settings.stripe_price_pro_monthly}]}
    )
    await stripe_sdk.v1.subscriptions.update_async(ending.id, {"cancel_at_period_end": True})
    renewal = add_interval(T0, "month")
    await advance(stripe_sdk, clock, renewal - 3 * DAY - 1)
    assert await upcoming_for(stripe_sdk, sub.id) == []
    await advance(stripe_sdk, clock, renewal - 3 * DAY)
    [upcoming] = await upcoming_for(stripe_sdk, sub.id)
    assert "id" not in upcoming  # a preview: "will not have an invoice ID"
    assert (upcoming["object"], upcoming["billing_reason"], upcoming["amount_due"]) == (
        "invoice",
        "upcoming",
        2_900,
    )
    assert upcoming["next_payment_attempt"] == renewal
    [line] = upcoming["lines"]["data"]
    assert line["period"] == {"start": renewal, "end": add_interval(renewal, "month")}
    # Once per renewal; none for the subscription that ends at its period's end.
    await advance(stripe_sdk, clock, renewal + DAY)
    assert len(await upcoming_for(stripe_sdk, sub.id)) == 1
    assert await upcoming_for(stripe_sdk, ending.id) == []
    await advance(stripe_sdk, clock, add_interval(renewal, "month") - 3 * DAY)
    assert len(await upcoming_for(stripe_sdk, sub.id)) == 2


@asynccontextmanager
async def emulator_serving(account: Account) -> AsyncIterator[stripe.StripeClient]:
    """An emulator over `account` in this process, and an SDK client pointed at it."""
    import asyncio

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    app = Emulator(account, Dispatcher(account), api_key=API_KEY).app
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    base = Settings(  # type: ignore[call-arg]  # _env_file: see tests/conftest.py
        _env_file=None, stripe_api_key=SecretStr(API_KEY), stripe_api_base=url
    )
    try:
        async with stripe_client(base) as client:
            yield client
    finally:
        server.should_exit = True
        await task


async def test_invoice_upcoming_days_are_a_setting() -> None:
    account = Account(None, upcoming_invoice_days=7, public_url="http://emulator.test")
    async with emulator_serving(account) as sdk:
        price = await sdk.v1.prices.create_async(
            {
                "currency": "usd",
                "unit_amount": 500,
                "recurring": {"interval": "month"},
                "product_data": {"name": "Weekly notice"},
            }
        )
        clock, customer = await clock_customer(sdk)
        sub = await sdk.v1.subscriptions.create_async(
            {"customer": customer, "items": [{"price": price.id}]}
        )
        renewal = add_interval(T0, "month")
        await advance(sdk, clock, renewal - 7 * DAY - 1)
        assert await upcoming_for(sdk, sub.id) == []
        await advance(sdk, clock, renewal - 7 * DAY)
        assert len(await upcoming_for(sdk, sub.id)) == 1
        invoice = await sdk.v1.invoices.retrieve_async(str(sub.latest_invoice))
        assert invoice.hosted_invoice_url == (
            f"http://emulator.test/_emulator/hosted_invoices/{invoice.id}"
        )


# --- raw card numbers ------------------------------------------------------------------------


async def card(
    sdk: stripe.StripeClient, number: str, month: int, year: int
) -> stripe.PaymentMethod:
    return await sdk.v1.payment_methods.create_async(
        {
            "type": "card",
            "card": {"number": number, "exp_month": month, "exp_year": year, "cvc": "123"},
        }
    )


async def test_test_card_numbers_make_payment_methods_that_behave_like_their_tokens(
    stripe_sdk: stripe.StripeClient, settings: Settings
) -> None:
    today = datetime.now(UTC)
    visa = await card(stripe_sdk, "4242424242424242", 7, today.year + 2)
    assert visa.id.startswith("pm_")
    assert visa.card is not None
    assert (visa.card.brand, visa.card.last4) == ("visa", "4242")
    assert (visa.card.exp_month, visa.card.exp_year) == (7, today.year + 2)
    customer = await stripe_sdk.v1.customers.create_async({"email": "n@example.com"})
    attached = await stripe_sdk.v1.payment_methods.attach_async(visa.id, {"customer": customer.id})
    assert attached.customer == customer.id

    # 4000 0000 0000 0002: like pm_card_visa_chargeDeclined, it cannot be attached.
    declined = await card(stripe_sdk, "4000000000000002", 1, today.year + 1)
    with pytest.raises(stripe.CardError) as err:
        await stripe_sdk.v1.payment_methods.attach_async(declined.id, {"customer": customer.id})
    assert (err.value.code, err.value.error and err.value.error.decline_code) == (
        "card_declined",
        "generic_decline",
    )

    # 4000 0027 6000 3184: like pm_card_authenticationRequired, every off-session charge waits.
    three_ds = await card(stripe_sdk, "4000 0027 6000 3184", 1, today.year + 1)
    await stripe_sdk.v1.payment_methods.attach_async(three_ds.id, {"customer": customer.id})
    sub = await stripe_sdk.v1.subscriptions.create_async(
        {
            "customer": customer.id,
            "items": [{"price": settings.stripe_price_starter_monthly}],
            "default_payment_method": three_ds.id,
        }
    )
    assert sub.status == "incomplete"
    pis = await stripe_sdk.v1.invoice_payments.list_async({"invoice": str(sub.latest_invoice)})
    pi = await stripe_sdk.v1.payment_intents.retrieve_async(str(pis.data[0].payment.payment_intent))
    assert pi.status == "requires_action"

    for number, month, year, code in (
        ("4242424242424241", 1, today.year + 1, "incorrect_number"),
        ("4242424242424242", 13, today.year + 1, "invalid_expiry_month"),
        ("4242424242424242", 1, today.year - 1, "invalid_expiry_year"),
        ("4111111111111111", 1, today.year + 1, "card_declined"),  # not a test card
    ):
        with pytest.raises(stripe.CardError) as bad:
            await card(stripe_sdk, number, month, year)
        assert bad.value.code == code

    # Test tokens expire in the future, as Stripe's do.
    token_card = await stripe_sdk.v1.payment_methods.attach_async(
        "pm_card_visa", {"customer": customer.id}
    )
    assert token_card.card is not None
    assert (token_card.card.exp_year, token_card.card.exp_month) > (today.year, today.month)


async def test_a_card_that_expires_before_the_renewal_declines_it(
    stripe_sdk: stripe.StripeClient, settings: Settings
) -> None:
    today = datetime.now(UTC)
    start = int(today.timestamp())
    clock = await stripe_sdk.v1.test_helpers.test_clocks.create_async({"frozen_time": start})
    customer = await stripe_sdk.v1.customers.create_async({"test_clock": clock.id})
    expiring = await card(stripe_sdk, "4242424242424242", today.month, today.year)  # this month
    await stripe_sdk.v1.payment_methods.attach_async(expiring.id, {"customer": customer.id})
    sub = await stripe_sdk.v1.subscriptions.create_async(
        {
            "customer": customer.id,
            "items": [{"price": settings.stripe_price_starter_monthly}],
            "default_payment_method": expiring.id,
        }
    )
    assert sub.status == "active"
    await advance(stripe_sdk, clock.id, add_interval(start, "month") + DAY)
    sub = await stripe_sdk.v1.subscriptions.retrieve_async(sub.id)
    assert sub.status == "past_due"
    payments = await stripe_sdk.v1.invoice_payments.list_async({"invoice": str(sub.latest_invoice)})
    pi = await stripe_sdk.v1.payment_intents.retrieve_async(
        str(payments.data[0].payment.payment_intent)
    )
    assert pi.last_payment_error is not None
    error = pi.last_payment_error.to_dict()
    assert (error["code"], error["message"]) == ("expired_card", "Your card has expired.")
    assert "decline_code" not in error  # an error code of its own, as Stripe answers it
