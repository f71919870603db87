"""The disturbed run of tests/e2e/test_faults.py: five customers through the real stack while
webhooks are re-posted and shuffled, the worker is killed and Stripe calls fail; what each
customer must end as (`EXPECTED`) and what the run saw (`Outcome`)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import random
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
from temporalio.client import Client, WorkflowExecutionStatus

from devtools.stack import WEBHOOK_SECRET, Stack

SEED = 20_260_409
SUFFIX = "-flt"
NAMES = ("paul", "tina", "rita", "carl", "cora")
USERS = {name: f"{name}{SUFFIX}" for name in NAMES}
# The SDK gives up on an answer after this long; the late-answer fault waits longer, so the
# charge is made but its answer is lost and the activity retries with the same key.
STRIPE_TIMEOUT_SECONDS = 4
LATE_SECONDS = 6

# What the worker's Stripe calls meet: (method, path prefix, status or None, times, delay).
# The emulator takes the first matching fault for each request until its count is used up.
FAULTS: list[dict[str, Any]] = [
    {"method": "GET", "path": "/v1/customers/search", "status": 429, "times": 2},
    {"method": "POST", "path": "/v1/customers", "status": 500, "times": 2},
    {"method": "POST", "path": "/v1/payment_methods/", "status": 429, "times": 1},
    {"method": "POST", "path": "/v1/subscriptions", "status": 500, "times": 2},
    {"method": "GET", "path": "/v1/subscriptions", "status": 500, "times": 3},
    {"method": "GET", "path": "/v1/invoices/", "status": 429, "times": 3},
    {"method": "DELETE", "path": "/v1/subscriptions/", "status": 500, "times": 1},
]
# The dunning retries (invoice payments), once the invoices are known: Carl's meet errors,
# Rita's first is charged but its answer comes too late (a status fault on the same request
# would be answered late too, without the work done, so they go to different invoices).
PAY_FAULTS: dict[str, list[dict[str, Any]]] = {
    "carl": [{"status": 500, "times": 2}, {"status": 429, "times": 1}],
    "rita": [{"delay_seconds": LATE_SECONDS, "times": 1}],
}


@dataclass(frozen=True)
class Expected:
    """A customer's end state in an undisturbed run."""

    status: str
    plan: str
    interval: str
    failed_payment_attempts: int
    stripe_status: str
    succeeded_charges: int
    failed_charges: int
    emails: dict[str, int]
    workflow: WorkflowExecutionStatus


RUNNING, COMPLETED = WorkflowExecutionStatus.RUNNING, WorkflowExecutionStatus.COMPLETED
EXPECTED = {
    # pays (enterprise, yearly)
    "paul": Expected("active", "enterprise", "yearly", 0, "active", 1, 0, {"receipt": 1}, RUNNING),
    # on a 14-day trial: nothing charged, no reminder yet
    "tina": Expected("trialing", "starter", "monthly", 0, "trialing", 0, 0, {}, RUNNING),
    # card fails twice, a new card pays the invoice
    "rita": Expected(
        "active", "pro", "monthly", 0, "active", 1, 2, {"payment_failed": 2, "receipt": 1}, RUNNING
    ),
    # card fails three times: canceled by dunning
    "carl": Expected(
        "canceled",
        "pro",
        "monthly",
        3,
        "canceled",
        0,
        3,
        {"payment_failed": 2, "final_notice": 1},
        COMPLETED,
    ),
    # pays, then cancels now
    "cora": Expected(
        "canceled",
        "starter",
        "monthly",
        0,
        "canceled",
        1,
        0,
        {"receipt": 1, "canceled": 1},
        COMPLETED,
    ),
}
SIGNUPS: dict[str, dict[str, Any]] = {
    "paul": {"plan": "enterprise", "interval": "yearly", "payment_method_id": "pm_card_visa"},
    "tina": {"plan": "starter", "trial_days": 14, "payment_method_id": "pm_card_visa"},
    "rita": {"plan": "pro", "payment_method_id": "pm_card_chargeCustomerFail"},
    "carl": {"plan": "pro", "payment_method_id": "pm_card_chargeCustomerFail"},
    "cora": {"plan": "starter", "payment_method_id": "pm_card_visa"},
}
WEBHOOK_ANSWERS = {"processed", "duplicate", "ignored"}


