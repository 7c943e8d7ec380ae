"""The dispatch loop: claim tasks for the free slots, run their attempts, notice the ones
lost to another process.

:class:`Dispatcher` is the scheduler's one loop that claims.  Each turn it gives back a
claim that committed without an answer (:meth:`~Dispatcher._reconcile`), tells attempts
whose task was cancelled or superseded elsewhere (:meth:`~Dispatcher.check_lost`), claims
for the free slots and starts an attempt per task claimed; then it sleeps until woken
(a submit, an attempt ending, the store telling of another process's commit) or until
the next poll, rate-limit refill or due retry.  A store error is logged and the turn
tried again with backoff; :data:`MAX_UNEXPECTED_ERRORS` other errors in a row stop it
for good (:attr:`~Dispatcher.fatal`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..model import ACTIVE_STATUSES, Aging, RateLimit, SchedulerError, TaskDispatched, TaskProgress
from ..store import ClaimedTask, TaskStore
from .attempts import Attempt, Executor, TaskContext
from .events import EventBus, wait_set
from .family import after_code, finalize
from .leases import WorkerLease
from .settle import Recorder

__all__ = ["MAX_UNEXPECTED_ERRORS", "DispatchSettings", "Dispatcher"]

log = logging.getLogger("taskmill")

#: Unexpected errors in a row after which the dispatch loop gives up (and
#: ``wait_idle()`` / ``close()`` raise); store errors are retried without end.
MAX_UNEXPECTED_ERRORS = 10


class DispatchSettings(Protocol):
    """The scheduler's settings a :class:`Dispatcher` reads (at each use: they may change)."""

    executors: dict[str, Executor]
    finalizers: dict[str, Executor]
    max_concurrency: int
    group_concurrency: dict[str, int]
    default_group_concurrency: int | None
    byte_budgets: dict[str, int]
    rate_limits: dict[str, RateLimit]
    poll_interval: float
    preempt_priority: int | None
    aging: Aging | None


