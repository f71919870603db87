"""`python3 dev.py replay`: before a deploy, replay the running workflows' histories on this
checkout's workflow code, set up as the worker sets it up, and name every run that would break.

Read-only: it counts and lists workflows by a visibility query and reads their histories;
nothing is started, signalled or changed. Exit status 0 when every history replays, 1 when one
or more diverge, 2 when the histories could not be read (Temporal unreachable, an unknown
namespace, a query the server refuses).
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections import deque
from collections.abc import AsyncGenerator, Sequence
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache

from temporalio.client import Client, WorkflowExecution, WorkflowHistory
from temporalio.runtime import LoggingConfig, Runtime, TelemetryConfig, TelemetryFilter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, WorkflowRunner

from core.settings import get_settings
from core.temporal import connect
from devtools.timer_ids import Activation, Recorder, describe, timer_divergence
from worker import SANDBOX, WORKFLOWS

DEFAULT_QUERY = "WorkflowType = 'SubscriptionWorkflow' AND ExecutionStatus = 'Running'"
DEFAULT_LIMIT = 200
# Histories read ahead while one replays: reading waits on the network, replaying on the CPU.
# Bounded, so hundreds of histories are never all held at once.
READ_AHEAD = 8
PROGRESS_EVERY = 50
# A server that drops packets would otherwise hang the command instead of failing it.
CONNECT_TIMEOUT_SECONDS = 10.0
RPC_TIMEOUT = timedelta(seconds=30)
# The SDK's core prints its failure with the message inside; the message is what tells.
CORE_MESSAGE = re.compile(r'message: "((?:[^"\\]|\\.)*)"')

REPLAYS, DIVERGES, UNREADABLE = 0, 1, 2


@dataclass(frozen=True)
class Divergence:
    """A run the current code does not replay, and the replayer's first complaint about it."""

    workflow_id: str
    run_id: str
    message: str


@dataclass
class Report:
    """What one replay found; `matching` may exceed `replayed` when the limit cut the list."""

    matching: int
    replayed: int = 0
    gone: int = 0
    divergences: list[Divergence] = field(default_factory=list)


async def replay_running(
    client: Client,
    query: str = DEFAULT_QUERY,
    limit: int = DEFAULT_LIMIT,
    *,
    workflows: Sequence[type] = WORKFLOWS,
    runner: WorkflowRunner = SANDBOX,
) -> Report:
    """Replay the histories `query` lists (at most `limit`) on `workflows`, printing as it goes."""
    report = Report(matching=(await client.count_workflows(query, rpc_timeout=RPC_TIMEOUT)).count)
    print(
        f"replaying {min(report.matching, limit)} of {report.matching} workflows matching "
        f"{query!r} (namespace {client.namespace})",
        flush=True,
    )
    # The worker's own converter comes with the client `connect` made; the namespace is the
    # real one in case a workflow reads it.
    recorder = Recorder()
    replayer = Replayer(
        workflows=workflows,
        workflow_runner=recorder.runner(runner),
        unsandboxed_workflow_runner=recorder.runner(UnsandboxedWorkflowRunner()),
        data_converter=client.data_converter,
        namespace=client.namespace,
        runtime=_quiet_runtime(),
    )
    # The run listed, by history: a history names its first run, which a reset changes.
    runs: dict[int, str] = {}
    started = time.monotonic()
    async with (
        aclosing(_histories(client, query, limit, runs, report)) as histories,
        replayer.workflow_replay_iterator(histories) as results,
    ):
        async for result in results:
            report.replayed += 1
            run_id = runs.pop(id(result.history))
            activations = recorder.take()  # this history's
            problem = (
                _describe(result.replay_failure)
                if result.replay_failure is not None
                else _timer_ids(result.history, activations)
            )
            if problem is not None:
                divergence = Divergence(result.history.workflow_id, run_id, problem)
                report.divergences.append(divergence)
                print(
                    f"DIVERGES {divergence.workflow_id} (run {divergence.run_id}):\n"
                    f"    {divergence.message}",
                    flush=True,
                )
            if report.replayed % PROGRESS_EVERY == 0:
                _progress(report, started)
    if report.replayed % PROGRESS_EVERY or not report.replayed:
        _progress(report, started)
    return report


