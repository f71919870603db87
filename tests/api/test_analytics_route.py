"""GET /analytics/revenue over HTTP: admins only, dates checked, every figure answered."""

from __future__ import annotations

from pathlib import Path

from tests.api.helpers import Api, database_down, insert
from tests.test_analytics import hand_built

URL = "/analytics/revenue"


async def test_revenue_route_is_for_admins(api: Api) -> None:
    params = {"start": "2026-01-01", "end": "2026-01-31"}
    assert (await api.http.get(URL, params=params)).status_code == 401
    assert (await api.http.get(URL, params=params, headers=api.auth("ursula"))).status_code == 403
    response = await api.http.get(URL, params=params, headers=api.auth("root", admin=True))
    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {
        "currency",
        "total_revenue_minor",
        "successful_payments",
        "failed_payments",
        "success_rate",
        "period_days",
        "mrr_minor",
        "active_subscriptions",
        "new_subscriptions",
        "canceled_subscriptions",
        "churn_rate",
        "recovered_payments",
        "recovery_rate",
        "first_attempt_failure_rate",
        "involuntary_churn_rate",
        "recovery_by_decline_code",
    }
    assert body["period_days"] == 31
    assert body["currency"] == "usd"
    assert body["recovery_by_decline_code"] == {}
    backwards = await api.http.get(
        URL,
        params={"start": "2026-02-01", "end": "2026-01-31"},
        headers=api.auth("root", admin=True),
    )
    assert backwards.status_code == 422
    assert (
        await api.http.get(
            URL,
            params={"start": "2026-02-30", "end": "2026-03-01"},
            headers=api.auth("root", admin=True),
        )
    ).status_code == 422


async def test_the_decline_figures_are_answered(api: Api) -> None:
    # The ledger of tests/test_analytics.py, whose figures are worked out there by hand.
    await insert(api.settings.database_url, *hand_built())
    response = await api.http.get(
        URL,
        params={"start": "2026-03-01", "end": "2026-03-31"},
        headers=api.auth("root", admin=True),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["first_attempt_failure_rate"] == 0.7143
    assert body["involuntary_churn_rate"] == 0.3333
    assert body["recovery_by_decline_code"] == {
        "do_not_honor": {"failed": 1, "recovered": 0},
        "expired_card": {"failed": 1, "recovered": 1},
        "insufficient_funds": {"failed": 2, "recovered": 2},
        "lost_card": {"failed": 1, "recovered": 0},
        "unknown": {"failed": 1, "recovered": 0},
    }
    assert (body["total_revenue_minor"], body["refunded_payments"]) == (23_700, 2)


async def test_a_database_that_does_not_answer_is_503(api: Api, tmp_path: Path) -> None:
    async with database_down(api, tmp_path):
        response = await api.http.get(
            URL,
            params={"start": "2026-03-01", "end": "2026-03-31"},
            headers=api.auth("root", admin=True),
        )
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"
