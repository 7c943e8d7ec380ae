"""How an attempt's end is recorded: completions batched, failures retried with backoff,
and every store call tried again until it lands.

:class:`Recorder` is the only part of the scheduler that writes an attempt's outcome.  A
result must be recorded even when the store is briefly unavailable (locked by a long
writer, a disk that fills up and clears), so each call is retried with backoff and the
trouble is announced by :class:`~taskmill.model.StoreUnavailable` and, once over,
:class:`~taskmill.model.StoreRecovered`.  Completions that arrive while a write is under
way are grouped into the next transaction (one commit for many tasks).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypedDict, TypeVar

from .. import model
from ..model import ACTIVE_STATUSES, SchedulerError
from ..store import ClaimedTask, TaskStore
from .attempts import Attempt, last_frames
from .events import EventBus
from .family import ParentFailed

__all__ = ["MAX_STORE_BACKOFF", "Recorder", "RetrySettings"]

log = logging.getLogger("taskmill")

T = TypeVar("T")

#: Longest wait between two tries of a store call that records a result.
MAX_STORE_BACKOFF = 5.0


class RetrySettings(Protocol):
    """The scheduler's settings a :class:`Recorder` reads (at each use: they may change)."""

    max_retries: int
    retry_delay: float
    max_retry_delay: float
    close_timeout: float


