"""`python3 dev.py replay` against Temporal's dev server (visibility queries need it; the
time-skipping server has none): running customers replay on today's code, a change that breaks
them is named, and a change behind `workflow.patched` is not."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.payloads import SubscriptionView
from core.state import StartSubscription
from devtools.replay import DIVERGES, REPLAYS, UNREADABLE, command
from tests.helpers import BIN, eventually, free_port
from tests.workflows.helpers import on_fakes, order, view_when
from workflows.subscription import SubscriptionWorkflow, workflow_id
from workflows.visibility import SEARCH_ATTRIBUTES


@workflow.defn(name="SubscriptionWorkflow", sandboxed=False)
class WaitsFirst(SubscriptionWorkflow):
    """A release that waits a minute before the lifecycle, without a patch: running customers
    already did their first steps without that timer, so their histories no longer match."""

    @workflow.run
    async def run(self, start: StartSubscription) -> SubscriptionView:
        await workflow.sleep(timedelta(minutes=1))
        return await super().run(start)


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[WorkflowEnvironment]:
    """A dev server of this module's own, so the default query sees only its customers."""
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(BIN / "temporal"),
        data_converter=pydantic_data_converter,
        dev_server_log_level="error",
        search_attributes=SEARCH_ATTRIBUTES,
    )
    yield env
    await env.shutdown()


@pytest.fixture(scope="module")
def address(server: WorkflowEnvironment) -> str:
    return server.client.service_client.config.target_host


@pytest.fixture(scope="module")
async def customers(server: WorkflowEnvironment) -> list[str]:
    """Three running customers, their workers gone: one paying, one on trial, one in dunning
    (a retry timer pending)."""
    suffix = uuid.uuid4().hex[:6]
    paying = order(user_id=f"paying-{suffix}")
    trial = order(user_id=f"trial-{suffix}", trial_days=14)
    dunning = order(user_id=f"dunning-{suffix}", payment_method_id="pm_card_chargeCustomerFail")
    for start in (paying, trial, dunning):
        async with on_fakes(server, start) as (handle, _, _):
            if start is dunning:
                await view_when(handle, lambda v: v.failed_payment_attempts == 1)
    ids = [workflow_id(start.user_id) for start in (paying, trial, dunning)]

    async def all_listed() -> bool:
        return (await server.client.count_workflows("ExecutionStatus = 'Running'")).count == 3

    await eventually(all_listed)
    return ids


