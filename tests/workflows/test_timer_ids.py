"""A customer's workflow numbers its timers on replay as its history recorded them.

The stuck customer (`timer_ids_diverge_after_query_during_local_activity.json`, from a fault run):
a query answered while a local activity ran made SDK core report that workflow task early, and
hand the activity's result to the workflow in the next task, together with that task's signals.
Replay hands the result over in the earlier task, alone, before those signals (as the marker's
`activation_index` says), so the main loop paused there, and its `wait_condition(timeout=...)`
started and cancelled a timer the original run never started. Core sends neither command and
does not notice, but the workflow's later timers are numbered one higher than the server's ids,
and once a new worker replayed the history every task that cancelled a timer was refused
(`BadCancelTimerAttributes`). Runs with the `steady-wakeup-timer` patch start a timer only when
the time to wake up changes (`workflows/wakeup.py`), so a pause replay adds starts none.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import typing
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from temporalio import activity
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.payloads import Status
from core.temporal import ensure_search_attributes
from devtools.timer_ids import Recorder, TimerDivergence, compare, replayed_divergence
from tests.helpers import eventually
from tests.workflows.fakes import FakeMailbox, FakeStore, FakeStripe
from tests.workflows.helpers import HISTORIES, Handle, order, ref
from tests.workflows.test_replay import recorded
from workflows.subscription import SubscriptionWorkflow, workflow_id
from workflows.visibility import SEARCH_ATTRIBUTES

STUCK = HISTORIES / "timer_ids_diverge_after_query_during_local_activity.json"


async def test_the_stuck_customers_history_numbers_timers_differently_on_replay() -> None:
    """The check finds what the SDK misses: replay sends timer commands the history does not
    have. (Runs from before `steady-wakeup-timer` keep the old wait, so this stays.)"""
    history = WorkflowHistory.from_json(STUCK.stem, STUCK.read_text())
    assert await replayed_divergence(history) == TimerDivergence(
        # Task 35 had cancelled timer 2 and started none; replay starts timer 3 there, and the
        # timer the original run started as 3 (in task 42) is the code's timer 4.
        task=35,
        replayed=[("start", "3"), ("cancel", "3"), ("start", "4")],
        recorded=[("start", "3")],
    )


def test_timer_steps_a_task_early_on_replay_are_no_divergence() -> None:
    """Seen in CI: replay handed a local activity's result over a task earlier than the original
    run (as its marker says), and the timer commands that followed moved with it. Their ids are
    the server's: nothing breaks, nothing is reported."""
    moved = [("cancel", "1"), ("start", "2")]
    assert compare(recorded_by_task={45: [], 49: moved}, replayed_by_task={45: moved}) is None


def test_an_extra_timer_on_replay_is_a_divergence_from_its_task() -> None:
    assert compare(
        recorded_by_task={35: [("cancel", "2")], 42: [("start", "3")]},
        replayed_by_task={
            35: [("cancel", "2"), ("start", "3")],
            42: [("cancel", "3"), ("start", "4")],
        },
    ) == TimerDivergence(
        task=35,
        replayed=[("start", "3"), ("cancel", "3"), ("start", "4")],
        recorded=[("start", "3")],
    )


@pytest.mark.parametrize("path", [p for p in recorded() if p != STUCK], ids=lambda p: p.stem)
async def test_recorded_histories_number_timers_as_recorded(path: Any) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    assert await replayed_divergence(history) is None


class Gate:
    """Holds an activity or a query until the test opens it, and tells where it got to."""

    def __init__(self) -> None:
        self.reached = threading.Event()
        self.passed = threading.Event()
        self.opened = threading.Event()

    def hold(self) -> None:
        """On a workflow thread (a query): held there, Core sees a query not yet answered."""
        self.reached.set()
        self.opened.wait(10)

    async def hold_async(self) -> None:
        """In an activity."""
        self.reached.set()
        while not self.opened.is_set():
            await asyncio.sleep(0.01)


async def until(event: threading.Event, what: str) -> None:
    def reached() -> bool:
        assert event.is_set(), f"waiting for {what}"
        return True

    await eventually(reached, timeout=20)


def gated(fn: Callable[..., Any], before: Gate | None = None, after: Gate | None = None) -> Any:
    """The fake activity `fn` under its own name, held at `before`, reporting to `after`."""
    name = activity._Definition.must_from_callable(fn).name

    async def call(*args: Any) -> Any:
        if before:
            await before.hold_async()
        result = await fn(*args)
        if after:
            after.passed.set()
        return result

    call.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    call.__annotations__ = typing.get_type_hints(fn)
    return activity.defn(name=name)(call)


