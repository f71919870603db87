"""Stripe webhooks: signed independently here with Stripe's scheme, turned into signals."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import OperationalError
from sqlmodel import select
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from api.routes import webhooks
from core.db import Customer, make_engine, sessions
from tests.api.helpers import (
    ROLLED,
    SECRET,
    Api,
    app_settings,
    event,
    invoice,
    recorded,
    sign,
    subscription,
    view,
    view_when,
)
from tests.helpers import BIN, eventually
from workflows import handover


async def test_a_failed_payment_webhook_reaches_the_workflow_once(api: Api) -> None:
    assert (await api.subscribe("wendy")).status_code == 201
    failed_invoice = api.stripe.renew(paid=False)
    payload = event("invoice.payment_failed", invoice("wendy", failed_invoice), "evt_wendy_1")
    first = await api.webhook(payload)
    assert first.status_code == 200
    assert first.json() == {"status": "processed", "event_type": "invoice.payment_failed"}
    await view_when(api, "wendy", status="past_due", failed_payment_attempts=1)
    # Stripe delivers it again: recorded once, counted once.
    again = await api.webhook(payload)
    assert again.status_code == 200
    assert again.json()["status"] == "duplicate"
    assert (await view(api, "wendy"))["failed_payment_attempts"] == 1
    rows = [r for r in await recorded(api.settings.database_url) if r.event_id == "evt_wendy_1"]
    assert [(r.type, r.user_id, r.outcome, r.object_id) for r in rows] == [
        ("invoice.payment_failed", "wendy", "processed", failed_invoice)
    ]


async def test_types_we_do_not_handle_are_200_ignored(api: Api) -> None:
    charge = {"id": "ch_1", "object": "charge", "customer": "cus_x", "metadata": {"user_id": "x"}}
    response = await api.webhook(event("charge.succeeded", charge))
    assert response.status_code == 200
    assert response.json() == {"status": "ignored", "event_type": "charge.succeeded"}
    # A handled type about an object that is not ours (no user metadata) is ignored too.
    stranger = {"id": "cus_stranger", "object": "customer", "metadata": {}}
    assert (await api.webhook(event("customer.updated", stranger))).json()["status"] == "ignored"
    assert {r.outcome for r in await recorded(api.settings.database_url)} == {"ignored"}


async def test_bad_signatures_and_bodies_are_400(api: Api) -> None:
    payload = event(
        "customer.updated", {"id": "cus_a", "object": "customer", "metadata": {"user_id": "a"}}
    )
    post = api.http.post
    assert (await post("/stripe/webhooks", content=payload)).status_code == 400  # no header
    for header in ("garbage", "t=1,v1=abc", sign(payload, "whsec_someone_else")):
        assert (
            await post("/stripe/webhooks", content=payload, headers={"Stripe-Signature": header})
        ).status_code == 400
    stale = await api.webhook(payload, timestamp=int(time.time()) - 301)
    assert stale.status_code == 400
    assert "tolerance" in stale.json()["detail"]
    tampered = payload.replace(b'"user_id": "a"', b'"user_id": "b"')
    response = await post(
        "/stripe/webhooks", content=tampered, headers={"Stripe-Signature": sign(payload, SECRET)}
    )
    assert response.status_code == 400
    for body in (
        b'{"hello": "world"}',
        b"not json at all",
        json.dumps({"object": "event", "id": "evt_x"}).encode(),
    ):
        assert (await api.webhook(body)).status_code == 400, body
    assert await recorded(api.settings.database_url) == []


async def test_a_second_secret_is_accepted_during_rotation(api: Api) -> None:
    payload = event("customer.updated", {"id": "cus_r", "object": "customer", "metadata": {}})
    assert (await api.webhook(payload, secret=ROLLED)).status_code == 200


async def test_an_event_for_a_customer_with_no_workflow_adopts_the_live_subscription(
    api: Api,
) -> None:
    # A subscription made in the Stripe dashboard: no workflow runs for this user yet.
    api.stripe.live_elsewhere("sub_zoe", "cus_zoe", api.stripe_now())
    response = await api.webhook(event("customer.subscription.created", subscription("zoe")))
    assert response.status_code == 200
    assert response.json()["status"] == "processed"
    adopted = await view_when(api, "zoe", status="active")
    assert (adopted["stripe_subscription_id"], adopted["stripe_customer_id"], adopted["plan"]) == (
        "sub_zoe",
        "cus_zoe",
        "pro",
    )
    assert "find_subscription" in api.stripe.names()


async def test_a_late_event_never_resurrects_a_canceled_subscription(api: Api) -> None:
    assert (await api.subscribe("yann")).status_code == 201
    old_invoice = api.stripe.sub["latest_invoice"]
    canceled = await api.http.delete(
        "/stripe/subscriptions/yann", params={"at_period_end": "false"}, headers=api.auth("yann")
    )
    assert canceled.json()["status"] == "canceled"
    late = await api.webhook(event("invoice.paid", invoice("yann", old_invoice)))
    assert late.status_code == 200
    await view_when(api, "yann", status="canceled")
    handle = api.env.client.get_workflow_handle("subscription-yann")
    assert (await handle.result())["status"] == "canceled"  # the new run ended quietly
    assert api.stripe.names().count("create_subscription") == 1


async def test_webhook_while_temporal_is_stopped_is_503(database_url: str) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    settings = app_settings(database_url, f"billing-{uuid.uuid4()}")
    app = create_app(settings, temporal=env.client)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        await env.shutdown()
        payload = event(
            "customer.updated",
            {"id": "cus_s", "object": "customer", "metadata": {"user_id": "s"}},
            "evt_down",
        )
        response = await http.post(
            "/stripe/webhooks", content=payload, headers={"Stripe-Signature": sign(payload, SECRET)}
        )
        assert response.status_code == 503
        ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["temporal"].startswith("error")
    # Recorded before the Temporal call (no transaction spans it); Stripe's retry is handed
    # over again (see the next test), so nothing is lost.
    assert [r.event_id for r in await recorded(settings.database_url)] == ["evt_down"]


async def test_a_delivery_temporal_refused_is_handed_over_on_stripes_retry(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert (await api.subscribe("rita")).status_code == 201
    real = handover.signal_with_start
    refusals = 0

    async def down_once(*args: Any, **kwargs: Any) -> None:
        nonlocal refusals
        if refusals == 0:
            refusals += 1
            raise RPCError("Temporal is down", RPCStatusCode.UNAVAILABLE, b"")
        await real(*args, **kwargs)

    monkeypatch.setattr(handover, "signal_with_start", down_once)
    failed_invoice = api.stripe.renew(paid=False)
    payload = event("invoice.payment_failed", invoice("rita", failed_invoice), "evt_rita")
    assert (await api.webhook(payload)).status_code == 503
    retried = await api.webhook(payload)  # Stripe retries the same event
    assert retried.status_code == 200
    assert retried.json()["status"] == "duplicate"
    await view_when(api, "rita", status="past_due", failed_payment_attempts=1)
    # A third delivery is handed over too, and changes nothing: the workflow dedupes by id.
    assert (await api.webhook(payload)).json()["status"] == "duplicate"
    assert (await view(api, "rita"))["failed_payment_attempts"] == 1


async def test_objects_without_our_metadata_are_matched_by_the_stored_customer(api: Api) -> None:
    assert (await api.subscribe("vera")).status_code == 201
    await customer_row_written(api, "vera")
    failed_invoice = api.stripe.renew(paid=False)
    bare = {"id": failed_invoice, "object": "invoice", "customer": "cus_vera", "parent": None}
    response = await api.webhook(event("invoice.payment_failed", bare))
    assert response.json() == {"status": "processed", "event_type": "invoice.payment_failed"}
    await view_when(api, "vera", status="past_due")


async def customer_row_written(api: Api, user_id: str) -> None:
    """Wait for the workflow to store the user's Stripe customer."""
    engine = make_engine(api.settings.database_url)

    async def written() -> Customer | None:
        async with sessions(engine)() as session:
            mapping = select(Customer).where(Customer.user_id == user_id)
            return (await session.exec(mapping)).first()

    try:
        await eventually(written)
    finally:
        await engine.dispose()


