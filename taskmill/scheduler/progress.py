"""Stored progress: what running attempts report through ``ctx.progress()``, written to the
store a few times a second at most, so every process sees it in ``tasks()``.

:class:`ProgressWriter` listens to the scheduler's :class:`~taskmill.TaskProgress` events,
keeps the last report of each attempt, and writes all of them in one store call at most
every :data:`PROGRESS_EVERY` seconds — an executor reporting thousands of times a second
costs the store no more than one reporting twice.  Progress is a view, not a result: a
write that fails is logged and the next one carries the newer reports.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

from .. import model
from ..model import SchedulerError
from ..store import TaskStore
from .attempts import Attempt

__all__ = ["PROGRESS_EVERY", "ProgressWriter"]

log = logging.getLogger("taskmill")

#: The shortest time between two writes of progress (seconds).
PROGRESS_EVERY = 0.5

#: The longest message stored with a progress report (characters; the rest is cut).
MAX_PROGRESS_MESSAGE = 500


@dataclass(eq=False)
class ProgressWriter:
    """Writes the progress reported by the attempts in ``running`` to ``store``."""

    store: TaskStore
    running: Mapping[int, Attempt]
    #: Reports not written yet: task id -> (owner, attempt, fraction, message).
    _latest: dict[int, tuple[str, int, float, str | None]] = field(default_factory=dict, init=False)
    _due: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    #: Store calls made (each writes every report it carries).
    writes: int = field(default=0, init=False)

    def notice(self, event: model.Event) -> None:
        """An event was published (on the event loop): keep the report it carries."""
        if not isinstance(event, model.TaskProgress):
            return
        attempt = self.running.get(event.task_id)
        if attempt is None or attempt.settling:  # ended meanwhile: nothing to show
            return
        message = None if event.message is None else str(event.message)[:MAX_PROGRESS_MESSAGE]
        self._latest[event.task_id] = (
            attempt.owner,
            attempt.task.attempt,
            event.fraction,
            message,
        )
        self._due.set()

    async def flush(self) -> None:
        """Write the reports kept so far (one store call per worker identity)."""
        taken, self._latest = self._latest, {}
        by_owner: dict[str, dict[int, tuple[int, float, str | None]]] = defaultdict(dict)
        for tid, (owner, attempt, fraction, message) in taken.items():
            by_owner[owner][tid] = (attempt, fraction, message)
        for owner, reports in by_owner.items():
            try:
                await asyncio.to_thread(self.store.record_progress, reports, owner=owner)
                self.writes += 1
            except SchedulerError as exc:  # a view: the next reports go in the next write
                log.debug("taskmill: progress not stored: %s", exc)

    async def run(self) -> None:
        """Write whenever reports came in, at most every :data:`PROGRESS_EVERY` s."""
        while True:
            await self._due.wait()
            self._due.clear()
            await self.flush()
            await asyncio.sleep(PROGRESS_EVERY)
