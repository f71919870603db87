"""The disturbed run of tests/e2e/test_faults.py and test_replicas.py: five customers through
the real stack while webhooks are re-posted and shuffled, a worker is killed and Stripe calls
fail; what each customer must end as (`EXPECTED`), what the run saw (`Outcome`) and the checks
both runs must pass (`Invariants`)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import itertools
import json
import random
import socket
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client, WorkflowExecutionStatus

from devtools.stack import WEBHOOK_SECRET, Stack
from tests.helpers import free_ports

SEED = 20_260_409
SUFFIX = "-flt"
NAMES = ("paul", "tina", "rita", "carl", "cora")
# In dunning, between the first failure and the first retry, when a worker is killed.
DUNNING = ("rita", "carl")
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
    api: int  # which API process (its index in `Stack.api_urls`) answered
    code: int
    status: str | None


@dataclass
class Outcome:
    """Everything the run saw, for the tests to check."""

    data: Path
    apis: int  # API processes (each also a webhook endpoint of the emulator)
    # Every API request of the story but the webhook storms: (API index, method, status).
    calls: list[tuple[int, str, int]] = field(default_factory=list)
    # Per customer, each API's answer to the signup: (status, Stripe subscription id).
    signups: dict[str, list[tuple[int, str | None]]] = field(default_factory=dict)
    storms: list[list[Answer]] = field(default_factory=list)
    storm_events: list[set[str]] = field(default_factory=list)
    storm_customers: list[set[str | None]] = field(default_factory=list)
    at_kill: dict[str, dict[str, Any]] = field(default_factory=dict)
    seconds_to_retry_at_kill: dict[str, float] = field(default_factory=dict)
    # Temporal identity (pid@host) -> process name, of every worker the run had (a respawned
    # one under its old name); the one SIGKILLed.
    workers: dict[str, str] = field(default_factory=dict)
    killed: str = ""
    # Per customer in dunning: the worker that completed its last workflow task before the
    # kill, and every worker that completed a workflow task or ran an activity of it after.
    held_at_kill: dict[str, str] = field(default_factory=dict)
    ran_after_kill: dict[str, set[str]] = field(default_factory=dict)
    views: dict[str, dict[str, Any]] = field(default_factory=dict)
    customers: dict[str, list[str]] = field(default_factory=dict)
    subscriptions: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    invoices: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    charges: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    ledger: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # The read model: the customer's `subscriptions` rows and its `customers` row's Stripe id.
    read_model: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    customer_rows: dict[str, list[str]] = field(default_factory=dict)
    mails: list[tuple[str, str, str]] = field(default_factory=list)  # to, kind, key digest
    workflows: dict[str, list[WorkflowExecutionStatus | None]] = field(default_factory=dict)
    requests: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    exited: str | None = None  # a stack process that exited by itself
    running: list[str] = field(default_factory=list)  # the stack's processes at the end


@contextmanager
def running_stack(data: Path, **options: Any) -> Iterator[Stack]:
    """The stack on free ports with the demo dunning policy and the SDK's short timeout (for
    the late answer); `options` are `Stack`'s (replicas, database). Stopped afterwards."""
    stack = Stack(Path(sys.executable), data, free_ports(), demo=True, quiet=True, **options)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STRIPE_TIMEOUT_SECONDS", str(STRIPE_TIMEOUT_SECONDS))
        stack.start()
    try:
        yield stack
    finally:
        stack.stop()


def play(stack: Stack) -> Outcome:
    """The disturbed story on a running stack, requests spread over every API process."""
    sys.stdout.write(f"stack data and logs: {stack.data}\n")
    with ExitStack() as clients:
        apis = [clients.enter_context(httpx.Client(base_url=u, timeout=60)) for u in stack.api_urls]
        emulator = clients.enter_context(httpx.Client(base_url=stack.stripe_url, timeout=30))
        return Run(stack, apis, emulator).play()


