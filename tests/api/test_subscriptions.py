"""Each route's happy path and each error code of API.md."""

from __future__ import annotations

import time

import jwt
import pytest

from api.auth import ALGORITHM
from core.logging import configure_logging
from core.payloads import ChangeSubscription
from tests.api.helpers import Api


async def test_missing_bad_and_expired_tokens_are_401(api: Api) -> None:
    assert (await api.http.get("/stripe/subscriptions/u1")).status_code == 401
    bad = {"Authorization": "Bearer not-a-jwt"}
    assert (await api.http.get("/stripe/subscriptions/u1", headers=bad)).status_code == 401
    expired = jwt.encode(
        {"sub": "u1", "exp": int(time.time()) - 10},
        api.settings.jwt_secret.get_secret_value(),
        algorithm=ALGORITHM,
    )
    response = await api.http.get(
        "/stripe/subscriptions/u1", headers={"Authorization": f"Bearer {expired}"}
    )
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    forged = jwt.encode(
        {"sub": "u1", "exp": int(time.time()) + 60, "role": "admin"},
        "another-secret-that-is-long-enough-for-hs256",
        algorithm=ALGORITHM,
    )
    assert (
        await api.http.get(
            "/stripe/subscriptions/u1", headers={"Authorization": f"Bearer {forged}"}
        )
    ).status_code == 401


async def test_create_then_conflict_then_read(api: Api) -> None:
    response = await api.subscribe("alice", plan="pro", interval="yearly", name="Alice")
    assert response.status_code == 201, response.text
    view = response.json()
    assert (view["status"], view["plan"], view["interval"], view["user_id"]) == (
        "active",
        "pro",
        "yearly",
        "alice",
    )
    assert view["workflow_id"] == "subscription-alice"
    assert view["stripe_subscription_id"] == "sub_alice"
    assert view["failed_payment_attempts"] == 0
    assert view["next_payment_retry_at"] is None
    assert set(view) >= {
        "trial_end",
        "current_period_end",
        "cancel_at_period_end",
        "stripe_customer_id",
    }
    again = await api.subscribe("alice")
    assert again.status_code == 409
    read = await api.http.get("/stripe/subscriptions/alice", headers=api.auth("alice"))
    assert read.status_code == 200
    assert read.json()["plan"] == "pro"
    assert read.json()["current_period_end"].endswith(("Z", "+00:00"))


async def test_other_users_and_admins(api: Api) -> None:
    assert (await api.subscribe("bob")).status_code == 201
    # Another user's id answers 404, exactly like a user with no subscription.
    theirs = await api.http.get("/stripe/subscriptions/bob", headers=api.auth("mallory"))
    nobody = await api.http.get("/stripe/subscriptions/nobody", headers=api.auth("nobody"))
    assert theirs.status_code == nobody.status_code == 404
    assert theirs.json() == nobody.json()
    assert (
        await api.http.patch(
            "/stripe/subscriptions/bob", json={"plan": "pro"}, headers=api.auth("mallory")
        )
    ).status_code == 404
    admin = await api.http.get("/stripe/subscriptions/bob", headers=api.auth("root", admin=True))
    assert admin.status_code == 200
    # Only admins may create for someone else.
    body = {
        "plan": "starter",
        "email": "carol@example.com",
        "user_id": "carol",
        "trial_days": 0,
        "payment_method_id": "pm_card_visa",
    }
    assert (
        await api.http.post("/stripe/subscriptions", json=body, headers=api.auth("mallory"))
    ).status_code == 403
    created = await api.http.post(
        "/stripe/subscriptions", json=body, headers=api.auth("root", admin=True)
    )
    assert created.status_code == 201
    assert created.json()["user_id"] == "carol"


async def test_bad_bodies_are_422(api: Api) -> None:
    for body in (
        {"plan": "platinum", "email": "a@b.co"},
        {"plan": "pro", "email": "not-an-email"},
        {"plan": "pro", "email": "a@b.co", "trial_days": 731},
        {"plan": "pro", "email": "a@b.co", "colour": "red"},
    ):
        response = await api.http.post("/stripe/subscriptions", json=body, headers=api.auth("dave"))
        assert response.status_code == 422, body
    assert (
        await api.http.post("/stripe/subscriptions", content=b"{not json", headers=api.auth("dave"))
    ).status_code == 422


async def test_plan_change(api: Api) -> None:
    await api.subscribe("erin")
    changed = await api.http.patch(
        "/stripe/subscriptions/erin",
        json={"plan": "enterprise", "proration_behavior": "always_invoice"},
        headers=api.auth("erin"),
    )
    assert changed.status_code == 200
    assert changed.json()["plan"] == "enterprise"
    call = api.stripe.requests(ChangeSubscription)[0]
    assert call.proration_behavior.value == "always_invoice"
    assert (
        await api.http.patch("/stripe/subscriptions/erin", json={}, headers=api.auth("erin"))
    ).status_code == 422
    same = await api.http.patch(
        "/stripe/subscriptions/erin", json={"plan": "enterprise"}, headers=api.auth("erin")
    )
    assert same.status_code == 409
    assert (
        await api.http.patch(
            "/stripe/subscriptions/nobody", json={"plan": "pro"}, headers=api.auth("nobody")
        )
    ).status_code == 404


async def test_plan_change_refused_while_past_due(api: Api) -> None:
    response = await api.subscribe("frank", payment_method_id="pm_card_chargeCustomerFail")
    assert response.status_code == 201
    assert response.json()["status"] == "past_due"
    assert response.json()["next_payment_retry_at"] is not None
    refused = await api.http.patch(
        "/stripe/subscriptions/frank", json={"plan": "pro"}, headers=api.auth("frank")
    )
    assert refused.status_code == 409
    assert "past_due" in refused.json()["detail"]


