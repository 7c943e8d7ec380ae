"""The async scheduler: dispatch over a store, its lifecycle and its public controls.

:class:`Scheduler` wires together the jobs of the package, each in a module of its own:
``events`` (the event bus), ``attempts`` (an attempt and its executor's context),
``settle`` (recording how an attempt ended: completions batched, retries with backoff),
``leases`` (the worker's identity and lease), ``dispatch`` (the loop that claims and
runs), ``retention`` (history pruned in the background) and ``schedules`` (the store's
schedules fired as their occurrences come due).  No SQL here: every store
call is one of :class:`~taskmill.store.TaskStore`'s methods, run off the event loop
(``asyncio.to_thread``), so a long write never blocks dispatching or a notebook.

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
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from .. import display
from ..batch.outcome import BatchOutcome
from ..batch.status import BatchStatus
from ..model import (
    Aging,
    BatchSubmitted,
    Event,
    RateLimit,
    SchedulerError,
    SubmitOutcome,
    TaskCancelled,
    TaskSubmission,
    TaskSubmitted,
    TaskSuperseded,
    TaskUpgraded,
)
from ..store import TaskStore
from ..store.picking import check_limits
from ..store.workers import DEFAULT_LEASE_TIMEOUT
from .attempts import Attempt, Executor
from .batches import BatchSweep
from .dispatch import Dispatcher
from .events import EventBus, Subscription, wait_set
from .leases import WorkerLease
from .progress import ProgressWriter
from .retention import prune_history_now_and_then
from .schedules import ScheduleTicker
from .settle import Recorder

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

__all__ = ["Scheduler"]

log = logging.getLogger("taskmill")


class Scheduler:
    """Dispatches the tasks of a store to executors, by priority then queue order.

    ``async with Scheduler("tasks.db", executors={"sync.upload": upload}) as sched:``

    - ``executors`` maps a task type to ``fn(ctx)``, ``async def`` or plain (plain
      functions run in a thread pool). A task whose type has no executor stays pending.
    - ``finalizers`` maps a task type to ``fn(ctx)`` (``async def`` or plain): a task of
      that type whose code spawned children (``ctx.spawn``) runs it once all of them
      ended, before it ends itself, with ``ctx.children`` their counts by status; an
      exception in it fails the task (``finalizer_failed``), never retried.
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
      (:class:`~taskmill.scheduler.leases.LeaseKeeper`); a task whose owner's lease ran out by the
      store's clock (a killed process, a machine gone) is put back to pending by any
      scheduler on the store, not counted as a try.  A dead process of this host and
      PID namespace is detected at once.  With no renewal for ``lease_timeout / 2`` s
      the running attempts are told to stop (``ctx.cancelled``; fencing, see docs/guide.md,
      "Leases"), before anyone else may take them.
    - ``preempt_priority``: when a task at that priority or more urgent waits and no slot
      is free, running attempts of less urgent tasks (least urgent first) are told to
      stop (``ctx.cancelled``); once their code returns their tasks are ``paused``
      (``preempted_at`` set, the attempt not counted as a try), and back to pending in
      their queue place once no such urgent task waits.
    - ``aging``: a :class:`~taskmill.Aging`: claims go by effective priority — a pending
      task's priority improved by ``step`` per ``every`` waited, never past ``floor`` —
      then queue order; stored priorities are unchanged.  The scheduler keeps its policy
      in the store when it starts, so ``tasks()`` shows ``effective_priority`` by it.
    - ``history_retention``: a ``timedelta``; finished tasks older than that are removed
      from history in the background (``store.prune_history(older_than=…)``) shortly
      after start and then every few minutes (:data:`.retention.RETENTION_INTERVAL`),
      each prune logged with its count.  A prune never runs in the dispatch loop, deletes in short
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
        finalizers: Mapping[str, Executor] | None = None,
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
        preempt_priority: int | None = None,
        aging: Aging | None = None,
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
        if preempt_priority is not None and (
            isinstance(preempt_priority, bool)
            or not isinstance(preempt_priority, int)
            or not 0 <= preempt_priority <= 255
        ):
            raise SchedulerError(
                f"preempt_priority must be a priority from 0 to 255 (or None), not "
                f"{preempt_priority!r}",
                kind="invalid_argument",
            )
        if aging is not None and not isinstance(aging, Aging):
            raise SchedulerError(
                f"aging must be a taskmill.Aging (or None), not {aging!r}", kind="invalid_argument"
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
        self.finalizers: dict[str, Executor] = dict(finalizers or {})
        self.preempt_priority = preempt_priority
        self.aging = aging
        self.max_concurrency = max_concurrency
        self.group_concurrency = dict(limits.group_limits)
        self.default_group_concurrency = limits.default_group_limit
        self.byte_budgets = dict(limits.byte_budgets)
        self.rate_limits = dict(limits.rate_limits)
        self.max_retries = max_retries
        self.retry_delay = retry_delay
        self.max_retry_delay = max_retry_delay
        self.poll_interval = poll_interval
        self.close_timeout = close_timeout
        self.lease_timeout = lease_timeout
        self.event_buffer = event_buffer
        self.history_retention = history_retention

        self._events = EventBus()
        #: Tasks announced superseded lately (each is announced once).
        self._superseded_seen: collections.deque[int] = collections.deque(maxlen=4096)
        self._events.listeners.append(self._note_superseded)
        #: The attempts running here by task id (the live widget reads them).
        self._running: dict[int, Attempt] = {}
        self._wake: asyncio.Event | None = None
        self._started = False
        self._closing = False
        # made at each start: the lease, the recorder of outcomes, the dispatch loop (the
        # last ones stay after close: what they saw last can still be read)
        self._lease: WorkerLease | None = None
        self._recorder: Recorder | None = None
        self._dispatcher: Dispatcher | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._unwatch: Callable[[], None] | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._retention_task: asyncio.Task[None] | None = None
        self._batch_sweep: BatchSweep | None = None
        self._sweep_task: asyncio.Task[None] | None = None
        self._progress: ProgressWriter | None = None
        self._progress_task: asyncio.Task[None] | None = None
        self._ticker: ScheduleTicker | None = None
        self._ticker_task: asyncio.Task[None] | None = None
        self._close_hooks: list[Callable[[], Awaitable[None]]] = []
        # what it did and the queue it works on (metrics.py; prometheus_client is loaded
        # with the first scheduler, not with taskmill)
        from .metrics import SchedulerMetrics

        self._metrics = SchedulerMetrics(lambda: self._store, lambda: len(self._running))
        self._events.listeners.append(self._metrics.notice)
        self._on_close(lambda: asyncio.to_thread(self._metrics.close))

    # ------------------------------------------------------------------ state

    @property
    def worker(self) -> str | None:
        """This scheduler's identity in the store (``host:pid:token``): the ``worker`` of
        the attempts it runs (see ``store.attempts()``).  ``None`` before it starts; a new
        one after its lease was lost and it registered again."""
        return None if self._lease is None else self._lease.owner

    @property
    def store(self) -> TaskStore:
        """The scheduler's :class:`TaskStore`, for queries: the one it opened from a
        location (whatever the engine), or the one it was given."""
        if self._store is None:
            raise SchedulerError("the scheduler is not started (use 'async with')", kind="state")
        return self._store

    @property
    def held(self) -> dict[str, str]:
        """What held groups back at the last claim (group, or ``type:T``, -> "group
        limit", "byte budget" or "rate limit"); the live widget shows it."""
        return {} if self._dispatcher is None else self._dispatcher.held

    @property
    def store_error(self) -> str | None:
        """The last store error that held back recording a result, while it lasts
        (``None`` when the store answers); the live widget shows it."""
        return None if self._recorder is None else self._recorder.store_error

    @property
    def clock_offset(self) -> float:
        """Seconds the store's clock is ahead of this machine's (negative: behind), as the
        last lease renewal measured; a difference over a second is logged at WARNING."""
        return 0.0 if self._lease is None else self._lease.clock_offset

    @property
    def running(self) -> dict[int, str]:
        """Ids of the attempts running now, with their task type."""
        return {tid: a.task.task_type for tid, a in self._running.items()}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> Scheduler:
        """Open the store and start dispatching (``async with`` does this)."""
        if self._started:
            return self
        loop = asyncio.get_running_loop()
        if self._store is None:
            location = self._store_arg
            assert isinstance(location, (str, os.PathLike))  # no store object: a location
            self._store = await asyncio.to_thread(TaskStore.open, location)
        else:
            try:
                await asyncio.to_thread(self._store.recover)
            except SchedulerError as exc:  # the lease loop tries again shortly
                log.warning("taskmill: could not recover stopped workers' tasks: %s", exc)
        store = self._store
        self._events.bind(loop)
        lease = WorkerLease(
            store=store,
            running=self._running,
            events=self._events,
            loop=loop,
            lease_timeout=self.lease_timeout,
            poke=self._poke,
        )
        self._wake = asyncio.Event()
        if self.aging is not None:  # tasks() shows effective priorities by it, anywhere
            await asyncio.to_thread(store.set_aging, self.aging)
        await lease.register()
        self._lease = lease
        self._pool = ThreadPoolExecutor(
            max_workers=self.max_concurrency, thread_name_prefix="taskmill-exec"
        )
        self._recorder = Recorder(
            store=store,
            events=self._events,
            settings=self,
            loop=loop,
            now=lease.now,
            poke=self._poke,
        )
        self._dispatcher = Dispatcher(
            store=store,
            settings=self,
            lease=lease,
            recorder=self._recorder,
            events=self._events,
            running=self._running,
            wake=self._wake,
            loop=loop,
            pool=self._pool,
            on_claim=self._metrics.claimed,
        )
        self._started = True
        self._closing = False
        self._dispatcher.start()

        # a store shared by many machines (PostgreSQL) can tell when another one commits
        # work: dispatch then, not at the next poll (polling stays as the fallback)
        def wake_up() -> None:  # called from the store's listening thread
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                loop.call_soon_threadsafe(self._poke)

        self._unwatch = store.watch(wake_up)  # None: the engine cannot tell
        self._lease_task = asyncio.create_task(lease.upkeep(), name="taskmill-lease")
        sweep = BatchSweep(store=store, events=self._events, poll_interval=self.poll_interval)
        if self._batch_sweep is not None:  # started again: the old sweep follows no more
            self._events.listeners.remove(self._batch_sweep.notice)
        self._events.listeners.append(sweep.notice)
        self._batch_sweep = sweep
        self._sweep_task = asyncio.create_task(sweep.run(), name="taskmill-batches")
        writer = ProgressWriter(store=store, running=self._running)
        if self._progress is not None:
            self._events.listeners.remove(self._progress.notice)
        self._events.listeners.append(writer.notice)
        self._progress = writer
        self._progress_task = asyncio.create_task(writer.run(), name="taskmill-progress")
        # the store's schedules: each occurrence submitted once, by whichever scheduler
        self._ticker = ScheduleTicker(
            store=store, poll_interval=self.poll_interval, after_submit=self._after_submit
        )
        self._ticker_task = asyncio.create_task(self._ticker.run(), name="taskmill-schedules")
        if self.history_retention is not None:
            self._retention_task = asyncio.create_task(
                prune_history_now_and_then(store, self.history_retention),
                name="taskmill-retention",
            )
        return self

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
        lease, recorder, dispatcher = self._lease, self._recorder, self._dispatcher
        assert lease is not None and recorder is not None and dispatcher is not None
        recorder.closing = True
        if self._ticker is not None and self._ticker_task is not None:
            self._ticker.stop()  # no occurrence fired once closing; a look under way ends
            with contextlib.suppress(Exception):
                await self._ticker_task
            self._ticker_task = None
        await dispatcher.stop()
        await self._finish_attempts(timeout)
        with contextlib.suppress(Exception):
            await recorder.flushed()
        if self._unwatch is not None:
            await asyncio.to_thread(self._unwatch)
            self._unwatch = None
        await _cancelled(self._sweep_task)
        self._sweep_task = None
        await _cancelled(self._progress_task)
        self._progress_task = None
        if self._batch_sweep is not None:  # what ended here last may finish a batch
            await self._batch_sweep.sweep()
        await _cancelled(self._lease_task)
        self._lease_task = None
        await lease.stop()
        # a prune under way finishes its current transaction in its thread; the store
        # refuses the next one once closed
        await _cancelled(self._retention_task)
        self._retention_task = None
        store = self.store
        problems: list[str] = []
        try:
            await recorder.persist("the release of this worker", store.release_owner, lease.owner)
        except SchedulerError as exc:
            problems.append(str(exc))
        for hook in list(self._close_hooks):
            try:
                await hook()
            except Exception:  # a view must never stop a close
                log.exception("taskmill: a close hook failed")
        self._events.end()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._own_store:
            await asyncio.to_thread(store.close)
            self._store = None
        self._started = False
        if dispatcher.unrecorded:
            problems.insert(
                0,
                f"the results of tasks {sorted(dispatcher.unrecorded)} could not be recorded; "
                f"they return to pending when this worker's lease ({self.lease_timeout:g} s) "
                "runs out",
            )
        self._raise_if_failed()
        if problems:
            raise SchedulerError("; ".join(problems), kind="store")

    async def _finish_attempts(self, timeout: float) -> None:
        """Let the running attempts finish within ``timeout``, then tell the rest to stop
        and wait until their code has returned and their outcome is recorded."""
        jobs = {a.job for a in self._running.values() if a.job is not None}
        if not jobs:
            return
        _, pending = await asyncio.wait(jobs, timeout=timeout)
        for attempt in list(self._running.values()):
            if attempt.job in pending:
                attempt.shut_down()
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

    def _on_close(self, hook: Callable[[], Awaitable[None]]) -> None:
        """Run ``hook`` when closing, after every result is recorded and before the
        store is closed (the live widget's final redraw)."""
        self._close_hooks.append(hook)

    def _raise_if_failed(self) -> None:
        fatal = None if self._dispatcher is None else self._dispatcher.fatal
        if fatal is not None:
            raise SchedulerError(
                f"the scheduler's dispatch loop failed: {fatal!r}", kind="scheduler"
            ) from fatal

    # ------------------------------------------------------------------ events

    def subscribe(self, maxsize: int | None = None) -> Subscription:
        """A new event stream (bounded: the oldest events are dropped when it lags)."""
        return self._events.subscribe(maxsize or self.event_buffer)

    async def stream(self) -> AsyncIterator[Event]:
        """Shorthand: iterate over a fresh subscription."""
        sub = self.subscribe()
        try:
            async for event in sub:
                yield event
        finally:
            sub.close()

    def _publish(self, event: Event) -> None:
        self._events.publish(event)

    def _poke(self) -> None:
        """Wake the dispatch loop: there may be work to claim."""
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------ submitting

    async def submit(self, submission: TaskSubmission) -> SubmitOutcome:
        """Submit one task (see :meth:`TaskStore.submit`); emits one ``TaskSubmitted``."""
        outcome = await asyncio.to_thread(self.store.submit, submission)
        self._after_submit(outcome)
        return outcome

    def _note_superseded(self, event: Event) -> None:
        if isinstance(event, TaskSuperseded):
            self._superseded_seen.append(event.task_id)

    def _after_submit(self, outcome: SubmitOutcome) -> None:
        if outcome.action == "upgraded":
            self._publish(TaskUpgraded(task_id=outcome.task_id, priority=outcome.priority))
        if outcome.action == "superseded":
            assert outcome.replaced_task_id is not None
            attempt = self._running.get(outcome.replaced_task_id)
            if attempt is not None:  # its TaskSuperseded comes when the attempt stops
                attempt.stop("superseded", outcome.task_id)
            elif outcome.replaced_task_id not in self._superseded_seen:
                # (an attempt of it that ran here may have seen it superseded first, and
                # said so, before this submit returned)
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
        return await asyncio.to_thread(
            self.store.submit_batch, tasks, on_commit=self._commit_hook(), progress=progress
        )

    async def plan_batch(self, tasks: Any) -> BatchOutcome:
        """What :meth:`submit_batch` would do now; writes nothing."""
        return await asyncio.to_thread(self.store.plan_batch, tasks)

    async def retry_failed(
        self,
        *,
        task_type: str | Sequence[str] | None = None,
        group: str | Sequence[str] | None = None,
        since: dt.datetime | dt.timedelta | None = None,
        ids: int | Sequence[int] | None = None,
    ) -> BatchOutcome:
        """Submit the failed tasks of history again (see :meth:`TaskStore.retry_failed`;
        ``ids``: only these failures), as :meth:`submit_batch` does: one
        ``BatchSubmitted`` per commit, the dispatcher woken."""
        return await asyncio.to_thread(
            self.store.retry_failed,
            task_type=task_type,
            group=group,
            since=since,
            ids=ids,
            on_commit=self._commit_hook(),
        )

    def _commit_hook(self) -> Callable[[list[int], list[tuple[int, int]]], None]:
        """The ``on_commit`` of a batch run off the loop: each commit is handled on it."""
        loop = asyncio.get_running_loop()

        def committed(inserted: list[int], superseded: list[tuple[int, int]]) -> None:
            loop.call_soon_threadsafe(self._after_batch_commit, inserted, superseded)

        return committed

    def _after_batch_commit(self, inserted: list[int], superseded: list[tuple[int, int]]) -> None:
        for new_id, old_id in superseded:
            attempt = self._running.get(old_id)
            if attempt is not None:  # its TaskSuperseded comes when the attempt stops
                attempt.stop("superseded", new_id)
        if inserted:
            self._publish(BatchSubmitted(count=len(inserted), task_ids=tuple(inserted)))
            self._poke()

    # ------------------------------------------------------------------ controls

    async def cancel(self, task_id: int) -> bool:
        """Cancel an active task; a running attempt is told through ``ctx.cancelled``.

        Returns whether an active task was cancelled.
        """
        previous = await asyncio.to_thread(self.store.cancel, task_id)
        if previous is None:
            return False
        attempt = self._running.get(task_id)
        if attempt is not None:
            attempt.stop("cancelled")
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
        count = await asyncio.to_thread(
            self.store.cancel_where,
            task_type=task_type,
            group=group,
            label=label,
            status=status,
            dedup_keys=dedup_keys,
        )
        if count:
            if self._dispatcher is not None:  # look now, not at the next poll
                await self._dispatcher.check_lost(now=True)
            self._poke()
        return count

    async def pause(self, task_id: int) -> bool:
        """Hold a pending task back from dispatch."""
        return await asyncio.to_thread(self.store.pause, task_id)

    async def resume(self, task_id: int) -> bool:
        """Let a paused task be dispatched again."""
        ok = await asyncio.to_thread(self.store.resume, task_id)
        self._poke()
        return ok

    # ------------------------------------------------------------------ waiting

    async def wait_idle(self, timeout: float | None = None) -> None:
        """Wait until no task this scheduler can run is pending or running.

        Tasks whose type has no executor here are not waited for.  Raises
        ``TimeoutError`` after ``timeout`` seconds.
        """
        if not self._started or self._dispatcher is None:
            raise SchedulerError("the scheduler is not started (use 'async with')", kind="state")
        activity = self._dispatcher.activity

        async def idle() -> None:
            while True:
                activity.clear()
                self._raise_if_failed()
                if not self._running:
                    try:
                        left = await asyncio.to_thread(self.store.has_work, self.executors)
                    except SchedulerError as exc:  # a query: wait through it, say so
                        log.warning("taskmill wait_idle: %s", exc)
                        left = True
                    if not left and not self._running:
                        return
                await wait_set(activity, self.poll_interval)

        async with asyncio.timeout(timeout):
            await idle()

    async def wait_batch(self, batch_id: int, timeout: float | None = None) -> BatchStatus:
        """Wait until batch ``batch_id`` is done (its submission ended and none of its
        tasks is active) and return its status — at once when it is done already.

        Whoever runs its tasks (this scheduler, other workers, other machines), and however
        they end.  ``SchedulerError(kind="unknown_batch")`` for a batch the store does not
        hold; ``TimeoutError`` after ``timeout`` seconds."""
        if not self._started or self._batch_sweep is None:
            raise SchedulerError("the scheduler is not started (use 'async with')", kind="state")
        changed = self._batch_sweep.changed

        async def done() -> BatchStatus:
            while True:
                changed.clear()
                status = await asyncio.to_thread(self.store.batch, batch_id)
                if status.done:
                    return status
                await wait_set(changed, self.poll_interval)

        async with asyncio.timeout(timeout):
            return await done()

    def widget(self, *, refresh: float = 2.0) -> Any:
        """A live ipywidgets view of this scheduler (call from a running event loop, as
        in a notebook cell); it stops updating when the scheduler closes."""
        return display.queue_widget(self, refresh=refresh)

    # ------------------------------------------------------------------ metrics

    def metrics(self) -> dict[str, float]:
        """A snapshot of this scheduler's metrics, by their names in the Prometheus text
        format: counts of what it did since it was made (``tasks_completed_total``,
        ``tasks_failed_total`` — tasks that ended failed —, ``tasks_retried_total``,
        ``tasks_cancelled_total``, ``tasks_superseded_total``, ``tasks_dispatched_total``,
        ``tasks_submitted_total``…), its claims' latency (``claim_seconds_sum``,
        ``claim_seconds_count``), and the store's active tasks now, whoever runs them
        (``tasks_pending``, ``tasks_running``, ``tasks_blocked``, ``tasks_paused``,
        ``tasks_waiting``; per group ``queue_depth{group="…"}``), with
        ``attempts_running`` here.

        The store's counts take one read of its active tasks (never history); before the
        scheduler starts, and once it closed its store, they are the last ones read (at
        close).  See docs/guide.md, "Metrics"."""
        return self._metrics.snapshot()

    @property
    def metrics_registry(self) -> CollectorRegistry:
        """This scheduler's own ``prometheus_client.CollectorRegistry`` (not the global
        one), for an exporter of your own: ``prometheus_client.make_wsgi_app(
        registry=sched.metrics_registry)``."""
        return self._metrics.registry

    def serve_metrics(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Serve :meth:`metrics` in the Prometheus text format at
        ``http://host:port/metrics`` (a thread of its own) until the scheduler closes;
        returns the port (``0``: a free one).  A port that cannot be used raises
        ``SchedulerError(kind="invalid_argument")``."""
        return self._metrics.serve(port, host)


async def _cancelled(task: asyncio.Task[None] | None) -> None:
    """Cancel a background loop of the scheduler and wait until it has ended."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
