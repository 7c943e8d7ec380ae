"""TaskStore: the task store's public face, the same on every engine.

:meth:`TaskStore.open` picks the driver from the location — a SQLite file
(:class:`~taskmill.backends.sqlite.driver.SqliteDriver`) or a PostgreSQL database
(:class:`~taskmill.backends.postgres.driver.PostgresDriver`, imported only then, with
psycopg) — through :data:`ENGINES`, and returns a ``TaskStore`` over it: the engine is an
implementation detail behind the face.

This class holds the domain logic once for every engine — argument checks, the claim
loop with its picker, what a failure means, what a submission does against the store,
the batch orchestration, recovery, cancelling, retrying failures, retention, the shape of
results — over a :class:`~taskmill.backends.base.Driver`'s data-level operations.  No SQL
and no engine name appear here.
"""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, Self

import polars as pl

from ..backends import DRIVERS, open_driver
from ..backends.base import ClaimedTask, CommitHook, Driver, GroupQuery
from ..backends.calls import CancelSlice, Ending, Owned, Selection
from ..backends.keys import key_hash
from ..backends.tags import TAG_ROW
from ..backends.workers import (
    DEFAULT_LEASE_TIMEOUT,
    RenewingConnection,
    forget_owner,
    lost_reason,
    merge_held,
    new_owner_id,
    stale_owners,
)
from ..batch.outcome import BatchOutcome
from ..batch.status import BatchStatus
from ..batch.submission import BatchSubmission
from ..batch.validate import (
    Defaults,
    Row,
    check_submission,
    clock_argument,
    tags_argument,
    task_id_argument,
    text_argument,
    to_seconds,
)
from ..columns import TAG
from ..model import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Aging,
    InvalidSubmission,
    RateLimit,
    SchedulerError,
    SubmitOutcome,
    TaskSubmission,
)
from .batches import batches_frame, finish_done, read_status
from .batchrun import run_batch
from .browse import BrowseMethods
from .common import (
    ATTEMPT_COLUMNS,
    ATTEMPT_OUTCOMES,
    CANCEL_BATCH,
    HISTORY_COLUMNS,
    RETRY_COLUMNS,
    STATS_BY,
    TASK_COLUMNS,
    CancelFilter,
    Filter,
    filter_values,
    frame,
    ids_argument,
    limit_argument,
    rarest_first,
    since_timestamp,
    stats_frame,
    submit_in,
    task_types_argument,
)
from .picking import Claimed, Picker, check_limits
from .retention import (
    PENDING_KEY,
    ExportFolder,
    PruneSteps,
    check_prune_args,
    run_prune,
)
from .schedules import ScheduleMethods

__all__ = ["ENGINES", "GroupQuery", "TaskStore"]

log = logging.getLogger("taskmill")


#: How each engine's driver is opened, by the kind of its location (the table of
#: :mod:`taskmill.backends`: PostgreSQL's imports its driver, and psycopg, only when a
#: PostgreSQL URL is opened).
ENGINES = DRIVERS


def attempt_pairs(
    task_ids: Sequence[int], attempts: Sequence[int | None] | None
) -> tuple[list[int], list[int | None]]:
    """Ids and attempt numbers as two lists of one length (``None``: any attempt)."""
    ids = [int(t) for t in task_ids]
    if attempts is None:
        return ids, [None] * len(ids)
    if len(attempts) != len(ids):
        raise ValueError("give one attempt number per task id")
    return ids, [None if a is None else int(a) for a in attempts]


