"""One attempt of a task: what its executor receives, how it is told to stop, how its code is
called, and what of its traceback the store keeps.

An :class:`Attempt` lives from the claim that started it until its outcome is recorded;
its :class:`TaskContext` is the executor's view of it.  Its code runs on the event loop
(``async def``) or on the scheduler's thread pool (a plain function); code on a thread
cannot be interrupted, so such an attempt stays owned until it returns.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..batch.outcome import BatchOutcome
from ..model import SchedulerError, TaskSubmission
from ..store import ClaimedTask, TaskStore

__all__ = ["TRACEBACK_FRAMES", "Attempt", "Executor", "TaskContext", "last_frames"]

Executor = Callable[["TaskContext"], Any]

#: How many of a failure's innermost traceback frames the store keeps with the attempt.
TRACEBACK_FRAMES = 5


class TaskContext:
    """What an executor receives: the task's fields, progress reporting, cancellation and
    child tasks (:meth:`spawn`, :attr:`children`)."""

    __slots__ = (
        "_cancelled",
        "_children",
        "_progress_cb",
        "_store",
        "attempt",
        "dedup_key",
        "group",
        "label",
        "payload",
        "priority",
        "spawned",
        "task_id",
        "task_type",
    )

    def __init__(
        self,
        task: ClaimedTask,
        progress_cb: Callable[[float, str | None], None],
        store: TaskStore | None = None,
    ):
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
        self._store = store
        #: Whether :meth:`spawn` was called (the attempt then parks the task if any child
        #: is active).
        self.spawned = False
        self._children: dict[str, int] | None = None

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
        """Report progress (0..1, and what is being done): emitted as a
        :class:`TaskProgress` event and stored — a few times a second at most, the last
        report winning — so every process sees it in ``tasks()`` (``progress``,
        ``progress_message``) while the attempt runs."""
        self._progress_cb(float(fraction), message)

    def spawn(self, tasks: Any) -> BatchOutcome:
        """Submit ``tasks`` — any input of :meth:`~taskmill.TaskStore.submit_batch`, or one
        :class:`~taskmill.TaskSubmission` — as children of this task: every task inserted
        has ``parent_id`` set to :attr:`task_id`.  Once this task's code returns, it is
        ``waiting`` (holding no slot) while any child is active, and ends when the last
        one ends: ``completed`` if every child completed, else ``failed``
        (``child_failed``); a finalizer of its type runs first.  Raises
        ``SchedulerError(kind="parent_not_running")``, inserting nothing, once this task
        was cancelled, superseded or taken back.  It writes to the store: an ``async``
        executor that spawns large batches should call it through
        ``asyncio.to_thread``."""
        if self._store is None:
            raise SchedulerError(
                "this context has no store to spawn child tasks into", kind="invalid_argument"
            )
        if isinstance(tasks, TaskSubmission):
            tasks = [tasks]
        self.spawned = True  # before: an interrupted batch may have inserted some
        return self._store.spawn(self.task_id, tasks)

    @property
    def children(self) -> dict[str, int]:
        """This task's children by status (every status, zeros included): in a finalizer,
        how they ended; elsewhere, read from the store at each use."""
        if self._children is not None:
            return dict(self._children)
        if self._store is None:
            return {}
        return self._store.children(self.task_id)

    def __repr__(self) -> str:
        return (
            f"<TaskContext id={self.task_id} type={self.task_type!r} "
            f"key={self.dedup_key!r} attempt={self.attempt}>"
        )


@dataclass(eq=False)
class Attempt:
    """A running attempt of ``task`` by ``fn``, claimed by the worker identity ``owner``."""

    task: ClaimedTask
    ctx: TaskContext
    fn: Executor | None  # None: its executor was removed while the task was claimed
    started: float  # time.monotonic() at the claim
    owner: str  # the worker identity that claimed it (a new one after a lost lease)
    job: asyncio.Task[None] | None = None
    # "cancelled" | "superseded" | "shutdown" | "lost" | "fenced" (no lease renewal) |
    # "preempted" (room made for more urgent work)
    stop_reason: str | None = None
    settling: bool = False  # the executor has returned; its outcome is being recorded
    parked: bool = False  # its task waits for its children: nothing left to record
    replaced_by: int | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def is_async(self) -> bool:
        """Whether its code runs on the event loop (and so can be cancelled)."""
        return inspect.iscoroutinefunction(self.fn)

    @property
    def untold(self) -> bool:
        """Whether its code still runs and it was not told to stop."""
        return self.stop_reason is None and not self.settling

    def stop(self, reason: str, replaced_by: int | None = None, *, interrupt: bool = True) -> None:
        """Tell it to stop for ``reason`` (the first reason given wins): ``ctx.cancelled``
        is set and, while its code runs on the event loop, that code is cancelled unless
        not ``interrupt`` (preemption: the code returns when it sees ``ctx.cancelled``)."""
        if self.stop_reason is not None:
            return
        self.stop_reason = reason
        self.replaced_by = replaced_by
        self.ctx._cancelled = True
        if self.settling or not interrupt:
            return
        if self.job is not None and self.is_async:
            self.job.cancel()

    def shut_down(self) -> None:
        """Closing ran out of time: tell it to stop whatever it was told before."""
        if self.settling:
            return
        self.stop_reason = self.stop_reason or "shutdown"
        self.ctx._cancelled = True
        if self.job is not None and self.is_async:
            self.job.cancel()

    async def call(
        self,
        loop: asyncio.AbstractEventLoop,
        pool: ThreadPoolExecutor,
        fn: Executor | None = None,
    ) -> None:
        """Run its code (or ``fn``, given its context) to the end: awaited on ``loop``, or
        a plain function on ``pool`` (cancelling this waits for the thread to return: the
        attempt is ours until then)."""
        fn = fn or self.fn
        if fn is None:  # its executor was removed after the claim: the attempt fails
            raise KeyError(self.task.task_type)
        if inspect.iscoroutinefunction(fn):
            result = await fn(self.ctx)
        else:
            thread = loop.run_in_executor(pool, fn, self.ctx)
            try:
                result = await asyncio.shield(thread)
            except asyncio.CancelledError:
                self.ctx._cancelled = True
                await asyncio.wait({thread})
                result = thread.result()
        if inspect.isawaitable(result):
            await result


def _calling_frame(filename: str) -> bool:
    """Whether a traceback frame is the scheduler's way into an executor, not its code."""
    return os.path.dirname(filename) == os.path.dirname(__file__) or any(
        f"{os.sep}{part}{os.sep}" in filename for part in ("asyncio", "concurrent")
    )


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
