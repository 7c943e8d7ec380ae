"""The async scheduler: dispatch loop, executors, retries and events. No SQL here.

Every store call runs off the event loop (``asyncio.to_thread``), so a long write
never blocks dispatching or a notebook.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import inspect
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .model import (
    BatchSubmitted,
    Event,
    SchedulerError,
    SubmitOutcome,
    TaskCancelled,
    TaskCompleted,
    TaskDispatched,
    TaskFailed,
    TaskProgress,
    TaskSubmission,
    TaskSubmitted,
    TaskSuperseded,
    TaskUpgraded,
)
from .outcome import BatchOutcome
from .store import ClaimedTask, TaskStore

__all__ = ["Executor", "Scheduler", "Subscription", "TaskContext"]

log = logging.getLogger("taskmill")

T = TypeVar("T")
Executor = Callable[["TaskContext"], Any]


async def _wait_event(event: asyncio.Event, timeout: float) -> None:
    """Wait for ``event`` at most ``timeout`` seconds (cancellation is never swallowed,
    unlike ``asyncio.wait_for`` on Python 3.11)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()


class TaskContext:
    """What an executor receives: the task's fields, progress reporting and cancellation."""

    __slots__ = (
        "_cancelled",
        "_progress_cb",
        "attempt",
        "dedup_key",
        "group",
        "label",
        "payload",
        "priority",
        "task_id",
        "task_type",
    )

    def __init__(self, task: ClaimedTask, progress_cb: Callable[[float, str | None], None]):
        self.task_id: int = task.id
        self.task_type: str = task.task_type
        self.dedup_key: str | None = task.dedup_key
        self.group: str | None = task.group
        self.priority: int = task.priority
        self.payload: bytes | None = task.payload
        self.label: str | None = task.label
        self.attempt: int = task.attempt
        self._cancelled = False
        self._progress_cb = progress_cb

    @property
    def cancelled(self) -> bool:
        """True once the task was cancelled or superseded; the executor should stop."""
        return self._cancelled

    def payload_json(self) -> Any:
        """The payload decoded from JSON (``None`` when there is none)."""
        return None if self.payload is None else json.loads(self.payload)

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report progress (0..1); emitted as a :class:`TaskProgress` event."""
        self._progress_cb(float(fraction), message)

    def __repr__(self) -> str:
        return (
            f"<TaskContext id={self.task_id} type={self.task_type!r} "
            f"key={self.dedup_key!r} attempt={self.attempt}>"
        )


class Subscription:
    """An async iterator of scheduler events with a bounded buffer.

    When the buffer is full the oldest event is dropped and :attr:`dropped` counts
    it, so a slow subscriber can tell it lost events.  Iteration ends when the
    scheduler closes (after the buffered events) or on :meth:`close`.
    """

    def __init__(self, owner: Scheduler, maxsize: int) -> None:
        self._owner = owner
        self._buffer: collections.deque[Event] = collections.deque(maxlen=maxsize)
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def _push(self, event: Event) -> None:
        if self._closed:
            return
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        self._buffer.append(event)
        self._ready.set()

    def _end(self) -> None:
        self._closed = True
        self._ready.set()

    def close(self) -> None:
        """Stop receiving events."""
        self._owner._subscribers.discard(self)
        self._end()

    def drain(self) -> list[Event]:
        """Every buffered event, without waiting."""
        items = list(self._buffer)
        self._buffer.clear()
        return items

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._buffer.popleft()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


@dataclass(eq=False)
class _Attempt:
    task: ClaimedTask
    ctx: TaskContext
    started: float
    job: asyncio.Task[None] | None = None
    stop_reason: str | None = None  # "cancelled" | "superseded" | "shutdown"
    settling: bool = False  # the executor has returned; its outcome is being recorded
    replaced_by: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Scheduler:
    """Dispatches the tasks of a store to executors, by priority then queue order.

    ``async with Scheduler("tasks.db", executors={"sync.upload": upload}) as sched:``

    - ``executors`` maps a task type to ``fn(ctx)``, ``async def`` or plain (plain
      functions run in a thread pool). A task whose type has no executor stays pending.
    - ``max_concurrency``: attempts running at once; ``group_concurrency`` caps
      named groups and ``default_group_concurrency`` every other group (``None``:
      no cap).  A full group never holds back other groups.
    - ``max_retries``: retries after a failed attempt (a task's own
      ``max_retries`` wins), with exponential backoff from ``retry_delay`` up to
      ``max_retry_delay`` seconds.
    - ``poll_interval``: how often the store is polled for work submitted by other
      processes and for retries that became due.
    - ``close_timeout``: on close, how long running attempts may finish before they
      are cancelled and put back to pending.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | TaskStore,
        *,
        executors: Mapping[str, Executor] | None = None,
        max_concurrency: int = 4,
        group_concurrency: Mapping[str, int] | None = None,
        default_group_concurrency: int | None = None,
        max_retries: int = 3,
        retry_delay: float = 1.0,
        max_retry_delay: float = 300.0,
        poll_interval: float = 0.5,
        close_timeout: float = 10.0,
        event_buffer: int = 10_000,
    ) -> None:
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self._store_arg = store
        self._own_store = not isinstance(store, TaskStore)
        self._store: TaskStore | None = store if isinstance(store, TaskStore) else None
        self.executors: dict[str, Executor] = dict(executors or {})
        self.max_concurrency = max_concurrency
        self.group_concurrency = dict(group_concurrency or {})
        self.default_group_concurrency = default_group_concurrency
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.poll_interval = poll_interval
        self.close_timeout = close_timeout
        self.event_buffer = event_buffer

        self._owner: str | None = None
        self._running: dict[int, _Attempt] = {}
        self._group_running: collections.Counter[str] = collections.Counter()
        self._subscribers: set[Subscription] = set()
        self._wake: asyncio.Event | None = None
        self._activity: asyncio.Event | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._closing = False
        self._started = False
        self._completions: list[tuple[int, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def store(self) -> TaskStore:
        """The scheduler's :class:`TaskStore`, for queries."""
        if self._store is None:
            raise SchedulerError("the scheduler is not started (use 'async with')", kind="state")
        return self._store

    async def start(self) -> Scheduler:
        """Open the store and start dispatching (``async with`` does this)."""
        if self._started:
            return self
        self._loop = asyncio.get_running_loop()
        if self._store is None:
            self._store = await asyncio.to_thread(TaskStore.open, self._store_arg)  # type: ignore[arg-type]
        else:
            await asyncio.to_thread(self._store.recover)
        self._owner = self._store.new_owner()
        self._wake = asyncio.Event()
        self._activity = asyncio.Event()
        self._pool = ThreadPoolExecutor(
            max_workers=self.max_concurrency, thread_name_prefix="taskmill-exec"
        )
        self._started = True
        self._closing = False
        self._loop_task = asyncio.create_task(self._dispatch_loop(), name="taskmill-dispatch")
        return self

    async def __aenter__(self) -> Scheduler:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, timeout: float | None = None) -> None:
        """Stop dispatching; let running attempts finish within ``timeout`` (default
        ``close_timeout``), then cancel the rest and put them back to pending."""
        if not self._started or self._closing:
            return
        self._closing = True
        timeout = self.close_timeout if timeout is None else timeout
        assert self._loop_task is not None and self._owner is not None
        self._loop_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._loop_task
        jobs = [a.job for a in self._running.values() if a.job is not None]
        if jobs:
            _, pending = await asyncio.wait(jobs, timeout=timeout)
            for attempt in list(self._running.values()):
                if attempt.job in pending:
                    attempt.stop_reason = attempt.stop_reason or "shutdown"
                    attempt.ctx._cancelled = True
                    attempt.job.cancel()
            if pending:
                await asyncio.wait(pending)
        store = self.store
        await asyncio.to_thread(store.release_owner, self._owner)
        for sub in list(self._subscribers):
            sub._end()
        self._subscribers.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._own_store:
            await asyncio.to_thread(store.close)
            self._store = None
        self._started = False

    # ------------------------------------------------------------------ events

    def subscribe(self, maxsize: int | None = None) -> Subscription:
        """A new event stream (bounded: the oldest events are dropped when it lags)."""
        sub = Subscription(self, maxsize or self.event_buffer)
        self._subscribers.add(sub)
        return sub

    def _publish(self, event: Event) -> None:
        for sub in list(self._subscribers):
            sub._push(event)

    def _publish_threadsafe(self, event: Event) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._publish(event)
        else:
            loop.call_soon_threadsafe(self._publish, event)

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------ submitting

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def submit(self, submission: TaskSubmission) -> SubmitOutcome:
        """Submit one task (see :meth:`TaskStore.submit`); emits one ``TaskSubmitted``."""
        outcome = await self._db(self.store.submit, submission)
        self._after_submit(outcome)
        return outcome

    def _after_submit(self, outcome: SubmitOutcome) -> None:
        if outcome.action == "upgraded":
            self._publish(TaskUpgraded(task_id=outcome.task_id, priority=outcome.priority))
        if outcome.action == "superseded":
            assert outcome.replaced_task_id is not None
            attempt = self._running.get(outcome.replaced_task_id)
            if attempt is not None:  # its TaskSuperseded comes when the attempt stops
                self._stop_attempt(attempt, "superseded", outcome.task_id)
            else:
                self._publish(
                    TaskSuperseded(
                        task_id=outcome.replaced_task_id,
                        replaced_by=outcome.task_id,
                        was_running=False,
                    )
                )
        if outcome.action in ("submitted", "superseded"):
            self._publish(
                TaskSubmitted(
                    task_id=outcome.task_id,
                    task_type=outcome.task_type,
                    dedup_key=outcome.dedup_key,
                    group=outcome.group,
                    priority=outcome.priority,
                )
            )
            self._poke()

    async def submit_batch(
        self, tasks: Any, *, progress: Callable[[int, int], None] | None = None
    ) -> BatchOutcome:
        """Submit many tasks at once (see :meth:`TaskStore.submit_batch`).

        The work runs off the event loop, so running tasks keep being dispatched.  Each
        committed transaction emits one :class:`BatchSubmitted` and wakes the dispatcher
        once; the tasks of a chunk are dispatchable as soon as it commits.
        """
        loop = asyncio.get_running_loop()

        def committed(inserted: list[int], superseded: list[tuple[int, int]]) -> None:
            loop.call_soon_threadsafe(self._after_batch_commit, inserted, superseded)

        return await self._db(
            self.store.submit_batch, tasks, on_commit=committed, progress=progress
        )

    async def plan_batch(self, tasks: Any) -> BatchOutcome:
        """What :meth:`submit_batch` would do now; writes nothing."""
        return await self._db(self.store.plan_batch, tasks)

    def _after_batch_commit(self, inserted: list[int], superseded: list[tuple[int, int]]) -> None:
        for new_id, old_id in superseded:
            attempt = self._running.get(old_id)
            if attempt is not None:  # its TaskSuperseded comes when the attempt stops
                self._stop_attempt(attempt, "superseded", new_id)
        if inserted:
            self._publish(BatchSubmitted(count=len(inserted), task_ids=tuple(inserted)))
            self._poke()

    async def cancel(self, task_id: int) -> bool:
        """Cancel an active task; a running attempt is told through ``ctx.cancelled``.

        Returns whether an active task was cancelled.
        """
        previous = await self._db(self.store.cancel, task_id)
        if previous is None:
            return False
        attempt = self._running.get(task_id)
        if attempt is not None:
            self._stop_attempt(attempt, "cancelled")
        else:
            self._publish(TaskCancelled(task_id=task_id, was_running=previous == "running"))
        self._poke()
        return True

    async def pause(self, task_id: int) -> bool:
        """Hold a pending task back from dispatch."""
        return await self._db(self.store.pause, task_id)

    async def resume(self, task_id: int) -> bool:
        """Let a paused task be dispatched again."""
        ok = await self._db(self.store.resume, task_id)
        self._poke()
        return ok

    def _stop_attempt(
        self,
        attempt: _Attempt,
        reason: str,
        replaced_by: int | None = None,
    ) -> None:
        """Tell a running attempt it was cancelled or superseded."""
        if attempt.stop_reason is not None:
            return
        attempt.stop_reason = reason
        attempt.replaced_by = replaced_by
        attempt.ctx._cancelled = True
        if attempt.settling:
            return
        if attempt.job is not None and inspect.iscoroutinefunction(
            self.executors.get(attempt.task.task_type)
        ):
            attempt.job.cancel()

    # ------------------------------------------------------------------ waiting

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until no task this scheduler can run is pending or running.

        Tasks whose type has no executor here are not waited for.  Raises
        ``TimeoutError`` after ``timeout`` seconds.
        """

        async def idle() -> None:
            assert self._activity is not None
            while True:
                self._activity.clear()
                if not self._running:
                    left = await self._db(self.store.has_work, self.executors)
                    if not left and not self._running:
                        return
                await _wait_event(self._activity, self.poll_interval)

        if not self._started:
            raise SchedulerError("the scheduler is not started (use 'async with')", kind="state")
        async with asyncio.timeout(timeout):
            await idle()

    @property
    def running(self) -> dict[int, str]:
        """Ids of the attempts running now, with their task type."""
        return {tid: a.task.task_type for tid, a in self._running.items()}

    # ------------------------------------------------------------------ dispatching

    async def _dispatch_loop(self) -> None:
        assert self._wake is not None
        while not self._closing:
            self._wake.clear()
            try:
                await self._check_lost()
                await self._dispatch()
                delay = await self._next_delay()
            except SchedulerError as exc:  # the store is busy or failing: say so, go on
                log.warning("taskmill dispatch: %s", exc)
                delay = self.poll_interval
            await _wait_event(self._wake, delay)

    async def _next_delay(self) -> float:
        if not self.executors:
            return self.poll_interval
        due = await self._db(self.store.next_retry_at)
        if due is None:
            return self.poll_interval
        return max(0.0, min(self.poll_interval, due - time.time()))

    async def _dispatch(self) -> None:
        free = self.max_concurrency - len(self._running)
        if free <= 0 or not self.executors or self._closing:
            return
        claimed = await self._db(
            self.store.claim,
            free,
            task_types=self.executors,
            owner=self._owner,
            group_limits=self.group_concurrency,
            default_group_limit=self.default_group_concurrency,
            running_per_group=dict(self._group_running),
        )
        for task in claimed:
            self._start(task)

    def _start(self, task: ClaimedTask) -> None:
        def report(fraction: float, message: str | None) -> None:
            self._publish_threadsafe(
                TaskProgress(task_id=task.id, fraction=fraction, message=message)
            )

        attempt = _Attempt(task=task, ctx=TaskContext(task, report), started=time.monotonic())
        self._running[task.id] = attempt
        if task.group is not None:
            self._group_running[task.group] += 1
        self._publish(
            TaskDispatched(
                task_id=task.id, task_type=task.task_type, group=task.group, attempt=task.attempt
            )
        )
        attempt.job = asyncio.create_task(self._run(attempt), name=f"taskmill-task-{task.id}")

    async def _call(self, attempt: _Attempt) -> None:
        fn = self.executors[attempt.task.task_type]
        if inspect.iscoroutinefunction(fn):
            result = await fn(attempt.ctx)
        else:
            assert self._loop is not None
            result = await self._loop.run_in_executor(self._pool, fn, attempt.ctx)
        if inspect.isawaitable(result):
            await result

    async def _run(self, attempt: _Attempt) -> None:
        task = attempt.task
        error: BaseException | None = None
        try:
            try:
                await self._call(attempt)
            except asyncio.CancelledError:
                if attempt.stop_reason is None:
                    attempt.stop_reason = "shutdown"
            except Exception as exc:
                error = exc
            attempt.settling = True
            await self._settle(attempt, error)
        finally:
            self._running.pop(task.id, None)
            if task.group is not None:
                self._group_running[task.group] -= 1
                if self._group_running[task.group] <= 0:
                    del self._group_running[task.group]
            attempt.done.set()
            if self._activity is not None:
                self._activity.set()
            self._poke()

    async def _settle(self, attempt: _Attempt, error: BaseException | None) -> None:
        task = attempt.task
        owner = self._owner
        assert owner is not None
        reason = attempt.stop_reason
        if reason == "shutdown":
            await asyncio.shield(self._db(self.store.release, [task.id], owner=owner))
            return
        if reason == "cancelled":
            self._publish(TaskCancelled(task_id=task.id, was_running=True))
            return
        if reason == "superseded":
            self._publish(
                TaskSuperseded(
                    task_id=task.id, replaced_by=attempt.replaced_by or 0, was_running=True
                )
            )
            return
        duration = time.monotonic() - attempt.started
        if error is None:
            done = await self._complete(task.id)
            if done:
                self._publish(
                    TaskCompleted(
                        task_id=task.id,
                        task_type=task.task_type,
                        group=task.group,
                        attempt=task.attempt,
                        duration=duration,
                    )
                )
            else:
                await self._report_lost(task.id)
            return
        message = f"{type(error).__name__}: {error}"
        max_retries = self.max_retries if task.max_retries is None else task.max_retries
        retry_at = None
        if task.attempt <= max_retries:
            delay = min(self.max_retry_delay, self.retry_delay * 2 ** (task.attempt - 1))
            retry_at = time.time() + delay
        result = await self._db(
            self.store.fail, task.id, owner=owner, error=message, retry_at=retry_at
        )
        if result is None:
            await self._report_lost(task.id)
            return
        log.debug("task %s attempt %s failed: %s", task.id, task.attempt, message)
        self._publish(
            TaskFailed(
                task_id=task.id,
                task_type=task.task_type,
                group=task.group,
                attempt=task.attempt,
                error=message,
                will_retry=result == "retry",
                retry_at=retry_at,
            )
        )
        if retry_at is not None and self._loop is not None:
            self._loop.call_at(self._loop.time() + (retry_at - time.time()), self._poke)

    async def _complete(self, task_id: int) -> bool:
        """Record a successful attempt. Completions that arrive while a write is under
        way are grouped into the next transaction (one commit for many tasks)."""
        assert self._loop is not None
        future: asyncio.Future[bool] = self._loop.create_future()
        self._completions.append((task_id, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_completions())
        return await future

    async def _flush_completions(self) -> None:
        while self._completions:
            batch, self._completions = self._completions, []
            try:
                done = await self._db(
                    self.store.complete_many, [t for t, _ in batch], owner=self._owner
                )
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                if isinstance(exc, asyncio.CancelledError):
                    raise
                continue
            for task_id, future in batch:
                if not future.done():
                    future.set_result(task_id in done)

    async def _report_lost(self, task_id: int) -> None:
        """A task finished here had been cancelled or superseded by someone else."""
        lost = await self._db(self.store.lost_tasks, [task_id], owner=self._owner)
        status, replaced_by = lost.get(task_id, ("gone", None))
        if status == "superseded":
            self._publish(
                TaskSuperseded(task_id=task_id, replaced_by=replaced_by or 0, was_running=True)
            )
        else:
            self._publish(TaskCancelled(task_id=task_id, was_running=True))

    async def _check_lost(self) -> None:
        """Tell running attempts whose task was cancelled/superseded by another process."""
        watched = [tid for tid, a in self._running.items() if a.stop_reason is None]
        if not watched:
            return
        lost = await self._db(self.store.lost_tasks, watched, owner=self._owner)
        for tid, (status, replaced_by) in lost.items():
            attempt = self._running.get(tid)
            if status in ("completed", "failed"):
                continue  # finished here, just now: not lost
            if attempt is not None and not attempt.settling:
                reason = "superseded" if status == "superseded" else "cancelled"
                self._stop_attempt(attempt, reason, replaced_by)

    def widget(self, *, refresh: float = 2.0) -> Any:
        """A live ipywidgets view of this scheduler (call from a running event loop, as
        in a notebook cell); it stops updating when the scheduler closes."""
        from .notebook import QueueWidget

        return QueueWidget(self, refresh=refresh).start()

    async def stream(self) -> AsyncIterator[Event]:
        """Shorthand: iterate over a fresh subscription."""
        sub = self.subscribe()
        try:
            async for event in sub:
                yield event
        finally:
            sub.close()
