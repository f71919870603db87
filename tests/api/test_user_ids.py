"""User ids (API.md): 1 to 64 characters of `A-Z a-z 0-9 _ . @ : -`; 422 in a path or a body,
401 in a token; none of them reaches a workflow."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.service import RPCError, RPCStatusCode

from api.auth import mint
from tests.api.helpers import Api
from workflows.subscription import workflow_id

BAD = ["zoë-7", "a" * 65, "a b", "../x", ""]
LONGEST = "Aa0_.@:-" * 8


def routes(user: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every route with a `{user_id}`, with a body it would accept."""
    base = f"/stripe/subscriptions/{quote(user, safe='')}"
    return [
        ("GET", base, None),
        ("PATCH", base, {"plan": "pro"}),
        ("DELETE", base, None),
        ("POST", f"{base}/resume", None),
        ("POST", f"{base}/payment-methods", {"payment_method_id": "pm_card_visa"}),
        ("DELETE", f"{base}/payment-methods/pm_card_visa", None),
        ("POST", f"{base}/usage", {"metric": "api_calls", "quantity": 1}),
    ]


@pytest.mark.parametrize("user", ["zoë-7", "a" * 65, "a b", "alice\n"])
async def test_a_bad_user_id_in_a_path_is_422(api: Api, user: str) -> None:
    admin = api.auth("ops", admin=True)
    for method, path, body in routes(user):
        response = await api.http.request(method, path, json=body, headers=admin)
        assert response.status_code == 422, (method, path)
        assert response.json()["errors"][0]["loc"] == ["path", "user_id"]
        assert user not in response.text
    assert not await has_workflow(api, user)


async def test_a_slash_in_a_user_id_finds_no_route(api: Api) -> None:
    # "../x" percent-encoded: the decoded slash ends the path segment, so no route matches.
    for method, path, body in routes("../x"):
        response = await api.http.request(
            method, path, json=body, headers=api.auth("ops", admin=True)
        )
        assert response.status_code in (404, 405), (method, path)
        assert response.headers["content-type"] == "application/problem+json"
    assert not await has_workflow(api, "../x")


@pytest.mark.parametrize("user", BAD)
async def test_a_bad_user_id_in_a_body_is_422(api: Api, user: str) -> None:
    body = {"plan": "starter", "email": "x@example.com", "user_id": user}
    response = await api.http.post(
        "/stripe/subscriptions", json=body, headers=api.auth("ops", admin=True)
    )
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["body", "user_id"]
    assert not await has_workflow(api, user)


@pytest.mark.parametrize("user", BAD)
async def test_a_bad_user_id_in_a_token_is_401(api: Api, user: str) -> None:
    token = mint(user, api.settings, admin=True)
    headers = {"Authorization": f"Bearer {token}"}
    response = await api.http.get("/stripe/subscriptions/ops", headers=headers)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    created = await api.http.post(
        "/stripe/subscriptions", json={"plan": "starter", "email": "x@example.com"}, headers=headers
    )
    assert created.status_code == 401
    assert not await has_workflow(api, user)


async def test_a_64_character_id_of_every_allowed_kind_is_accepted(api: Api) -> None:
    assert len(LONGEST) == 64
    created = await api.subscribe(LONGEST, email="longest@example.com")
    assert created.status_code == 201, created.text
    read = await api.http.get(f"/stripe/subscriptions/{LONGEST}", headers=api.auth(LONGEST))
    assert read.status_code == 200
    assert read.json()["user_id"] == LONGEST
    assert await has_workflow(api, LONGEST)


async def has_workflow(api: Api, user: str) -> bool:
    client = api.env.client
    execution = WorkflowExecution(workflow_id=workflow_id(user))
    request = DescribeWorkflowExecutionRequest(namespace=client.namespace, execution=execution)
    try:
        await client.workflow_service.describe_workflow_execution(request)
    except RPCError as err:
        assert err.status == RPCStatusCode.NOT_FOUND
        return False
    return True
