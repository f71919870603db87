"""What workflow code is handed and answers, activation by activation, and a check the SDK lacks:
that on replay the workflow numbers its timers as the history recorded them (`dev.py replay`
runs it on every history it replays; the tests on the recorded ones).

Temporal's SDK core matches a replayed `StartTimer` with the history's `TimerStarted` without
comparing the timer's number (its sequence number) with the event's timer id, and a timer the
code starts and cancels within a workflow task leaves no event at all. So replay passes when the
code numbers its timers differently from the original run, and the difference shows only when
the workflow cancels a timer: the server is asked to cancel an id it does not have
(`BadCancelTimerAttributes`) and every workflow task fails from then on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from temporalio.bridge.proto.workflow_activation import WorkflowActivation
from temporalio.bridge.proto.workflow_completion import WorkflowActivationCompletion
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import (
    Replayer,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
)

from worker import SANDBOX
from workflows.subscription import SubscriptionWorkflow

# ("start" | "cancel", timer id): a timer command that reaches the server, or its event.
TimerStep = tuple[str, str]


@dataclass(frozen=True)
class Activation:
    """One activation: the workflow task it belongs to (its started event id), its jobs and the
    commands the code answered with, as `name(seq)` strings."""

    task: int
    replaying: bool
    jobs: list[str]
    commands: list[str]


def _with_seq(kind: str, message: object) -> str:
    seq = getattr(message, "seq", None)
    return f"{kind}({seq})" if isinstance(seq, int) and seq else kind


@dataclass
class Recorder:
    """The activations of the workflow runs a worker (or replayer) runs with `runner()`.

    `on_query` runs before a query-only activation reaches the workflow (on the workflow's
    thread): a test can hold the query there, as a slow query would be held."""

    activations: list[Activation] = field(default_factory=list)
    on_query: Callable[[], None] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def runner(self, inner: WorkflowRunner | None = None) -> WorkflowRunner:
        """`inner` (the worker's own sandbox by default), each instance wrapped to record."""
        return _RecordingRunner(inner or SANDBOX, self)

    def take(self) -> list[Activation]:
        """The activations recorded so far, forgotten here (a replayer replays one history at
        a time: what it recorded since the last result is that history's)."""
        with self._lock:
            taken, self.activations = self.activations, []
        return taken

    def _record(self, act: WorkflowActivation, done: WorkflowActivationCompletion) -> None:
        jobs = [
            _with_seq(kind, getattr(job, kind))
            for job in act.jobs
            if (kind := job.WhichOneof("variant"))
        ]
        commands = [
            _with_seq(name, getattr(command, name))
            for command in done.successful.commands
            if (name := command.WhichOneof("variant"))
        ]
        with self._lock:
            self.activations.append(
                Activation(act.history_length, act.is_replaying, jobs, commands)
            )


class _RecordingInstance(WorkflowInstance):
    def __init__(self, inner: WorkflowInstance, recorder: Recorder) -> None:
        self.inner = inner
        self.recorder = recorder

    def activate(self, act: WorkflowActivation) -> WorkflowActivationCompletion:
        queries_only = bool(act.jobs) and all(j.HasField("query_workflow") for j in act.jobs)
        if queries_only and self.recorder.on_query:
            self.recorder.on_query()
        done = self.inner.activate(act)
        self.recorder._record(act, done)
        return done

    def get_serialization_context(self, command_info: Any) -> Any:
        return self.inner.get_serialization_context(command_info)

    def get_external_store_context(self, command_info: Any) -> Any:
        return self.inner.get_external_store_context(command_info)

    def get_info(self) -> Any:
        return self.inner.get_info()

    def get_thread_id(self) -> int | None:
        return self.inner.get_thread_id()


class _RecordingRunner(WorkflowRunner):
    """A runner whose instances record their activations."""

    def __init__(self, inner: WorkflowRunner, recorder: Recorder) -> None:
        self.inner = inner
        self.recorder = recorder

    def prepare_workflow(self, defn: Any) -> None:
        self.inner.prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        return _RecordingInstance(self.inner.create_instance(det), self.recorder)

    def set_worker_level_failure_exception_types(self, types: Any) -> None:
        self.inner.set_worker_level_failure_exception_types(types)


def recorded_timer_steps(history: WorkflowHistory) -> dict[int, list[TimerStep]]:
    """The timer events of each completed workflow task (by its started event id), in order."""
    # A command's event names the completion it came with; the time-skipping test server leaves
    # the ids out, but its events follow their completion all the same.
    started_of: dict[int, int] = {}  # completed event id -> started event id
    last_started = completed = 0
    steps: dict[int, list[TimerStep]] = {}
    for event in history.events:
        if event.HasField("workflow_task_started_event_attributes"):
            last_started = event.event_id
        elif event.HasField("workflow_task_completed_event_attributes"):
            completed = event.event_id
            started = event.workflow_task_completed_event_attributes.started_event_id
            started_of[completed] = started or last_started
            steps[started_of[completed]] = []
        elif event.HasField("timer_started_event_attributes"):
            attrs = event.timer_started_event_attributes
            task = started_of.get(attrs.workflow_task_completed_event_id, started_of[completed])
            steps[task].append(("start", attrs.timer_id))
        elif event.HasField("timer_canceled_event_attributes"):
            canceled = event.timer_canceled_event_attributes
            task = started_of.get(canceled.workflow_task_completed_event_id, started_of[completed])
            steps[task].append(("cancel", canceled.timer_id))
    return steps


def replayed_timer_steps(activations: list[Activation]) -> dict[int, list[TimerStep]]:
    """The timer commands each workflow task's activations would send, as SDK core sends them:
    a timer started and cancelled within one workflow task sends neither command."""
    steps: dict[int, list[TimerStep]] = {}
    for act in activations:
        task = steps.setdefault(act.task, [])
        for command in act.commands:
            kind, _, rest = command.partition("(")
            seq = rest.rstrip(")")
            if kind == "start_timer":
                task.append(("start", seq))
            elif kind == "cancel_timer":
                if ("start", seq) in task:
                    task.remove(("start", seq))
                else:
                    task.append(("cancel", seq))
    return steps


@dataclass(frozen=True)
class TimerDivergence:
    """Where replay's timer commands and the history's timer events part: the workflow task
    (its started event id) from which they differ, and each side's steps from there on."""

    task: int
    replayed: list[TimerStep]
    recorded: list[TimerStep]


def timer_divergence(
    history: WorkflowHistory, activations: list[Activation]
) -> TimerDivergence | None:
    """Whether the timer commands replay sends (`activations`) are, in order, the timer events
    the history recorded. Only the order counts, not the workflow task: SDK core may hand a
    local activity's result over a task earlier on replay than it did (the marker's
    `activation_index`), and a timer command that follows moves with it, harmlessly as long as
    its id is the one the server has."""
    return compare(
        recorded_timer_steps(history),
        replayed_timer_steps([a for a in activations if a.replaying]),
    )


def compare(
    recorded_by_task: dict[int, list[TimerStep]], replayed_by_task: dict[int, list[TimerStep]]
) -> TimerDivergence | None:
    """The two sides' timer steps, by workflow task, compared in order."""
    recorded, replayed = _in_order(recorded_by_task), _in_order(replayed_by_task)
    if [step for _, step in recorded] == [step for _, step in replayed]:
        return None
    first = next(
        (n for n, pair in enumerate(zip(recorded, replayed, strict=False)) if pair[0] != pair[1]),
        min(len(recorded), len(replayed)),
    )
    return TimerDivergence(
        task=min(task for task, _ in recorded[first : first + 1] + replayed[first : first + 1]),
        replayed=[step for _, step in replayed[first:]],
        recorded=[step for _, step in recorded[first:]],
    )


def _in_order(steps: dict[int, list[TimerStep]]) -> list[tuple[int, TimerStep]]:
    return [(task, step) for task in sorted(steps) for step in steps[task]]


def describe(history: WorkflowHistory, found: TimerDivergence) -> str:
    """What an operator needs: where the numbering first differs, what it breaks, the reset."""
    completed = next(
        e.event_id
        for e in history.events
        if e.HasField("workflow_task_completed_event_attributes") and e.event_id > found.task
    )
    return (
        f"TimerIdsDiverge: from the workflow task started at event {found.task}, this code "
        f"numbers the run's timers differently from its history (replay sends "
        f"{_shown(found.replayed)}, the history has {_shown(found.recorded)}): the next timer "
        "it cancels will be refused (BadCancelTimerAttributes) and the workflow will stand "
        f"still. Reset it: temporal workflow reset -w {history.workflow_id} --event-id "
        f'{completed} --reason "timer ids diverged"'
    )


def _shown(steps: list[TimerStep]) -> str:
    return "[" + ", ".join(f"{kind} timer {seq}" for kind, seq in steps) + "]"


async def replayed_divergence(history: WorkflowHistory) -> TimerDivergence | None:
    """Replay the history on the subscription workflow and compare its timers."""
    recorder = Recorder()
    replayer = Replayer(
        workflows=[SubscriptionWorkflow],
        data_converter=pydantic_data_converter,
        workflow_runner=recorder.runner(),
    )
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, result.replay_failure
    return timer_divergence(history, recorder.take())