class Run:
    def __init__(self, stack: Stack, apis: list[httpx.Client], emulator: httpx.Client) -> None:
        self.stack, self.apis, self.emulator = stack, apis, emulator
        self.turns = itertools.count()  # the API processes take requests in turn
        self.rng = random.Random(SEED)
        self.out = Outcome(stack.data, len(apis))
        url = make_url(stack.env["DATABASE_URL"])
        # The read side of the service's database, synchronous (SQLite or PostgreSQL).
        sync_url = url.set(drivername="sqlite") if url.drivername.startswith("sqlite") else url
        self.database = create_engine(sync_url, poolclass=NullPool)
        with ThreadPoolExecutor(len(NAMES)) as pool:
            self.tokens = dict(zip(NAMES, pool.map(stack.token, USERS.values()), strict=True))
        self.customer_ids: dict[str, str] = {}

    # --- the story, disturbed -------------------------------------------------------------

    def play(self) -> Outcome:
        try:
            return self._play()
        finally:
            self.database.dispose()

    def _play(self) -> Outcome:
        for fault in FAULTS:
            self.emulator.post("/_emulator/faults", json=fault).raise_for_status()

        with ThreadPoolExecutor(len(NAMES)) as pool:
            created = dict(zip(NAMES, pool.map(self.subscribe, NAMES), strict=True))
        self.customer_ids = {n: v["stripe_customer_id"] for n, v in created.items()}
        code, view = self.call("DELETE", "cora", "?at_period_end=false")
        assert (code, view["status"]) == (200, "canceled"), view

        # Rita and Carl are in dunning, between the first failure and the first retry, and
        # the workers are quiet (the emails so far sent): then the worker that holds them (the
        # one that ran their last workflow task; with replicas, the one holding more of the
        # two) dies without a clean stop.
        self.wait_for_mail(5, 30)
        for name in DUNNING:
            view = self.wait(name, lambda v: v["failed_payment_attempts"] == 1, 30)
            retry_at = _time(view["next_payment_retry_at"])
            self.out.at_kill[name] = view
            self.out.seconds_to_retry_at_kill[name] = retry_at - time.time()
        workers = self.note_workers()
        holders = Counter(self.out.workers.get(holder) for holder, _ in self.holders().values())
        victim = holders.most_common(1)[0][0]
        assert victim in workers, (holders, self.out.workers)
        self.stack.kill(victim)
        # Read again once it is dead (a webhook may have woken one of them meanwhile): from
        # these marks on, only the workers left can have run anything of theirs.
        marks = self.holders()
        self.out.killed = victim
        self.out.held_at_kill = {n: self.out.workers.get(h, h) for n, (h, _) in marks.items()}
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
        if len(workers) == 1:
            # The only worker: started again. With replicas, the others carry on alone.
            self.stack.respawn(victim)
            self.note_workers()

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
        self.out.running = [name for name, _ in self.stack.processes]
        self.collect(marks)
        self.report()
        return self.out

    def note_workers(self) -> list[str]:
        """The running workers' names, each noted under its Temporal identity (the SDK's
        default, pid@host)."""
        host = socket.gethostname()
        running = [(n, p) for n, p in self.stack.processes if n.startswith("worker")]
        self.out.workers.update({f"{process.pid}@{host}": name for name, process in running})
        return [name for name, _ in running]

    def holders(self) -> dict[str, tuple[str, int]]:
        """Per customer in dunning: the identity of the worker that completed its last
        workflow task, and its history's last event id."""
        histories = asyncio.run(self.histories(DUNNING))
        return {
            name: (_last_worker(events), events[-1].event_id) for name, events in histories.items()
        }

    async def histories(self, names: tuple[str, ...]) -> dict[str, list[HistoryEvent]]:
        client = await Client.connect(f"127.0.0.1:{self.stack.ports.temporal}")
        histories: dict[str, list[HistoryEvent]] = {}
        for name in names:
            handle = client.get_workflow_handle(f"subscription-{USERS[name]}")
            histories[name] = list((await handle.fetch_history()).events)
        return histories

    def report(self) -> None:
        """What happened, for whoever reads a failure."""
        out = self.out
        ran_after = {
            n: sorted(out.workers.get(i, i) for i in r) for n, r in out.ran_after_kill.items()
        }
        lines = [
            f"seconds to the first retry when the worker was killed: "
            f"{ {n: round(v, 1) for n, v in out.seconds_to_retry_at_kill.items()} }",
            *(
                f"storm {i}: {len(answers)} posts, "
                f"{dict(Counter((a.late, a.code, a.status) for a in answers))}"
                for i, answers in enumerate(out.storms, 1)
            ),
            f"Stripe answers: {dict(Counter((r['status'], r['replayed']) for r in out.requests))}",
            f"API answers (process, status): {dict(Counter((a, c) for a, _, c in out.calls))}",
            f"signup answers per API: { {n: [c for c, _ in a] for n, a in out.signups.items()} }",
            f"killed {out.killed}; last workflow task before: {out.held_at_kill}; "
            f"ran after: {ran_after}",
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
        """The signup, sent to every API process at once under one Idempotency-Key (with
        replicas, as a client's retry that the load balancer sent to another one)."""
        body = {"email": f"{USERS[name]}@example.com", "trial_days": 0, **SIGNUPS[name]}
        key = {"Idempotency-Key": f"signup-{USERS[name]}"}

        def signup(api: int) -> tuple[int, Any]:
            return self.call("POST", None, "", body, token=name, api=api, headers=key)

        with ThreadPoolExecutor(len(self.apis)) as pool:
            answers = list(pool.map(signup, range(len(self.apis))))
        self.out.signups[name] = [
            (code, view.get("stripe_subscription_id")) for code, view in answers
        ]
        # 201 once Stripe answered; 202 when Stripe (faulted) was slower than the API's wait.
        assert {code for code, _ in answers} <= {201, 202}, (name, answers)
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
        api, client = self.next_api()
        response = client.post(
            "/stripe/webhooks",
            content=payload,
            headers={"Content-Type": "application/json", "Stripe-Signature": f"t={stamp},v1={mac}"},
        )
        try:
            status = response.json().get("status")
        except ValueError:
            status = None
        late = "_late" in event["id"]
        return Answer(event["id"], event["type"], late, api, response.status_code, status)

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

    def collect(self, marks: dict[str, tuple[str, int]]) -> None:
        out = self.out
        out.views = {name: self.view(name) for name in NAMES}
        rows = self.ledger_rows()
        subscriptions = self.rows(
            "SELECT user_id, stripe_subscription_id, status, plan, interval, dunning_attempt,"
            " cancel_at_period_end FROM subscriptions ORDER BY id"
        )
        customers = self.rows("SELECT user_id, stripe_customer_id FROM customers ORDER BY id")
        for name, user in USERS.items():
            out.read_model[name] = [row for row in subscriptions if row["user_id"] == user]
            out.customer_rows[name] = [
                row["stripe_customer_id"] for row in customers if row["user_id"] == user
            ]
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
        for name, events in asyncio.run(self.histories(DUNNING)).items():
            out.ran_after_kill[name] = _workers_after(events, marks[name][1])
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
        return self.rows("SELECT invoice_id, attempt, kind, amount_minor, user_id FROM payments")

    def rows(self, query: str) -> list[dict[str, Any]]:
        with self.database.connect() as connection:
            return [dict(row._mapping) for row in connection.execute(text(query))]

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
        api: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        """A request to the subscriptions routes, on the API process whose turn it is (or
        `api`), as `token`'s or `name`'s user."""
        url = "/stripe/subscriptions" + (f"/{USERS[name]}" if name else "") + path
        api, client = self.next_api() if api is None else (api, self.apis[api])
        response = client.request(
            method,
            url,
            json=body,
            headers={
                "Authorization": f"Bearer {self.tokens[token or name or '']}",
                **(headers or {}),
            },
        )
        self.out.calls.append((api, method, response.status_code))
        return response.status_code, response.json() if response.content else None

    def next_api(self) -> tuple[int, httpx.Client]:
        """The API process whose turn it is (any thread may ask), and its index."""
        api = next(self.turns) % len(self.apis)
        return api, self.apis[api]

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


def _last_worker(events: list[HistoryEvent]) -> str:
    """The identity of the worker that completed the last workflow task of a history."""
    completed = [e for e in events if e.HasField("workflow_task_completed_event_attributes")]
    return completed[-1].workflow_task_completed_event_attributes.identity


def _workers_after(events: list[HistoryEvent], mark: int) -> set[str]:
    """The identities of the workers that completed a workflow task or ran an activity (its
    last attempt) in the events after `mark`."""
    workers: set[str] = set()
    for event in (e for e in events if e.event_id > mark):
        if event.HasField("workflow_task_completed_event_attributes"):
            workers.add(event.workflow_task_completed_event_attributes.identity)
        elif event.HasField("activity_task_started_event_attributes"):
            workers.add(event.activity_task_started_event_attributes.identity)
    return workers


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


class Invariants:
    """What a disturbed run must show, one test each, so a broken one does not hide the
    others: a test module subclasses it (`class TestFaults(Invariants)`) beside its module-
    scoped `outcome` fixture, which plays the story once."""

    def test_the_disturbances_happened(self, outcome: Outcome) -> None:
        """The run was as disturbed as it claims, else the other checks prove less."""
        assert outcome.exited is None  # every process (a respawned worker too) is still up
        # The worker died while both were between their first failure and the first retry,
        # and it was the one running (at least one of) them: its cache and sticky queue went
        # with it.
        for name in DUNNING:
            view = outcome.at_kill[name]
            assert (view["status"], view["failed_payment_attempts"]) == ("past_due", 1), view
            assert outcome.seconds_to_retry_at_kill[name] > 0, outcome.seconds_to_retry_at_kill
        assert outcome.killed in outcome.held_at_kill.values(), outcome.held_at_kill
        # The worker's calls met the injected 500s and 429s, and a payment whose answer was lost
        # was retried with its key and answered by Stripe's idempotency replay.
        statuses = Counter(r["status"] for r in outcome.requests)
        faults = [*FAULTS, *(f for pay in PAY_FAULTS.values() for f in pay)]
        assert statuses[500] == sum(f["times"] for f in faults if f.get("status") == 500), statuses
        assert statuses[429] == sum(f["times"] for f in faults if f.get("status") == 429), statuses
        assert any(
            r["method"] == "POST" and r["path"].endswith("/pay") and r["replayed"]
            for r in outcome.requests
        ), "no invoice payment was replayed after its answer was lost"
        # Each storm re-posted events of every customer.
        for customers in outcome.storm_customers:
            assert len(customers) == len(NAMES), customers

    def test_every_webhook_answered_200_however_often_and_in_whatever_order(
        self, outcome: Outcome
    ) -> None:
        """Every post of an event is 200 (processed, duplicate or ignored), and each id is
        taken once whichever API process a copy reached."""
        assert len(outcome.storms) == 2
        for answers, events in zip(outcome.storms, outcome.storm_events, strict=True):
            assert Counter(a.event_id for a in answers) == {e: 2 for e in events}
            bad = [a for a in answers if a.code != 200 or a.status not in WEBHOOK_ANSWERS]
            assert bad == [], bad
            # Recorded once: of the two copies of a new id, one is taken and one a duplicate; an
            # id the emulator delivered before is a duplicate both times.
            by_id: dict[str, list[str | None]] = {}
            for a in answers:
                by_id.setdefault(a.event_id, []).append(a.status)
            for a in answers:
                taken = [s for s in by_id[a.event_id] if s != "duplicate"]
                # (An event the emulator had not yet delivered may be taken from this copy.)
                wanted = [1] if a.late else [0, 1]
                assert len(taken) in wanted, (a.event_id, by_id[a.event_id])
        # The emulator's own deliveries (some while the worker was dead) were all taken at once.
        bad_deliveries = [d for d in outcome.deliveries if d["status"] != 200]
        assert bad_deliveries == [], bad_deliveries
        # Each event went to every API process (one endpoint each).
        endpoints: dict[str, set[str]] = {}
        for delivery in outcome.deliveries:
            endpoints.setdefault(delivery["event"], set()).add(delivery["endpoint"])
        assert {len(e) for e in endpoints.values()} == {outcome.apis}, endpoints

    def test_final_state_is_the_undisturbed_one(self, outcome: Outcome) -> None:
        """Each customer ends, in the workflow's view and in Stripe, as `EXPECTED` (the end
        of an undisturbed run on one API and one worker)."""

        def stripe_status(name: str) -> str | None:
            wanted = outcome.views[name]["stripe_subscription_id"]
            return next(
                (s["status"] for s in outcome.subscriptions[name] if s["id"] == wanted), None
            )

        actual = {name: (*view_state(outcome.views[name]), stripe_status(name)) for name in NAMES}
        expected = {name: (*expected_state(name), EXPECTED[name].stripe_status) for name in NAMES}
        assert actual == expected

    def test_one_stripe_customer_and_one_subscription_each(self, outcome: Outcome) -> None:
        """No create was done twice: Stripe has one customer (by our user id) and one
        subscription each, the ones the workflow knows and every API's signup answer named
        (a 202 names none yet)."""
        for name in NAMES:
            assert outcome.customers[name] == [outcome.views[name]["stripe_customer_id"]], name
            subscription = outcome.views[name]["stripe_subscription_id"]
            assert [s["id"] for s in outcome.subscriptions[name]] == [subscription], name
            named = {sub for code, sub in outcome.signups[name] if code == 201}
            assert named <= {subscription}, (name, outcome.signups[name])

    def test_no_double_charge_and_the_ledger_is_stripes(self, outcome: Outcome) -> None:
        """One succeeded charge per paid invoice, the expected declines, and a ledger row per
        charge, numbered as Stripe counted them."""
        for name in NAMES:
            invoices = {inv["number"]: inv for inv in outcome.invoices[name]}
            by_invoice: dict[str, Counter[str]] = {}
            for charge in outcome.charges[name]:
                invoice = invoices[charge["description"].removeprefix("Invoice ")]
                by_invoice.setdefault(invoice["id"], Counter())[charge["status"]] += 1
            paid = [i for i in outcome.invoices[name] if i["status"] == "paid" and i["amount_paid"]]
            for invoice in paid:
                assert by_invoice[invoice["id"]]["succeeded"] == 1, (
                    name,
                    invoice["id"],
                    by_invoice,
                )
            succeeded = sum(c["succeeded"] for c in by_invoice.values())
            failed = sum(c["failed"] for c in by_invoice.values())
            e = EXPECTED[name]
            assert (succeeded, failed) == (e.succeeded_charges, e.failed_charges), (
                name,
                by_invoice,
            )

            # The ledger: one succeeded row per succeeded charge, with its amount; one failed row
            # per declined attempt, numbered as Stripe counted them.
            ledger = outcome.ledger[name]
            assert sorted(
                (row["invoice_id"], row["amount_minor"])
                for row in ledger
                if row["kind"] == "succeeded"
            ) == sorted(
                (invoices[c["description"].removeprefix("Invoice ")]["id"], c["amount"])
                for c in outcome.charges[name]
                if c["status"] == "succeeded"
            ), name
            failed_rows = Counter(row["invoice_id"] for row in ledger if row["kind"] == "failed")
            assert failed_rows == Counter(
                {i: c["failed"] for i, c in by_invoice.items() if c["failed"]}
            ), (name, ledger)
            for invoice_id, count in failed_rows.items():
                attempts = sorted(
                    row["attempt"]
                    for row in ledger
                    if row["invoice_id"] == invoice_id and row["kind"] == "failed"
                )
                assert attempts == list(range(1, count + 1)), (name, ledger)

    def test_no_email_twice(self, outcome: Outcome) -> None:
        """The SMTP sink got each email once (by its idempotency key), and each customer the
        expected ones."""
        per_key = Counter(digest for _, _, digest in outcome.mails)
        twice = [mail for mail in outcome.mails if per_key[mail[2]] > 1]
        assert twice == [], twice
        for name in NAMES:
            kinds = Counter(
                kind for to, kind, _ in outcome.mails if to == f"{USERS[name]}@example.com"
            )
            assert kinds == Counter(EXPECTED[name].emails), name

    def test_every_workflow_is_running_or_completed(self, outcome: Outcome) -> None:
        """No run failed, timed out or was terminated; the latest is Running or Completed as
        `EXPECTED`."""
        for name in NAMES:
            statuses = outcome.workflows[name]
            assert statuses, name
            assert set(statuses) <= {RUNNING, COMPLETED}, (name, statuses)
            assert statuses[0] == EXPECTED[name].workflow, (name, statuses)

    def test_an_idempotency_key_has_one_outcome(self, outcome: Outcome) -> None:
        """Every write to Stripe carried an idempotency key, and a key sent again (an activity
        retried, on whichever worker) was answered as the first time, replayed: never a
        second write, nor an idempotency error (a key reused for another request)."""
        writes = [r for r in outcome.requests if r["method"] != "GET"]
        assert [r for r in writes if not r["idempotency_key"]] == []
        # The injected 500s and 429s are answered before the key is looked at: nothing done.
        answers: dict[str, list[tuple[int, bool]]] = {}
        for r in writes:
            if r["status"] not in (429, 500):
                answers.setdefault(r["idempotency_key"], []).append((r["status"], r["replayed"]))
        twice = {
            key: got
            for key, got in answers.items()
            if got != [(got[0][0], False)] + [(got[0][0], True)] * (len(got) - 1)
        }
        assert twice == {}, twice

    def test_the_read_model_is_stripes(self, outcome: Outcome) -> None:
        """The service's database (the read model the listings and analytics serve) agrees
        with Stripe: one `customers` row with the Stripe customer, and one `subscriptions` row
        per Stripe subscription with its status, the plan and the dunning count."""
        for name in NAMES:
            assert outcome.customer_rows[name] == outcome.customers[name], name
            e = EXPECTED[name]
            assert [
                (
                    row["stripe_subscription_id"],
                    row["status"],
                    row["plan"],
                    row["interval"],
                    row["dunning_attempt"],
                    row["cancel_at_period_end"],
                )
                for row in outcome.read_model[name]
            ] == [
                (sub["id"], sub["status"], e.plan, e.interval, e.failed_payment_attempts, False)
                for sub in outcome.subscriptions[name]
            ], name
