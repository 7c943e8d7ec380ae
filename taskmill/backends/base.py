"""The driver protocol: the data-level operations the store's face
(:class:`~taskmill.store.TaskStore`) runs its logic over, one driver per engine
(``sqlite/``, ``postgres/``).

The face holds every rule once — argument checks, the claim loop with its picker, what a
failure means, what a submission does against the store, the batch orchestration,
recovery, retention —; a driver only reads and writes rows.  No SQL text and no engine
name appear in the face.

**Transactions** are callbacks: :meth:`Driver.write` runs ``body(conn)`` in one write
transaction, :meth:`Driver.read` in one read.  ``conn`` is the driver's own connection
handle (opaque to the face, typed by the driver's ``C``); the operations documented "in a
write transaction" or "in a read" take it as their first argument and must only be
called inside such a body.  A driver may run a body more than once (a deadlock, a
serialization failure, a lost connection before anything was written): bodies therefore
hold no side effects outside the store.  Every other operation opens its own
transaction, or needs none.

What a driver raises: :class:`~taskmill.model.StoreError` and its subclasses
(:class:`~taskmill.model.StoreLocked` when another writer held the store too long,
:class:`~taskmill.model.StoreDamaged`, :class:`~taskmill.model.NotATaskStore`,
:class:`~taskmill.model.SchemaTooNew`), never an engine's own exception.

Rows: a task is what :class:`ClaimedTask` says when claimed; the rows of
:meth:`Driver.select`, :meth:`Driver.prune_rows` and :meth:`Driver.attempt_rows` are tuples
in the order of the column names the face passes (or of
:data:`~taskmill.store.common.ATTEMPT_COLUMNS`); times are seconds since the epoch by the
store's clock (:meth:`Driver.now`).
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

import polars as pl

from .calls import BatchTag, Browse, CancelSlice, Dead, Ending, Expired, NewTask, Owned, Selection
from .schedules import ScheduleStatements

if TYPE_CHECKING:
    from ..model import SchedulerError
    from .workers import RenewingConnection

__all__ = [
    "BatchBackend",
    "CancelMatch",
    "ClaimedTask",
    "CommitHook",
    "Driver",
    "GroupQuery",
    "shut",
]

C = TypeVar("C")
S = TypeVar("S")
T = TypeVar("T")

#: Called after each committed batch transaction that inserted tasks, with the
#: inserted ids and the ``(new_id, replaced_id)`` pairs of superseded tasks.
CommitHook = Callable[[list[int], list[tuple[int, int]]], None]

#: The per-group reads :meth:`Driver.per_group` runs.
GroupQuery = Literal["waiting_for_start", "waiting_for_retry", "paused_groups"]


class Closable(Protocol):
    """A connection, as :func:`shut` sees it."""

    def close(self) -> None: ...


def shut(conn: Closable | None) -> None:
    """Close ``conn`` when there is one; ``None``, what its slot holds afterwards
    (``self._conn = shut(self._conn)``, under the lock that guards the slot)."""
    if conn is not None:
        conn.close()


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A task a worker has just marked running."""

    id: int
    task_type: str
    dedup_key: str | None
    group: str | None
    priority: int
    payload: bytes | None
    label: str | None
    attempt: int
    max_retries: int | None
    #: A parent whose children all ended: this attempt runs its finalizer, not its code.
    finalizing: bool = False
    #: Its place in the queue and when it was submitted (what aging orders claims by).
    queue_pos: int = 0
    created_at: float = 0.0

    @classmethod
    def candidate(cls, row: Sequence[Any]) -> ClaimedTask:
        """A candidate row of a claim (``id``, ``task_type``, ``dedup_key``, ``group``,
        ``priority``, ``payload``, ``label``, the tries so far, ``max_retries``,
        ``finalizer``, ``queue_pos``, ``created_at``) as the attempt it would start."""
        tid, ttype, key, group, prio, payload, label, tries, retries, fin, pos, created = row
        return cls(
            int(tid),
            ttype,
            key,
            group,
            int(prio),
            payload,
            label,
            int(tries) + 1,
            retries,
            fin == "due",
            int(pos),
            float(created),
        )