async def test_running_customers_replay_on_this_code(
    address: str, customers: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await command(["--address", address]) == REPLAYS
    out = capsys.readouterr().out
    assert "replaying 3 of 3 workflows matching" in out
    assert "all 3 replay on this code" in out
    assert "DIVERGES" not in out


async def test_an_unpatched_change_is_named_per_customer(
    address: str, customers: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await command(["--address", address], workflows=[WaitsFirst]) == DIVERGES
    out = capsys.readouterr().out
    for customer in customers:
        assert f"DIVERGES {customer} (run " in out
    assert out.count("NondeterminismError: ") == 3
    assert "3 of 3 would break on this code" in out


async def test_the_limit_says_what_it_left_out(
    address: str, customers: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert await command(["--address", address, "--limit", "2"]) == REPLAYS
    out = capsys.readouterr().out
    assert "replaying 2 of 3 workflows" in out
    assert "1 more match: raise --limit" in out


async def test_no_match_replays_nothing_and_says_so(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await command(["--address", address, "--query", "WorkflowId = 'nobody'"]) == REPLAYS
    assert "nothing replayed: no workflow matches the query" in capsys.readouterr().out


async def test_temporal_unreachable_is_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    address = f"127.0.0.1:{free_port()}"
    assert await command(["--address", address]) == UNREADABLE
    assert f"cannot reach Temporal at {address} (namespace default)" in capsys.readouterr().out


async def test_a_query_the_server_refuses_is_status_2(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await command(["--address", address, "--query", "NoSuchField = 'x'"]) == UNREADABLE
    assert "cannot read the workflows on Temporal at" in capsys.readouterr().out


async def run_until_its_timer(
    server: WorkflowEnvironment, version: type, name: str
) -> tuple[str, str | None]:
    """Run one `name` workflow on `version` until its timer is started, its worker then gone:
    (workflow id, run id)."""
    queue, workflow_id = f"{name}-{uuid.uuid4()}", f"{name}-{uuid.uuid4()}"
    async with Worker(server.client, task_queue=queue, workflows=[version]):
        handle = await server.client.start_workflow(name, id=workflow_id, task_queue=queue)

        async def timer_started() -> bool:
            history = await handle.fetch_history()
            return any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in history.events)

        await eventually(timer_started)
    return workflow_id, handle.result_run_id


# --- `workflow.patched`, shown once ---------------------------------------------------------
# Version 1 waits an hour. Version 2 greets the customer first: new runs greet, and runs that
# started on version 1 must replay without the greeting, so the change is behind a patch.


@workflow.defn(name="Greeting", sandboxed=False)
class GreetingV1:
    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(timedelta(hours=1))


@workflow.defn(name="Greeting", sandboxed=False)
class GreetingV2Patched:
    @workflow.run
    async def run(self) -> None:
        # False when replaying a run that started without the patch, True from then on.
        if workflow.patched("greet-first"):
            await workflow.execute_activity("greet", start_to_close_timeout=timedelta(seconds=5))
        await workflow.sleep(timedelta(hours=1))


@workflow.defn(name="Greeting", sandboxed=False)
class GreetingV2Unpatched:
    @workflow.run
    async def run(self) -> None:
        await workflow.execute_activity("greet", start_to_close_timeout=timedelta(seconds=5))
        await workflow.sleep(timedelta(hours=1))


async def test_a_change_behind_workflow_patched_replays_and_the_same_change_without_does_not(
    server: WorkflowEnvironment, address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    greeting, run_id = await run_until_its_timer(server, GreetingV1, "Greeting")
    only_v1 = ["--address", address, "--query", f"WorkflowId = '{greeting}'"]

    assert await command(only_v1, workflows=[GreetingV2Patched]) == REPLAYS
    assert "all 1 replay on this code" in capsys.readouterr().out

    assert await command(only_v1, workflows=[GreetingV2Unpatched]) == DIVERGES
    out = capsys.readouterr().out
    assert f"DIVERGES {greeting} (run {run_id})" in out
    assert "NondeterminismError: " in out


# --- timer ids, which the SDK's replayer does not compare -------------------------------------
# A release that drops a wait whose condition was always already true: it started and cancelled
# a timer in one activation, so no event shows it, but it took timer number 1. Replay passes;
# the next timer cancel would not (README, "Timer ids").


@workflow.defn(name="Blip", sandboxed=False)
class BlipV1:
    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: True, timeout=timedelta(hours=1))
        await workflow.sleep(timedelta(hours=1))


@workflow.defn(name="Blip", sandboxed=False)
class BlipV2:
    @workflow.run
    async def run(self) -> None:
        await workflow.sleep(timedelta(hours=1))


async def test_timers_numbered_otherwise_are_named_with_the_reset_that_rescues_them(
    server: WorkflowEnvironment, address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    blip, run_id = await run_until_its_timer(server, BlipV1, "Blip")
    only_blip = ["--address", address, "--query", f"WorkflowId = '{blip}'"]

    assert await command(only_blip, workflows=[BlipV1]) == REPLAYS
    assert "all 1 replay on this code" in capsys.readouterr().out

    assert await command(only_blip, workflows=[BlipV2]) == DIVERGES
    out = capsys.readouterr().out
    assert f"DIVERGES {blip} (run {run_id})" in out
    assert "TimerIdsDiverge: from the workflow task started at event 3" in out
    assert "(replay sends [start timer 1], the history has [start timer 2])" in out
    assert f"temporal workflow reset -w {blip} --event-id 4 " in out