@dataclass(eq=False)
class Recorder:
    """Records how attempts ended in ``store`` and publishes what they did on ``events``.

    ``now()`` is the store's clock (retries are due by it); ``poke()`` wakes the dispatch
    loop (a retry became due).  Once :attr:`closing`, a call that keeps failing gives up
    after ``close_timeout`` seconds and raises."""

    store: TaskStore
    events: EventBus
    settings: RetrySettings
    loop: asyncio.AbstractEventLoop
    now: Callable[[], float]
    poke: Callable[[], None]
    closing: bool = field(default=False, init=False)
    #: The last store error that held back recording a result, while it lasts
    #: (``None`` when the store answers).
    store_error: str | None = field(default=None, init=False)
    _completions: list[tuple[ClaimedTask, str, asyncio.Future[bool]]] = field(
        default_factory=list, init=False
    )
    _flusher: asyncio.Task[None] | None = field(default=None, init=False)

    async def persist(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the store (off the event loop) until the call lands; ``what`` names the
        write in the warnings and events (module docs)."""
        delay = 0.05
        tries = 0
        closing_since: float | None = None
        while True:
            try:
                result = await asyncio.to_thread(fn, *args, **kwargs)
            except Exception as exc:
                tries += 1
                if self.closing:
                    now = time.monotonic()
                    closing_since = closing_since or now
                    if now - closing_since > self.settings.close_timeout:
                        raise SchedulerError(
                            f"could not record {what} while closing: {exc}", kind="store"
                        ) from exc
                self.store_error = f"{what}: {exc}"
                log.warning(
                    "taskmill: could not record %s (try %d), retrying in %.2f s: %s",
                    what,
                    tries,
                    delay,
                    exc,
                )
                self.events.publish(
                    model.StoreUnavailable(
                        operation=what, error=str(exc), tries=tries, retry_in=delay
                    )
                )
                await asyncio.sleep(delay)
                delay = min(MAX_STORE_BACKOFF, delay * 2)
                continue
            if tries:
                self.store_error = None
                log.warning("taskmill: recorded %s after %d failed tries", what, tries)
                self.events.publish(model.StoreRecovered(operation=what, tries=tries))
            return result

    async def flushed(self) -> None:
        """Wait until the completions handed in so far are recorded (or given up)."""
        if self._flusher is not None:
            await self._flusher

    def retry_at(self, task: ClaimedTask) -> float | None:
        """When a failed attempt of ``task`` is tried again, by the store's clock
        (exponential backoff); ``None`` when it was its last try."""
        settings = self.settings
        max_retries = settings.max_retries if task.max_retries is None else task.max_retries
        if task.attempt > max_retries:
            return None
        delay = min(settings.max_retry_delay, settings.retry_delay * 2 ** (task.attempt - 1))
        return self.now() + delay

    async def settle(self, attempt: Attempt, error: BaseException | None) -> None:
        """Record how ``attempt`` ended (``error``: what its code raised).  Every store
        call here is retried until it lands: a task is never left running under this
        worker."""
        task = attempt.task
        owner = attempt.owner
        reason = attempt.stop_reason
        if attempt.parked and error is None:
            log.debug("task %s waits for its children", task.id)
            return
        if reason == "lost":
            log.warning("taskmill: task %s ended here after its lease was lost", task.id)
            return
        if reason == "cancelled":
            self.events.publish(model.TaskCancelled(task_id=task.id, was_running=True))
            return
        if reason == "superseded":
            self._superseded(task, attempt.replaced_by)
            return
        if reason == "preempted":  # paused, not a try; resumed once no urgent task waits
            await self.persist(
                f"the preemption of task {task.id}",
                self.store.preempt,
                [task.id],
                owner=owner,
                attempts=[task.attempt],
            )
            log.info("taskmill: task %s paused to make room for more urgent work", task.id)
            return
        if reason in ("shutdown", "fenced"):  # told to stop: pending again once it returned
            await self.persist(
                f"the release of task {task.id}",
                self.store.release,
                [task.id],
                owner=owner,
                attempts=[task.attempt],
            )
            return
        duration = time.monotonic() - attempt.started
        if error is None:
            if await self._complete(task, owner):
                self._completed(task, duration)
            else:
                await self._report_lost(task, owner, duration=duration)
            return
        traceback: str | None = last_frames(error)
        if isinstance(error, ParentFailed):  # a verdict on its children: never retried
            message, retry_at = str(error), None
            cause = error.__cause__  # the finalizer's own error, if it raised
            traceback = None if cause is None else last_frames(cause)
        else:
            message, retry_at = f"{type(error).__name__}: {error}", self.retry_at(task)
        result = await self.persist(
            f"the failure of task {task.id}",
            self.store.fail,
            task.id,
            owner=owner,
            error=message,
            retry_at=retry_at,
            attempt=task.attempt,
            traceback=traceback,
        )
        if result is None:
            await self._report_lost(task, owner, failure=(message, retry_at))
            return
        log.debug("task %s attempt %s failed: %s", task.id, task.attempt, message)
        self._failed(task, message, retry_at if result == "retry" else None)

    # ------------------------------------------------------------------ completions

    async def _complete(self, task: ClaimedTask, owner: str) -> bool:
        """Record a successful attempt, in the next batch of completions; whether the
        task was still ours."""
        future: asyncio.Future[bool] = self.loop.create_future()
        self._completions.append((task, owner, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_completions())
        return await future

    async def _flush_completions(self) -> None:
        while self._completions:
            owner = self._completions[0][1]
            batch = [c for c in self._completions if c[1] == owner]
            self._completions = [c for c in self._completions if c[1] != owner]
            try:
                done = await self.persist(
                    f"the completion of {len(batch)} task(s)",
                    self.store.complete_many,
                    [t.id for t, _, _ in batch],
                    owner=owner,
                    attempts=[t.attempt for t, _, _ in batch],
                )
            except BaseException as exc:
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for task, _, future in batch:
                if not future.done():
                    future.set_result(task.id in done)

    # ------------------------------------------------------------------ what it did

    def _completed(self, task: ClaimedTask, duration: float) -> None:
        self.events.publish(model.TaskCompleted(**_attempt_of(task), duration=duration))

    def _failed(self, task: ClaimedTask, message: str, retry_at: float | None) -> None:
        will_retry = retry_at is not None
        self.events.publish(
            model.TaskFailed(
                **_attempt_of(task), error=message, will_retry=will_retry, retry_at=retry_at
            )
        )
        if retry_at is not None:
            self.loop.call_at(self.loop.time() + (retry_at - self.now()), self.poke)

    def _superseded(self, task: ClaimedTask, replaced_by: int | None) -> None:
        self.events.publish(
            model.TaskSuperseded(task_id=task.id, replaced_by=replaced_by or 0, was_running=True)
        )

    async def _report_lost(
        self,
        task: ClaimedTask,
        owner: str,
        *,
        duration: float | None = None,
        failure: tuple[str, float | None] | None = None,
    ) -> None:
        """A result could not be recorded because the task was no longer ours: say why.

        Either someone else cancelled or superseded it, or our own earlier try did land
        (its answer was lost and the retry found the work done), or our lease ran out
        and the task went back to the queue."""
        lost = await self.persist(
            f"the state of task {task.id}",
            self.store.lost_tasks,
            [task.id],
            owner=owner,
            attempts=[task.attempt],
        )
        status, replaced_by = lost.get(task.id, ("gone", None))
        if status == "completed" and duration is not None:
            self._completed(task, duration)
        elif status == "failed" and failure is not None:
            self._failed(task, failure[0], None)
        elif status == "superseded":
            self._superseded(task, replaced_by)
        elif status in ACTIVE_STATUSES:
            if failure is not None and failure[1] is not None and status != "paused":
                self._failed(task, failure[0], failure[1])  # our retry landed
            else:
                log.warning(
                    "taskmill: task %s ended here after its lease had passed to the queue",
                    task.id,
                )
        else:
            self.events.publish(model.TaskCancelled(task_id=task.id, was_running=True))


class _AttemptFields(TypedDict):
    task_id: int
    task_type: str
    group: str | None
    attempt: int


def _attempt_of(task: ClaimedTask) -> _AttemptFields:
    """The fields naming an attempt of ``task`` in the events of its end."""
    return {
        "task_id": task.id,
        "task_type": task.task_type,
        "group": task.group,
        "attempt": task.attempt,
    }
