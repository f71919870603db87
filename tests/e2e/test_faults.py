"""Faults, end to end: the real stack on free ports (dev server, emulator, SMTP sink, worker,
API) and five customers through their lifecycle while three kinds of disturbance hit it:

1. besides the emulator's own deliveries, every Stripe event of those customers is posted again
   to the webhook route, twice, with a copy of each under a new id (a stale event the route has
   not seen, so it reaches the workflow), twice too, all in a shuffled order (a seeded
   `random.Random`) and signed like Stripe signs them, once while the worker is down and once
   at the end: every answer must be 200 processed/duplicate/ignored, each id taken once;
2. the worker is SIGKILLed while two customers are in dunning between retries, and a new one
   started: dunning must finish as if nothing happened;
3. the emulator answers 500 or 429 (and once, late: the work done but the answer lost) to part
   of the worker's Stripe calls: Temporal's retry policy and the idempotency keys absorb them.

Each customer must then end exactly as an undisturbed run ends (`EXPECTED`, the outcome of
`test_stack.py`'s story), with one Stripe customer and one subscription, one succeeded charge
per paid invoice, a ledger equal to Stripe's charges, no email sent twice, and every workflow
Running or Completed. The run happens once (the `outcome` fixture); each test checks one
invariant, so a broken one does not hide the others.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.stack import Stack
from tests.e2e.disturbed import (
    COMPLETED,
    EXPECTED,
    FAULTS,
    NAMES,
    PAY_FAULTS,
    RUNNING,
    STRIPE_TIMEOUT_SECONDS,
    USERS,
    WEBHOOK_ANSWERS,
    Outcome,
    Run,
    expected_state,
    view_state,
)
from tests.helpers import free_ports

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ports = free_ports()
    running = Stack(
        Path(sys.executable), tmp_path_factory.mktemp("faults"), ports, demo=True, quiet=True
    )
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STRIPE_TIMEOUT_SECONDS", str(STRIPE_TIMEOUT_SECONDS))
        running.start()
    yield running
    running.stop()
    assert running.processes == []


@pytest.fixture(scope="module")
def outcome(stack: Stack) -> Outcome:
    sys.stdout.write(f"stack data and logs: {stack.data}\n")
    with (
        httpx.Client(base_url=stack.api_url, timeout=60) as api,
        httpx.Client(base_url=stack.stripe_url, timeout=30) as emulator,
    ):
        return Run(stack, api, emulator).play()


def test_the_disturbances_happened(outcome: Outcome) -> None:
    assert outcome.exited is None  # every process (the new worker too) is still up
    # The worker died while both were between their first failure and the first retry.
    for name in ("rita", "carl"):
        view = outcome.at_kill[name]
        assert (view["status"], view["failed_payment_attempts"]) == ("past_due", 1), view
        assert outcome.seconds_to_retry_at_kill[name] > 0, outcome.seconds_to_retry_at_kill
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


def test_every_webhook_answered_200_however_often_and_in_whatever_order(outcome: Outcome) -> None:
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


def test_final_state_is_the_undisturbed_one(outcome: Outcome) -> None:
    def stripe_status(name: str) -> str | None:
        wanted = outcome.views[name]["stripe_subscription_id"]
        return next((s["status"] for s in outcome.subscriptions[name] if s["id"] == wanted), None)

    actual = {name: (*view_state(outcome.views[name]), stripe_status(name)) for name in NAMES}
    expected = {name: (*expected_state(name), EXPECTED[name].stripe_status) for name in NAMES}
    assert actual == expected


def test_one_stripe_customer_and_one_subscription_each(outcome: Outcome) -> None:
    for name in NAMES:
        assert outcome.customers[name] == [outcome.views[name]["stripe_customer_id"]], name
        assert [s["id"] for s in outcome.subscriptions[name]] == [
            outcome.views[name]["stripe_subscription_id"]
        ], name


def test_no_double_charge_and_the_ledger_is_stripes(outcome: Outcome) -> None:
    for name in NAMES:
        invoices = {inv["number"]: inv for inv in outcome.invoices[name]}
        by_invoice: dict[str, Counter[str]] = {}
        for charge in outcome.charges[name]:
            invoice = invoices[charge["description"].removeprefix("Invoice ")]
            by_invoice.setdefault(invoice["id"], Counter())[charge["status"]] += 1
        paid = [i for i in outcome.invoices[name] if i["status"] == "paid" and i["amount_paid"]]
        for invoice in paid:
            assert by_invoice[invoice["id"]]["succeeded"] == 1, (name, invoice["id"], by_invoice)
        succeeded = sum(c["succeeded"] for c in by_invoice.values())
        failed = sum(c["failed"] for c in by_invoice.values())
        e = EXPECTED[name]
        assert (succeeded, failed) == (e.succeeded_charges, e.failed_charges), (name, by_invoice)

        # The ledger: one succeeded row per succeeded charge, with its amount; one failed row
        # per declined attempt, numbered as Stripe counted them.
        ledger = outcome.ledger[name]
        assert sorted(
            (row["invoice_id"], row["amount_minor"]) for row in ledger if row["kind"] == "succeeded"
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


def test_no_email_twice(outcome: Outcome) -> None:
    per_key = Counter(digest for _, _, digest in outcome.mails)
    twice = [mail for mail in outcome.mails if per_key[mail[2]] > 1]
    assert twice == [], twice
    for name in NAMES:
        kinds = Counter(kind for to, kind, _ in outcome.mails if to == f"{USERS[name]}@example.com")
        assert kinds == Counter(EXPECTED[name].emails), name


def test_every_workflow_is_running_or_completed(outcome: Outcome) -> None:
    for name in NAMES:
        statuses = outcome.workflows[name]
        assert statuses, name
        assert set(statuses) <= {RUNNING, COMPLETED}, (name, statuses)
        assert statuses[0] == EXPECTED[name].workflow, (name, statuses)