async def test_cancel_resume_and_cancel_now(api: Api) -> None:
    await api.subscribe("gina")
    scheduled = await api.http.delete("/stripe/subscriptions/gina", headers=api.auth("gina"))
    assert scheduled.status_code == 200
    assert scheduled.json()["cancel_at_period_end"] is True
    resumed = await api.http.post("/stripe/subscriptions/gina/resume", headers=api.auth("gina"))
    assert resumed.status_code == 200
    assert resumed.json()["cancel_at_period_end"] is False
    assert (
        await api.http.post("/stripe/subscriptions/gina/resume", headers=api.auth("gina"))
    ).status_code == 409
    now = await api.http.delete(
        "/stripe/subscriptions/gina", params={"at_period_end": "false"}, headers=api.auth("gina")
    )
    assert now.status_code == 200
    assert now.json()["status"] == "canceled"
    # The workflow has ended: changes are refused, the view still reads, and a new
    # subscription may start.
    assert (
        await api.http.patch(
            "/stripe/subscriptions/gina", json={"plan": "pro"}, headers=api.auth("gina")
        )
    ).status_code == 409
    assert (await api.http.get("/stripe/subscriptions/gina", headers=api.auth("gina"))).json()[
        "status"
    ] == "canceled"
    # Once the ended workflow has finished its last writes, a new subscription is a new run.
    # (Until then a create answers 409: the create route's to settle, not this test's.)
    await api.env.client.get_workflow_handle("subscription-gina").result()
    api.stripe.sub = {}
    assert (await api.subscribe("gina")).status_code == 201


async def test_payment_methods(api: Api) -> None:
    await api.subscribe("hugo")
    added = await api.http.post(
        "/stripe/subscriptions/hugo/payment-methods",
        json={"payment_method_id": "pm_card_mastercard"},
        headers=api.auth("hugo"),
    )
    assert added.status_code == 200
    assert added.json() == {
        "id": "pm_card_mastercard_attached",
        "type": "card",
        "card": {"brand": "visa", "last4": "4242", "exp_month": 12, "exp_year": 2030},
    }
    declined = await api.http.post(
        "/stripe/subscriptions/hugo/payment-methods",
        json={"payment_method_id": "pm_card_visa_chargeDeclined"},
        headers=api.auth("hugo"),
    )
    assert declined.status_code == 402
    assert "declined" in declined.json()["detail"]
    # The default cannot be removed while the subscription lives; another can.
    assert (
        await api.http.delete(
            "/stripe/subscriptions/hugo/payment-methods/pm_card_mastercard_attached",
            headers=api.auth("hugo"),
        )
    ).status_code == 409
    removed = await api.http.delete(
        "/stripe/subscriptions/hugo/payment-methods/pm_card_visa_attached", headers=api.auth("hugo")
    )
    assert removed.status_code == 204
    assert removed.content == b""
    assert ("detach_payment_method") in api.stripe.names()


async def test_card_numbers_are_refused_and_never_logged(
    api: Api, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    # The service's own logging, as in production, at its most talkative.
    configure_logging(api.settings.model_copy(update={"log_level": "DEBUG"}))
    for body in (
        {"plan": "pro", "email": "i@example.com", "payment_method_id": "4242 4242 4242 4242"},
        {"plan": "pro", "email": "i@example.com", "name": "card 4000-0000-0000-0002 please"},
    ):
        response = await api.http.post("/stripe/subscriptions", json=body, headers=api.auth("ivan"))
        assert response.status_code == 422
        assert "4242" not in response.text
        assert "0002" not in response.text
    query = await api.http.get("/stripe/subscriptions/4111111111111111", headers=api.auth("ivan"))
    assert query.status_code == 422
    service_logs = "\n".join(
        line for line in capsys.readouterr().err.splitlines() if "[httpx]" not in line
    )
    assert "request" in service_logs  # the access log ran ...
    assert not any(n in service_logs for n in ("4242 4242", "4000-0000", "4111111111111111"))
    # Digits that are not card numbers pass (a Luhn check, not a length check).
    assert (await api.subscribe("ivan", name="order 1234567890123")).status_code == 201


async def test_openapi_documents_every_route(api: Api) -> None:
    spec = (await api.http.get("/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths) >= {
        "/stripe/subscriptions",
        "/stripe/subscriptions/{user_id}",
        "/stripe/subscriptions/{user_id}/resume",
        "/stripe/subscriptions/{user_id}/payment-methods",
        "/stripe/subscriptions/{user_id}/payment-methods/{payment_method_id}",
        "/stripe/subscriptions/{user_id}/payments",
        "/stripe/subscriptions/{user_id}/usage",
        "/stripe/webhooks",
        "/stripe/webhooks/health",
        "/healthz",
        "/readyz",
        "/analytics/revenue",
    }
    assert set(paths["/stripe/subscriptions"]) == {"get", "post"}
    assert set(paths["/stripe/subscriptions"]["post"]["responses"]) >= {"201", "401", "409", "422"}
    assert set(paths["/stripe/webhooks"]["post"]["responses"]) >= {"200", "400", "503"}
    schemas = spec["components"]["schemas"]
    assert {"SubscriptionOut", "PaymentsPage", "SubscriptionsPage"} <= set(schemas)
    docs = await api.http.get("/docs")
    assert docs.status_code == 200
    assert "swagger" in docs.text.lower()


async def test_health(api: Api) -> None:
    assert (await api.http.get("/healthz")).json() == {"status": "ok"}
    ready = await api.http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["temporal"] == "ok"
    assert ready.json()["database"] == "ok"
    assert (await api.http.get("/stripe/webhooks/health")).json() == {
        "status": "healthy",
        "service": "stripe-webhooks",
    }
