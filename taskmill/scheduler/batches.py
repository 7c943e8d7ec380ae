"""Following batches to their end: the scheduler's sweep that finishes the batches that
are done and announces each with :class:`~taskmill.BatchFinished`, and what
:meth:`~taskmill.Scheduler.wait_batch` waits on.

The sweep runs soon after attempts end (at most every :data:`SWEEP_EVERY` seconds while
they do) and at least every poll interval, so a batch finished by others — tasks run by
other workers, cancelled from another process, expired — is seen too.  The store decides
which call finishes a batch (:meth:`~taskmill.TaskStore.finish_batches`), so each batch is
announced once, by one scheduler, however many run on the store.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from .. import model
from ..model import SchedulerError
from ..store import TaskStore
from .events import EventBus, wait_set

__all__ = ["SWEEP_EVERY", "BatchSweep"]

log = logging.getLogger("taskmill")

#: The shortest time between two sweeps while attempts keep ending (seconds).
SWEEP_EVERY = 0.2

#: Events after which a batch may be done (an attempt or a task ended).
_ENDINGS = (
    model.TaskCompleted,
    model.TaskFailed,
    model.TaskCancelled,
    model.TaskSuperseded,
    model.TasksExpired,
)


@dataclass(eq=False)
class BatchSweep:
    """Finishes done batches of ``store`` and publishes their ``BatchFinished`` on
    ``events``; :attr:`changed` is set after each sweep that finished one."""

    store: TaskStore
    events: EventBus
    poll_interval: float
    #: Set when a sweep finished a batch (cleared by whoever waits on it).
    changed: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    _due: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    def notice(self, event: model.Event) -> None:
        """An event was published: sweep soon when it says a task ended."""
        if isinstance(event, _ENDINGS) and not (
            isinstance(event, model.TaskFailed) and event.will_retry
        ):
            self._due.set()

    async def sweep(self) -> None:
        """Finish the batches that are done now and announce them."""
        try:
            finished = await asyncio.to_thread(self.store.finish_batches)
        except SchedulerError as exc:  # the next sweep tries again
            log.warning("taskmill: could not finish batches: %s", exc)
            return
        for batch_id, counts in finished:
            self.events.publish(model.BatchFinished(batch_id=batch_id, counts=counts))
        if finished:
            self.changed.set()

    async def run(self) -> None:
        """Sweep now, then whenever tasks ended, and at least every poll interval."""
        while True:
            await self.sweep()
            await wait_set(self._due, max(self.poll_interval, SWEEP_EVERY))
            self._due.clear()
            await asyncio.sleep(SWEEP_EVERY)  # a burst of endings: one sweep
