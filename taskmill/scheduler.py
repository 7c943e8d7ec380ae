"""The async scheduler: dispatch loop, executors, retries, leases and events. No SQL here.

Every store call runs off the event loop (``asyncio.to_thread``), so a long write
never blocks dispatching or a notebook.  The scheduler talks to its store only through
:class:`~taskmill.store.TaskStore`'s methods, never to an engine.

What it guarantees:

- an attempt is owned by one scheduler at a time: an attempt whose code cannot be
  interrupted (a plain function on a thread) stays owned, its lease renewed, until it
  returns; its result is recorded, and only then may the task be handed back;
- a result that cannot be recorded (the store is locked, a disk is full) is retried
  with backoff, logged at WARNING and announced by :class:`StoreUnavailable`;
- the dispatch loop logs unexpected errors with their traceback and goes on; when it
  cannot, :meth:`Scheduler.wait_idle` and :meth:`Scheduler.close` raise.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime as dt
import inspect
import json
import logging
import os
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

from . import display
from .batch.outcome import BatchOutcome
from .lease import LeaseKeeper
from .model import (
    ACTIVE_STATUSES,
    BatchSubmitted,
    Event,
    RateLimit,
    SchedulerError,
    StoreRecovered,
    StoreUnavailable,
    SubmitOutcome,
    TaskCancelled,
    TaskCompleted,
    TaskDispatched,
    TaskFailed,
    TaskProgress,
    TasksExpired,
    TasksRecovered,
    TaskSubmission,
    TaskSubmitted,
    TaskSuperseded,
    TaskUpgraded,
)
from .store import ClaimedTask, TaskStore
from .store.picking import check_limits
from .store.workers import DEFAULT_LEASE_TIMEOUT

__all__ = ["Executor", "Scheduler", "Subscription", "TaskContext"]

log = logging.getLogger("taskmill")

T = TypeVar("T")
Executor = Callable[["TaskContext"], Any]

#: Unexpected errors in a row after which the dispatch loop gives up (and
#: ``wait_idle()`` / ``close()`` raise); store errors are retried without end.
MAX_UNEXPECTED_ERRORS = 10
#: Longest wait between two tries of a store call that records a result.
MAX_STORE_BACKOFF = 5.0
#: With ``history_retention``: seconds from start to the first prune, then between two
#: prunes (a prune that fails is tried again at the next one).
RETENTION_FIRST_DELAY = 10.0
RETENTION_INTERVAL = 300.0


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
        """True once the task was cancelled or superseded, or this worker could not
        renew its lease for half of it (fencing): the executor should stop.  One that
        ignores it past the lease may run at the same time as another worker's attempt."""
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
    owner: str  # the worker identity that claimed it (a new one after a lost lease)
    job: asyncio.Task[None] | None = None
    # "cancelled" | "superseded" | "shutdown" | "lost" | "fenced" (no lease renewal)
    stop_reason: str | None = None
    settling: bool = False  # the executor has returned; its outcome is being recorded
    replaced_by: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)


def _calling_frame(filename: str) -> bool:
    """Whether a traceback frame is the scheduler's way into an executor, not its code."""
    return filename == __file__ or any(
        f"{os.sep}{part}{os.sep}" in filename for part in ("asyncio", "concurrent")
    )


#: How many of a failure's innermost traceback frames the store keeps with the attempt.
TRACEBACK_FRAMES = 5


def last_frames(error: BaseException, frames: int = TRACEBACK_FRAMES) -> str:
    """The innermost ``frames`` frames of ``error``'s traceback and the error itself, as
    Python prints them: the executor's own frames, the scheduler's and the thread pool's
    that called it left out (chained causes too: the attempt's error names the last)."""
    stack = traceback.extract_tb(error.__traceback__)
    while stack and _calling_frame(stack[0].filename):
        stack.pop(0)
    summary = traceback.StackSummary.from_list(stack[-frames:])
    lines = ["Traceback (most recent call last):\n", *summary.format()]
    lines += traceback.format_exception_only(type(error), error)
    return "".join(lines).rstrip("\n")


