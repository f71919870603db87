"""A customer's workflow numbers its timers on replay as its history recorded them.

The stuck customer (`timer_ids_diverge_after_query_during_local_activity.json`, from a fault run):
after a worker restart every workflow task that cancelled a timer was refused
(`BadCancelTimerAttributes`): replay had started and cancelled a timer the original run never
started, which SDK core sends no command for and does not notice, and numbered every later timer
one higher than the server's ids.
"""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.client import WorkflowHistory

from tests.workflows.activations import timer_id_mismatches
from tests.workflows.helpers import HISTORIES
from tests.workflows.test_replay import recorded

STUCK = HISTORIES / "timer_ids_diverge_after_query_during_local_activity.json"


async def test_the_stuck_customers_history_numbers_timers_differently_on_replay() -> None:
    """The check finds what the SDK misses: replay sends timer commands the history does not
    have."""
    history = WorkflowHistory.from_json(STUCK.stem, STUCK.read_text())
    assert await timer_id_mismatches(history) == {
        # Task 35 had cancelled timer 2 and started none; replay starts timer 3 there...
        35: ([("cancel", "2"), ("start", "3")], [("cancel", "2")]),
        # ...so the timer the original run started as 3 is the code's timer 4.
        42: ([("cancel", "3"), ("start", "4")], [("start", "3")]),
    }


@pytest.mark.parametrize("path", [p for p in recorded() if p != STUCK], ids=lambda p: p.stem)
async def test_recorded_histories_number_timers_as_recorded(path: Any) -> None:
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    assert await timer_id_mismatches(history) == {}
