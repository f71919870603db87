"""The subscription workflow's wake-up: one durable timer for the next thing it does by itself.

Temporal's SDK numbers a workflow's timers in the order its code starts them, and on replay it
does not compare those numbers with the timer ids in the history. A timer that replay starts and
cancels before it reaches the server, where the original run started none, leaves no trace but
shifts every later number; the next timer the workflow cancels is then one the server does not
know (`BadCancelTimerAttributes`), and every workflow task fails from then on.

`workflow.wait_condition(..., timeout=...)` starts a timer on every call (asyncio's `wait_for`
takes one at once) and cancels it when the condition wakes it. A main loop waiting that way
starts and cancels a timer at every pause between events, so the timers it numbers depend on
where those pauses fall, and the SDK does not always replay them where they fell: a query
answered while a local activity ran hands that activity's result to the workflow in the next
workflow task, with that task's signals, but replay hands it over alone, before them. The
wake-up here is started only when the time to wake up changes, and kept across events: which
timers the workflow starts follows from its state, not from how its events were grouped. What it
cannot cover: a pause that replay adds where the time to wake up itself changed (an event handled
in it moved a retry or a reminder) still starts a timer the original did not; only SDK core
handing the result over where it did in the original run closes that.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from temporalio import workflow


class WakeUp:
    """A durable timer for `due`, started when `due` changes and kept while it does not."""

    def __init__(self) -> None:
        self.due: datetime | None = None
        # The timer for `due` has fired.
        self.rang = False
        self._timer: asyncio.Task[None] | None = None

    def set(self, due: datetime | None, summary: str) -> None:
        """Wake up at `due` (None: not by itself), a time after `workflow.now()`. The running
        timer is kept when it is for that time; otherwise it is cancelled and another started."""
        if due == self.due and not self.rang:
            return
        if self._timer:
            # A timer that has fired is not cancelled again: no command for it.
            self._timer.cancel()
            self._timer = None
        self.due, self.rang = due, False
        if due is not None:
            self._timer = asyncio.create_task(self._ring(due - workflow.now(), summary))

    async def _ring(self, delay: timedelta, summary: str) -> None:
        await workflow.sleep(delay, summary=summary or None)
        self.rang = True
