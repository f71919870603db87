"""Every error answer is an RFC 9457 problem (`application/problem+json`), documented as such."""

from __future__ import annotations

from typing import Any

import httpx
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from tests.api.helpers import Api, app_settings
from tests.helpers import BIN


def problem(response: httpx.Response, status: int) -> dict[str, Any]:
    """The problem answered, checked for its shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["type"] == "about:blank"
    assert body["status"] == status
    assert isinstance(body["title"], str)
    assert body["title"]
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


async def test_401_keeps_its_challenge(api: Api) -> None:
    missing = await api.http.get("/stripe/subscriptions/u1")
    assert problem(missing, 401)["title"] == "Unauthorized"
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    bad = await api.http.get(
        "/stripe/subscriptions/u1", headers={"Authorization": "Bearer not-a-jwt"}
    )
    problem(bad, 401)
    assert bad.headers["WWW-Authenticate"] == "Bearer"


async def test_403_404_and_409(api: Api) -> None:
    analytics = await api.http.get(
        "/analytics/revenue",
        params={"start": "2026-01-01", "end": "2026-01-31"},
        headers=api.auth("ursula"),
    )
    problem(analytics, 403)
    nobody = await api.http.get("/stripe/subscriptions/nobody", headers=api.auth("nobody"))
    assert problem(nobody, 404)["detail"] == "no subscription for this user"
    assert problem(await api.http.get("/no/such/route"), 404)["detail"] == "Not Found"
    assert (await api.subscribe("olga")).status_code == 201
    problem(await api.subscribe("olga"), 409)


async def test_405_lists_every_method_of_the_path(api: Api) -> None:
    for method in ("PUT", "POST", "OPTIONS"):
        response = await api.http.request(
            method, "/stripe/subscriptions/u1", headers=api.auth("u1")
        )
        problem(response, 405)
        assert response.headers["Allow"] == "DELETE, GET, PATCH"
    resume = await api.http.get("/stripe/subscriptions/u1/resume", headers=api.auth("u1"))
    problem(resume, 405)
    assert resume.headers["Allow"] == "POST"
    listed = await api.http.put("/stripe/subscriptions", headers=api.auth("u1"))
    problem(listed, 405)
    assert listed.headers["Allow"] == "GET, POST"
    payments = await api.http.post("/stripe/subscriptions/u1/payments", headers=api.auth("u1"))
    problem(payments, 405)
    assert payments.headers["Allow"] == "GET"


async def test_422_names_the_fields_and_never_echoes_the_input(api: Api) -> None:
    body = {"plan": "platinum-secret", "email": "a@b.co", "colour": "red-secret"}
    response = await api.http.post("/stripe/subscriptions", json=body, headers=api.auth("dave"))
    invalid = problem(response, 422)
    assert sorted(tuple(e["loc"]) for e in invalid["errors"]) == [
        ("body", "colour"),
        ("body", "plan"),
    ]
    assert all(set(e) == {"loc", "msg"} for e in invalid["errors"])
    assert "platinum-secret" not in response.text
    assert "red-secret" not in response.text
    # Errors a route finds itself look the same.
    nothing = await api.http.patch("/stripe/subscriptions/dave", json={}, headers=api.auth("dave"))
    assert problem(nothing, 422)["errors"] == [
        {"loc": ["body"], "msg": "Value error, give a plan, an interval or both"}
    ]
    card = await api.http.post(
        "/stripe/subscriptions",
        json={"plan": "pro", "email": "a@b.co", "name": "4242 4242 4242 4242"},
        headers=api.auth("dave"),
    )
    assert problem(card, 422)["code"] == "card_number_refused"


async def test_a_body_that_cannot_be_read_is_400_and_bad_json_is_422(api: Api) -> None:
    headers = {**api.auth("dave"), "Content-Type": "application/json"}
    not_utf8 = await api.http.post(
        "/stripe/subscriptions", content=b'{"plan": "\xff"}', headers=headers
    )
    problem(not_utf8, 400)
    not_json = await api.http.post("/stripe/subscriptions", content=b"{not json", headers=headers)
    assert problem(not_json, 422)["errors"][0]["msg"] == "JSON decode error"


async def test_not_ready_is_a_problem_naming_what_failed(database_url: str) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    app = create_app(app_settings(database_url, "billing-readyz"), temporal=env.client)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as http,
    ):
        await env.shutdown()
        ready = problem(await http.get("/readyz"), 503)
    assert ready["database"] == "ok"
    assert ready["temporal"].startswith("error")
    assert ready["detail"] == "not ready: temporal"


async def test_openapi_documents_every_error_as_a_problem(api: Api) -> None:
    spec = (await api.http.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    assert "HTTPValidationError" not in schemas
    assert "ValidationError" not in schemas
    assert set(schemas["Problem"]["required"]) == {"title", "status", "detail"}
    problem_ref = {"$ref": "#/components/schemas/Problem"}
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert response["content"] == {
                        "application/problem+json": {"schema": problem_ref}
                    }, (method, path, status)
            if "requestBody" in operation:
                assert {"400", "422"} <= set(operation["responses"]), (method, path)
    paths = spec["paths"]
    assert set(paths["/stripe/subscriptions/{user_id}"]["get"]["responses"]) == {
        "200",
        "401",
        "404",
        "422",
        "503",
    }
    assert set(paths["/stripe/subscriptions/{user_id}"]["patch"]["responses"]) >= {
        "400",
        "401",
        "404",
        "409",
        "422",
        "503",
    }
    assert set(paths["/analytics/revenue"]["get"]["responses"]) >= {"401", "403", "422"}
    assert set(paths["/stripe/subscriptions/{user_id}/payments"]["get"]["responses"]) == {
        "200",
        "401",
        "404",
        "422",
        "503",
    }
    assert set(paths["/stripe/subscriptions"]["get"]["responses"]) == {
        "200",
        "401",
        "403",
        "422",
        "503",
    }
    user_id = paths["/stripe/subscriptions/{user_id}"]["get"]["parameters"][0]
    assert user_id["schema"]["pattern"] == "^[A-Za-z0-9_.@:-]{1,64}$"