async def test_a_database_outage_is_503_so_stripe_retries(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def unreachable(*_: Any) -> None:
        raise OperationalError("INSERT", {}, ConnectionError("database is down"))

    monkeypatch.setattr(webhooks, "_record", unreachable)
    payload = event("customer.updated", {"id": "cus_db", "object": "customer", "metadata": {}})
    response = await api.webhook(payload)
    assert response.status_code == 503


async def test_invoice_upcoming_has_no_id_and_reaches_the_workflow_by_its_subscription(
    api: Api,
) -> None:
    assert (await api.subscribe("yuri", interval="yearly")).status_code == 201
    upcoming = invoice("yuri", "unused")
    del upcoming["id"]  # an invoice not made yet
    response = await api.webhook(event("invoice.upcoming", upcoming, "evt_yuri_upcoming"))
    assert response.json() == {"status": "processed", "event_type": "invoice.upcoming"}
    await eventually(lambda: api.mail.kinds()[-1:] == ["renewal_reminder"])
    rows = [r for r in await recorded(api.settings.database_url) if r.event_id.startswith("evt_y")]
    assert [(r.type, r.outcome, r.object_id) for r in rows] == [
        ("invoice.upcoming", "processed", None)
    ]


async def test_a_refund_reaches_the_customer_by_the_stored_mapping(api: Api) -> None:
    assert (await api.subscribe("rhea")).status_code == 201
    charge = {"id": "ch_rhea", "object": "charge", "customer": "cus_rhea", "metadata": {}}

    async def handed_over() -> bool:  # once the workflow has stored the customer mapping
        response = await api.webhook(event("charge.refunded", charge))
        return bool(response.json()["status"] == "processed")

    await eventually(handed_over)
    await eventually(lambda: "get_charge_refunds" in api.stripe.names())