def _listing(table: Literal["tasks", "history"], columns: Mapping[str, Any], doc: str):
    """The query method of :class:`TaskStore` named ``table`` (its rows as a frame of
    ``columns``): :meth:`TaskStore.tasks` and :meth:`TaskStore.history` take the same
    filters, declared once here."""

    def listing(
        self: TaskStore,
        *,
        status: Filter = None,
        task_type: Filter = None,
        group: Filter = None,
        limit: int | None = None,
        ids: int | Iterable[int] | None = None,
        batch_id: int | Iterable[int] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> pl.DataFrame:
        return self._query(table, columns, status, task_type, group, limit, ids, batch_id, tags)

    listing.__name__ = table
    listing.__qualname__ = f"TaskStore.{table}"
    listing.__doc__ = doc
    return listing


#: The ``taskmill_meta`` key of the store's aging policy (:meth:`TaskStore.set_aging`).
AGING_KEY = "aging"


def _fraction(value: float) -> float:
    """A reported progress as stored: a number clamped to 0..1 (``nan`` is 0)."""
    value = float(value)
    return 0.0 if value != value else min(1.0, max(0.0, value))


# concrete; an ABC so stand-ins may register
class TaskStore(ScheduleMethods, BrowseMethods, abc.ABC):
    """A persistent task queue: a SQLite file, or a PostgreSQL database shared by workers
    on any number of machines — the same API and outcomes on both.

    Open with :meth:`open`; use as a context manager or call :meth:`close`.  Every method
    is synchronous and thread-safe, and several processes (on PostgreSQL, machines) may
    open the same store: a writer waits for the others up to ``busy_timeout`` seconds,
    then raises ``SchedulerError(kind="store")``.

    An object that stands for a store without being one (a wrapper forwarding every call
    to a real store, as tests use to inject faults) may be declared one with
    ``abc.ABCMeta.register(TaskStore, cls)`` (``TaskStore.register`` registers a
    worker); a :class:`~taskmill.Scheduler` takes it then.
    """

    #: The export file of this store object's last :meth:`prune_history` (``None``: that
    #: prune had no ``export`` folder, or removed nothing).
    last_export: Path | None = None

    def __init__(self, driver: Driver[Any]) -> None:
        """The face over an open ``driver`` (:meth:`open` makes one from a location).
        Running tasks whose worker is gone are put back to pending first
        (:meth:`recover`); the driver is closed if that fails."""
        self._driver = driver
        try:
            self.recover()
        except BaseException:
            driver.close()
            raise

    @property
    def driver(self) -> Driver[Any]:
        """The engine's driver under this face (for tools and tests that reach below it)."""
        return self._driver

    @property
    def busy_timeout(self) -> float:
        """Seconds a write waits for another writer's lock before the call fails."""
        return self._driver.busy_timeout

    @property
    def last_batch_merge_seconds(self) -> list[float]:
        """Seconds each transaction of the last batch held the store's write lock."""
        return self._driver.last_batch_merge_seconds

    def __repr__(self) -> str:
        return repr(self._driver)

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, location: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> TaskStore:
        """Create or open the store at ``location``: a SQLite file path (or
        ``sqlite:///…``), or a ``postgresql://`` / ``postgres://`` URL (see
        :mod:`taskmill.store.location`).  The result is a ``TaskStore`` whatever the engine.

        Raises ``SchedulerError(kind="store")`` — changing nothing — when the store cannot
        be reached (a missing folder, a server that does not answer), is not a taskmill
        store, or was written by a newer taskmill schema.
        """
        return TaskStore(open_driver(location, busy_timeout=busy_timeout))

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the store's connections (idempotent)."""
        self._driver.close()

    def now(self) -> float:
        """The store's clock, in seconds since the epoch: what leases, rate limits, start
        and expiry times are judged by (a SQLite store's host's; a PostgreSQL server's)."""
        return self._driver.now()

    def _at(self, now: float | None) -> float:
        """``now`` (a time given for tests), checked, or the store's clock."""
        return self.now() if now is None else clock_argument(now)

    def integrity_check(self) -> str:
        """``"ok"`` when the store is healthy; otherwise what is wrong, one line each
        (SQLite's ``PRAGMA integrity_check``; on PostgreSQL, taskmill's own invariants)."""
        return self._driver.integrity_check()

    def watch(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``wake()`` (from a thread of its own) whenever another connection commits
        tasks that became pending, so a scheduler dispatches them at once; returns the
        function that stops watching.  ``None``: the engine cannot tell (a scheduler
        then finds such work at its next poll)."""
        return self._driver.watch(wake)

    # ------------------------------------------------------------------ submitting

    def _submit_checked(self, row: Row, now: float) -> SubmitOutcome:
        """Decide one checked submission against the store and carry it out, in one
        transaction (see :func:`~taskmill.store.common.submit_in`)."""
        return self._driver.write(
            "cannot submit to",
            lambda conn: submit_in(self._driver, conn, row, now),
            retry_unique=True,
        )

    def _batch(
        self,
        tasks: Any,
        *,
        dry_run: bool,
        on_commit: CommitHook | None,
        progress: Callable[[int, int], None] | None,
        retries: Sequence[int] | None = None,
        parent: int | None = None,
    ) -> BatchOutcome:
        """Submit (or plan) ``tasks``.  ``retries``, for :meth:`retry_failed` alone: the
        history id of the failure each input row retries, by input index.  Each merge
        transaction then passes over a keyed row whose key has a history record newer
        than its failure (deduplicated, ``task_id`` that record): so a failure retried by
        a concurrent call since this one read it is never submitted a second time."""
        backend = self._driver.batch_backend(retries)
        return run_batch(
            backend, tasks, dry_run=dry_run, on_commit=on_commit, progress=progress, parent=parent
        )

    # ------------------------------------------------------------------ task control

    def cancel(self, task_id: int) -> str | None:
        """Cancel an active task: it moves to history as ``cancelled``.

        Returns the status it had (``"pending"``, ``"running"``, ``"paused"``), or
        ``None`` when no active task has that id.  A running attempt is not stopped
        by the store; the scheduler running it tells its executor.
        """
        return self._driver.cancel(task_id_argument(task_id))

    def pause(self, task_id: int) -> bool:
        """Hold a pending task back from dispatch; returns whether it was paused."""
        return self._driver.set_status(task_id_argument(task_id), "pending", "paused")

    def resume(self, task_id: int) -> bool:
        """Let a paused task be dispatched again; returns whether it was resumed."""
        return self._driver.set_status(task_id_argument(task_id), "paused", "pending")

    def resume_group(self, group: str) -> bool:
        """Dispatch a paused group's tasks again; ``False`` if it was not paused."""
        return self._driver.resume_group(text_argument(group, "group"))

    def expire_due(self, *, now: float | None = None) -> int:
        """Move every task not started by its ``expires_at`` (pending, waiting out a
        retry, or paused) to history as ``expired``, freeing its key; returns how many."""
        at = self._at(now)
        if not self._driver.any_expired(at):  # a look first: most calls find nothing to write
            return 0
        return self._driver.expire(at)

    # ------------------------------------------------------------------ workers

    def new_owner(self, *, lease_timeout: float = DEFAULT_LEASE_TIMEOUT) -> str:
        """Register a fresh worker identity for :meth:`claim`, holding a lease of
        ``lease_timeout`` seconds that :meth:`renew` extends.  It stays live until
        :meth:`release_owner`, or until it stops renewing for ``lease_timeout``."""
        if not lease_timeout > 0:
            raise SchedulerError(
                "lease_timeout must be more than 0 seconds", kind="invalid_argument"
            )
        owner = new_owner_id()
        try:
            self.register(owner, lease_timeout=lease_timeout)
        except BaseException:
            forget_owner(owner)
            raise
        return owner

    def register(self, owner: str, *, lease_timeout: float) -> None:
        """(Re-)register ``owner`` with a fresh lease (after :meth:`renew` said it was
        lost), starting by the store's clock, with this process's scope
        (:func:`~taskmill.backends.workers.local_scope`)."""
        self._driver.register(owner, lease_timeout=lease_timeout)

    def renew(self, owner: str) -> bool:
        """Extend ``owner``'s lease on the tasks it runs, by the store's clock.

        ``False`` when the lease had already been taken away (the worker stopped
        renewing for longer than its lease, and another worker put its tasks back to
        pending): the caller no longer owns any task and must register again.  A
        scheduler renews on a :meth:`heartbeat` of its own instead.
        """
        return self._driver.renew(owner)

    def heartbeat(self, *, timeout: float) -> RenewingConnection:
        """A connection of its own for renewing leases, each renewal waiting at most
        ``timeout`` seconds: never queued behind this store's other calls."""
        return self._driver.heartbeat(timeout=timeout)

    def release_owner(self, owner: str) -> int:
        """Give every task ``owner`` still runs back to the queue (not counted as tries);
        forget the owner.  Returns how many tasks."""
        forget_owner(owner)  # no longer a worker alive in this process
        return self._driver.release_owner(owner)

    def owned_tasks(self, owner: str) -> list[int]:
        """Ids of the tasks the store has running for ``owner``."""
        return self._driver.owned_tasks(owner)

    def recover(self, *, now: float | None = None) -> int:
        """Put back to pending (not counted as a try) the running tasks whose worker is
        gone: its lease ran out by the store's clock (``now``: another time, for tests),
        it is a dead process of this host and PID namespace, or it never held a lease (a
        worker of the 0.1 schema, on another host).  Returns how many."""
        running, stale = self._driver.owner_leases(now)
        dead, expired = stale_owners(running, stale)
        if not dead and not expired:
            return 0
        count = self._driver.give_back(
            [(o, lost_reason(o, expired=False)) for o in sorted(dead, key=lambda o: o or "")],
            [(o, lost_reason(o, expired=True)) for o in sorted(expired)],
            now,
        )
        if count:
            log.warning(
                "taskmill: %d task(s) of %d stopped worker(s) are pending again",
                count,
                len(dead) + len(expired),
            )
        return count

    def held_groups(self, *, now: float | None = None) -> dict[str, str]:
        """What held groups back at the last claim of every worker whose lease is alive
        by the store's clock (``now``: another time, for tests), from the store alone:
        each group (or ``"type:T"`` for a task type) with why — ``"group limit"``,
        ``"byte budget"``, ``"rate limit"``; the distinct reasons of several workers
        joined by ``"; "`` in a stable order.  ``{}``: nothing held back, or no worker
        running.  A worker writes it with its lease renewal when it changes, so it lags
        a claim by a moment."""
        at = None if now is None else clock_argument(now)
        return merge_held(self._driver.held_rows(at))

    # ------------------------------------------------------------------ dispatch

    def claim(
        self,
        limit: int,
        *,
        task_types: Iterable[str],
        owner: str,
        group_limits: Mapping[str, int] | None = None,
        default_group_limit: int | None = None,
        byte_budgets: Mapping[str, int] | None = None,
        rate_limits: Mapping[str, RateLimit] | None = None,
        now: float | None = None,
        aging: Aging | None = None,
    ) -> Claimed:
        """Mark up to ``limit`` dispatchable tasks running for ``owner``, in dispatch order
        (priority, then queue order).

        Group limits and byte budgets count every running task of the group in the
        store, whoever runs it, and rate limits take tokens from buckets kept in the
        store, all inside the claim's own transaction (holding a claim lock), so they
        hold across every scheduler, process and machine on the store.  A group held
        back by a limit, a budget, its bucket or a pause never blocks the tasks of other
        groups behind it (see :mod:`taskmill.store.picking`).  The result also says how
        long until a rate limit lets one more through, and which groups were held back
        (:class:`~taskmill.store.picking.Claimed`).  With no limit to count, a driver
        that can claims in one statement.  With ``aging``, dispatch order is by effective
        priority (:class:`~taskmill.Aging`), then queue order: the first candidates of each
        pending priority level are read and ordered by their age.
        """
        limit = limit_argument(limit) or 0
        types = sorted(set(task_types_argument(task_types)))
        now = None if now is None else clock_argument(now)  # checked before anything runs
        if limit <= 0 or not types:
            return Claimed()
        limits = check_limits(group_limits, default_group_limit, byte_budgets, rate_limits)
        if not limits.any and aging is None and self._driver.claims_at_once:
            at = self._at(now)
            return Claimed(
                self._driver.write(
                    "cannot claim tasks from",
                    lambda conn: self._driver.claim_at_once(conn, types, at, owner, limit),
                    dispatch=True,
                    single=True,
                )
            )

        def body(conn: Any) -> Claimed:
            running, buckets = self._driver.claim_counts(
                conn, limits.counts_running, sorted(limits.rate_limits)
            )
            # the store's clock, read after the counts, under the claim's lock: every end
            # they saw was recorded before, so no start is recorded before an end it counted
            at = self._driver.clock_in(conn) if now is None else now
            picker = Picker(limits, running, buckets, at)
            taken: list[ClaimedTask] = []
            while len(taken) < limit:
                open_types = [t for t in types if t not in picker.blocked_types()]
                if not open_types:
                    break
                held = sorted(picker.blocked_groups())
                want = limit - len(taken)
                if aging is None:
                    found = self._driver.claim_candidates(conn, open_types, at, held, want)
                else:
                    found = self._aged_candidates(conn, open_types, at, held, want, aging)
                if not found:
                    break
                batch = [t for t, size in found if picker.take(t.task_type, t.group, size)]
                if batch:  # marked, and the buckets as they stand
                    self._driver.mark_running(
                        conn, [t.id for t in batch], at, owner, picker.buckets()
                    )
                    taken.extend(batch)
            return picker.outcome(taken)

        return self._driver.write(
            "cannot claim tasks from", body, dispatch=True, claim_lock=limits.any
        )

    def _aged_candidates(
        self,
        conn: Any,
        types: list[str],
        at: float,
        held: list[str],
        want: int,
        aging: Aging,
    ) -> list[tuple[ClaimedTask, int]]:
        """The next ``want`` candidates by effective priority, then queue order: within a
        priority level the first in the queue waited longest, so the first ``want`` of each
        level hold the best of it."""
        found: list[tuple[ClaimedTask, int]] = []
        for level in self._driver.pending_levels(conn):
            found += self._driver.claim_candidates(conn, types, at, held, want, priority=level)
        found.sort(
            key=lambda c: (
                aging.effective(c[0].priority, at - c[0].created_at),
                c[0].queue_pos,
                c[0].id,
            )
        )
        return found[:want]

    # ------------------------------------------------------------------ aging

    def set_aging(self, aging: Aging | None) -> None:
        """Keep ``aging`` as the store's policy (``None``: none), which :meth:`tasks`
        shows effective priorities by; every :class:`~taskmill.Scheduler` sets its own
        when it starts."""
        self._driver.meta_set(AGING_KEY, None if aging is None else aging.to_json())

    def aging(self) -> Aging | None:
        """The store's aging policy (:meth:`set_aging`), ``None`` when it has none."""
        kept = self._driver.meta_get(AGING_KEY)
        return None if kept is None else Aging.from_json(kept)

    def complete_many(
        self, task_ids: Sequence[int], *, owner: str, attempts: Sequence[int] | None = None
    ) -> set[int]:
        """:meth:`complete` for many tasks in one transaction; returns the ids completed.

        With ``attempts`` (one per id) a task is completed only while that very attempt
        runs: a retried call whose first try landed finds the task finished, or claimed
        again, and changes nothing."""
        if not task_ids:
            return set()
        return self._complete_owned(*attempt_pairs(task_ids, attempts), owner)

    def _complete_owned(self, ids: list[int], tries: list[int | None], owner: str) -> set[int]:
        """Move to history as completed, in one write, the tasks of ``ids`` running for
        ``owner`` as the attempt beside each (``None``: any); returns their ids."""
        return self._driver.write(
            "cannot record completed tasks in",
            lambda conn: self._driver.finish_owned(
                conn, Owned(ids, tries, owner), Ending("completed", self._driver.clock_in(conn))
            ),
            dispatch=True,
            single=True,
        )

    def fail(
        self,
        task_id: int,
        *,
        owner: str,
        error: str,
        retry_at: float | None,
        attempt: int | None = None,
        traceback: str | None = None,
    ) -> str | None:
        """A running attempt raised.

        With ``retry_at`` the task goes back to pending, not dispatched before that
        time (``"retry"``); without, it moves to history as ``failed`` (``"failed"``).
        ``None`` when the task is no longer running for ``owner`` (as ``attempt``).
        ``traceback`` (the last frames of the error's) is kept with the attempt.
        """

        owned = Owned([task_id], [attempt], owner)

        def body(conn: Any) -> str | None:
            if retry_at is not None:
                moved = self._driver.retry_later(conn, owned, error, retry_at)
                result = "retry" if moved else None
            else:
                ending = Ending("failed", self._driver.clock_in(conn), error=error)
                done = self._driver.finish_owned(conn, owned, ending)
                result = "failed" if done else None
            if result is not None and traceback is not None:
                self._driver.attempt_traceback(conn, task_id, traceback)
            return result

        return self._driver.write(
            "cannot record a failed attempt in", body, dispatch=True, single=True
        )

    # ------------------------------------------------------------------ child tasks

    def spawn(
        self,
        parent_id: int,
        tasks: Any,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> BatchOutcome:
        """Submit ``tasks`` (any input of :meth:`submit_batch`) as children of the running
        task ``parent_id`` (what ``ctx.spawn`` calls): each task inserted has
        ``parent_id`` set.  Raises ``SchedulerError(kind="parent_not_running")``, having
        inserted nothing, once the parent no longer runs."""
        parent_id = task_id_argument(parent_id)
        return self._batch(
            tasks, dry_run=False, on_commit=None, progress=progress, parent=parent_id
        )

    def park(
        self,
        task_id: int,
        *,
        owner: str,
        attempt: int | None = None,
        finalizer: bool = False,
    ) -> dict[str, int] | bool | None:
        """The running attempt of ``task_id`` returned having spawned children: while any
        of them is active the task is ``waiting`` (holding no slot; ``None``) and ends
        when its last child ends — or, with ``finalizer``, goes back to the queue for the
        scheduler that claims it to run the finalizer.  With no child active, their counts
        by status (the attempt ends the task itself); ``False`` when the attempt no
        longer runs for ``owner``."""
        owned = Owned([task_id], [attempt], owner)
        wanted = "wanted" if finalizer else None
        return self._driver.write(
            "cannot record a parent task waiting in",
            lambda conn: self._driver.park(conn, owned, wanted),
            dispatch=True,
            single=True,
        )

    def children(self, task_id: int) -> dict[str, int]:
        """Task ``task_id``'s children by status, active and finished (every status
        present, zeros included)."""
        task_id = task_id_argument(task_id)
        counts: dict[str, int] = dict.fromkeys((*ACTIVE_STATUSES, *FINAL_STATUSES), 0)
        for _, status, n in self._driver.family_counts([task_id]):
            counts[str(status)] += int(n)
        return counts

    def record_progress(
        self, progress: Mapping[int, tuple[int, float, str | None]], *, owner: str
    ) -> int:
        """Store what running attempts reported (``ctx.progress``), in one write:
        ``progress`` maps a task id to ``(attempt, fraction, message)``; an attempt no
        longer running for ``owner`` is left out.  How many were stored."""
        rows = [
            (int(tid), int(attempt), _fraction(fraction), message)
            for tid, (attempt, fraction, message) in progress.items()
        ]
        if not rows:
            return 0
        return self._driver.write(
            "cannot record progress in",
            lambda conn: self._driver.store_progress(conn, owner, rows),
            dispatch=True,
            single=True,
        )

    # ------------------------------------------------------------------ preemption

    def preempt(
        self, task_ids: Sequence[int], *, owner: str, attempts: Sequence[int] | None = None
    ) -> int:
        """Pause running attempts to make room for more urgent work (their code has
        returned): ``paused``, not counted as tries, kept in their queue place, with
        ``preempted_at`` set; :meth:`resume_preempted` puts them back.  How many."""
        if not task_ids:
            return 0
        ids, tries = attempt_pairs(task_ids, attempts)
        owned = Owned(ids, tries, owner)
        return self._driver.write(
            "cannot pause preempted tasks in",
            lambda conn: self._driver.preempt_running(conn, owned, self._driver.clock_in(conn)),
            dispatch=True,
        )

    def urgent_waiting(
        self, priority: int, task_types: Iterable[str], *, limit: int = 1_000
    ) -> int:
        """How many tasks of ``task_types`` at ``priority`` or more urgent (a lower number)
        wait to start now, counted up to ``limit``."""
        types = sorted(set(task_types))
        if not types or limit <= 0:
            return 0
        return self._driver.urgent_waiting(priority, types, self.now(), limit)

    def resume_preempted(self, priority: int, task_types: Iterable[str]) -> int:
        """Put the tasks paused by preemption back to pending, in their queue place, when
        no task of ``task_types`` at ``priority`` or more urgent waits to start; how
        many."""
        types = sorted(set(task_types))
        return self._driver.resume_preempted(priority, types, self.now()) if types else 0

    def release(
        self, task_ids: Sequence[int], *, owner: str, attempts: Sequence[int] | None = None
    ) -> int:
        """Give running attempts back to pending, not counted as tries (shutdown)."""
        if not task_ids:
            return 0
        return self._release_owned(*attempt_pairs(task_ids, attempts), owner)

    def _release_owned(self, ids: list[int], tries: list[int | None], owner: str) -> int:
        """Put back to pending, in one write, the tasks of ``ids`` running for ``owner`` as
        the attempt beside each (``None``: any); returns how many."""
        return self._driver.write(
            "cannot release tasks in",
            lambda conn: self._driver.release_running(conn, Owned(ids, tries, owner)),
            dispatch=True,
        )

    def lost_tasks(
        self, task_ids: Sequence[int], *, owner: str, attempts: Sequence[int] | None = None
    ) -> dict[int, tuple[str, int | None]]:
        """Of tasks ``owner`` believes it runs, those cancelled or superseded meanwhile.

        Maps each lost id to its history status and ``replaced_by``, or to its active
        status (``"pending"`` when its lease was taken away, or its retry recorded) —
        ``"gone"`` when it is in neither table.
        """
        if not task_ids:
            return {}
        ids, tries = attempt_pairs(task_ids, attempts)
        still, found = self._driver.ownership(ids, tries, owner)
        return {t: found.get(t, ("gone", None)) for t in ids if t not in still}

    def has_work(self, task_types: Iterable[str]) -> bool:
        """Whether any task of these types is pending or running, or paused by preemption
        (resumed by itself): a worker's work left."""
        types = sorted(set(task_types))
        return self._driver.read(lambda conn: self._driver.has_work(conn, types))

    def next_retry_at(self) -> float | None:
        """The earliest time a task waiting for a start time or a retry, or a paused
        group, becomes due."""
        return self._driver.read(
            lambda conn: self._driver.next_run_after(conn, self._driver.clock_in(conn))
        )

    # ------------------------------------------------------------------ queries

    def counts(self) -> dict[str, int]:
        """Number of tasks per status, every status present (active and final)."""
        result: dict[str, int] = dict.fromkeys((*ACTIVE_STATUSES, *FINAL_STATUSES), 0)
        for status, n in self._driver.status_counts():
            result[status] = int(n)
        return result

    def group_counts(self) -> dict[str | None, dict[str, int]]:
        """Active tasks per group (``None``: no group) and status, every active status
        present: one read of the active tasks, never of history (metrics read it at each
        scrape)."""
        result: dict[str | None, dict[str, int]] = {}
        for group, status, n in self._driver.active_group_counts():
            result.setdefault(group, dict.fromkeys(ACTIVE_STATUSES, 0))[status] = int(n)
        return result

    def waiting_for_start(self, *, now: float | None = None) -> dict[str | None, int]:
        """Pending tasks per group (``None``: no group) whose start time, or retry
        backoff, is still ahead."""
        return {g: int(n) for g, n in self._driver.per_group("waiting_for_start", self._at(now))}

    def waiting_for_retry(self, *, now: float | None = None) -> dict[str | None, int]:
        """Of :meth:`waiting_for_start`, the tasks per group waiting out a retry's backoff
        (tried before), not a start time given at submission."""
        return {g: int(n) for g, n in self._driver.per_group("waiting_for_retry", self._at(now))}

    def paused_groups(self, *, now: float | None = None) -> dict[str, float | None]:
        """The groups paused now, with the time each pause ends (``None``: until resumed)."""
        return dict(self._driver.per_group("paused_groups", self._at(now)))

    # ------------------------------------------------------------------ retention

    def _describe(self) -> str:
        """The store, for messages."""
        return self._driver.describe()

    def _failed_rows(
        self,
        task_type: list[str] | None,
        group: list[str] | None,
        since: float | None,
        ids: list[int] | None = None,
    ) -> list[tuple[Any, ...]]:
        """The failures :meth:`retry_failed` resubmits (:meth:`Driver.failed_rows
        <taskmill.backends.base.Driver.failed_rows>`)."""
        return self._driver.failed_rows(task_type, group, since, ids)

    def _prune_rows(self, ids: list[int]) -> pl.DataFrame:
        """The history rows of ``ids`` as :meth:`history` shows them (tags too), by id."""
        return self._with_tags(frame(self._driver.prune_rows(ids), HISTORY_COLUMNS))

    def _prune_delete(self, ids: list[int]) -> int:
        """Delete the history rows of ``ids`` in one transaction; how many."""
        return self._driver.prune_delete(ids)

    # ------------------------------------------------------------------ control

    def pause_group(self, group: str, until: Any = None) -> None:
        """Dispatch none of ``group``'s tasks until ``until`` (a ``datetime``, naive
        meaning UTC, a ``timedelta`` from now, or Unix seconds), or until
        :meth:`resume_group` when ``None``.  Running attempts go on; every scheduler on
        the store holds the group.  Pausing a paused group sets its new end."""
        text_argument(group, "group")
        now = self.now()  # a pause ends by the store's clock, as dispatch reads it
        try:
            end = to_seconds(until, "until", now)
        except InvalidSubmission as exc:
            raise SchedulerError(f"pause_group: {exc}", kind="invalid_argument") from None
        self._driver.pause_group(group, end, now)

    # ------------------------------------------------------------------ submitting

    def submit(
        self,
        submission: TaskSubmission,
        *,
        defaults: Defaults | None = None,
    ) -> SubmitOutcome:
        """Submit one task; returns what happened.

        Raises :class:`InvalidSubmission` (naming the field) for a bad value and
        :class:`DuplicateTask` for a ``REJECT`` submission whose key is active.
        """
        row = check_submission(submission, defaults or Defaults())
        if row.depends_on is not None:  # dependencies are resolved by the batch path alone
            return self._submit_dependent(submission, defaults or Defaults())
        return self._submit_checked(row, self.now())

    def _submit_dependent(self, submission: TaskSubmission, defaults: Defaults) -> SubmitOutcome:
        """:meth:`submit` of a task with dependencies: a batch of one, recorded as no batch."""
        spec = (
            BatchSubmission()
            .default_group(defaults.group)
            .default_priority(defaults.priority)
            .on_duplicate(defaults.on_duplicate)
            .run_after(defaults.run_after)
            .expires_at(defaults.expires_at)
            .tasks([submission])
        )
        backend = self._driver.batch_backend(None)
        out = run_batch(backend, spec, dry_run=False, on_commit=None, record=False)
        for _, error in out.failed:
            raise error
        row = out.to_polars().row(0, named=True)
        return SubmitOutcome(
            row["action"],
            row["task_id"],
            row["replaced_task_id"],
            task_type=row["task_type"],
            dedup_key=row["dedup_key"],
            group=row["group"],
            priority=row["priority"],
        )

    def submit_batch(
        self,
        tasks: Any,
        *,
        on_commit: CommitHook | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> BatchOutcome:
        """Submit many tasks at once; every input row gets an outcome.

        ``tasks``: an iterable of :class:`TaskSubmission`, a table (pyarrow, polars,
        pandas), a Parquet file or folder, or a :class:`BatchSubmission`.  A batch of up
        to its transaction limit commits in one transaction; a larger one in chunks,
        each all-or-nothing (``BatchInterrupted`` when one cannot commit).
        ``on_commit(inserted_ids, superseded_pairs)`` is called after each commit that
        inserted tasks, ``progress(rows_done, rows_total)`` after each transaction.
        """
        return self._batch(tasks, dry_run=False, on_commit=on_commit, progress=progress)

    def plan_batch(
        self, tasks: Any, *, progress: Callable[[int, int], None] | None = None
    ) -> BatchOutcome:
        """What :meth:`submit_batch` would do now, against the live store; writes nothing.

        Ids of new tasks are predictions (what they would be if nothing else wrote first).
        """
        return self._batch(tasks, dry_run=True, on_commit=None, progress=progress)

    # ------------------------------------------------------------------ dispatch

    def complete(self, task_id: int, *, owner: str) -> bool:
        """A running attempt succeeded: the task moves to history as ``completed``.

        Returns ``False`` (and changes nothing) when the task is no longer running
        for ``owner`` — it was cancelled or superseded meanwhile.
        """
        task_id = task_id_argument(task_id)
        return task_id in self.complete_many([task_id], owner=owner)

    # ------------------------------------------------------------------ bulk control

    def cancel_where(
        self,
        *,
        task_type: Filter = None,
        group: Filter = None,
        label: Filter = None,
        status: Filter = None,
        dedup_keys: Iterable[str] | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> int:
        """Cancel every active task matching all the filters given; returns how many.

        Each filter is a string or a sequence of strings (any of them matches);
        ``dedup_keys`` is any number of keys (100,000 are fine), of any task type unless
        ``task_type`` says which.  ``status`` may name ``pending``, ``running`` and
        ``paused`` only (default: all three).  ``tags``: the tasks carrying every given
        ``key: value`` pair (``{}``: no filter).  At least one filter is required — none
        raises ``SchedulerError(kind="invalid_argument")`` and cancels nothing; an
        explicitly empty list matches no task.

        Matching tasks move to history as ``cancelled``, as :meth:`cancel` does, in one
        transaction per :data:`CANCEL_BATCH` tasks (a failure leaves the earlier batches
        cancelled).  Tasks submitted while the call runs may be left alone.  A running
        attempt is not stopped by the store: the scheduler running it learns at its next
        look for lost tasks (within ``poll_interval``) and its executor sees
        ``ctx.cancelled`` (an ``async def`` one is cancelled).
        """
        where = CancelFilter.of(
            task_type=task_type,
            group=group,
            label=label,
            status=status,
            dedup_keys=dedup_keys,
            tags=tags,
        )
        if where.tags is not None:
            where = dataclasses.replace(where, tags=self._rarest_first(where.tags))
        if where.matches_nothing():
            return 0
        started = time.perf_counter()
        count = self._cancel_matching(where)
        log.info("taskmill: cancelled %d task(s) in %.3f s", count, time.perf_counter() - started)
        return count

    def _cancel_matching(self, where: CancelFilter) -> int:
        """Cancel what ``where`` matches among the tasks that existed when the call began
        (ids up to the last one handed out), one transaction per :data:`CANCEL_BATCH`.

        Without keys, the transactions walk the tasks by id (each ``_cancel_batch``
        picks the next matching ones after the last id it moved).  With keys, each
        transaction takes a slice of ``(key hash, task type, key)`` triples — every key
        paired with every task type in question — and finds its tasks through the
        active-key index: the cost follows the number of keys, not the size of the store.
        """
        last = self._driver.last_task_id()
        count = 0
        if where.dedup_keys is None:
            after = 0
            while True:
                part = CancelSlice(after, last, CANCEL_BATCH)
                moved, last_picked = self._driver.cancel_batch(where, part)
                count += moved
                if last_picked is None:
                    return count
                after = last_picked
        types = where.task_type if where.task_type is not None else self._driver.active_task_types()
        types = sorted(set(types))
        if not types:
            return 0
        per = max(1, CANCEL_BATCH // len(types))
        keys = where.dedup_keys
        for start in range(0, len(keys), per):
            part = keys[start : start + per]
            pairs = [(t, k) for t in types for k in part]
            hashes = [key_hash(t, k) or 0 for t, k in pairs]
            keyed = (hashes, [t for t, _ in pairs], [k for _, k in pairs])
            count += self._driver.cancel_batch(where, CancelSlice(0, last, CANCEL_BATCH, keyed))[0]
        return count

    def retry_failed(
        self,
        *,
        task_type: Filter = None,
        group: Filter = None,
        since: dt.datetime | dt.timedelta | None = None,
        on_commit: CommitHook | None = None,
        ids: int | Iterable[int] | None = None,
    ) -> BatchOutcome:
        """Submit again the failed tasks of history that match; returns the batch's
        outcome (one row per task resubmitted, in history order).

        ``since``: only tasks that finished at or after it — a datetime (naive means
        UTC) or a timedelta before now.  ``ids``: only the failed tasks with these ids (a
        task id or several; an id that is not a failure in history is passed over).  Each
        task goes through :meth:`submit_batch` with its task type, dedup key, group,
        priority, payload, label, expected bytes and ``max_retries``, and the ``skip``
        strategy: a key that is active again is *deduplicated* (or *upgraded*), never
        doubled.  The history rows stay as they are (history is a log); the new tasks get
        new ids.

        Which failures are retried: a keyed task only while its failure is the latest
        record of its key in history.  So calling this twice resubmits nothing twice —
        while the retry is active the second call is deduplicated, and once it has
        finished (completed, cancelled, or failed again: then that newer failure is the
        one to retry) the older failure is passed over.  That holds for calls made at
        the same time too, from any process or machine: the rule is checked again inside
        each transaction that submits, so a failure another call retried after this one
        read it is *deduplicated* here (``task_id``: the retry's record in history, once
        it has finished; the retry itself while it is active).  A task **without a dedup key**
        has nothing that ties it to its retry (the schema keeps no link, and the
        history rows are not rewritten): it is resubmitted by every call.  Give tasks a
        key, or narrow the call with ``since``, to retry them once.

        ``on_commit`` is :meth:`submit_batch`'s.
        """
        types = filter_values("task_type", task_type)
        groups = filter_values("group", group)
        after = since_timestamp(since, time.time())
        wanted = ids_argument(ids)
        none = [] in (types, groups, wanted)
        rows = [] if none else self._failed_rows(types, groups, after, wanted)
        table = frame([row[1:] for row in rows], RETRY_COLUMNS)
        batch = BatchSubmission().on_duplicate("skip").tasks(table)
        failures = [int(row[0]) for row in rows]
        return self._batch(
            batch, dry_run=False, on_commit=on_commit, progress=None, retries=failures
        )

    # ------------------------------------------------------------------ queries

    tasks = _listing(
        "tasks",
        TASK_COLUMNS,
        """Active tasks (pending, running, paused) in dispatch order, as a polars DataFrame.

        Each filter is a string or a sequence of strings (any of them matches); ``ids`` a
        task id or several, ``batch_id`` a batch id or several (``out.batch_id``);
        ``tags`` a dict: the tasks carrying every ``key: value`` pair given (``{}``: no
        filter); ``limit`` a whole number (negative: no limit).  The column ``tags``
        lists each task's tags as ``{key, value}`` structs, by key.""",
    )
    history = _listing(
        "history",
        HISTORY_COLUMNS,
        """Finished tasks (completed, failed, cancelled, superseded, expired) by id; the
        filters, ``ids``, ``batch_id``, ``tags`` and ``limit`` as :meth:`tasks`'s (a
        finished task keeps its tags until it is pruned).""",
    )

    def _query(
        self,
        table: Literal["tasks", "history"],
        columns: Mapping[str, Any],
        status: Any,
        task_type: Any,
        group: Any,
        limit: Any,
        ids: Any = None,
        batch_id: Any = None,
        tags: Any = None,
    ) -> pl.DataFrame:
        """:meth:`tasks` or :meth:`history`, its arguments checked."""
        selection = Selection(
            table,
            status=filter_values("status", status),
            task_type=filter_values("task_type", task_type),
            group=filter_values("group", group),
            limit=limit_argument(limit),
            ids=ids_argument(ids),
            batch_ids=ids_argument(batch_id, "batch_id"),
            tags=self._rarest_first(tags_argument(tags)),
        )
        rows = frame(self._driver.select(selection), columns)
        if table == "tasks":
            rows = self._with_effective_priority(self._with_awaited(rows))
        return self._with_tags(rows)

    def _rarest_first(self, pairs: list[tuple[str, str]] | None) -> list[tuple[str, str]] | None:
        """A tag filter's pairs, the rarest first (:func:`~taskmill.store.common.rarest_first`)."""
        return rarest_first(self._driver, pairs)

    def _with_tags(self, rows: pl.DataFrame) -> pl.DataFrame:
        """``rows`` (of :meth:`tasks` or :meth:`history`) with ``tags``: each task's
        ``{key, value}`` pairs by key (empty for a task without), read for these rows
        alone."""
        ids = rows["id"].to_list()
        found = self._driver.tags_of(ids) if ids else []
        tags = (
            pl.DataFrame(found, schema=TAG_ROW, orient="row")
            .group_by("task_id", maintain_order=True)
            .agg(pl.struct("key", "value").alias("tags"))
            .rename({"task_id": "id"})
        )
        empty = pl.lit([], dtype=pl.List(TAG))
        return rows.join(tags, on="id", how="left", maintain_order="left").with_columns(
            pl.col("tags").fill_null(empty).cast(pl.List(TAG))
        )

    def _with_effective_priority(self, tasks: pl.DataFrame) -> pl.DataFrame:
        """``tasks`` with ``effective_priority`` beside ``priority``: what the store's aging
        policy makes of a pending task's priority now (its priority for every other task,
        and with no policy)."""
        aging = self.aging()
        effective = pl.col("priority")
        if aging is not None:
            waited = pl.lit(self.now()) - pl.col("created_at").dt.epoch("us") / 1_000_000
            steps = (waited / aging.every.total_seconds()).floor().cast(pl.Int64)
            aged = pl.max_horizontal(pl.lit(aging.floor), pl.col("priority") - aging.step * steps)
            effective = (
                pl.when((pl.col("status") == "pending") & (pl.col("priority") > aging.floor))
                .then(pl.min_horizontal(pl.col("priority"), aged))
                .otherwise(pl.col("priority"))
            )
        at = tasks.get_column_index("priority") + 1
        column = tasks.select(effective.cast(pl.Int64).alias("effective_priority")).to_series()
        return tasks.insert_column(at, column)

    def _with_awaited(self, tasks: pl.DataFrame) -> pl.DataFrame:
        """``tasks`` with ``depends_on``: the ids each blocked task still waits for (null
        for the others)."""
        blocked = tasks.filter(pl.col("status") == "blocked")["id"].to_list()
        edges = self._driver.awaited(blocked) if blocked else []
        awaited = (
            pl.DataFrame(edges, schema={"id": pl.Int64, "depends_on": pl.Int64}, orient="row")
            .group_by("id", maintain_order=True)
            .agg("depends_on")
        )
        return tasks.join(awaited, on="id", how="left", maintain_order="left").with_columns(
            pl.when(pl.col("status") == "blocked")
            .then(pl.col("depends_on").fill_null(pl.lit([], dtype=pl.List(pl.Int64))))
            .alias("depends_on")
        )

    def task(self, task_id: int) -> dict[str, Any] | None:
        """Task ``task_id`` wherever it is: its row of :meth:`tasks` (with ``active``
        true) or of :meth:`history` (``active`` false) as a dict, or ``None`` when the
        store holds no such task (never submitted, or pruned).  Looked up by id."""
        task_id = task_id_argument(task_id)
        looks: tuple[tuple[bool, Literal["tasks", "history"], Mapping[str, Any]], ...] = (
            (True, "tasks", TASK_COLUMNS),
            (False, "history", HISTORY_COLUMNS),
        )
        for active, table, columns in looks:
            found = frame(self._driver.select(Selection(table, limit=1, ids=[task_id])), columns)
            if found.height:
                return {**found.row(0, named=True), "active": active}
        return None

    def attempts(
        self,
        task_id: int | Iterable[int] | None = None,
        *,
        outcome: Filter = None,
        limit: int | None = None,
    ) -> pl.DataFrame:
        """Every attempt that ended, in the order they ended, as a polars DataFrame:
        ``task_id``, ``attempt`` (the try it was; a ``released`` or ``lost`` attempt did
        not count, so the next one carries its number again), ``worker`` (the scheduler
        that ran it, ``host:pid:token``), ``started_at``, ``finished_at``, ``outcome``
        (see :data:`ATTEMPT_OUTCOMES`), ``error`` and ``traceback`` (the last frames of a
        failure's traceback).

        ``task_id``: one task's attempts (or several tasks'); ``outcome``: only attempts
        that ended so (a string or several); ``limit``: only the most recent ones.  An
        attempt still running is not here: its task is ``running`` in :meth:`tasks`, with
        its ``started_at``.  Attempts of a task pruned from history go with it."""
        outcomes = filter_values("outcome", outcome)
        for value in outcomes or ():
            if value not in ATTEMPT_OUTCOMES:
                raise SchedulerError(
                    f"outcome={value!r} is not an attempt's outcome: one of "
                    + ", ".join(ATTEMPT_OUTCOMES),
                    kind="invalid_argument",
                )
        limit = limit_argument(limit)
        rows = self._driver.attempt_rows(
            ids_argument(task_id, "task_id"),
            outcomes,
            None if limit is None or limit < 0 else limit,
        )
        rows.reverse()  # newest first from the store, oldest first here
        return frame(rows, ATTEMPT_COLUMNS)

    # ------------------------------------------------------------------ retention

    def prune_history(
        self,
        *,
        older_than: timedelta | None = None,
        keep_last: int | None = None,
        export: str | os.PathLike[str] | None = None,
    ) -> int:
        """Remove finished tasks from history; returns how many rows were removed.

        A row is removed when it finished more than ``older_than`` ago (when given) and
        is not among the ``keep_last`` most recently finished rows (when given; ties in
        finish time are broken by id).  At least one of the two is required.  Active
        tasks are never touched, whatever their status.

        ``export``: a folder (created if missing) that receives exactly the rows
        removed, as one Parquet file with the columns and types of :meth:`history`
        (``history-<UTC time>-<n>.parquet``; :attr:`last_export` names it).  The file is
        written first, under a hidden temporary name, and gets its final name — never
        replacing a file — once its rows are deleted.  If it cannot be written, nothing
        is removed and ``SchedulerError(kind="export")`` names the folder.  Nothing
        selected: no file.

        The ids are selected once; they are then deleted in transactions of
        :data:`~taskmill.store.retention.PRUNE_BATCH` ids, so dispatch and submits go
        on between them however large the prune.  Prunes of a store never overlap (a
        lock held from the selection to the end, in every process and on every machine:
        a second prune waits, then selects what is left), so every removed row is in the
        export of the prune that removed it, and in no other.  Should the process die,
        a later transaction fail, or the final renaming fail (``kind="export"``) after
        some deletes, the earlier ones stay removed and the export stays under its
        hidden name, recorded in the store: the next prune of the store — whatever its
        own folder — deletes the rest of that export's rows and publishes it in its
        folder first, and counts those rows in what it returns.
        """
        self.last_export = None
        selection = check_prune_args(older_than, keep_last, now=time.time())
        if export is not None and (
            not isinstance(export, str | os.PathLike) or not os.fspath(export)
        ):
            raise SchedulerError(
                f"export must name a folder (a str or path), not {export!r}",
                kind="invalid_argument",
            )
        folder = None if export is None else ExportFolder(export)
        steps = PruneSteps(
            select=lambda chosen: self._driver.prune_select(chosen.cutoff, chosen.keep_last),
            rows=self._prune_rows,
            delete=self._prune_delete,
            recorded=lambda: self._driver.meta_get(PENDING_KEY),
            record=lambda value: self._driver.meta_set(PENDING_KEY, value),
        )
        with self._driver.prune_lock():
            removed, path = run_prune(selection, steps=steps, export=folder, where=self._describe())
        self.last_export = path
        return removed

    def stats(self, by: str = "group") -> pl.DataFrame:
        """Task counts per status (one column each), per ``group``, ``priority`` or
        ``task_type`` — active tasks and history together."""
        if not isinstance(by, str) or by not in STATS_BY:
            raise SchedulerError(
                f"by={by!r}: use group, priority or task_type", kind="invalid_argument"
            )
        return stats_frame(self._driver.stats_rows(by), by)

    # ------------------------------------------------------------------ batches

    def widget(self, *, refresh: float | None = 2.0) -> Any:
        """The queue of this store as a live notebook widget, with no scheduler needed:
        its tasks by status, its groups with what their tasks wait on, the rate tasks
        end at, the progress of running tasks, its schedules and aging.  It reads the
        store again every ``refresh`` seconds from a background thread (``None``: on
        request, ``widget.refresh()``) until the store is closed or ``widget.stop()``."""
        from .. import display

        return display.store_widget(self, refresh=refresh)

    def batch(self, batch_id: int) -> BatchStatus:
        """Batch ``batch_id`` (``out.batch_id`` of the ``submit_batch`` that recorded it) as
        it stands: its tasks counted by status, their expected and completed bytes, and
        whether it is done (its submission ended and none of its tasks is active).
        ``SchedulerError(kind="unknown_batch")`` when the store holds no such batch."""
        return read_status(self._driver, task_id_argument(batch_id, "batch_id"), self)

    def batches(self, *, limit: int | None = None) -> pl.DataFrame:
        """Every batch, newest first (``limit``: the newest that many), one row each:
        ``batch_id``, ``name``, ``created_at``, ``finished_at`` (null while it is not
        done), ``total`` (tasks it inserted), a count column per status (blocked, pending,
        running, paused, completed, failed, cancelled, superseded, expired),
        ``expected_bytes`` and ``completed_bytes``."""
        return batches_frame(self._driver, limit_argument(limit))

    def finish_batches(self) -> list[tuple[int, dict[str, int]]]:
        """Record as finished the batches that are done (sealed, none of their tasks
        active), their counts frozen — so pruning history later changes nothing of them;
        ``(batch_id, counts)`` of each batch *this* call finished.  A scheduler calls it
        as attempts end and on its polls, and announces each one with
        :class:`~taskmill.BatchFinished`: once, however many schedulers run."""
        return finish_done(self._driver)