@dataclass(eq=False)
class Dispatcher:
    """Claims tasks of ``store`` under ``lease`` and runs them as attempts in ``running``
    (module docs), their code on ``loop`` or ``pool``; ``recorder`` records how each
    ended.  Setting ``wake`` starts a turn early; :attr:`activity` is set whenever an
    attempt ends or the loop fails."""

    store: TaskStore
    settings: DispatchSettings
    lease: WorkerLease
    recorder: Recorder
    events: EventBus
    running: dict[int, Attempt]
    wake: asyncio.Event
    loop: asyncio.AbstractEventLoop
    pool: ThreadPoolExecutor
    #: Told how long each claim took, in seconds (the scheduler's metrics).
    on_claim: Callable[[float], None] | None = None
    activity: asyncio.Event = field(default_factory=asyncio.Event, init=False)
    closing: bool = field(default=False, init=False)
    #: Why the loop stopped for good (``None`` while it runs or stopped on close).
    fatal: BaseException | None = field(default=None, init=False)
    #: Tasks whose result could not be recorded before the scheduler closed.
    unrecorded: list[int] = field(default_factory=list, init=False)
    #: What held groups back at the last claim (group, or ``type:T``, -> "group limit",
    #: "byte budget" or "rate limit").
    held: dict[str, str] = field(default_factory=dict, init=False)
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _claim_wait: float | None = field(default=None, init=False)  # a rate limit refills in … s
    _reconcile_needed: bool = field(default=False, init=False)
    # the last claim filled every free slot: the next wake-up comes from an attempt
    # ending, so the loop need not ask the store when a retry is due
    _slots_filled: bool = field(default=False, init=False)
    _lost_checked: float = field(default=0.0, init=False)  # monotonic: last look for lost
    _resumed_at: float = field(default=0.0, init=False)  # monotonic: last resume of preempted

    def start(self) -> None:
        """Start the loop."""
        self._task = asyncio.create_task(self._run_loop(), name="taskmill-dispatch")
        self._task.add_done_callback(self._loop_ended)

    async def stop(self) -> None:
        """End the loop at its next turn (a claim under way finishes first: cancelling it
        would leave its thread committing a claim nobody starts)."""
        self.closing = True
        self.wake.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def _loop_ended(self, task: asyncio.Task[None]) -> None:
        """The loop ended: on close that is expected; otherwise it is fatal."""
        if task.cancelled() or self.closing:
            return
        exc = task.exception()
        if self.fatal is None:
            self.fatal = exc or SchedulerError("the dispatch loop stopped", kind="scheduler")
        self.activity.set()

    async def _run_loop(self) -> None:
        failures = 0
        unexpected = 0
        while not self.closing:
            self.wake.clear()
            try:
                if self._reconcile_needed:
                    await self._reconcile()
                await self.check_lost()
                await self._dispatch()
                delay = await self._next_delay()
                failures = unexpected = 0
            except SchedulerError as exc:  # the store is busy or failing: say so, go on
                failures += 1
                delay = self._backoff(failures)
                log.warning("taskmill dispatch: %s (retrying in %.2f s)", exc, delay)
            except Exception as exc:
                failures += 1
                unexpected += 1
                delay = self._backoff(failures)
                if unexpected >= MAX_UNEXPECTED_ERRORS:
                    log.critical(
                        "taskmill dispatch: %d unexpected errors in a row; dispatching stops",
                        unexpected,
                        exc_info=exc,
                    )
                    self.fatal = exc
                    self.activity.set()
                    return
                log.exception("taskmill dispatch: unexpected error (retrying in %.2f s)", delay)
            await wait_set(self.wake, delay)

    def _backoff(self, failures: int) -> float:
        """How long the loop waits after ``failures`` failed turns in a row: doubling
        from 50 ms up to a second (or the poll interval, if longer)."""
        return min(max(self.settings.poll_interval, 1.0), 0.05 * 2 ** min(failures, 10))

    async def _next_delay(self) -> float:
        delay = self.settings.poll_interval
        if not self.settings.executors:
            return delay
        if self._claim_wait is not None:  # a rate limit held tasks back: wake at its refill
            delay = min(delay, self._claim_wait)
        if self._slots_filled:
            return delay
        due = await asyncio.to_thread(self.store.next_retry_at)
        if due is None:
            return delay
        return max(0.0, min(delay, due - self.lease.now()))

    async def _preempt(self, free: int) -> None:
        """With ``preempt_priority``: when no slot is free and tasks that urgent wait, tell
        as many running attempts of less urgent tasks (least urgent first, then the most
        recently started) to stop — their tasks are paused once their code returns; and,
        at most once per poll interval, resume the tasks paused so once none waits."""
        urgent = self.settings.preempt_priority
        types = self.settings.executors
        if urgent is None or not types:
            return
        if free <= 0:
            victims = sorted(
                (a for a in self.running.values() if a.untold and a.task.priority > urgent),
                key=lambda a: (-a.task.priority, -a.started),
            )
            stopping = sum(
                a.stop_reason == "preempted" and not a.settling for a in self.running.values()
            )
            if victims:
                waiting = await asyncio.to_thread(
                    self.store.urgent_waiting, urgent, types, limit=len(victims) + stopping
                )
                for attempt in victims[: max(0, waiting - stopping)]:
                    attempt.stop("preempted", interrupt=False)
        if time.monotonic() - self._resumed_at >= self.settings.poll_interval:
            self._resumed_at = time.monotonic()
            if await asyncio.to_thread(self.store.resume_preempted, urgent, types):
                self.wake.set()

    async def _dispatch(self) -> None:
        settings = self.settings
        # an attempt whose code has returned holds no slot while its outcome is
        # recorded: the next claim overlaps the last completions' commit
        free = settings.max_concurrency - sum(not a.settling for a in self.running.values())
        await self._preempt(free)
        self._slots_filled = free <= 0
        if free <= 0 or not settings.executors or self.closing or not self.lease.may_claim():
            return
        owner = self.lease.owner
        assert owner is not None
        # a claim that raised may still have committed: find out before claiming again
        self._reconcile_needed = True
        counted: dict[str, Any] = {}
        if settings.byte_budgets:
            counted["byte_budgets"] = settings.byte_budgets
        if settings.rate_limits:
            counted["rate_limits"] = settings.rate_limits
        if settings.aging is not None:
            counted["aging"] = settings.aging
        started = time.perf_counter()
        claimed = await asyncio.to_thread(
            self.store.claim,
            free,
            task_types=settings.executors,
            owner=owner,
            group_limits=settings.group_concurrency,
            default_group_limit=settings.default_group_concurrency,
            **counted,
        )
        if self.on_claim is not None:
            self.on_claim(time.perf_counter() - started)
        self._reconcile_needed = False
        self._claim_wait = getattr(claimed, "wait", None)
        held = getattr(claimed, "held", None) or {}
        if held != self.held:  # written to the worker's row with its next renewal
            self.held = dict(held)
            self.lease.note_held(self.held)
        self._slots_filled = len(claimed) == free
        # claimed while close() began, or under an identity whose lease was lost (or that
        # was fenced) meanwhile: back to the queue, not started.  Started, such an attempt
        # ran untold while the new identity, having given the old one's tasks back, could
        # claim and run the same task again at once (issue 21's promise, broken under load)
        if self.closing or not self.lease.may_claim() or self.lease.owner != owner:
            if claimed:
                await asyncio.to_thread(
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
        owner = self.lease.owner
        assert owner is not None
        owned = await asyncio.to_thread(self.store.owned_tasks, owner)
        stray = [tid for tid in owned if tid not in self.running]
        if stray:
            released = await asyncio.to_thread(self.store.release, stray, owner=owner)
            log.warning("taskmill: %d claimed task(s) had no attempt here; pending again", released)
            self.wake.set()
        self._reconcile_needed = False

    async def check_lost(self, *, now: bool = False) -> None:
        """Tell running attempts whose task was cancelled or superseded by another
        process, or went back to the queue: a look at most once per ``poll_interval``
        (``now``: at once)."""
        if now:
            self._lost_checked = 0.0
        if time.monotonic() - self._lost_checked < self.settings.poll_interval:
            return
        owner = self.lease.owner
        watched = [tid for tid, a in self.running.items() if a.untold and a.owner == owner]
        if owner is None or not watched:
            return
        lost = await asyncio.to_thread(
            self.store.lost_tasks,
            watched,
            owner=owner,
            attempts=[self.running[tid].task.attempt for tid in watched],
        )
        self._lost_checked = time.monotonic()
        for tid, (status, replaced_by) in lost.items():
            attempt = self.running.get(tid)
            if status in ("completed", "failed"):
                continue  # finished here, just now: not lost
            if attempt is not None and not attempt.settling:
                if status in ACTIVE_STATUSES:
                    reason = "lost"  # our lease ran out: the queue has it again
                else:
                    reason = "superseded" if status == "superseded" else "cancelled"
                attempt.stop(reason, replaced_by)

    # ------------------------------------------------------------------ attempts

    def _start(self, task: ClaimedTask, owner: str) -> None:
        def report(fraction: float, message: str | None) -> None:
            self.events.publish_threadsafe(
                TaskProgress(task_id=task.id, fraction=fraction, message=message)
            )

        attempt = Attempt(
            task=task,
            ctx=TaskContext(task, report, self.store),
            fn=self.settings.executors.get(task.task_type),
            started=time.monotonic(),
            owner=owner,
        )
        self.running[task.id] = attempt
        self.events.publish(
            TaskDispatched(
                task_id=task.id, task_type=task.task_type, group=task.group, attempt=task.attempt
            )
        )
        attempt.job = asyncio.create_task(self._run(attempt), name=f"taskmill-task-{task.id}")

    async def _call(self, attempt: Attempt) -> None:
        """Run ``attempt``'s code — or, for a parent whose children all ended, its
        finalizer — and park its task when the code spawned children still active
        (:mod:`.family`)."""
        task = attempt.task
        finalizers = self.settings.finalizers
        if task.finalizing:
            counts = await asyncio.to_thread(self.store.children, task.id)
            await finalize(attempt, counts, finalizers.get(task.task_type), self.loop, self.pool)
            return
        await attempt.call(self.loop, self.pool)
        if attempt.ctx.spawned and attempt.stop_reason is None:
            attempt.parked = await after_code(
                attempt, self.store, self.recorder.persist, finalizers, self.loop, self.pool
            )

    async def _run(self, attempt: Attempt) -> None:
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
            self.wake.set()  # its slot is free while the outcome is recorded
            try:
                await self.recorder.settle(attempt, error)
            except Exception:  # the store stayed unavailable through close
                log.exception("taskmill: the result of task %s could not be recorded", task.id)
                self.unrecorded.append(task.id)
        finally:
            # the task may run again here already (its retry was recorded by a try
            # whose answer was lost): only this attempt's own entry goes
            if self.running.get(task.id) is attempt:
                del self.running[task.id]
            attempt.done.set()
            self.activity.set()
            self.wake.set()
