"""GET /analytics/revenue over HTTP: admins only, dates checked."""

from __future__ import annotations

from tests.api.helpers import Api


async def test_revenue_route_is_for_admins(api: Api) -> None:
    url = "/analytics/revenue"
    params = {"start": "2026-01-01", "end": "2026-01-31"}
    assert (await api.http.get(url, params=params)).status_code == 401
    assert (await api.http.get(url, params=params, headers=api.auth("ursula"))).status_code == 403
    response = await api.http.get(url, params=params, headers=api.auth("root", admin=True))
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
    }
    assert body["period_days"] == 31
    assert body["currency"] == "usd"
    backwards = await api.http.get(
        url,
        params={"start": "2026-02-01", "end": "2026-01-31"},
        headers=api.auth("root", admin=True),
    )
    assert backwards.status_code == 422
    assert (
        await api.http.get(
            url,
            params={"start": "2026-02-30", "end": "2026-03-01"},
            headers=api.auth("root", admin=True),
        )
    ).status_code == 422
