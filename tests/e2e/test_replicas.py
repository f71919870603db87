"""Replicas, end to end: two API processes and two workers on one PostgreSQL database and one
Temporal server (the dev server), as a deployment runs them, through test_faults.py's disturbed
story (`tests.e2e.disturbed`): five customers, every Stripe event re-posted and shuffled, Stripe
calls failing, and one worker SIGKILLed while two customers are in dunning between retries.

The requests take turns between the two APIs (creates, reads, steering, the re-posted events;
two copies of one event may reach both at once), and the emulator delivers every event to each
API (one webhook endpoint each), so each event is taken by one and is a duplicate at the other.
The worker that ran the dunning customers' last workflow tasks is killed and not started again:
the other one must carry their dunning on (its sticky queue and cache lost, their timers and
tasks reach the survivor through the shared task queue).

Each customer must end exactly as on one API and one worker (`EXPECTED`), with the same
invariants as test_faults.py (`Invariants`: no duplicate Stripe write, one outcome per
idempotency key, no email twice, workflows Running or Completed, ledger and read model equal to
Stripe's), plus the checks below that the replicas really shared the work.

It needs PostgreSQL (TEST_DATABASE_URL, as the other PostgreSQL tests; CI always sets it): it
makes its own database there and drops it afterwards.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.e2e.disturbed import DUNNING, Invariants, Outcome, play, running_stack
from tests.helpers import free_port, fresh_postgres_database

DATABASE = os.environ.get("TEST_DATABASE_URL")
pytestmark = [
    pytest.mark.timeout(300),
    pytest.mark.skipif(DATABASE is None, reason="replicas share PostgreSQL: TEST_DATABASE_URL"),
]


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outcome]:
    assert DATABASE is not None
    with (
        fresh_postgres_database(DATABASE) as database_url,
        running_stack(
            tmp_path_factory.mktemp("replicas"),
            database_url=database_url,
            extra_api_ports=(free_port(),),
            extra_worker_metrics_ports=(free_port(),),
        ) as stack,
    ):
        yield play(stack)


class TestReplicas(Invariants):
    """Two APIs and two workers (one killed for good) on PostgreSQL."""

    def test_both_apis_served_the_story(self, outcome: Outcome) -> None:
        """Each API process answered its turns of the creates, reads and steering, and its
        share of the re-posted events, with success; none answered 5xx, not even while a
        worker was dead (the reads are workflow queries, answered by the worker left)."""
        served = {api for api, _, code in outcome.calls if code < 300}
        assert served == {0, 1}, outcome.calls
        storm_answers = {a.api for answers in outcome.storms for a in answers if a.code == 200}
        assert storm_answers == {0, 1}
        assert [call for call in outcome.calls if call[2] >= 500] == []

    def test_the_other_worker_carried_the_dunning_on_alone(self, outcome: Outcome) -> None:
        """After the kill, every workflow task and activity of the customers in dunning ran
        on the worker that was left (started with the stack, not a restart), and the killed
        one was not started again."""
        survivors = set(outcome.workers.values()) - {outcome.killed}
        assert (len(outcome.workers), len(survivors)) == (2, 1), outcome.workers
        ran = {
            name: {outcome.workers.get(i, i) for i in outcome.ran_after_kill[name]}
            for name in DUNNING
        }
        assert ran == {name: survivors for name in DUNNING}
        assert [n for n in outcome.running if n.startswith("worker")] == sorted(survivors)
