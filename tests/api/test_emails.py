"""`email` on `POST /stripe/subscriptions`: special-use test domains pass, garbage does not, and
the token's `email` claim stands in for it when the caller acts for themselves."""

from __future__ import annotations

import pytest

from api.auth import mint
from core.payloads import EnsureCustomer
from tests.api.helpers import Api


def customer_email(api: Api) -> str:
    return api.stripe.requests(EnsureCustomer)[0].email


@pytest.mark.parametrize("email", ["zoe@billing.test", "zoe@shop.example", "Zoë@example.com"])
async def test_addresses_on_test_domains_are_accepted(api: Api, email: str) -> None:
    assert (await api.subscribe("zoe", email=email)).status_code == 201
    assert customer_email(api) == email


@pytest.mark.parametrize(
    "email", ["not-an-email", "a@b", "a@@b.com", "a@b.invalid", "a@localhost", "a b@c.test"]
)
async def test_garbage_is_refused(api: Api, email: str) -> None:
    response = await api.subscribe("zoe", email=email)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "email"]


async def test_the_token_email_claim_stands_in_for_the_body(api: Api) -> None:
    token = mint("yann", api.settings, email="yann@billing.test")
    body = {"plan": "starter", "trial_days": 0, "payment_method_id": "pm_card_visa"}
    response = await api.http.post(
        "/stripe/subscriptions", json=body, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 201, response.text
    assert customer_email(api) == "yann@billing.test"


async def test_without_a_claim_the_body_must_carry_the_email(api: Api) -> None:
    response = await api.http.post(
        "/stripe/subscriptions", json={"plan": "starter"}, headers=api.auth("yann")
    )
    assert response.status_code == 422
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["errors"] == [
        {"loc": ["body", "email"], "msg": "Field required unless the token carries an email claim"}
    ]
    # A claim that is not an address is no claim.
    token = mint("yann", api.settings, email="not an address")
    unusable = await api.http.post(
        "/stripe/subscriptions",
        json={"plan": "starter"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert unusable.status_code == 422
    assert api.stripe.calls == []


async def test_an_admin_acting_for_a_user_gives_the_users_email(api: Api) -> None:
    token = mint("ops", api.settings, admin=True, email="ops@billing.test")
    headers = {"Authorization": f"Bearer {token}"}
    body = {"plan": "starter", "user_id": "carol", "trial_days": 0}
    refused = await api.http.post("/stripe/subscriptions", json=body, headers=headers)
    assert refused.status_code == 422
    assert refused.json()["errors"][0]["loc"] == ["body", "email"]
    body["email"] = "carol@example.com"
    created = await api.http.post("/stripe/subscriptions", json=body, headers=headers)
    assert created.status_code == 201
    assert customer_email(api) == "carol@example.com"
