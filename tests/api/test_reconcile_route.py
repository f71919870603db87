"""POST /admin/reconcile and GET /admin/reconcile/latest: admins only, one run at a time, the
latest report (reconciliation itself: tests/workflows/test_reconcile.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from core.db import Reconciliation
from core.payloads import Drift, DriftAction, ReconcileReport, ReconcileTotals
from tests.api.helpers import Api, insert

URL = "/admin/reconcile"


def report(run_id: str, finished_at: datetime, **totals: int) -> Reconciliation:
    made = ReconcileReport(
        run_id=run_id,
        started_at=finished_at - timedelta(minutes=1),
        finished_at=finished_at,
        totals=ReconcileTotals(**totals),
        drift=[
            Drift(
                user_id="ada",
                stripe_subscription_id="sub_1",
                action=DriftAction.RESYNCED,
                fields={"plan": ["starter", "pro"], "cancel_at_period_end": [False, True]},
            )
        ],
    )
    return Reconciliation(
        run_id=run_id,
        started_at=made.started_at,
        finished_at=made.finished_at,
        report=made.model_dump(mode="json"),
    )


async def test_the_routes_are_for_admins(api: Api) -> None:
    for method, url in (("POST", URL), ("GET", f"{URL}/latest")):
        assert (await api.http.request(method, url)).status_code == 401
        user = await api.http.request(method, url, headers=api.auth("ursula"))
        assert user.status_code == 403
        assert user.headers["content-type"] == "application/problem+json"


async def test_a_reconciliation_starts_once_while_it_runs(api: Api) -> None:
    admin = api.auth("root", admin=True)
    started = await api.http.post(URL, headers=admin)
    assert started.status_code == 202
    body = started.json()
    assert body["workflow_id"] == "reconcile"
    assert body["already_running"] is False
    # The API's worker has no reconciliation activities: the run stays running.
    again = await api.http.post(URL, headers=admin)
    assert again.status_code == 202
    assert again.json() == {**body, "already_running": True}


async def test_the_latest_report_is_answered(api: Api) -> None:
    admin = api.auth("root", admin=True)
    none_yet = await api.http.get(f"{URL}/latest", headers=admin)
    assert none_yet.status_code == 404
    assert none_yet.headers["content-type"] == "application/problem+json"
    now = datetime.now(UTC)
    await insert(
        api.settings.database_url,
        report("run-new", now, checked=7, resynced=1, pages=1),
        report("run-old", now - timedelta(hours=6), checked=5, adopted=2, pages=1),
    )
    latest = await api.http.get(f"{URL}/latest", headers=admin)
    assert latest.status_code == 200
    body = latest.json()
    assert body["run_id"] == "run-new"
    assert (body["checked"], body["adopted"], body["resynced"], body["ended"]) == (7, 0, 1, 0)
    assert body["drift"] == [
        {
            "user_id": "ada",
            "stripe_subscription_id": "sub_1",
            "action": "resynced",
            "fields": {"plan": ["starter", "pro"], "cancel_at_period_end": [False, True]},
        }
    ]
    assert body["drift_not_listed"] == 0
