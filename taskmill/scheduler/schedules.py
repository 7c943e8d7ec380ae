"""Firing the store's schedules: the scheduler's job that submits each occurrence as it
comes due (what a schedule is and what firing one does: :mod:`taskmill.store.schedules`).

Every scheduler on a store runs it: the store decides which of them fires an occurrence
(one transaction claims it, submits its task and moves the schedule on), so each
occurrence is submitted once however many run.  The job looks when the next occurrence
comes due (one indexed read), sleeps until then — at most the poll interval, so that a
schedule made or changed by another process is seen — and fires what is due; nothing is
added to the claims of the dispatch loop.  A task it submitted is announced like a
``submit()``'s (:class:`~taskmill.TaskSubmitted`) and wakes the dispatcher.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ..model import SchedulerError, SubmitOutcome
from ..store import TaskStore
from .events import wait_set

__all__ = ["ScheduleTicker"]

log = logging.getLogger("taskmill")


@dataclass(eq=False)
class ScheduleTicker:
    """Fires the due occurrences of ``store``'s schedules; each submitted task's outcome
    goes to ``after_submit`` (the scheduler announces it and wakes its dispatcher)."""

    store: TaskStore
    poll_interval: float
    after_submit: Callable[[SubmitOutcome], None]
    #: Occurrences this job fired (submitted, skipped or rejected), for the curious.
    fired: int = field(default=0, init=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    async def turn(self) -> float:
        """Fire what is due now; how long to sleep before the next look (seconds)."""
        due_at = await asyncio.to_thread(self.store.next_schedule_at)
        if due_at is None:
            return self.poll_interval
        now = await asyncio.to_thread(self.store.now)
        if due_at > now:
            return min(self.poll_interval, due_at - now)
        runs = await asyncio.to_thread(self.store.run_schedules)
        for run in runs:
            self.fired += 1
            log.log(
                logging.WARNING if run.action == "rejected" else logging.INFO,
                "taskmill: schedule %s, occurrence %.3f: %s (task %s)",
                run.name,
                run.at,
                run.action,
                run.task_id,
            )
            if run.outcome is not None:
                self.after_submit(run.outcome)
        # more may be due (a page of them, or one that came due meanwhile): look again
        # at once; nothing fired though something was due (another scheduler was
        # first): the next look is soon enough
        return 0.0 if runs else min(self.poll_interval, 0.05)

    async def run(self) -> None:
        """Fire due occurrences until :meth:`stop`; a store error is logged and the next
        look tries again."""
        while not self._stop.is_set():
            wait = self.poll_interval
            try:
                wait = await self.turn()
            except SchedulerError as exc:
                log.warning("taskmill: could not fire the store's schedules: %s", exc)
            if wait > 0:
                await wait_set(self._stop, wait)
            else:
                await asyncio.sleep(0)

    def stop(self) -> None:
        """End :meth:`run` after its current look (never in the middle of a write)."""
        self._stop.set()
