"""The story, driven over HTTP against a running stack started with `python3 dev.py up --demo`:
a customer on trial, one who pays, one whose card fails and who recovers after reminder 2, and
one canceled after three failures. Standard library only. Each step shows in the Temporal UI.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

Token = Callable[[str], str]


def call(
    api: str, method: str, path: str, token: str, body: dict[str, Any] | None = None
) -> tuple[int, Any]:
    request = urllib.request.Request(  # noqa: S310 (the local API)
        f"{api}{path}",
        method=method,
        data=json.dumps(body).encode() if body is not None else None,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def say(text: str) -> None:
    sys.stdout.write(f"{time.strftime('%H:%M:%S')}  {text}\n")
    sys.stdout.flush()


def wait_until(
    api: str, user: str, token: str, check: Callable[[dict[str, Any]], bool], timeout: float
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        _, view = call(api, "GET", f"/stripe/subscriptions/{user}", token)
        if check(view):
            return view
        if time.monotonic() > deadline:
            raise TimeoutError(f"{user}: still {view}")
        time.sleep(1)


def run(
    api: str, token: Token, suffix: str = "", timeout: float = 180
) -> dict[str, dict[str, Any]]:
    """Run the story; answer each customer's final subscription view."""
    users = {name: f"{name}{suffix}" for name in ("tina", "paul", "rita", "carl")}
    tokens = {name: token(user) for name, user in users.items()}

    def subscribe(name: str, **body: Any) -> dict[str, Any]:
        payload = {"plan": "pro", "email": f"{users[name]}@example.com", "trial_days": 0, **body}
        status, view = call(api, "POST", "/stripe/subscriptions", tokens[name], payload)
        if status != 201:
            raise RuntimeError(f"{name}: {status} {view}")
        say(
            f"{users[name]}: subscribed -> {view['status']} (failed payments {view['failed_payment_attempts']})"
        )
        return view

    subscribe("tina", plan="starter", trial_days=14, payment_method_id="pm_card_visa")
    subscribe("paul", plan="enterprise", interval="yearly", payment_method_id="pm_card_visa")
    subscribe("rita", payment_method_id="pm_card_chargeCustomerFail")
    subscribe("carl", payment_method_id="pm_card_chargeCustomerFail")

    say(f"{users['rita']}: waiting for the retry after reminder 1 to fail too (reminder 2)...")
    wait_until(
        api, users["rita"], tokens["rita"], lambda v: v["failed_payment_attempts"] >= 2, timeout
    )
    status, card = call(
        api,
        "POST",
        f"/stripe/subscriptions/{users['rita']}/payment-methods",
        tokens["rita"],
        {"payment_method_id": "pm_card_visa"},
    )
    say(f"{users['rita']}: new card {card['card']['brand']} ...{card['card']['last4']} ({status})")
    views = {
        "rita": wait_until(
            api, users["rita"], tokens["rita"], lambda v: v["status"] == "active", timeout
        )
    }
    say(f"{users['rita']}: recovered -> active")

    say(f"{users['carl']}: waiting for the third failed payment...")
    views["carl"] = wait_until(
        api, users["carl"], tokens["carl"], lambda v: v["status"] == "canceled", timeout
    )
    say(
        f"{users['carl']}: canceled after {views['carl']['failed_payment_attempts']} failed payments"
    )
    for name in ("tina", "paul"):
        _, views[name] = call(api, "GET", f"/stripe/subscriptions/{users[name]}", tokens[name])
        say(
            f"{users[name]}: {views[name]['status']} on {views[name]['plan']}/{views[name]['interval']}"
        )
    return views