async def _histories(
    client: Client, query: str, limit: int, runs: dict[int, str], report: Report
) -> AsyncGenerator[WorkflowHistory, None]:
    """The listed runs' histories in the server's order, a few read ahead."""

    async def read(execution: WorkflowExecution) -> WorkflowHistory | None:
        handle = client.get_workflow_handle(execution.id, run_id=execution.run_id)
        try:
            history = await handle.fetch_history(rpc_timeout=RPC_TIMEOUT)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            # Deleted between the listing and the read: nothing left to break.
            report.gone += 1
            print(f"gone {execution.id} (run {execution.run_id}): deleted since listed", flush=True)
            return None
        runs[id(history)] = execution.run_id
        return history

    ahead: deque[asyncio.Task[WorkflowHistory | None]] = deque()
    listing = client.list_workflows(
        query, limit=limit, page_size=min(limit, 100), rpc_timeout=RPC_TIMEOUT
    )
    try:
        async for execution in listing:
            ahead.append(asyncio.create_task(read(execution)))
            if len(ahead) >= READ_AHEAD and (history := await ahead.popleft()):
                yield history
        while ahead:
            if history := await ahead.popleft():
                yield history
    finally:
        for task in ahead:
            task.cancel()


@cache
def _quiet_runtime() -> Runtime:
    """A runtime for the replayer whose core logs errors only: its warning for each divergence
    would repeat, in Rust's debug format, what the command prints."""
    quiet = TelemetryFilter(core_level="ERROR", other_level="ERROR")
    return Runtime(telemetry=TelemetryConfig(logging=LoggingConfig(filter=quiet)))


def _timer_ids(history: WorkflowHistory, activations: list[Activation]) -> str | None:
    """A history that replays but whose timers this code numbers otherwise: the SDK does not
    notice, and the run fails at its next timer cancel (README, "Timer ids")."""
    found = timer_divergence(history, activations)
    return describe(history, found) if found else None


def _describe(failure: Exception) -> str:
    """The replayer's complaint, named by its kind: core's own message when it wrapped one."""
    found = CORE_MESSAGE.search(str(failure))
    text = found.group(1).replace('\\"', '"') if found else str(failure)
    return f"{type(failure).__name__}: " + "\n    ".join(text.splitlines())


def _progress(report: Report, started: float) -> None:
    print(
        f"replayed {report.replayed}, {len(report.divergences)} diverge "
        f"({time.monotonic() - started:.1f} s)",
        flush=True,
    )


def parse(argv: Sequence[str]) -> argparse.Namespace:
    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python3 dev.py replay",
        description="Replay running workflows' histories on this checkout's workflow code "
        "(read-only). Run it against production's Temporal before each deploy: exit 0 when "
        "all replay, 1 when some diverge (each named), 2 when Temporal cannot be read.",
    )
    parser.add_argument(
        "--address",
        metavar="HOST:PORT",
        default=settings.temporal_address,
        help=f"Temporal's frontend (TEMPORAL_ADDRESS; now {settings.temporal_address})",
    )
    parser.add_argument(
        "--namespace",
        metavar="NS",
        default=settings.temporal_namespace,
        help=f"the namespace (TEMPORAL_NAMESPACE; now {settings.temporal_namespace})",
    )
    parser.add_argument(
        "--query",
        default=DEFAULT_QUERY,
        help="a visibility query for the workflows to replay; add e.g. "
        "\"AND StartTime > '2026-11-01T00:00:00Z'\" for the recent ones only "
        f"(default: {DEFAULT_QUERY})",
    )
    parser.add_argument(
        "--limit",
        type=_positive,
        metavar="N",
        default=DEFAULT_LIMIT,
        help=f"replay at most N, newest first as the server lists them (default {DEFAULT_LIMIT})",
    )
    return parser.parse_args(argv)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


async def command(argv: Sequence[str], *, workflows: Sequence[type] = WORKFLOWS) -> int:
    """The command with its arguments; the exit status."""
    args = parse(argv)
    settings = get_settings().model_copy(
        update={"temporal_address": args.address, "temporal_namespace": args.namespace}
    )
    where = f"Temporal at {args.address} (namespace {args.namespace})"
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
            client = await connect(settings)
    except (RuntimeError, TimeoutError) as err:
        print(f"cannot reach {where}: {err or 'no answer'}", flush=True)
        return UNREADABLE
    try:
        report = await replay_running(client, args.query, args.limit, workflows=workflows)
    except RPCError as err:
        print(f"cannot read the workflows on {where}: {err.status.name}: {err}", flush=True)
        return UNREADABLE
    if not report.replayed:
        print("nothing replayed: no workflow matches the query", flush=True)
        return REPLAYS
    if report.matching > report.replayed + report.gone:
        print(f"{report.matching - report.replayed - report.gone} more match: raise --limit")
    if report.divergences:
        print(
            f"{len(report.divergences)} of {report.replayed} would break on this code "
            "(named above): do not deploy it; put the change behind workflow.patched(...)",
            flush=True,
        )
        return DIVERGES
    print(f"all {report.replayed} replay on this code", flush=True)
    return REPLAYS


def main(argv: Sequence[str]) -> int:
    return asyncio.run(command(argv))