class CancelMatch(Protocol):
    """What :meth:`Driver.cancel_batch` matches (checked by the face): each filter a list
    of values (any matches) or ``None`` (no filter); ``status`` always a list."""

    @property
    def status(self) -> list[str]: ...
    @property
    def task_type(self) -> list[str] | None: ...
    @property
    def group(self) -> list[str] | None: ...
    @property
    def label(self) -> list[str] | None: ...
    @property
    def tags(self) -> list[tuple[str, str]] | None:
        """``(key, value)`` pairs a task must all carry (``None``: no filter)."""
        ...


class BatchBackend(Protocol[S]):
    """How a driver stages and merges a batch's transactions (what
    :func:`~taskmill.store.batchrun.run_batch` drives); ``S`` is its staged-part handle."""

    #: The backend's own figures of the batch, in seconds, added to as it goes:
    #: ``staging`` (the bulk copy's own time), ``write_lock`` (transactions' lock time),
    #: ``stage_wait`` (time a merge waited for staging; reported as staging).
    phases: dict[str, float]
    #: The batch record its merges add their tasks to (see :class:`BatchTag`).
    tag: BatchTag

    def batch_session(
        self, *, chunked: bool, dry_run: bool
    ) -> contextlib.AbstractContextManager[None]:
        """Context around the whole batch (warm-up, store settings for chunked batches)."""
        ...

    def stage(self, rows: pl.DataFrame) -> S:
        """Start staging one transaction's winning rows (may fill in the background)."""
        ...

    def ready(self, staged: S) -> None:
        """Block until ``staged`` is fully staged; raise :class:`SchedulerError` if staging
        failed (the caller then discards it)."""
        ...

    def merge(self, staged: S, *, dry_run: bool, base_offset: int) -> pl.DataFrame:
        """Merge (or, with ``dry_run``, plan) a staged part in one transaction and discard
        it; the per-row result of :func:`taskmill.backends.staging.decide`.
        ``base_offset``: ids the earlier chunks of a plan would have taken."""
        ...

    def discard(self, staged: S) -> None:
        """Drop a staged part that will not be merged (idempotent)."""
        ...

    def read_error(self, exc: OSError) -> SchedulerError:
        """The store's error for a batch whose input could not be read."""
        ...

    def dependency_lookup(self, keys: list[str], ids: list[int]) -> tuple[pl.DataFrame, set[int]]:
        """One read: the active tasks ``keys`` name (``key``, ``task_id``; any task type),
        and which of ``ids`` name a task the store holds, active or in history."""
        ...

    def seal(self) -> None:
        """One write: seal the batch :attr:`tag` recorded (nothing when none): its
        submission ended without a last transaction that sealed it."""
        ...