class Scheduler:
    """Dispatches the tasks of a store to executors, by priority then queue order.

    ``async with Scheduler("tasks.db", executors={"sync.upload": upload}) as sched:``

    - ``executors`` maps a task type to ``fn(ctx)``, ``async def`` or plain (plain
      functions run in a thread pool). A task whose type has no executor stays pending.
    - ``max_concurrency``: attempts whose code runs at once (one whose code has
      returned frees its slot while its outcome is recorded); ``group_concurrency`` caps
      named groups and ``default_group_concurrency`` every other group (``None``:
      no cap).  A full group never holds back other groups.
    - ``byte_budgets``: per group, the most expected bytes (the four
      ``expected_*_bytes`` summed) its running tasks may add up to, across every
      scheduler on the store; a task larger than the budget runs alone.
    - ``rate_limits``: ``{"group:NAME": RateLimit(…), "type:TASK_TYPE": RateLimit(…)}``,
      token buckets kept in the store and shared by every scheduler on it; a task
      takes a token from its group's bucket and from its type's.  A group (or type)
      held back by a limit, a budget or a bucket never holds back the others.
    - ``max_retries``: retries after a failed attempt (a task's own
      ``max_retries`` wins), with exponential backoff from ``retry_delay`` up to
      ``max_retry_delay`` seconds.
    - ``poll_interval``: how often the store is polled for work submitted by other
      processes and for retries that became due.
    - ``close_timeout``: on close, how long running attempts may finish before they
      are told to stop (``ctx.cancelled``; async ones are cancelled) and, once their
      code has returned, put back to pending.
    - ``lease_timeout``: this scheduler renews its lease on its running tasks every
      ``lease_timeout / 6`` s (at most 2 s) from a thread and connection of its own
      (:class:`~taskmill.lease.LeaseKeeper`); a task whose owner's lease ran out by the
      store's clock (a killed process, a machine gone) is put back to pending by any
      scheduler on the store, not counted as a try.  A dead process of this host and
      PID namespace is detected at once.  With no renewal for ``lease_timeout / 2`` s
      the running attempts are told to stop (``ctx.cancelled``; fencing, see docs/guide.md,
      "Leases"), before anyone else may take them.
    - ``history_retention``: a ``timedelta``; finished tasks older than that are removed
      from history in the background (``store.prune_history(older_than=…)``) shortly
      after start and then every few minutes (:data:`RETENTION_INTERVAL`), each prune
      logged with its count.  A prune never runs in the dispatch loop, deletes in short
      transactions, and one that fails is logged and tried again next time.

    ``store`` is a location (a SQLite file path, or a PostgreSQL URL) or an open
    :class:`TaskStore` — or an object declared one with ``abc.ABCMeta.register(TaskStore,
    cls)`` (a test's wrapper forwarding every call to a real store); anything else raises
    ``SchedulerError(kind="invalid_argument")``.
    """

    def __init__(
        self,
        store: str | os.PathLike[str] | TaskStore,
        *,
        executors: Mapping[str, Executor] | None = None,
        max_concurrency: int = 4,
        group_concurrency: Mapping[str, int] | None = None,
        default_group_concurrency: int | None = None,
        byte_budgets: Mapping[str, int] | None = None,
        rate_limits: Mapping[str, RateLimit] | None = None,
        max_retries: int = 3,
        retry_delay: float = 1.0,
        max_retry_delay: float = 300.0,
        poll_interval: float = 0.5,
        close_timeout: float = 10.0,
        lease_timeout: float = DEFAULT_LEASE_TIMEOUT,
        event_buffer: int = 10_000,
        history_retention: timedelta | None = None,
    ) -> None:
        if max_concurrency < 1:
            raise SchedulerError("max_concurrency must be at least 1", kind="invalid_argument")
        if max_retries < 0:
            raise SchedulerError("max_retries must be >= 0", kind="invalid_argument")
        limits = check_limits(
            group_concurrency, default_group_concurrency, byte_budgets, rate_limits
        )
        if not lease_timeout > 0:
            raise SchedulerError(
                "lease_timeout must be more than 0 seconds", kind="invalid_argument"
            )
        if history_retention is not None and (
            not isinstance(history_retention, timedelta) or history_retention <= timedelta(0)
        ):
            raise SchedulerError(
                "history_retention must be a datetime.timedelta of more than 0 (such as "
                f"timedelta(days=30)), or None to keep every finished task; not "
                f"{history_retention!r}",
                kind="invalid_argument",
            )
        if not isinstance(store, str | os.PathLike | TaskStore):
            raise SchedulerError(
                f"Scheduler(store=…) takes a location (a file path or a PostgreSQL URL) or an "
                f"open TaskStore, not {type(store).__name__}",
                kind="invalid_argument",
            )
        self._store_arg = store
        self._own_store = not isinstance(store, TaskStore)
        self._store: TaskStore | None = store if isinstance(store, TaskStore) else None
        self.executors: dict[str, Executor] = dict(executors or {})
        self.max_concurrency = max_concurrency
        self.group_concurrency = dict(limits.group_limits)
        self.default_group_concurrency = limits.default_group_limit
        self.byte_budgets = dict(limits.byte_budgets)
        self.rate_limits = dict(limits.rate_limits)
        #: What held groups back at the last claim (group, or ``type:T``, -> "group limit",
        #: "byte budget" or "rate limit"); the live widget shows it.
        self.held: dict[str, str] = {}
        self._claim_wait: float | None = None  # a rate limit refills a token in … s
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.poll_interval = poll_interval
        self.close_timeout = close_timeout
        self.lease_timeout = lease_timeout
        self.event_buffer = event_buffer
        self.history_retention = history_retention
        #: The last store error that held back recording a result, while it lasts
        #: (``None`` when the store answers); the live widget shows it.
        self.store_error: str | None = None

        self._owner: str | None = None
        self._running: dict[int, _Attempt] = {}
        self._subscribers: set[Subscription] = set()
        self._wake: asyncio.Event | None = None
        self._activity: asyncio.Event | None = None
        self._unwatch: Callable[[], None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._closing = False
        self._started = False
        self._completions: list[tuple[ClaimedTask, str, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self._reconcile_needed = False
        self._owner_stale = False  # our lease was lost; a new identity is being made
        self._keeper: LeaseKeeper | None = None
        self._fenced = False  # renewals fail: attempts told to stop, nothing claimed
        self._lease_wake: asyncio.Event | None = None
        # the last claim filled every free slot: the next wake-up comes from an attempt
        # ending, so the loop need not ask the store when a retry is due
        self._slots_filled = False
        self._lost_checked = 0.0  # time.monotonic() of the last look for lost attempts
        self._fatal: BaseException | None = None
        self._unrecorded: list[int] = []
        self._close_hooks: list[Callable[[], Awaitable[None]]] = []

    # ------------------------------------------------------------------ lifecycle

    @property
    def worker(self) -> str | None:
        """This scheduler's identity in the store (``host:pid:token``): the ``worker`` of
        the attempts it runs (see ``store.attempts()``).  ``None`` before it starts; a new
        one after its lease was lost and it registered again."""
        return self._owner

    @property
    def store(self) -> TaskStore:
        """The scheduler's :class:`TaskStore`, for queries: the one it opened from a
        location (whatever the engine), or the one it was given."""
        if self._store is None:
            raise SchedulerError("the scheduler is not started (use 'async with')", kind="state")
        return self._store

    async def start(self) -> Scheduler:
        """Open the store and start dispatching (``async with`` does this)."""
        if self._started:
            return self
        self._loop = asyncio.get_running_loop()
        if self._store is None:
            location = self._store_arg
            assert isinstance(location, (str, os.PathLike))  # no store object: a location
            self._store = await asyncio.to_thread(TaskStore.open, location)
        else:
            try:
                await asyncio.to_thread(self._store.recover)
            except SchedulerError as exc:  # the lease loop tries again shortly
                log.warning("taskmill: could not recover stopped workers' tasks: %s", exc)
        self._owner = await asyncio.to_thread(
            self._store.new_owner, lease_timeout=self.lease_timeout
        )
        self._wake = asyncio.Event()
        self._activity = asyncio.Event()
        self._lease_wake = asyncio.Event()
        self._fenced = False
        self._owner_stale = False
        self._keeper = LeaseKeeper(
            self._store,
            self._owner,
            self.lease_timeout,
            on_fence=self._fence_from_keeper,
            on_unfence=lambda: self._from_keeper(self._unfence),
            on_lost=lambda owner: self._from_keeper(self._lease_gone, owner),
        ).start()
        self._pool = ThreadPoolExecutor(
            max_workers=self.max_concurrency, thread_name_prefix="taskmill-exec"
        )
        self._started = True
        self._closing = False
        self._fatal = None
        self._unrecorded = []
        self._loop_task = asyncio.create_task(self._dispatch_loop(), name="taskmill-dispatch")
        self._loop_task.add_done_callback(self._loop_ended)
        # a store shared by many machines (PostgreSQL) can tell when another one commits
        # work: dispatch then, not at the next poll (polling stays as the fallback)
        loop = self._loop

        def wake_up() -> None:  # called from the store's listening thread
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                loop.call_soon_threadsafe(self._poke)

        self._unwatch = self._store.watch(wake_up)  # None: the engine cannot tell
        self._lease_task = asyncio.create_task(self._lease_loop(), name="taskmill-lease")
        if self.history_retention is not None:
            self._retention_task = asyncio.create_task(
                self._retention_loop(self.history_retention), name="taskmill-retention"
            )
        return self

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        """The dispatch loop ended: on close that is expected; otherwise it is fatal."""
        if task.cancelled() or self._closing:
            return
        exc = task.exception()
        if self._fatal is None:
            self._fatal = exc or SchedulerError("the dispatch loop stopped", kind="scheduler")
        if self._activity is not None:
            self._activity.set()

    async def __aenter__(self) -> Scheduler:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self, timeout: float | None = None) -> None:
        """Stop dispatching; let running attempts finish within ``timeout`` (default
        ``close_timeout``), then tell the rest to stop and, once their code has
        returned, put them back to pending, not counted as a try (an attempt that
        returns normally after it was told is put back too: it may have stopped early).

        Raises :class:`SchedulerError` after closing when the dispatch loop had
        failed for good, or when results could not be recorded because the store
        stayed unavailable (those tasks return to pending when this scheduler's lease
        runs out).
        """
        if not self._started or self._closing:
            return
        self._closing = True
        timeout = self.close_timeout if timeout is None else timeout
        assert self._loop_task is not None and self._owner is not None
        # the loop ends at its next turn; a claim under way finishes first (cancelling it
        # would leave its thread committing a claim nobody starts)
        self._poke()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._loop_task
        jobs = {a.job for a in self._running.values() if a.job is not None}
        if jobs:
            _, pending = await asyncio.wait(jobs, timeout=timeout)
            for attempt in list(self._running.values()):
                if attempt.job in pending and not attempt.settling:
                    attempt.stop_reason = attempt.stop_reason or "shutdown"
                    attempt.ctx._cancelled = True
                    if self._is_async(attempt):
                        attempt.job.cancel()
            # code on a thread cannot be interrupted: its task stays ours (the lease
            # is renewed meanwhile) until it returns and its result is recorded
            while pending:
                _, pending = await asyncio.wait(pending, timeout=30.0)
                if pending:
                    log.warning(
                        "taskmill: still waiting for %d executor(s) told to stop (tasks %s)",
                        len(pending),
                        sorted(a.task.id for a in self._running.values() if a.job in pending),
                    )
        if self._flusher is not None:
            with contextlib.suppress(Exception):
                await self._flusher
        if self._unwatch is not None:
            await asyncio.to_thread(self._unwatch)
            self._unwatch = None
        if self._lease_task is not None:
            self._lease_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._lease_task
        if self._keeper is not None:
            await asyncio.to_thread(self._keeper.stop)
            self._keeper = None
        if self._retention_task is not None:
            # a prune under way finishes its current transaction in its thread; the store
            # refuses the next one once closed
            self._retention_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._retention_task
            self._retention_task = None
        store = self.store
        problems: list[str] = []
        try:
            await self._persist("the release of this worker", store.release_owner, self._owner)
        except SchedulerError as exc:
            problems.append(str(exc))
        for hook in list(self._close_hooks):
            try:
                await hook()
            except Exception:  # a view must never stop a close
                log.exception("taskmill: a close hook failed")
        for sub in list(self._subscribers):
            sub._end()
        self._subscribers.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._own_store:
            await asyncio.to_thread(store.close)
            self._store = None
        self._started = False
        if self._unrecorded:
            problems.insert(
                0,
                f"the results of tasks {sorted(self._unrecorded)} could not be recorded; "
                f"they return to pending when this worker's lease ({self.lease_timeout:g} s) "
                "runs out",
            )
        if self._fatal is not None:
            raise SchedulerError(
                f"the scheduler's dispatch loop failed: {self._fatal!r}", kind="scheduler"
            ) from self._fatal
        if problems:
            raise SchedulerError("; ".join(problems), kind="store")

    def _on_close(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` when closing, after every result is recorded and before the
        store is closed (the live widget's final redraw)."""
        self._close_hooks.append(hook)

    def _is_async(self, attempt: _Attempt) -> bool:
        return inspect.iscoroutinefunction(self.executors.get(attempt.task.task_type))

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
        return await self._db(
            self.store.submit_batch, tasks, on_commit=self._commit_hook(), progress=progress
        )

    def _commit_hook(self) -> Callable[[list[int], list[tuple[int, int]]], None]:
        """The ``on_commit`` of a batch run off the loop: each commit is handled on it."""
        loop = asyncio.get_running_loop()

        def committed(inserted: list[int], superseded: list[tuple[int, int]]) -> None:
            loop.call_soon_threadsafe(self._after_batch_commit, inserted, superseded)

        return committed

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

    async def cancel_where(
        self,
        *,
        task_type: str | Sequence[str] | None = None,
        group: str | Sequence[str] | None = None,
        label: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        dedup_keys: Iterable[str] | None = None,
    ) -> int:
        """Cancel every active task matching all the filters given (see
        :meth:`TaskStore.cancel_where`); returns how many.

        This scheduler's own running attempts among them are told before this returns
        (``ctx.cancelled``; each emits ``TaskCancelled`` when it stops); other schedulers
        notice within their ``poll_interval``.  No event is emitted for the pending ones.
        """
        count = await self._db(
            self.store.cancel_where,
            task_type=task_type,
            group=group,
            label=label,
            status=status,
            dedup_keys=dedup_keys,
        )
        if count:
            self._lost_checked = 0.0  # look now, not at the next poll
            await self._check_lost()
            self._poke()
        return count

    async def retry_failed(
        self,
        *,
        task_type: str | Sequence[str] | None = None,
        group: str | Sequence[str] | None = None,
        since: dt.datetime | dt.timedelta | None = None,
    ) -> BatchOutcome:
        """Submit the failed tasks of history again (see :meth:`TaskStore.retry_failed`),
        as :meth:`submit_batch` does: one ``BatchSubmitted`` per commit, the dispatcher
        woken."""
        return await self._db(
            self.store.retry_failed,
            task_type=task_type,
            group=group,
            since=since,
            on_commit=self._commit_hook(),
        )

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
        if attempt.job is not None and self._is_async(attempt):
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
                self._raise_if_failed()
                if not self._running:
                    try:
                        left = await self._db(self.store.has_work, self.executors)
                    except SchedulerError as exc:  # a query: wait through it, say so
                        log.warning("taskmill wait_idle: %s", exc)
                        left = True
                    if not left and not self._running:
                        return
                await _wait_event(self._activity, self.poll_interval)

        if not self._started:
            raise SchedulerError("the scheduler is not started (use 'async with')", kind="state")
        async with asyncio.timeout(timeout):
            await idle()

    def _raise_if_failed(self) -> None:
        if self._fatal is not None:
            raise SchedulerError(
                f"the scheduler's dispatch loop failed: {self._fatal!r}", kind="scheduler"
            ) from self._fatal

    @property
    def running(self) -> dict[int, str]:
        """Ids of the attempts running now, with their task type."""
        return {tid: a.task.task_type for tid, a in self._running.items()}

    # ------------------------------------------------------------------ dispatching

    async def _dispatch_loop(self) -> None:
        assert self._wake is not None
        failures = 0
        unexpected = 0
        while not self._closing:
            self._wake.clear()
            try:
                if self._reconcile_needed:
                    await self._reconcile()
                await self._check_lost()
                await self._dispatch()
                delay = await self._next_delay()
                failures = unexpected = 0
            except SchedulerError as exc:  # the store is busy or failing: say so, go on
                failures += 1
                delay = self._loop_backoff(failures)
                log.warning("taskmill dispatch: %s (retrying in %.2f s)", exc, delay)
            except Exception as exc:
                failures += 1
                unexpected += 1
                delay = self._loop_backoff(failures)
                if unexpected >= MAX_UNEXPECTED_ERRORS:
                    log.critical(
                        "taskmill dispatch: %d unexpected errors in a row; dispatching stops",
                        unexpected,
                        exc_info=exc,
                    )
                    self._fatal = exc
                    if self._activity is not None:
                        self._activity.set()
                    return
                log.exception("taskmill dispatch: unexpected error (retrying in %.2f s)", delay)
            await _wait_event(self._wake, delay)

    def _loop_backoff(self, failures: int) -> float:
        """How long the dispatch loop waits after ``failures`` failed rounds in a row:
        doubling from 50 ms up to a second (or the poll interval, if longer)."""
        return min(max(self.poll_interval, 1.0), 0.05 * 2 ** min(failures, 10))

    async def _next_delay(self) -> float:
        if not self.executors:
            return self.poll_interval
        delay = self.poll_interval
        if self._claim_wait is not None:  # a rate limit held tasks back: wake at its refill
            delay = min(delay, self._claim_wait)
        if self._slots_filled:
            return delay
        due = await self._db(self.store.next_retry_at)
        if due is None:
            return delay
        return max(0.0, min(delay, due - self._store_now()))

    async def _dispatch(self) -> None:
        # an attempt whose code has returned holds no slot while its outcome is
        # recorded: the next claim overlaps the last completions' commit
        free = self.max_concurrency - sum(not a.settling for a in self._running.values())
        self._slots_filled = free <= 0
        if free <= 0 or not self.executors or self._closing or self._owner_stale or self._fenced:
            return
        owner = self._owner
        assert owner is not None
        # a claim that raised may still have committed: find out before claiming again
        self._reconcile_needed = True
        counted: dict[str, Any] = {}
        if self.byte_budgets:
            counted["byte_budgets"] = self.byte_budgets
        if self.rate_limits:
            counted["rate_limits"] = self.rate_limits
        claimed = await self._db(
            self.store.claim,
            free,
            task_types=self.executors,
            owner=owner,
            group_limits=self.group_concurrency,
            default_group_limit=self.default_group_concurrency,
            **counted,
        )
        self._reconcile_needed = False
        self._claim_wait = getattr(claimed, "wait", None)
        self.held = dict(getattr(claimed, "held", None) or {})
        self._slots_filled = len(claimed) == free
        # claimed while close() began, or under an identity whose lease was lost (or that
        # was fenced) meanwhile: back to the queue, not started.  Started, such an attempt
        # ran untold while the new identity, having given the old one's tasks back, could
        # claim and run the same task again at once (issue 21's promise, broken under load)
        lost = self._owner_stale or self._owner != owner or self._fenced
        if self._closing or lost:
            if claimed:
                await self._db(
                    self.store.release,
                    [t.id for t in claimed],
                    owner=owner,
                    attempts=[t.attempt for t in claimed],
                )
            return
        for task in claimed:
            self._start(task, owner)

    async def _reconcile(self) -> None:
        """Give back the tasks the store has running for us that no attempt here runs
        (a claim that committed but whose answer never arrived)."""
        owner = self._owner
        assert owner is not None
        owned = await self._db(self.store.owned_tasks, owner)
        stray = [tid for tid in owned if tid not in self._running]
        if stray:
            released = await self._db(self.store.release, stray, owner=owner)
            log.warning("taskmill: %d claimed task(s) had no attempt here; pending again", released)
            self._poke()
        self._reconcile_needed = False

    def _store_now(self) -> float:
        """The store's clock as last read by the lease keeper (this machine's before)."""
        keeper = self._keeper
        at = keeper.clock.now() if keeper is not None else None
        return time.time() if at is None else at

    @property
    def clock_offset(self) -> float:
        """Seconds the store's clock is ahead of this machine's (negative: behind), as the
        last lease renewal measured; a difference over a second is logged at WARNING."""
        keeper = self._keeper
        return 0.0 if keeper is None else keeper.clock.offset

    def _from_keeper(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the event loop (called from the lease keeper's threads)."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                loop.call_soon_threadsafe(fn, *args)

    def _fence_from_keeper(self) -> None:
        """No renewal for half the lease (the keeper's watchdog thread): every attempt's
        ``ctx.cancelled`` is set here at once — the event loop may be busy — then the
        loop stops them (:meth:`_fence`)."""
        for attempt in self._running.copy().values():
            if attempt.stop_reason is None and not attempt.settling:
                attempt.ctx._cancelled = True
        self._from_keeper(self._fence)

    def _fence(self) -> None:
        """Stop every running attempt (async ones are cancelled) and claim nothing until
        a renewal lands: once they return, their tasks go back to pending if still ours."""
        self._fenced = True
        told = [a for a in self._running.values() if a.stop_reason is None and not a.settling]
        log.warning(
            "taskmill: %d running attempt(s) told to stop: this worker cannot renew its "
            "lease, and after %g s without one other workers may take the tasks",
            len(told),
            self.lease_timeout,
        )
        for attempt in told:
            self._stop_attempt(attempt, "fenced")

    def _unfence(self) -> None:
        self._fenced = False
        self._poke()

    def _lease_gone(self, owner: str) -> None:
        """The store says ``owner``'s lease was taken away: a new identity is made."""
        if owner == self._owner and not self._owner_stale:
            self._owner_stale = True
            self._lease_lost()
            if self._lease_wake is not None:
                self._lease_wake.set()

    async def _lease_loop(self) -> None:
        """Make a new identity when the lease was lost; put back the tasks of stopped
        workers and expire tasks not started in time.  The lease itself is renewed by
        the :class:`~taskmill.lease.LeaseKeeper` on threads of its own."""
        assert self._lease_wake is not None
        tick = max(0.05, min(self.lease_timeout / 3, 2.0))
        while True:
            await _wait_event(self._lease_wake, tick)
            self._lease_wake.clear()
            try:
                if self._owner_stale:
                    # a new identity: results of the old one's attempts are refused, even
                    # for a task this scheduler claims again meanwhile
                    old = self._owner
                    assert old is not None
                    sent = time.monotonic()
                    owner = await self._db(self.store.new_owner, lease_timeout=self.lease_timeout)
                    self._owner = owner
                    if self._keeper is not None:
                        self._keeper.replace(owner, sent)
                    self._owner_stale = False
                    self._fenced = False
                    await self._db(self.store.release_owner, old)
                    self._poke()
                recovered = await self._db(self.store.recover)
                expired = await self._db(self.store.expire_due)
            except Exception as exc:
                log.warning("taskmill: could not look for stopped workers' tasks: %s", exc)
                continue
            if recovered:
                self._publish(TasksRecovered(count=recovered))
                self._poke()
            if expired:
                log.info("taskmill: %d task(s) not started in time expired", expired)
                self._publish(TasksExpired(count=expired))

    async def _retention_loop(self, retention: timedelta) -> None:
        """Prune history older than ``retention`` now and then, off the dispatch loop;
        a failed prune is logged and tried again at the next turn."""
        delay = RETENTION_FIRST_DELAY
        while True:
            await asyncio.sleep(delay)
            delay = RETENTION_INTERVAL
            try:
                removed = await self._db(self.store.prune_history, older_than=retention)
            except Exception as exc:  # never fatal: the next turn tries again
                log.warning(
                    "taskmill: could not prune history older than %s (trying again in %g s): %s",
                    retention,
                    RETENTION_INTERVAL,
                    exc,
                )
                continue
            log.log(
                logging.INFO if removed else logging.DEBUG,
                "taskmill: history retention removed %d task(s) finished more than %s ago",
                removed,
                retention,
            )

    def _lease_lost(self) -> None:
        """Our lease ran out and our tasks went back to the queue: every attempt here
        is told to stop; none of them may record a result."""
        lost = [a for a in self._running.values() if a.stop_reason is None]
        log.warning(
            "taskmill: this worker's lease ran out (no renewal for %g s); %d running "
            "attempt(s) lost their tasks to the queue",
            self.lease_timeout,
            len(lost),
        )
        for attempt in lost:
            self._stop_attempt(attempt, "lost")

    def _start(self, task: ClaimedTask, owner: str) -> None:
        def report(fraction: float, message: str | None) -> None:
            self._publish_threadsafe(
                TaskProgress(task_id=task.id, fraction=fraction, message=message)
            )

        attempt = _Attempt(
            task=task, ctx=TaskContext(task, report), started=time.monotonic(), owner=owner
        )
        self._running[task.id] = attempt
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
            thread = self._loop.run_in_executor(self._pool, fn, attempt.ctx)
            try:
                result = await asyncio.shield(thread)
            except asyncio.CancelledError:
                # a thread cannot be interrupted: the attempt is ours until it returns
                attempt.ctx._cancelled = True
                await asyncio.wait({thread})
                result = thread.result()
        if inspect.isawaitable(result):
            await result

    async def _run(self, attempt: _Attempt) -> None:
        task = attempt.task
        error: BaseException | None = None
        returned = False
        try:
            try:
                await self._call(attempt)
                returned = True
            except asyncio.CancelledError:
                if attempt.stop_reason is None:
                    attempt.stop_reason = "shutdown"
            except Exception as exc:
                error = exc
            attempt.settling = True
            self._poke()  # its slot is free while the outcome is recorded
            try:
                await self._settle(attempt, error, returned)
            except Exception:  # the store stayed unavailable through close
                log.exception("taskmill: the result of task %s could not be recorded", task.id)
                self._unrecorded.append(task.id)
        finally:
            # the task may run again here already (its retry was recorded by a try
            # whose answer was lost): only this attempt's own entry goes
            if self._running.get(task.id) is attempt:
                del self._running[task.id]
            attempt.done.set()
            if self._activity is not None:
                self._activity.set()
            self._poke()

    async def _settle(self, attempt: _Attempt, error: BaseException | None, returned: bool) -> None:
        """Record how an attempt ended.  Every store call here is retried until it
        lands (see :meth:`_persist`): a task is never left running under this worker."""
        task = attempt.task
        owner = attempt.owner
        reason = attempt.stop_reason
        if reason == "lost":
            log.warning("taskmill: task %s ended here after its lease was lost", task.id)
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
        if reason in ("shutdown", "fenced"):  # told to stop: pending again once it returned
            await self._persist(
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
                self._publish_completed(task, duration)
            else:
                await self._report_lost(task, owner, duration=duration)
            return
        message = f"{type(error).__name__}: {error}"
        max_retries = self.max_retries if task.max_retries is None else task.max_retries
        retry_at = None
        if task.attempt <= max_retries:
            delay = min(self.max_retry_delay, self.retry_delay * 2 ** (task.attempt - 1))
            retry_at = self._store_now() + delay
        result = await self._persist(
            f"the failure of task {task.id}",
            self.store.fail,
            task.id,
            owner=owner,
            error=message,
            retry_at=retry_at,
            attempt=task.attempt,
            traceback=last_frames(error),
        )
        if result is None:
            await self._report_lost(task, owner, failure=(message, retry_at))
            return
        log.debug("task %s attempt %s failed: %s", task.id, task.attempt, message)
        self._publish_failed(task, message, retry_at if result == "retry" else None)

    def _publish_completed(self, task: ClaimedTask, duration: float) -> None:
        self._publish(
            TaskCompleted(
                task_id=task.id,
                task_type=task.task_type,
                group=task.group,
                attempt=task.attempt,
                duration=duration,
            )
        )

    def _publish_failed(self, task: ClaimedTask, message: str, retry_at: float | None) -> None:
        self._publish(
            TaskFailed(
                task_id=task.id,
                task_type=task.task_type,
                group=task.group,
                attempt=task.attempt,
                error=message,
                will_retry=retry_at is not None,
                retry_at=retry_at,
            )
        )
        if retry_at is not None and self._loop is not None:
            self._loop.call_at(self._loop.time() + (retry_at - self._store_now()), self._poke)

    async def _persist(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call the store until the call lands: a result must be recorded even when the
        store is briefly unavailable (locked by a long writer, a disk that fills up and
        clears).  Retries with backoff, logs each failure at WARNING and publishes
        :class:`StoreUnavailable`.  While closing, gives up after ``close_timeout``
        seconds of failures and raises."""
        delay = 0.05
        tries = 0
        closing_since: float | None = None
        while True:
            try:
                result = await self._db(fn, *args, **kwargs)
            except Exception as exc:
                tries += 1
                if self._closing:
                    now = time.monotonic()
                    closing_since = closing_since or now
                    if now - closing_since > self.close_timeout:
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
                self._publish(
                    StoreUnavailable(operation=what, error=str(exc), tries=tries, retry_in=delay)
                )
                await asyncio.sleep(delay)
                delay = min(MAX_STORE_BACKOFF, delay * 2)
                continue
            if tries:
                self.store_error = None
                log.warning("taskmill: recorded %s after %d failed tries", what, tries)
                self._publish(StoreRecovered(operation=what, tries=tries))
            return result

    async def _complete(self, task: ClaimedTask, owner: str) -> bool:
        """Record a successful attempt. Completions that arrive while a write is under
        way are grouped into the next transaction (one commit for many tasks)."""
        assert self._loop is not None
        future: asyncio.Future[bool] = self._loop.create_future()
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
                done = await self._persist(
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
        lost = await self._persist(
            f"the state of task {task.id}",
            self.store.lost_tasks,
            [task.id],
            owner=owner,
            attempts=[task.attempt],
        )
        status, replaced_by = lost.get(task.id, ("gone", None))
        if status == "completed" and duration is not None:
            self._publish_completed(task, duration)
        elif status == "failed" and failure is not None:
            self._publish_failed(task, failure[0], None)
        elif status == "superseded":
            self._publish(
                TaskSuperseded(task_id=task.id, replaced_by=replaced_by or 0, was_running=True)
            )
        elif status in ACTIVE_STATUSES:
            if failure is not None and failure[1] is not None and status != "paused":
                self._publish_failed(task, failure[0], failure[1])  # our retry landed
            else:
                log.warning(
                    "taskmill: task %s ended here after its lease had passed to the queue",
                    task.id,
                )
        else:
            self._publish(TaskCancelled(task_id=task.id, was_running=True))

    async def _check_lost(self) -> None:
        """Tell running attempts whose task was cancelled/superseded by another process
        (a look at most once per ``poll_interval``)."""
        if time.monotonic() - self._lost_checked < self.poll_interval:
            return
        owner = self._owner
        watched = [
            tid
            for tid, a in self._running.items()
            if a.stop_reason is None and not a.settling and a.owner == owner
        ]
        if not watched:
            return
        lost = await self._db(
            self.store.lost_tasks,
            watched,
            owner=owner,
            attempts=[self._running[tid].task.attempt for tid in watched],
        )
        self._lost_checked = time.monotonic()
        for tid, (status, replaced_by) in lost.items():
            attempt = self._running.get(tid)
            if status in ("completed", "failed"):
                continue  # finished here, just now: not lost
            if attempt is not None and not attempt.settling:
                if status in ACTIVE_STATUSES:
                    reason = "lost"  # our lease ran out: the queue has it again
                else:
                    reason = "superseded" if status == "superseded" else "cancelled"
                self._stop_attempt(attempt, reason, replaced_by)

    def widget(self, *, refresh: float = 2.0) -> Any:
        """A live ipywidgets view of this scheduler (call from a running event loop, as
        in a notebook cell); it stops updating when the scheduler closes."""
        return display.queue_widget(self, refresh=refresh)

    async def stream(self) -> AsyncIterator[Event]:
        """Shorthand: iterate over a fresh subscription."""
        sub = self.subscribe()
        try:
            async for event in sub:
                yield event
        finally:
            sub.close()