@dataclass
class Answer:
    """One re-posted event and what the webhook route said."""

    event_id: str
    event_type: str
    late: bool  # a copy under a new id, as if Stripe had sent it now
    code: int
    status: str | None


@dataclass
class Outcome:
    """Everything the run saw, for the tests to check."""

    data: Path
    storms: list[list[Answer]] = field(default_factory=list)
    storm_events: list[set[str]] = field(default_factory=list)
    storm_customers: list[set[str | None]] = field(default_factory=list)
    at_kill: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds_to_retry_at_kill: dict[str, float] = field(default_factory=dict)
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, list[str]] = field(default_factory=dict)
    subscriptions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    invoices: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    charges: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ledger: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    mails: list[tuple[str, str, str]] = field(default_factory=list)  # to, kind, key digest
    workflows: dict[str, list[WorkflowExecutionStatus | None]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    exited: str | None = None  # a stack process that exited by itself


class Run:
    def __init__(self, stack: Stack, api: httpx.Client, emulator: httpx.Client) -> None:
        self.stack, self.api, self.emulator = stack, api, emulator
        self.rng = random.Random(SEED)
        self.out = Outcome(stack.data)
        with ThreadPoolExecutor(len(NAMES)) as pool:
            self.tokens = dict(zip(NAMES, pool.map(stack.token, USERS.values()), strict=True))
        self.customer_ids: dict[str, str] = {}

    # --- the story, disturbed -------------------------------------------------------------

    def play(self) -> Outcome:
        for fault in FAULTS:
            self.emulator.post("/_emulator/faults", json=fault).raise_for_status()

        with ThreadPoolExecutor(len(NAMES)) as pool:
            created = dict(zip(NAMES, pool.map(self.subscribe, NAMES), strict=True))
        self.customer_ids = {n: v["stripe_customer_id"] for n, v in created.items()}
        code, view = self.call("DELETE", "cora", "?at_period_end=false")
        assert (code, view["status"]) == (200, "canceled"), view

        # Rita and Carl are in dunning, between the first failure and the first retry, and
        # the worker is quiet (the emails so far sent): then it dies without a clean stop.
        self.wait_for_mail(5, 30)
        for name in ("rita", "carl"):
            view = self.wait(name, lambda v: v["failed_payment_attempts"] == 1, 30)
            retry_at = _time(view["next_payment_retry_at"])
            self.out.at_kill[name] = view
            self.out.seconds_to_retry_at_kill[name] = retry_at - time.time()
        self.stack.kill("worker")
        # While the worker is down: every event so far, twice, shuffled; the route only
        # records and signals, so it must answer as usual.
        events = self.storm()
        for name, faults in PAY_FAULTS.items():
            (invoice,) = {
                e["data"]["object"]["id"]
                for e in events
                if e["type"] == "invoice.payment_failed" and _owner(e) == self.customer_ids[name]
            }
            for fault in faults:
                fault = {"method": "POST", "path": f"/v1/invoices/{invoice}/pay", **fault}
                self.emulator.post("/_emulator/faults", json=fault).raise_for_status()
        self.stack.respawn("worker")

        rita = self.wait("rita", lambda v: v["failed_payment_attempts"] >= 2, 120)
        assert rita["failed_payment_attempts"] == 2, rita
        code, card = self.call(
            "POST", "rita", "/payment-methods", {"payment_method_id": "pm_card_visa"}
        )
        assert code == 200, card
        self.wait("rita", lambda v: v["status"] == "active", 60)
        self.wait("carl", lambda v: v["status"] == "canceled", 120)

        # Every event of the five, twice, shuffled, now that each lifecycle has played out.
        self.storm()
        self.settle()
        self.emulator.delete("/_emulator/faults").raise_for_status()
        self.out.exited = self.stack.check()
        self.collect()
        self.report()
        return self.out

    def report(self) -> None:
        """What happened, for whoever reads a failure."""
        out = self.out
        lines = [
            f"seconds to the first retry when the worker was killed: "
            f"{ {n: round(v, 1) for n, v in out.seconds_to_retry_at_kill.items()} }",
            *(
                f"storm {i}: {len(answers)} posts, "
                f"{dict(Counter((a.late, a.code, a.status) for a in answers))}"
                for i, answers in enumerate(out.storms, 1)
            ),
            f"Stripe answers: {dict(Counter((r['status'], r['replayed']) for r in out.requests))}",
            *(
                f"{USERS[n]}: {view_state(out.views[n])} charges "
                f"{dict(Counter(c['status'] for c in out.charges[n]))} ledger "
                f"{sorted((r['kind'], r['attempt']) for r in out.ledger[n])} "
                f"workflows {out.workflows[n]}"
                for n in NAMES
            ),
        ]
        sys.stdout.write("\n".join(lines) + "\n")

    def subscribe(self, name: str) -> dict[str, Any]:
        body = {"email": f"{USERS[name]}@example.com", "trial_days": 0, **SIGNUPS[name]}
        code, view = self.call("POST", None, "", body, token=name)
        # 201 once Stripe answered; 202 when Stripe (faulted) was slower than the API's wait.
        assert code in (201, 202), (name, code, view)
        return self.wait(name, lambda v: bool(v["stripe_subscription_id"]), 60)

    def storm(self) -> list[dict[str, Any]]:
        """Every event so far, twice, and a copy of each under a new id, twice (a stale event
        the route has not seen: it reaches the workflow, which must re-read and not be moved
        by it), all in a shuffled order, four at a time."""
        events = self.events()
        storm = len(self.out.storms) + 1
        late = [{**event, "id": f"{event['id']}_late{storm}"} for event in events]
        posts = [event for event in [*events, *late] for _ in range(2)]
        self.rng.shuffle(posts)
        with ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(self.post_event, posts))
        self.out.storms.append(answers)
        self.out.storm_events.append({event["id"] for event in [*events, *late]})
        self.out.storm_customers.append({_owner(event) for event in events})
        return events

    def events(self) -> list[dict[str, Any]]:
        """Every Stripe event about the customers, from the emulator, all pages."""
        ours = set(self.customer_ids.values())
        events: list[dict[str, Any]] = []
        params: dict[str, Any] = {"limit": 100}
        for _ in range(100):
            page = self.emulator.get("/v1/events", params=params, headers=_STRIPE_AUTH)
            page.raise_for_status()
            body = page.json()
            events += [event for event in body["data"] if _owner(event) in ours]
            if not body["has_more"]:
                break
            params["starting_after"] = body["data"][-1]["id"]
        return events

    def post_event(self, event: dict[str, Any]) -> Answer:
        payload = json.dumps(event)
        stamp = int(time.time())
        mac = hmac.new(
            WEBHOOK_SECRET.encode(), f"{stamp}.{payload}".encode(), hashlib.sha256
        ).hexdigest()
        response = self.api.post(
            "/stripe/webhooks",
            content=payload,
            headers={"Content-Type": "application/json", "Stripe-Signature": f"t={stamp},v1={mac}"},
        )
        try:
            status = response.json().get("status")
        except ValueError:
            status = None
        late = "_late" in event["id"]
        return Answer(event["id"], event["type"], late, response.status_code, status)

    def wait_for_mail(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while len(list((self.stack.data / "mail").glob("*.eml"))) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {count} emails after {timeout:.0f}s")
            time.sleep(0.3)

    def settle(self) -> None:
        """Wait (bounded) until every customer shows the expected end state, the ledger and the
        mailbox have caught up, and nothing has moved for a few seconds."""
        deadline = time.monotonic() + 60
        last: Any = None
        quiet_since = time.monotonic()
        while time.monotonic() < deadline:
            views = {name: self.view(name) for name in NAMES}
            now = (
                {n: view_state(v) for n, v in views.items()},
                len(self.ledger_rows()),
                len(list((self.stack.data / "mail").glob("*.eml"))),
            )
            if now != last:
                last, quiet_since = now, time.monotonic()
            elif time.monotonic() - quiet_since >= 4 and all(
                view_state(views[n]) == expected_state(n) for n in NAMES
            ):
                return
            time.sleep(0.5)

    # --- what the run left behind ---------------------------------------------------------

    def collect(self) -> None:
        out = self.out
        out.views = {name: self.view(name) for name in NAMES}
        rows = self.ledger_rows()
        for name, user in USERS.items():
            query = f"metadata['user_id']:'{user}'"
            found = self.stripe("/v1/customers/search", {"query": query, "limit": 100})
            out.customers[name] = [c["id"] for c in found]
            customer = self.customer_ids[name]
            out.subscriptions[name] = self.stripe(
                "/v1/subscriptions", {"customer": customer, "status": "all", "limit": 100}
            )
            out.invoices[name] = self.stripe("/v1/invoices", {"customer": customer, "limit": 100})
            out.charges[name] = self.stripe("/v1/charges", {"customer": customer, "limit": 100})
            out.ledger[name] = [row for row in rows if row["user_id"] == user]
        for path in sorted((self.stack.data / "mail").glob("*.eml")):
            mail = message_from_bytes(path.read_bytes())
            # The Message-ID carries the digest of the email's idempotency key before the "@".
            digest = str(mail["Message-ID"]).split("@")[0].rsplit(".", 1)[-1]
            out.mails.append((str(mail["To"]), str(mail["X-SalesFlow-Kind"]), digest))
        out.workflows = asyncio.run(self.workflow_statuses())
        out.requests = self.emulator.get("/_emulator/requests").json()
        out.deliveries = self.emulator.get("/_emulator/webhook_deliveries").json()

    async def workflow_statuses(self) -> dict[str, list[WorkflowExecutionStatus | None]]:
        client = await Client.connect(f"127.0.0.1:{self.stack.ports.temporal}")
        statuses: dict[str, list[WorkflowExecutionStatus | None]] = {}
        for _ in range(40):  # visibility is eventually consistent
            for name, user in USERS.items():
                statuses[name] = [
                    wf.status
                    async for wf in client.list_workflows(f"WorkflowId = 'subscription-{user}'")
                ]
            if all(statuses[n] and statuses[n][0] == EXPECTED[n].workflow for n in NAMES):
                break
            await asyncio.sleep(0.5)
        return statuses

    def ledger_rows(self) -> list[dict[str, Any]]:
        database = sqlite3.connect(f"file:{self.stack.data / 'billing.sqlite3'}?mode=ro", uri=True)
        try:
            database.row_factory = sqlite3.Row
            cursor = database.execute(
                "SELECT invoice_id, attempt, kind, amount_minor, user_id FROM payments"
            )
            return [dict(row) for row in cursor]
        finally:
            database.close()

    def stripe(self, path: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        response = self.emulator.get(path, params=params, headers=_STRIPE_AUTH)
        response.raise_for_status()
        body = response.json()
        assert not body["has_more"], path
        return list(body["data"])

    # --- the API --------------------------------------------------------------------------

    def call(
        self,
        method: str,
        name: str | None,
        path: str,
        body: dict[str, Any] | None = None,
        token: str | None = None,
    ) -> tuple[int, Any]:
        url = "/stripe/subscriptions" + (f"/{USERS[name]}" if name else "") + path
        response = self.api.request(
            method,
            url,
            json=body,
            headers={"Authorization": f"Bearer {self.tokens[token or name or '']}"},
        )
        return response.status_code, response.json() if response.content else None

    def view(self, name: str) -> dict[str, Any]:
        code, view = self.call("GET", name, "")
        assert code == 200, (name, code, view)
        return dict(view)

    def wait(
        self, name: str, check: Callable[[dict[str, Any]], bool], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            code, view = self.call("GET", name, "")
            if code == 200 and check(view):
                return dict(view)
            if time.monotonic() > deadline:
                raise AssertionError(f"{USERS[name]} after {timeout:.0f}s: {code} {view}")
            time.sleep(0.5)


_STRIPE_AUTH = {"Authorization": "Bearer sk_test_salesflow_local"}


def _time(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


def _owner(event: dict[str, Any]) -> str | None:
    """The Stripe customer an event is about."""
    obj = event["data"]["object"]
    owner = obj["id"] if obj.get("object") == "customer" else obj.get("customer")
    return owner if isinstance(owner, str) else None


def view_state(view: dict[str, Any]) -> tuple[Any, ...]:
    return (
        view["status"],
        view["plan"],
        view["interval"],
        view["failed_payment_attempts"],
        view["cancel_at_period_end"],
    )


def expected_state(name: str) -> tuple[Any, ...]:
    e = EXPECTED[name]
    return (e.status, e.plan, e.interval, e.failed_payment_attempts, False)


# --- the invariants ---------------------------------------------------------------------------