class Driver(abc.ABC, Generic[C]):
    """One engine's data-level operations (see the module docstring for transactions,
    errors and rows).  Thread-safe: the face calls it from any thread."""

    #: Seconds a write waits for another writer's lock before the call fails.
    busy_timeout: float
    #: Seconds each transaction of the last batch held the store's write lock (reset by
    #: :meth:`batch_backend`, appended to by each merge).
    last_batch_merge_seconds: list[float]
    #: Whether the driver claims, when no limit is counted, in one statement
    #: (:meth:`claim_at_once`) rather than by the face's candidate loop.
    claims_at_once: bool = False

    # ------------------------------------------------------------------ connections

    @abc.abstractmethod
    def close(self) -> None:
        """Close every connection (idempotent); later calls raise ``StoreError``."""

    @abc.abstractmethod
    def describe(self) -> str:
        """The store, for messages (``task store <where>``; no password)."""

    @abc.abstractmethod
    def now(self) -> float:
        """The store's clock, in seconds since the epoch (a SQLite store's host's, a
        PostgreSQL server's): what leases, rate limits, start and expiry times are judged
        by.  A driver may carry a recent reading forward."""

    @abc.abstractmethod
    def integrity_check(self) -> str:
        """``"ok"`` when the store is healthy; otherwise what is wrong, one line each."""

    def watch(self, wake: Callable[[], None]) -> Callable[[], None] | None:
        """Call ``wake()`` (from a thread of its own) whenever another connection commits
        tasks that became pending; the function that stops watching.  ``None``: the engine
        cannot tell (the default)."""
        return None

    # ------------------------------------------------------------------ transactions

    @abc.abstractmethod
    def write(
        self,
        action: str,
        body: Callable[[C], T],
        *,
        dispatch: bool = False,
        single: bool = False,
        claim_lock: bool = False,
        retry_unique: bool = False,
    ) -> T:
        """Run ``body(conn)`` in one write transaction, all or nothing; its result.

        ``action`` opens the message of an error (``"cannot claim tasks from"``).
        ``dispatch``: a claim or an attempt's end (a driver may keep a connection for
        them, never queued behind a batch).  ``single``: ``body`` is one statement, or
        statements each complete on its own (a driver may commit them without
        ``BEGIN``/``COMMIT`` round trips).  ``claim_lock``: a claim that counts limits —
        no other such claim may run between its counting and its marking.
        ``retry_unique``: a clash on the active-key index runs ``body`` again (a writer
        that bypassed the submit lock won the race)."""

    @abc.abstractmethod
    def read(self, body: Callable[[C], T]) -> T:
        """Run ``body(conn)`` in one read: one snapshot, never waiting for writers."""

    @abc.abstractmethod
    def clock_in(self, conn: C) -> float:
        """:meth:`now`, read in the transaction of ``conn`` (in a write, after its lock
        was taken: every end the transaction sees was recorded before it)."""

    # ------------------------------------------------------------------ claiming

    def claim_at_once(
        self, conn: C, types: list[str], now: float, owner: str, limit: int
    ) -> list[ClaimedTask]:
        """In a ``single`` write on the dispatch connection, when :attr:`claims_at_once`:
        mark the first ``limit`` dispatchable tasks of ``types`` running for ``owner`` at
        ``now`` (skipping tasks other transactions hold) and return them in dispatch order
        (priority, queue order, id)."""
        raise NotImplementedError

    @abc.abstractmethod
    def claim_counts(
        self, conn: C, counted: bool, keys: list[str]
    ) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[float, float]]]:
        """In a claim's write (``claim_lock``): per group, its running tasks and their
        summed expected bytes, whoever runs them (when ``counted``; else none), and the
        stored rate buckets of ``keys`` as ``(tokens, updated_at)``."""

    @abc.abstractmethod
    def claim_candidates(
        self,
        conn: C,
        types: list[str],
        now: float,
        held: list[str],
        limit: int,
        priority: int | None = None,
    ) -> list[tuple[ClaimedTask, int]]:
        """In a claim's write: the next ``limit`` pending tasks of ``types`` dispatchable at
        ``now`` (start time reached, not expired, group not paused) outside the ``held``
        groups, in dispatch order, each as it would start (attempt: its tries + 1, with its
        queue place and creation time) with its summed expected bytes; no other claim
        takes them before this one ends.  ``priority``: only the tasks at that priority."""

    @abc.abstractmethod
    def pending_levels(self, conn: C) -> list[int]:
        """In a claim's write: the priorities of the pending tasks, most urgent first (one
        index probe per level)."""

    @abc.abstractmethod
    def mark_running(
        self,
        conn: C,
        ids: list[int],
        now: float,
        owner: str,
        buckets: list[tuple[str, float, float]],
    ) -> None:
        """In a claim's write: mark candidates ``ids`` running for ``owner`` (one more try,
        started at ``now``, start time cleared) and store the rate ``buckets``
        (``(key, tokens, updated_at)``) as they stand after them."""

    # ------------------------------------------------------------------ an attempt's end

    @abc.abstractmethod
    def finish_owned(self, conn: C, owned: Owned, ending: Ending) -> set[int]:
        """In a write: move to history as ``ending`` says the attempts of ``owned`` still
        running; their ids.  The attempt is recorded."""

    @abc.abstractmethod
    def store_progress(
        self, conn: C, owner: str, rows: list[tuple[int, int, float, str | None]]
    ) -> int:
        """In a write: store ``(task id, attempt, fraction, message)`` as the progress of
        each of those attempts still running for ``owner``; how many were."""

    @abc.abstractmethod
    def retry_later(self, conn: C, owned: Owned, error: str, run_after: float) -> bool:
        """In a write: put the one task of ``owned`` back to pending, not dispatched before
        ``run_after``, ``error`` its last, if that attempt still runs; whether it did.  The
        attempt is recorded."""

    @abc.abstractmethod
    def park(self, conn: C, owned: Owned, finalizer: str | None) -> dict[str, int] | bool | None:
        """In a write: the one attempt of ``owned``, if it still runs, returned having
        spawned children (:func:`~taskmill.backends.family.park`): ``None`` — it is
        ``waiting`` now (``finalizer``: its finalizer, ``'wanted'`` or ``None``); a dict —
        no child is active, their counts by status; ``False`` — the attempt no longer
        runs."""

    @abc.abstractmethod
    def preempt_running(self, conn: C, owned: Owned, now: float) -> int:
        """In a write: pause the attempts of ``owned`` still running (not counted as tries,
        marked preempted at ``now``); how many."""

    @abc.abstractmethod
    def urgent_waiting(self, priority: int, types: list[str], now: float, limit: int) -> int:
        """One read: how many tasks of ``types`` at ``priority`` or more urgent wait to
        start at ``now`` (at most ``limit``)."""

    @abc.abstractmethod
    def resume_preempted(self, priority: int, types: list[str], now: float) -> int:
        """Put the tasks paused by preemption back to pending when no task of ``types`` at
        ``priority`` or more urgent waits (a read first: no write when there are none);
        how many."""

    @abc.abstractmethod
    def attempt_traceback(self, conn: C, task_id: int, traceback: str) -> None:
        """In the write that ended task ``task_id``'s attempt: keep ``traceback`` with that
        attempt's record."""

    @abc.abstractmethod
    def release_running(self, conn: C, owned: Owned) -> int:
        """In a write: put back to pending (not counted as tries) the attempts of ``owned``
        still running, waking the watchers at commit; how many."""

    @abc.abstractmethod
    def ownership(
        self, ids: list[int], tries: list[int | None], owner: str
    ) -> tuple[set[int], dict[int, tuple[str, int | None]]]:
        """One read: the ids of ``ids`` still running for ``owner`` (as the attempt beside
        each; ``None``: any), and for the others found in the store, their history status
        and ``replaced_by`` or else their active status and ``None``."""

    @abc.abstractmethod
    def has_work(self, conn: C, types: list[str]) -> bool:
        """In a read: whether any task of ``types`` is pending or running."""

    @abc.abstractmethod
    def next_run_after(self, conn: C, now: float) -> float | None:
        """In a read: the earliest start time of a waiting task, or end after ``now`` of a
        group's pause (``None``: none)."""

    # ------------------------------------------------------------------ submitting

    @abc.abstractmethod
    def find_active(self, conn: C, hashed: int) -> tuple[Any, ...] | None:
        """In a submit's write: the active task of key hash ``hashed`` as
        :func:`~taskmill.store.common.submit_row` reads it (``None``: none), and no other
        submit of a keyed task decides until this transaction ends."""

    @abc.abstractmethod
    def new_task_id(self, conn: C) -> int:
        """In a write: a fresh task id, above every id handed out."""

    @abc.abstractmethod
    def insert(self, conn: C, task: NewTask) -> None:
        """In a write: insert ``task`` as pending (waking the watchers at commit)."""

    @abc.abstractmethod
    def upgrade_priority(self, conn: C, task_id: int, priority: int) -> None:
        """In a write: raise active task ``task_id`` to ``priority`` if that is more urgent
        (lower) than its own."""

    @abc.abstractmethod
    def finish(self, conn: C, ids: Sequence[int], ending: Ending) -> None:
        """In a write: move the active tasks ``ids`` to history as ``ending`` says (one
        already gone is left alone)."""

    @abc.abstractmethod
    def batch_backend(self, retries: Sequence[int] | None) -> BatchBackend[Any]:
        """How this driver stages and merges a batch (resets
        :attr:`last_batch_merge_seconds`; staging may start warming up).  ``retries``, for
        a retry of failures: the history id of the failure each input row retries; a
        merge then passes over a keyed row whose key has a history record newer than it
        (see :meth:`~taskmill.store.TaskStore.retry_failed`)."""

    # ------------------------------------------------------------------ dependencies (schema 8)

    @abc.abstractmethod
    def awaited(self, task_ids: list[int]) -> list[tuple[int, int]]:
        """One read: ``(task_id, depends_on)`` of what the tasks ``task_ids`` still wait
        for, in order (a task of a batch still merging may wait for rows not merged yet:
        those are not listed)."""

    # ------------------------------------------------------------------ tags (schema 12)

    @abc.abstractmethod
    def tag_pair_count(self, key: str, value: str, cap: int) -> int:
        """One read: how many tasks carry the tag ``key: value``, counted up to ``cap``."""

    @abc.abstractmethod
    def tags_of(self, task_ids: list[int]) -> list[tuple[int, str, str]]:
        """One read: ``(task_id, key, value)`` of the tags of the tasks ``task_ids``,
        active or finished, by task and key.  (A driver writes a new task's tags in the
        transaction that inserts it: :meth:`insert` and each batch merge.)"""

    # ------------------------------------------------------------------ child tasks (schema 9)

    @abc.abstractmethod
    def family_counts(self, parent_ids: list[int]) -> list[tuple[int, str, int]]:
        """One read: ``(parent, status, count)`` of the children of ``parent_ids``, active
        and finished."""

    # ------------------------------------------------------------------ schedules (schema 10)

    @property
    @abc.abstractmethod
    def schedules(self) -> ScheduleStatements:
        """The statements of schedules on this driver's connections (each takes the
        ``conn`` of a :meth:`write` or :meth:`read`, as its docstring says)."""

    # ------------------------------------------------------------------ batches (schema 7)

    @abc.abstractmethod
    def batch_rows(self, conn: C, batch_id: int | None, limit: int | None) -> list[tuple[Any, ...]]:
        """In a read: the stored batches, newest first (``batch_id``: that one alone;
        ``limit``: at most that many), each ``(id, name, created_at, sealed, total,
        finished_at, completed, failed, cancelled, superseded, expired, expected_bytes,
        completed_bytes)`` — the counts and bytes ``None`` until it finished."""

    @abc.abstractmethod
    def batch_tallies(self, conn: C, ids: list[int]) -> list[tuple[Any, ...]]:
        """In a read or write: the tasks of batches ``ids``, active and in history, as
        ``(batch_id, status, how many, their expected bytes, their last finish)`` (the
        finish ``None`` for active tasks), one row per batch and status found."""

    @abc.abstractmethod
    def batches_done(self, conn: C) -> list[int]:
        """In a read or write: the sealed batches not finished yet with no active task."""

    @abc.abstractmethod
    def batch_finish(self, conn: C, batch_id: int, values: dict[str, Any]) -> bool:
        """In a write: finish batch ``batch_id`` with ``values`` (``finished_at`` and the
        frozen counts and bytes, by column name) unless it is finished already or has an
        active task; whether it did."""

    # ------------------------------------------------------------------ task control

    @abc.abstractmethod
    def cancel(self, task_id: int) -> str | None:
        """One write: move active task ``task_id`` to history as cancelled; the status it
        had (``None``: no such active task)."""

    @abc.abstractmethod
    def set_status(self, task_id: int, old: str, new: str) -> bool:
        """One write: set active task ``task_id``'s status to ``new`` if it is ``old``
        (waking the watchers when it becomes pending); whether it was."""

    @abc.abstractmethod
    def pause_group(self, group: str, until: float | None, now: float) -> None:
        """One write: record the pause of ``group``, set at ``now``, until ``until``
        (``None``: until resumed)."""

    @abc.abstractmethod
    def resume_group(self, group: str) -> bool:
        """One write: forget the pause of ``group`` (waking the watchers); whether it was
        paused."""

    @abc.abstractmethod
    def any_expired(self, now: float) -> bool:
        """One read: whether any task not started has expired by ``now``."""

    @abc.abstractmethod
    def expire(self, now: float) -> int:
        """One write: move the tasks not started by their expiry time at ``now`` to history
        as expired; how many (a driver may leave a task another transaction is deciding
        on for the next sweep)."""

    @abc.abstractmethod
    def last_task_id(self) -> int:
        """One read: the last task id handed out (0: none yet)."""

    @abc.abstractmethod
    def active_task_types(self) -> list[str]:
        """One read: the task types of the active tasks."""

    @abc.abstractmethod
    def cancel_batch(self, where: CancelMatch, part: CancelSlice) -> tuple[int, int | None]:
        """One write: pick the active tasks ``where`` matches among those of ``part``, and
        move them to history as cancelled; how many moved and the last id picked
        (``None``: none)."""

    @abc.abstractmethod
    def failed_rows(
        self,
        task_type: list[str] | None,
        group: list[str] | None,
        since: float | None,
        ids: list[int] | None = None,
    ) -> list[tuple[Any, ...]]:
        """One read: the failures of history to retry (a keyed one only while it is its
        key's latest record; ``ids``: only the failures of those task ids), in history
        order: each one's history id, then the columns of
        :data:`~taskmill.store.common.RETRY_COLUMNS`."""

    # ------------------------------------------------------------------ workers

    @abc.abstractmethod
    def register(self, owner: str, *, lease_timeout: float) -> None:
        """One write: (re-)register worker ``owner`` with a fresh lease of
        ``lease_timeout`` seconds by the store's clock, with this process's scope
        (:func:`~taskmill.backends.workers.local_scope`)."""

    @abc.abstractmethod
    def renew(self, owner: str) -> bool:
        """One write: extend ``owner``'s lease (what it said was held back is kept);
        ``False`` when it had been taken away."""

    @abc.abstractmethod
    def heartbeat(self, *, timeout: float) -> RenewingConnection:
        """A connection of its own for renewing leases, each renewal waiting at most
        ``timeout`` seconds: never queued behind this driver's other calls."""

    @abc.abstractmethod
    def release_owner(self, owner: str) -> int:
        """One write: put ``owner``'s running tasks back to pending (waking the watchers)
        and forget its worker row; how many tasks."""

    @abc.abstractmethod
    def owned_tasks(self, owner: str) -> list[int]:
        """One read: ids of the tasks running for ``owner``."""

    @abc.abstractmethod
    def owner_leases(self, now: float | None) -> tuple[list[Any], list[str]]:
        """One read: each running task's ``(owner, whether its lease ran out, its scope)``
        and the workers whose lease ran out, by the store's clock or ``now``."""

    @abc.abstractmethod
    def held_rows(self, now: float | None) -> list[str]:
        """One read: what held groups back at the last claim of each worker whose lease
        runs by the store's clock (or at ``now``), as the worker wrote it with a renewal
        (a JSON object; a worker that holds nothing back is left out), by owner."""

    @abc.abstractmethod
    def give_back(self, dead: Dead, expired: Expired, now: float | None) -> int:
        """One write: put back to pending the running tasks of the ``dead`` owners (and
        forget them) and of the ``expired`` ones unless they renewed since (forgetting
        those), each lost attempt recorded with the reason beside its owner; how many."""

    # ------------------------------------------------------------------ queries

    @abc.abstractmethod
    def status_counts(self) -> list[tuple[str, int]]:
        """One read: ``(status, how many tasks)`` over active tasks and history."""

    @abc.abstractmethod
    def active_group_counts(self) -> list[tuple[str | None, str, int]]:
        """One read: ``(group, status, how many tasks)`` over active tasks only (``None``:
        no group), never history."""

    @abc.abstractmethod
    def per_group(self, query: GroupQuery, now: float) -> list[tuple[Any, Any]]:
        """One read: the rows ``(group, value)`` of the per-group read ``query`` at ``now``
        (pending tasks whose start time is ahead; of those, the ones waiting out a
        retry's backoff; the groups paused, with their end)."""

    @abc.abstractmethod
    def select(self, selection: Selection) -> list[tuple[Any, ...]]:
        """One read: the rows ``selection`` asks for (``tasks`` in dispatch order,
        ``history`` by id), as tuples of the frame's columns in their order
        (:func:`taskmill.columns.frame_schema` of the table)."""

    @abc.abstractmethod
    def browse(self, page: Browse) -> list[tuple[Any, ...]]:
        """One read, one statement: the page ``page`` asks for — active tasks and history
        together, by id descending — as tuples of the fields of
        :data:`~taskmill.columns.BROWSED` in order (``None`` where the task's table has no
        such column), then ``active`` (a bool).  Each table is read backwards along its
        primary key from ``page.before``, stopping at ``page.limit`` matches; a table the
        page rules out is not read."""

    @abc.abstractmethod
    def throughput_rows(self, start: float, end: float) -> list[tuple[int, str, int]]:
        """One read, one statement: ``(minute, status, count)`` of the history rows that
        finished at ``start`` or later and before ``end`` (through the index on
        ``finished_at``), ``minute`` being ``floor(finished_at / 60)``; one row per minute
        and status found."""

    @abc.abstractmethod
    def recent_counts(self, since: float) -> list[tuple[str | None, str, str, int]]:
        """One read, one statement: ``(group, task type, status, count)`` over every
        active task and the history rows that finished at ``since`` or later (through the
        index on ``finished_at``: never the whole of history); one row per group, task
        type and status found."""

    @abc.abstractmethod
    def worker_rows(self) -> list[tuple[Any, ...]]:
        """One read, one statement: each registered worker as ``(owner, host, pid,
        started_at, heartbeat_at, lease_timeout, running)``, ``running`` the tasks
        running for it now; by host, pid and owner."""

    @abc.abstractmethod
    def attempt_rows(
        self, task_ids: list[int] | None, outcomes: list[str] | None, limit: int | None
    ) -> list[tuple[Any, ...]]:
        """One read: the recorded attempts (of ``task_ids``; ending as one of
        ``outcomes``), newest first, at most ``limit``."""

    @abc.abstractmethod
    def stats_rows(self, by: str) -> list[tuple[Any, ...]]:
        """One read: ``(key, status, count)`` over active tasks and history, the key being
        the column ``by`` names (``group``, ``priority`` or ``task_type``)."""

    # ------------------------------------------------------------------ retention

    @abc.abstractmethod
    def prune_select(self, cutoff: float, keep_last: int | None) -> list[int]:
        """One read: ids of the history rows finished before ``cutoff`` (``inf``: any
        time) and not among the ``keep_last`` latest (``None``: none held back)."""

    @abc.abstractmethod
    def prune_rows(self, ids: list[int]) -> list[tuple[Any, ...]]:
        """One read: the history rows of ``ids`` by id, as tuples of the columns of
        :data:`~taskmill.store.common.HISTORY_COLUMNS`."""

    @abc.abstractmethod
    def prune_delete(self, ids: list[int]) -> int:
        """One write: delete the history rows of ``ids``; how many."""

    @abc.abstractmethod
    def prune_lock(self) -> contextlib.AbstractContextManager[None]:
        """Held around a whole prune: prunes of the store never overlap, in any process
        (or machine); waits for the prune under way."""

    @abc.abstractmethod
    def meta_get(self, key: str) -> str | None:
        """One read: the store's metadata value of ``key`` (``None``: none)."""

    @abc.abstractmethod
    def meta_set(self, key: str, value: str | None) -> None:
        """One write: set (``None``: delete) the metadata value of ``key``."""
