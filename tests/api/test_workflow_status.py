"""`workflow_status` in the subscription view: the API never reports a stopped workflow as live."""

from __future__ import annotations

from tests.api.helpers import Api, event
from workflows.subscription import workflow_id


async def test_a_running_workflow_and_the_views_updates_answer(api: Api) -> None:
    assert (await api.subscribe("rita")).json()["workflow_status"] == "running"
    read = await api.http.get("/stripe/subscriptions/rita", headers=api.auth("rita"))
    assert read.json()["workflow_status"] == "running"
    changed = await api.http.patch(
        "/stripe/subscriptions/rita", json={"plan": "pro"}, headers=api.auth("rita")
    )
    assert changed.json()["workflow_status"] == "running"
    for method, path in (("DELETE", ""), ("POST", "/resume")):
        response = await api.http.request(
            method, f"/stripe/subscriptions/rita{path}", headers=api.auth("rita")
        )
        assert response.status_code == 200
        assert response.json()["workflow_status"] == "running"


async def test_a_canceled_subscription_reads_as_ended(api: Api) -> None:
    await api.subscribe("cleo")
    canceled = await api.http.delete(
        "/stripe/subscriptions/cleo", params={"at_period_end": "false"}, headers=api.auth("cleo")
    )
    assert canceled.json()["status"] == "canceled"
    await api.env.client.get_workflow_handle(workflow_id("cleo")).result()
    read = await api.http.get("/stripe/subscriptions/cleo", headers=api.auth("cleo"))
    assert read.status_code == 200
    assert (read.json()["status"], read.json()["workflow_status"]) == ("canceled", "completed")


async def test_a_terminated_workflow_says_so(api: Api) -> None:
    await api.subscribe("tess")
    await api.env.client.get_workflow_handle(workflow_id("tess")).terminate("by an operator")
    read = await api.http.get("/stripe/subscriptions/tess", headers=api.auth("tess"))
    assert read.status_code == 200
    assert (read.json()["status"], read.json()["workflow_status"]) == ("active", "terminated")


async def test_an_ended_workflow_without_a_subscription_is_404(api: Api) -> None:
    # A webhook for a customer with nothing live at Stripe: the workflow adopts nothing, ends.
    customer = {"id": "cus_nadia", "object": "customer", "metadata": {"user_id": "nadia"}}
    assert (await api.webhook(event("customer.updated", customer))).status_code == 200
    await api.env.client.get_workflow_handle(workflow_id("nadia")).result()
    read = await api.http.get("/stripe/subscriptions/nadia", headers=api.auth("nadia"))
    nobody = await api.http.get("/stripe/subscriptions/nobody", headers=api.auth("nobody"))
    assert read.status_code == nobody.status_code == 404
    assert read.json() == nobody.json()
