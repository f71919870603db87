"""The lists read from the database: a customer's payments ledger and the admins' list of
subscription records. Rows are written straight into the tables (as the workflow's store
activity writes them), except in the tests that go through a workflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from api.schemas import payment_id
from core.db import Customer, Payment, SubscriptionRecord
from tests.api.helpers import Api, database_down, insert
from tests.helpers import eventually

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PAYMENTS = "/stripe/subscriptions/{}/payments"
RECORDS = "/stripe/subscriptions"


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def payment(user_id: str, invoice_id: str, attempt: int, kind: str, minutes: int) -> Payment:
    return Payment(
        invoice_id=invoice_id,
        attempt=attempt,
        kind=kind,
        amount_minor=2_900,
        currency="usd",
        user_id=user_id,
        occurred_at=at(minutes),
    )


def record(
    user_id: str, subscription_id: str, status: str, access: str, plan: str = "starter"
) -> SubscriptionRecord:
    return SubscriptionRecord(
        stripe_subscription_id=subscription_id,
        user_id=user_id,
        status=status,
        plan=plan,
        interval="monthly",
        amount_minor=2_900,
        currency="usd",
        access=access,
        started_at=T0,
        canceled_at=at(60) if status == "canceled" else None,
        cancellation_reason="payment_failed" if status == "canceled" else None,
    )


def customer(user_id: str) -> Customer:
    return Customer(user_id=user_id, stripe_customer_id=f"cus_{user_id}")


async def pages(api: Api, url: str, cursor: str, limit: int, **query: str) -> list[dict[str, Any]]:
    """Every page of a list, following `has_more` with `starting_after` = the last item's
    `cursor` field; checks each page is full but the last."""
    admin = api.auth("root", admin=True)
    found: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": limit, **query}
    while True:
        response = await api.http.get(url, params=params, headers=admin)
        assert response.status_code == 200, response.text
        page = response.json()
        found.extend(page["data"])
        if not page["has_more"]:
            assert len(page["data"]) <= limit
            return found
        assert len(page["data"]) == limit
        params["starting_after"] = page["data"][-1][cursor]


def unprocessable(response: httpx.Response, where: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [error["loc"] for error in response.json()["errors"]] == [["query", where]]


# --- GET /stripe/subscriptions/{user_id}/payments ----------------------------------------------


async def test_payments_are_the_callers_own_and_404_as_the_view_is(api: Api) -> None:
    url = api.settings.database_url
    await insert(
        url,
        customer("alice"),
        customer("bob"),
        payment("alice", "in_a", 1, "succeeded", 0),
    )
    assert (await api.http.get(PAYMENTS.format("alice"))).status_code == 401
    own = await api.http.get(PAYMENTS.format("alice"), headers=api.auth("alice"))
    assert own.status_code == 200
    assert [row["invoice_id"] for row in own.json()["data"]] == ["in_a"]
    # Another user's id answers exactly as a user who never was a customer: ids cannot be probed.
    theirs = await api.http.get(PAYMENTS.format("alice"), headers=api.auth("mallory"))
    nobody = await api.http.get(PAYMENTS.format("nobody"), headers=api.auth("nobody"))
    assert theirs.status_code == nobody.status_code == 404
    assert theirs.json() == nobody.json()
    assert nobody.json()["detail"] == "no subscription for this user"
    admin = await api.http.get(PAYMENTS.format("alice"), headers=api.auth("root", admin=True))
    assert admin.json() == own.json()
    # A customer with nothing paid yet: an empty list, not 404.
    empty = await api.http.get(PAYMENTS.format("bob"), headers=api.auth("bob"))
    assert empty.status_code == 200
    assert empty.json() == {"data": [], "has_more": False}


async def test_payments_are_newest_first_page_by_page_through_ties(api: Api) -> None:
    # Written out of time order, several at the same instant, another customer's among them.
    rows = [
        payment("carol", "in_2", 1, "failed", 10),
        payment("carol", "in_1", 1, "succeeded", 0),
        payment("dave", "in_d", 1, "succeeded", 10),
        payment("carol", "in_3", 1, "failed", 10),
        payment("carol", "in_2", 2, "succeeded", 20),
        payment("carol", "in_4", 1, "succeeded", 10),
        payment("carol", "in_1", 1, "refunded", 30),
        payment("dave", "in_d", 1, "refunded", 20),
        payment("carol", "in_2", 1, "refunded", 20),
    ]
    rows[0].decline_code, rows[0].failure_code = "insufficient_funds", "card_declined"
    rows[0].hosted_invoice_url = "https://invoice.stripe.test/in_2"
    await insert(api.settings.database_url, customer("carol"), *rows)
    carols = [row for row in rows if row.user_id == "carol"]
    newest_first = sorted(carols, key=lambda row: (row.occurred_at, row.id), reverse=True)
    expected = [payment_id(row.id or 0) for row in newest_first]

    for limit in (1, 2, 3, 7, 100):
        listed = await pages(api, PAYMENTS.format("carol"), "id", limit)
        assert [row["id"] for row in listed] == expected, limit

    page = (await api.http.get(PAYMENTS.format("carol"), headers=api.auth("carol"))).json()
    assert page["has_more"] is False  # the default limit, 20, takes them all
    failed = next(row for row in page["data"] if row["id"] == payment_id(rows[0].id or 0))
    assert failed == {
        "id": payment_id(rows[0].id or 0),
        "invoice_id": "in_2",
        "attempt": 1,
        "kind": "failed",
        "amount_minor": 2_900,
        "currency": "usd",
        "recovered": False,
        "failure_code": "card_declined",
        "decline_code": "insufficient_funds",
        "hosted_invoice_url": "https://invoice.stripe.test/in_2",
        "occurred_at": "2026-03-01T12:10:00Z",
    }
    exactly = await api.http.get(
        PAYMENTS.format("carol"), params={"limit": 7}, headers=api.auth("carol")
    )
    assert exactly.json()["has_more"] is False
    one_short = await api.http.get(
        PAYMENTS.format("carol"), params={"limit": 6}, headers=api.auth("carol")
    )
    assert one_short.json()["has_more"] is True


async def test_a_payments_cursor_must_be_one_of_the_customers_payments(api: Api) -> None:
    mine, theirs = (
        payment("erin", "in_e", 1, "succeeded", 0),
        payment("finn", "in_f", 1, "failed", 0),
    )
    await insert(api.settings.database_url, customer("erin"), mine, theirs)
    url, erin = PAYMENTS.format("erin"), api.auth("erin")
    ok = await api.http.get(url, params={"starting_after": payment_id(mine.id or 0)}, headers=erin)
    assert ok.json() == {"data": [], "has_more": False}
    for cursor in (
        payment_id(theirs.id or 0),  # another customer's: as if it did not exist
        "pay_999999",
        "pay_999999999999999999",  # beyond any key: never sent to the database
        "pay_0",
        "pay_",
        "in_e",
        "1",
    ):
        unprocessable(
            await api.http.get(url, params={"starting_after": cursor}, headers=erin),
            "starting_after",
        )
    for limit in ("0", "101", "-1", "ten", "2.5"):
        unprocessable(await api.http.get(url, params={"limit": limit}, headers=erin), "limit")


async def test_the_ledger_a_workflow_writes_is_listed(api: Api) -> None:
    created = await api.subscribe("gail", payment_method_id="pm_card_chargeCustomerFail")
    assert created.json()["status"] == "past_due"

    async def listed() -> list[dict[str, Any]]:
        response = await api.http.get(PAYMENTS.format("gail"), headers=api.auth("gail"))
        assert response.status_code == 200, response.text
        data: list[dict[str, Any]] = response.json()["data"]
        assert data
        return data

    rows = await eventually(listed)
    assert [(row["kind"], row["attempt"]) for row in rows] == [("failed", 1)]
    assert rows[0]["invoice_id"] == api.stripe.sub["latest_invoice"]

    async def past_due() -> list[dict[str, Any]]:
        response = await api.http.get(
            RECORDS, params={"status": "past_due"}, headers=api.auth("root", admin=True)
        )
        data: list[dict[str, Any]] = response.json()["data"]
        assert [row["user_id"] for row in data] == ["gail"]
        return data

    (gail,) = await eventually(past_due)
    assert gail["failed_payment_attempts"] == 1
    assert gail["stripe_subscription_id"] == created.json()["stripe_subscription_id"]
    assert gail["stripe_customer_id"] == created.json()["stripe_customer_id"]


# --- GET /stripe/subscriptions (admins) ---------------------------------------------------------


async def test_the_list_of_subscriptions_is_for_admins(api: Api) -> None:
    assert (await api.http.get(RECORDS)).status_code == 401
    user = await api.http.get(RECORDS, headers=api.auth("ursula"))
    assert user.status_code == 403
    assert user.headers["content-type"] == "application/problem+json"
    # An admin-only route answers 403 before it looks at the query.
    assert (
        await api.http.get(RECORDS, params={"status": "bogus"}, headers=api.auth("ursula"))
    ).status_code == 403
    admin = await api.http.get(RECORDS, headers=api.auth("root", admin=True))
    assert admin.json() == {"data": [], "has_more": False}


def records_written() -> list[SubscriptionRecord]:
    """Read-model records, oldest first (new objects: a row object is inserted once)."""
    return [
        # A user who subscribed again after dunning gave up has a record for each subscription.
        record("hal", "sub_hal_1", "canceled", "none"),
        record("ida", "sub_ida", "active", "full", plan="pro"),
        record("jon", "sub_jon", "past_due", "grace"),
        record("hal", "sub_hal_2", "active", "full", plan="pro"),
        record("kay", "sub_kay", "past_due", "restricted", plan="pro"),
        record("lee", "sub_lee", "trialing", "full", plan="enterprise"),
    ]


async def test_subscriptions_are_listed_newest_first_with_filters(api: Api) -> None:
    written = records_written()
    await insert(api.settings.database_url, customer("hal"), customer("kay"), *written)
    newest_first = [row.stripe_subscription_id for row in reversed(written)]
    for limit in (1, 2, 4, 6, 20):
        listed = await pages(api, RECORDS, "stripe_subscription_id", limit)
        assert [row["stripe_subscription_id"] for row in listed] == newest_first, limit

    def ids(**match: str) -> list[str]:
        return [
            row.stripe_subscription_id
            for row in reversed(written)
            if all(getattr(row, field) == value for field, value in match.items())
        ]

    for query in (
        {"status": "active"},
        {"status": "past_due"},
        {"status": "canceled"},
        {"status": "incomplete"},
        {"access": "full"},
        {"access": "restricted"},
        {"plan": "pro"},
        {"plan": "starter"},
        {"status": "active", "plan": "pro"},
        {"status": "past_due", "access": "grace", "plan": "starter"},
    ):
        for limit in (1, 20):
            listed = await pages(api, RECORDS, "stripe_subscription_id", limit, **query)
            assert [row["stripe_subscription_id"] for row in listed] == ids(**query), query

    everything = (await api.http.get(RECORDS, headers=api.auth("root", admin=True))).json()
    hal = next(row for row in everything["data"] if row["stripe_subscription_id"] == "sub_hal_1")
    assert hal == {
        "user_id": "hal",
        "status": "canceled",
        "plan": "starter",
        "interval": "monthly",
        "current_period_end": None,
        "cancel_at_period_end": False,
        "failed_payment_attempts": 0,
        "stripe_customer_id": "cus_hal",
        "stripe_subscription_id": "sub_hal_1",
        "workflow_id": "subscription-hal",
        "access": "none",
        "last_decline_code": None,
        "cancellation_reason": "payment_failed",
        "amount_minor": 2_900,
        "currency": "usd",
        "started_at": "2026-03-01T12:00:00Z",
        "canceled_at": "2026-03-01T13:00:00Z",
        "updated_at": hal["updated_at"],
    }
    assert hal["updated_at"].endswith("Z")
    # No customer row for this user: the Stripe customer is unknown to the read model.
    jon = next(row for row in everything["data"] if row["user_id"] == "jon")
    assert jon["stripe_customer_id"] is None


async def test_bad_filters_and_cursors_are_422(api: Api) -> None:
    await insert(api.settings.database_url, *records_written()[:2])
    admin = api.auth("root", admin=True)
    for name, value in (
        ("status", "unpaid"),
        ("status", "ACTIVE"),
        ("access", "partial"),
        ("plan", "platinum"),
        ("limit", "0"),
        ("limit", "101"),
        ("starting_after", "sub_nobody"),
        ("starting_after", ""),
    ):
        unprocessable(await api.http.get(RECORDS, params={name: value}, headers=admin), name)


async def test_a_database_that_does_not_answer_is_503(api: Api, tmp_path: Path) -> None:
    await insert(api.settings.database_url, customer("mo"))
    async with database_down(api, tmp_path):
        for path, user in (
            (PAYMENTS.format("mo"), api.auth("mo")),
            (RECORDS, api.auth("root", admin=True)),
        ):
            response = await api.http.get(path, headers=user)
            assert response.status_code == 503, response.text
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["detail"] == "the database is unavailable; try again"
