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
per paid invoice, one outcome per idempotency key, a ledger and a read model equal to Stripe's,
no email sent twice, and every workflow Running or Completed. The run happens once (the
`outcome` fixture); each test (`Invariants`, shared with test_replicas.py) checks one
invariant, so a broken one does not hide the others.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.disturbed import Invariants, Outcome, play, running_stack

pytestmark = pytest.mark.timeout(420)


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    with running_stack(tmp_path_factory.mktemp("faults")) as stack:
        yield play(stack)


class TestFaults(Invariants):
    """One API, one worker (killed and started again), the embedded SQLite database."""