async def task_failures(handle: Handle) -> list[str]:
    history = await handle.fetch_history()
    return [
        e.workflow_task_failed_event_attributes.failure.message
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]


async def test_a_query_during_a_local_activity_leaves_the_timer_ids_as_recorded(
    dev_server: WorkflowEnvironment,
) -> None:
    """The fault run's story on a real server: a query answered while a local activity runs,
    a signal arriving meanwhile; then a new worker replays the history, and the workflow cancels
    its timer (the trial ends: no trial reminder to wait for)."""
    client = dev_server.client
    await ensure_search_attributes(client, SEARCH_ATTRIBUTES)
    stripe, mail, store = FakeStripe(), FakeMailbox(), FakeStore()
    customer_read, subscription_read, query = Gate(), Gate(), Gate()
    activities = [
        gated(a, before=customer_read)
        if a == stripe.get_customer
        else gated(a, after=subscription_read)
        if a == stripe.get_subscription
        else a
        for a in stripe.activities()
    ]
    activities += [mail.send_email, store.record]
    queue = f"billing-{uuid.uuid4()}"
    start = order(trial_days=14)  # a trial: the workflow waits on a timer for the reminder
    recorder = Recorder(on_query=query.hold)

    async with Worker(
        client,
        task_queue=queue,
        workflows=[SubscriptionWorkflow],
        activities=activities,
        workflow_runner=recorder.runner(),
    ):
        handle = await client.start_workflow(
            SubscriptionWorkflow.run, start, id=workflow_id(start.user_id), task_queue=queue
        )
        await handle.execute_update(SubscriptionWorkflow.subscription_ready)
        customer, sub = stripe.sub["customer"], stripe.sub["id"]

        # A workflow task held by a slow local activity (the customer re-read)...
        await handle.signal(SubscriptionWorkflow.stripe_event, ref("customer.updated", customer))
        await until(customer_read.reached, "the customer re-read")
        # ...while a query and a signal arrive: the server hands both to the next task.
        asked = asyncio.create_task(handle.query(SubscriptionWorkflow.view))
        await asyncio.sleep(1)  # the query reaches the server, which keeps it for that task
        await handle.signal(
            SubscriptionWorkflow.stripe_event, ref("customer.subscription.created", sub)
        )
        customer_read.opened.set()
        # That task: the signal starts a local activity (the subscription re-read), and Core
        # asks the query while it runs. The query is held until the activity has resolved and
        # another signal has arrived (briefly: a workflow thread held 2s counts as deadlocked).
        await until(query.reached, "the query")
        await until(subscription_read.passed, "the subscription re-read")
        await handle.signal(
            SubscriptionWorkflow.stripe_event, ref("customer.subscription.updated", sub)
        )
        await asyncio.sleep(0.3)  # Core takes in the activity's result
        query.opened.set()
        await asyncio.wait_for(asked, 20)
        await handle.query(SubscriptionWorkflow.view)  # answered once the last task completed

        # What the fault run did: Core reported the task to answer the query, and handed the
        # activity's result to the workflow in the next task, with the signal.
        assert any(
            not a.replaying
            and "signal_workflow" in a.jobs
            and any(job.startswith("resolve_activity") for job in a.jobs)
            for a in recorder.activations
        ), "the story did not happen: no activity result came in with a signal"

    # A new worker replays the history (no cache: on every task), and the trial ends.
    async with Worker(
        client,
        task_queue=queue,
        workflows=[SubscriptionWorkflow],
        activities=activities,
        max_cached_workflows=0,
    ):
        stripe.end_trial(paid=True)
        await handle.signal(
            SubscriptionWorkflow.stripe_event, ref("customer.subscription.updated", sub)
        )

        async def active() -> bool:
            if failures := await task_failures(handle):
                pytest.fail(f"the workflow's tasks fail: {failures}")
            try:
                view = await handle.query(SubscriptionWorkflow.view)
            except RPCError:  # a task in flight failed: the next look shows why
                return False
            return view.status == Status.ACTIVE

        await eventually(active, timeout=30, interval=0.5)

    history = await handle.fetch_history()
    assert any(e.event_type == EventType.EVENT_TYPE_TIMER_CANCELED for e in history.events)
    assert await replayed_divergence(history) is None
