"""Test clocks, and what advancing one brings due (docs.stripe.com/api/test_clocks)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from emulator.errors import invalid
from emulator.resources.subscriptions import INCOMPLETE_EXPIRES_AFTER, TRIAL_WILL_END_BEFORE
from emulator.store import DAY, Obj, Store, _int


class TestClocksMixin(Store):
    if TYPE_CHECKING:  # from SubscriptionsMixin

        def _period(self, sub: Obj) -> tuple[int, int]: ...
        def _trial_will_end(self, sub: Obj, now: int) -> None: ...
        def _end_trial(self, sub: Obj, now: int) -> None: ...
        def _renew(self, sub: Obj, now: int) -> None: ...
        def _expire_incomplete(self, sub: Obj, now: int) -> None: ...
        def _renews_charged(self, sub: Obj) -> bool: ...
        def _invoice_upcoming(self, sub: Obj, now: int) -> None: ...

    def create_test_clock(self, p: Obj) -> Obj:
        if "frozen_time" not in p:
            raise invalid(
                "Missing required param: frozen_time.",
                param="frozen_time",
                code="parameter_missing",
            )
        frozen = _int(p["frozen_time"], "frozen_time")
        return self._create(
            "test_helpers.test_clock",
            {
                "frozen_time": frozen,
                "name": p.get("name"),
                "status": "ready",
                "deletes_after": frozen + 30 * DAY,
                "status_details": {},
            },
        )

    def advance_test_clock(self, ident: str, p: Obj) -> Obj:
        clock = self.get("test_helpers.test_clock", ident)
        target = _int(p.get("frozen_time"), "frozen_time")
        if target <= clock["frozen_time"]:
            raise invalid(
                "The frozen time must be after the test clock's current frozen time.",
                param="frozen_time",
            )
        while (step := self._next_transition(clock["id"], target)) is not None:
            at, sub, action = step
            clock["frozen_time"] = at
            action(sub, at)
        clock["frozen_time"] = target
        self.emit("test_helpers.test_clock.ready", clock, now=target)
        return clock

    def _next_transition(
        self, clock_id: str, target: int
    ) -> tuple[int, Obj, Callable[[Obj, int], None]] | None:
        due: list[tuple[int, int, Obj, Callable[[Obj, int], None]]] = []
        frozen = int(self.objects[clock_id]["frozen_time"])
        for sub in self._subscriptions_on(clock_id):
            status = sub["status"]
            start, end = self._period(sub)
            if self._renews_charged(sub) and sub.get("_upcoming_sent_for") != end:
                # `invoice.upcoming` N days before the renewal (at once when the period is
                # shorter than that, or when the renewal became charged inside the window).
                at = max(end - self.upcoming_invoice_days * DAY, start, frozen)
                due.append((at, sub["_seq"], sub, self._invoice_upcoming))
            if status == "trialing":
                if not sub.get("_trial_will_end_sent"):
                    due.append(
                        (
                            max(sub["trial_end"] - TRIAL_WILL_END_BEFORE, sub["trial_start"]),
                            sub["_seq"],
                            sub,
                            self._trial_will_end,
                        )
                    )
                due.append((sub["trial_end"], sub["_seq"], sub, self._end_trial))
            elif status in ("active", "past_due", "unpaid"):
                due.append((self._period(sub)[1], sub["_seq"], sub, self._renew))
            elif status == "incomplete":
                due.append(
                    (
                        sub["created"] + INCOMPLETE_EXPIRES_AFTER,
                        sub["_seq"],
                        sub,
                        self._expire_incomplete,
                    )
                )
        due = [d for d in due if d[0] <= target]
        if not due:
            return None
        at, _, sub, action = min(due, key=lambda d: (d[0], d[1]))
        return at, sub, action

    def _subscriptions_on(self, clock_id: str) -> Iterable[Obj]:
        return [
            o
            for o in self.candidates("subscription", "test_clock", clock_id)
            if o["test_clock"] == clock_id
        ]
