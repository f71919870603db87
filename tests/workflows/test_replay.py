"""Recorded histories replay on today's workflow code, so a change that breaks running
workflows fails CI. They are recorded by `python -m tests.workflows.record_histories`; record
anew only for an intended change that is versioned for the workflows already running.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from tests.workflows.helpers import HISTORIES
from workflows.subscription import SubscriptionWorkflow


def recorded() -> list[Path]:
    return sorted(HISTORIES.glob("*.json"))


async def test_histories_are_recorded() -> None:
    assert {p.stem for p in recorded()} >= {"dunning_to_cancel", "trial_plan_change_recovery"}


@pytest.mark.parametrize("path", recorded(), ids=lambda p: p.stem)
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    replayer = Replayer(workflows=[SubscriptionWorkflow], data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
