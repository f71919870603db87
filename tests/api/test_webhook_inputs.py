"""The webhook contract of API.md for every input: each validly signed event answers 200,
whatever its type, API version or shape; a body that is not an event 400, never 5xx."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from temporalio.service import RPCError, RPCStatusCode

from api.stripe_events import MAX_BODY_BYTES, parse_event
from core.db import Customer, make_engine, sessions
from core.payloads import StripeEventRef, is_user_id
from tests.api import stripe_payloads as sp
from tests.api.helpers import SECRET, Api, recorded, sign, view_when

# --- the parsed value, without a server -------------------------------------------------------


@pytest.mark.parametrize("version", sp.VERSIONS)
def test_the_user_and_subscription_of_an_invoice_are_read_at_every_api_version(
    version: str,
) -> None:
    parsed = parse_event(json.dumps(sp.envelope("invoice.paid", sp.invoice("ann", version))))
    assert (parsed.type, parsed.object.kind, parsed.object.id) == (
        "invoice.paid",
        "invoice",
        "in_1Pgc6tB7WZ01zgkWu9fdqL6I",
    )
    assert parsed.object.user_id == "ann"
    assert parsed.object.subscription_id == "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw"
    assert parsed.object.customer_id == "cus_QXg1o8vcGmoR32"


def test_subscriptions_and_customers_name_their_user_in_their_own_metadata() -> None:
    sub = parse_event(json.dumps(sp.envelope("x.y", sp.subscription("bo", sp.ACACIA)))).object
    assert (sub.user_id, sub.subscription_id, sub.customer_id) == (
        "bo",
        "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw",
        "cus_QXg1o8vcGmoR32",
    )
    cus = parse_event(json.dumps(sp.envelope("x.y", sp.customer("cy", "cus_9")))).object
    assert (cus.user_id, cus.customer_id, cus.subscription_id) == ("cy", "cus_9", None)


def test_an_expanded_customer_or_subscription_is_read_by_its_id() -> None:
    inv = sp.invoice(None, sp.ACACIA)
    inv["customer"] = sp.customer("dee", "cus_expanded")
    inv["subscription"] = sp.subscription(None, subscription_id="sub_expanded")
    parsed = parse_event(json.dumps(sp.envelope("invoice.paid", inv))).object
    assert (parsed.customer_id, parsed.subscription_id, parsed.user_id) == (
        "cus_expanded",
        "sub_expanded",
        None,  # the expanded customer's metadata is not the invoice's
    )


@pytest.mark.parametrize("odd", ["zoë-7", "x" * 65, "a b", "alice\n", "", "a/b", 42, ["alice"]])
def test_a_metadata_user_id_that_is_not_a_user_id_is_no_user(odd: Any) -> None:
    parsed = parse_event(json.dumps(sp.envelope("invoice.paid", sp.invoice(odd)))).object
    assert parsed.user_id is None
    assert parsed.refused_user_id == repr(odd)[:80]


def test_the_user_id_rule_is_api_mds() -> None:
    assert all(is_user_id(u) for u in ["a", "x" * 64, "A-Z_a.z@0:9", "user-7"])
    assert not any(is_user_id(u) for u in ["", "x" * 65, "zoë", "a b", "a\n", None, 7])


def test_a_thin_event_has_a_created_time_in_seconds_and_its_related_object() -> None:
    parsed = parse_event(json.dumps(sp.thin_event("evt_test_thin")))
    assert parsed.thin
    assert parsed.id == "evt_test_thin"
    assert parsed.created == 1795515304  # 2026-11-24T10:15:04.246Z
    assert (parsed.object.kind, parsed.object.id) == (
        "billing.meter",
        "mtr_test_61R9Ijk8Z4Vjv0ciDJx",
    )


# --- over HTTP, on the real time-skipping server ---------------------------------------------


async def test_every_kind_of_valid_event_is_200_at_each_api_version(api: Api) -> None:
    # Eve has a live subscription, so her events are handed to her running workflow (after
    # a lifecycle has ended, events about it are `ignored`: see test_invariants.py).
    assert (await api.subscribe("eve")).status_code == 201
    answers: dict[tuple[str, str], dict[str, Any]] = {}
    for version in sp.VERSIONS:
        cases = [
            *sp.objects_without_id(version),
            ("invoice.paid", sp.invoice("eve", version, invoice_id=f"in_{version[:4]}")),
            ("customer.subscription.updated", sp.subscription("eve", version)),
            ("customer.updated", sp.customer("eve")),
            ("charge.succeeded", {"id": "ch_1", "object": "charge", "customer": "cus_x"}),
        ]
        for type_, obj in cases:
            response = await api.webhook(sp.body(sp.envelope(type_, obj, version)))
            assert response.status_code == 200, (version, type_, response.text)
            answers[version, type_] = response.json()
    for version in sp.VERSIONS:
        for type_, _ in sp.objects_without_id(version):
            # invoice.upcoming names its subscription: handed to that customer's workflow.
            outcome = "processed" if type_ == "invoice.upcoming" else "ignored"
            assert answers[version, type_] == {"status": outcome, "event_type": type_}
        for type_ in ("invoice.paid", "customer.subscription.updated", "customer.updated"):
            assert answers[version, type_] == {"status": "processed", "event_type": type_}
        assert answers[version, "charge.succeeded"]["status"] == "ignored"
    rows = await recorded(api.settings.database_url)
    assert len(rows) == len(answers)  # each recorded once
    without_id = {t for t, _ in sp.objects_without_id()}
    assert {r.type for r in rows if r.object_id is None} == without_id


async def test_a_v2_thin_event_is_200_ignored_and_recorded_once(api: Api) -> None:
    payload = sp.body(sp.thin_event("evt_test_thin_1"))
    first = await api.webhook(payload)
    assert first.status_code == 200
    assert first.json() == {
        "status": "ignored",
        "event_type": "v1.billing.meter.error_report_triggered",
    }
    assert (await api.webhook(payload)).json()["status"] == "duplicate"
    rows = await recorded(api.settings.database_url)
    assert [(r.event_id, r.object_id, r.outcome) for r in rows] == [
        ("evt_test_thin_1", "mtr_test_61R9Ijk8Z4Vjv0ciDJx", "ignored")
    ]


async def test_an_acacia_invoice_reaches_its_user_without_a_stored_mapping(api: Api) -> None:
    # A subscription Stripe has (made before this system knew the customer): no workflow, no
    # row in `customers`; the 2024 invoice names the user only in `subscription_details`.
    api.stripe.live_elsewhere("sub_acacia", "cus_acacia", api.stripe_now())
    failed = api.stripe.renew(paid=False)
    inv = sp.invoice("acacia-user", sp.ACACIA, failed, "sub_acacia", "cus_acacia")
    event = sp.envelope("invoice.payment_failed", inv, sp.ACACIA, "evt_acacia_1")
    response = await api.webhook(sp.body(event))
    assert response.json() == {"status": "processed", "event_type": "invoice.payment_failed"}
    adopted = await view_when(api, "acacia-user", status="past_due")
    assert adopted["failed_payment_attempts"] == 1
    assert adopted["stripe_subscription_id"] == "sub_acacia"
    rows = await recorded(api.settings.database_url)
    assert [(r.user_id, r.object_id, r.outcome) for r in rows] == [
        ("acacia-user", failed, "processed")
    ]
    ref = await first_signal(api, "subscription-acacia-user")
    assert ref == StripeEventRef(
        id="evt_acacia_1",
        type="invoice.payment_failed",
        created=ref.created,
        object_id=failed,
        customer_id="cus_acacia",
        subscription_id="sub_acacia",
    )
    assert abs(ref.created.timestamp() - event["created"]) < 1


async def first_signal(api: Api, workflow_id: str) -> StripeEventRef:
    history = await api.env.client.get_workflow_handle(workflow_id).fetch_history()
    for e in history.events:
        if e.HasField("workflow_execution_signaled_event_attributes"):
            payloads = e.workflow_execution_signaled_event_attributes.input.payloads
            [ref] = await api.env.client.data_converter.decode(payloads, [StripeEventRef])
            assert isinstance(ref, StripeEventRef)
            return ref
    raise AssertionError(f"{workflow_id} was never signalled")


@pytest.mark.parametrize("odd", ["zoë-7", "x" * 65, "a b"])
async def test_an_odd_user_id_in_metadata_is_ignored_and_starts_nothing(api: Api, odd: str) -> None:
    # Even with a stored mapping for the customer: the metadata's odd value decides.
    engine = make_engine(api.settings.database_url)
    async with sessions(engine)() as session:
        session.add(Customer(user_id="mapped", stripe_customer_id="cus_odd"))
        await session.commit()
    await engine.dispose()
    for type_, obj in [
        ("invoice.payment_failed", sp.invoice(odd, sp.CURRENT, "in_odd1", customer="cus_odd")),
        ("invoice.paid", sp.invoice(odd, sp.ACACIA, "in_odd2", customer="cus_odd")),
        ("customer.subscription.updated", sp.subscription(odd, customer="cus_odd")),
        ("customer.updated", sp.customer(odd, "cus_odd")),
    ]:
        response = await api.webhook(sp.body(sp.envelope(type_, obj)))
        assert response.json() == {"status": "ignored", "event_type": type_}
    rows = await recorded(api.settings.database_url)
    assert [(r.user_id, r.outcome) for r in rows] == [(None, "ignored")] * 4
    assert api.stripe.calls == []  # no workflow ran
    for workflow_id in (f"subscription-{odd}", "subscription-mapped"):
        with pytest.raises(RPCError) as err:
            await api.env.client.get_workflow_handle(workflow_id).describe()
        assert err.value.status == RPCStatusCode.NOT_FOUND


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(event: dict[str, Any]) -> None:
        target = event
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _drop(path: tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(event: dict[str, Any]) -> None:
        target = event
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return mutate


WRONG_TYPES = {
    "created as a string": _set(("created",), "1732000000"),
    "created 1e20": _set(("created",), 1e20),
    "created a float": _set(("created",), 1732000000.5),
    "created true": _set(("created",), True),
    "created huge": _set(("created",), 10**20),
    "created negative": _set(("created",), -1),
    "created missing": _drop(("created",)),
    "object id an int": _set(("data", "object", "id"), 12345),
    "object id empty": _set(("data", "object", "id"), ""),
    "object kind a list": _set(("data", "object", "object"), ["invoice"]),
    "type a list": _set(("type",), ["invoice.paid"]),
    "type empty": _set(("type",), ""),
    "type 101 characters": _set(("type",), "t" * 101),
    "id an object": _set(("id",), {"id": "evt_1"}),
    "id with a NUL": _set(("id",), "evt_\x00"),
    "id 256 characters": _set(("id",), "e" * 256),
    "data.object a list": _set(("data", "object"), [{"id": "in_1"}]),
    "data.object missing": _drop(("data", "object")),
    "data missing": _drop(("data",)),
    "data a string": _set(("data",), "in_1"),
    "object not event": _set(("object",), "invoice"),
    "object missing": _drop(("object",)),
}


async def test_wrong_field_types_are_400_and_nothing_is_recorded(api: Api) -> None:
    for name, mutate in WRONG_TYPES.items():
        event = sp.envelope("invoice.paid", sp.invoice("fay"))
        mutate(event)
        response = await api.webhook(sp.body(event))
        assert response.status_code == 400, (name, response.status_code, response.text)
        assert "not a Stripe event" in response.json()["detail"], name
    thin = sp.thin_event()
    for name, value in [
        ("created an int", 1732000000),
        ("created not ISO", "yesterday"),
        ("created out of range", "9999-12-31T23:59:59Z"),
    ]:
        response = await api.webhook(sp.body({**thin, "created": value}))
        assert response.status_code == 400, name
    assert (await api.webhook(sp.body({**thin, "related_object": "mtr_1"}))).status_code == 400
    for raw in [b"[]", b'"event"', b"17", b"null", b"[" * 100_000, b"\xff\xfe{}", b"{} x"]:
        assert (await api.webhook(raw)).status_code == 400, raw[:20]
    assert await recorded(api.settings.database_url) == []


async def test_the_signature_timestamp_is_checked_on_both_sides(api: Api) -> None:
    now = int(time.time())
    payload = sp.body(sp.envelope("customer.updated", sp.customer(None)))
    for offset in (400, 330, -330, -400):  # a margin: the clock moves while the test runs
        response = await api.webhook(payload, timestamp=now + offset)
        assert response.status_code == 400, offset
        assert "tolerance" in response.json()["detail"]
    assert await recorded(api.settings.database_url) == []
    assert (await api.webhook(payload, timestamp=now + 250)).status_code == 200
    assert (await api.webhook(payload, timestamp=now - 250)).json()["status"] == "duplicate"


def padded(size: int) -> bytes:
    """A valid event, padded with JSON whitespace to exactly `size` bytes."""
    payload = sp.body(sp.envelope("customer.updated", sp.customer(None)))
    return payload + b" " * (size - len(payload))


async def test_a_body_over_1_mib_is_413(api: Api) -> None:
    assert (await api.webhook(padded(MAX_BODY_BYTES))).status_code == 200
    over = padded(MAX_BODY_BYTES + 1)
    assert (await api.webhook(over)).status_code == 413
    five = padded(5 * MAX_BODY_BYTES)
    unsigned = await api.http.post("/stripe/webhooks", content=five)
    assert unsigned.status_code == 413  # before the signature is even looked at
    assert len(await recorded(api.settings.database_url)) == 1


async def test_a_streamed_body_over_1_mib_is_refused_without_reading_it_all(api: Api) -> None:
    sent = 0
    chunk = b" " * 65536

    async def five_mib() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(80):
            sent += len(chunk)
            yield chunk

    request = api.http.build_request(
        "POST",
        "/stripe/webhooks",
        content=five_mib(),
        headers={"Stripe-Signature": sign(b"", SECRET)},
    )
    assert "content-length" not in request.headers
    response = await api.http.send(request)
    assert response.status_code == 413
    assert sent <= MAX_BODY_BYTES + len(chunk)


# --- any signed body: 200 or 400, never anything else -----------------------------------------

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
_KEYS = ["id", "type", "created", "data", "related_object", "api_version"]
_event_like = st.fixed_dictionaries(
    {"object": st.sampled_from(["event", "v2.core.event"])},
    optional={key: _json for key in _KEYS}
    | {"data": st.fixed_dictionaries({}, optional={"object": _json})},
)
_REAL = [
    sp.envelope("invoice.paid", sp.invoice("gus", sp.CURRENT)),
    sp.envelope("invoice.payment_failed", sp.invoice("gus", sp.ACACIA)),
    sp.envelope("customer.subscription.updated", sp.subscription("gus")),
    sp.envelope("customer.updated", sp.customer("gus")),
    *(sp.envelope(t, o) for t, o in sp.objects_without_id()),
    sp.thin_event(),
]


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*prefix, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, (*prefix, i))
    return found


@st.composite
def _mutated_real(draw: st.DrawFn) -> Any:
    event = copy.deepcopy(draw(st.sampled_from(_REAL)))
    event["id"] = f"evt_{draw(st.uuids()).hex}"  # mostly new events, not duplicates
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(event) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = event
        for key in path[:-1]:
            parent = parent[key]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(_json)
    return event


# What the webhook reads, in events it hands to a workflow: one of them replaced or dropped.
_READ = [
    ("id",),
    ("type",),
    ("created",),
    ("data",),
    ("data", "object"),
    ("data", "object", "id"),
    ("data", "object", "object"),
    ("data", "object", "customer"),
    ("data", "object", "metadata"),
    ("data", "object", "metadata", "user_id"),
    ("data", "object", "subscription"),
    ("data", "object", "subscription_details"),
    ("data", "object", "subscription_details", "metadata", "user_id"),
    ("data", "object", "parent", "subscription_details"),
    ("data", "object", "parent", "subscription_details", "subscription"),
    ("data", "object", "parent", "subscription_details", "metadata", "user_id"),
]


@st.composite
def _one_read_field_changed(draw: st.DrawFn) -> Any:
    event = copy.deepcopy(draw(st.sampled_from(_REAL[:4])))
    event["id"] = f"evt_{draw(st.uuids()).hex}"
    path = draw(st.sampled_from([p for p in _READ if p in _paths(event)]))
    parent = event
    for key in path[:-1]:
        parent = parent[key]
    if draw(st.booleans()):
        del parent[path[-1]]
    else:
        parent[path[-1]] = draw(_json)
    return event


@settings(
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    payload=st.one_of(
        st.binary(max_size=64),
        _json,
        _event_like,
        _mutated_real(),
        _one_read_field_changed(),
        _one_read_field_changed(),
    ),
    ascii_only=st.booleans(),
)
async def test_any_signed_body_answers_200_or_400(api: Api, payload: Any, ascii_only: bool) -> None:
    if isinstance(payload, bytes):
        raw = payload
    else:
        raw = json.dumps(payload, ensure_ascii=ascii_only).encode()
    response = await api.webhook(raw)
    assert response.status_code in (200, 400), (response.status_code, response.text, raw[:300])
    event(f"{response.status_code} {response.json().get('status', '')}")
    if response.status_code == 200:
        answer = response.json()
        assert answer["status"] in ("processed", "duplicate", "ignored")
        assert answer["event_type"] == payload["type"]
