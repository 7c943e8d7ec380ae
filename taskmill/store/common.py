"""What the two stores share, written once: the frames their queries return, the decision a
single submit makes on a key, and the public methods that only check arguments or shape
results.  Each store (``sqlite.py``, ``postgres/store.py``) brings its SQL, its
connections and its transactions; :class:`StoreMethods` turns those into the API."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol, TypeGuard

import polars as pl

from ..columns import TIME_COLUMNS, column, frame_schema
from ..model import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    DuplicateStrategy,
    DuplicateTask,
    InvalidSubmission,
    SchedulerError,
    SubmitOutcome,
    TaskSubmission,
)
from ..outcome import BatchOutcome
from ..validation import (
    MAX_INT64,
    NUL_MESSAGE,
    Defaults,
    Row,
    check_submission,
    clock_argument,
    task_id_argument,
    text_argument,
    to_seconds,
    whole_number,
)
from .base import CommitHook
from .keys import COLLISION, key_hash
from .retention import ExportFolder, PruneSelection, PruneSteps, check_prune_args, run_prune

__all__ = [
    "ATTEMPT_COLUMNS",
    "ATTEMPT_OUTCOMES",
    "CANCEL_BATCH",
    "HISTORY_COLUMNS",
    "RETRY_COLUMNS",
    "TASK_COLUMNS",
    "CancelFilter",
    "StoreMethods",
    "clock_argument",
    "frame",
    "ids_argument",
    "limit_argument",
    "submit_row",
    "task_id_argument",
    "task_types_argument",
    "text_argument",
    "whole_number",
]

log = logging.getLogger("taskmill")

#: The columns of :meth:`StoreMethods.tasks`, with their polars types.
TASK_COLUMNS: dict[str, pl.DataType] = frame_schema("tasks")
#: The columns of :meth:`StoreMethods.history`, with their polars types.
HISTORY_COLUMNS: dict[str, pl.DataType] = frame_schema("history")
#: The columns of :meth:`StoreMethods.attempts`, with their polars types.
ATTEMPT_COLUMNS: dict[str, Any] = {
    "task_id": pl.Int64,
    "attempt": pl.Int64,
    "worker": pl.String,
    "started_at": pl.Float64,
    "finished_at": pl.Float64,
    "outcome": pl.String,
    "error": pl.String,
    "traceback": pl.String,
}
#: How a recorded attempt can end: its task's end (``completed``, ``failed`` — for good or
#: to be retried —, ``cancelled``, ``superseded``, ``expired``), or given back without
#: counting as a try: ``released`` (its worker shut down or was fenced) or ``lost`` (its
#: worker died or its lease ran out).
ATTEMPT_OUTCOMES = (
    "completed",
    "failed",
    "cancelled",
    "superseded",
    "expired",
    "released",
    "lost",
)
#: The history columns :meth:`StoreMethods.retry_failed` resubmits, as the batch's
#: canonical columns (``group`` is the store's ``group_name``).
RETRY_COLUMNS: dict[str, pl.DataType] = {
    name: dtype for name, dtype in HISTORY_COLUMNS.items() if column(name).submitted
}
#: Tasks :meth:`StoreMethods.cancel_where` moves to history per transaction.
CANCEL_BATCH = 10_000
#: What ``stats(by=…)`` accepts.
STATS_BY = ("group", "priority", "task_type")


def frame(rows: list[tuple[Any, ...]], columns: Mapping[str, Any]) -> pl.DataFrame:
    """A DataFrame of query ``rows`` whose fields are ``columns`` in order; times become
    UTC datetimes (microseconds)."""
    data = (
        {name: [] for name in columns}
        if not rows
        else dict(zip(columns, (list(col) for col in zip(*rows, strict=True)), strict=True))
    )
    df = pl.DataFrame(data, schema=dict(columns), orient="col")
    times = [c for c in TIME_COLUMNS if c in columns]
    return df.with_columns(
        (pl.col(c) * 1_000_000).cast(pl.Int64).cast(pl.Datetime("us", "UTC")) for c in times
    )


def submit_row(
    row: Row,
    existing: Sequence[Any] | None,
    now: float,
    *,
    next_id: Callable[[], int],
    insert: Callable[[int, int], object],
    upgrade: Callable[[int], object],
    supersede: Callable[[int, int], object],
    expire: Callable[[int], object],
) -> SubmitOutcome:
    """Decide one checked submission against the active task holding its key, and carry
    it out through the store's own statements.

    ``existing``: that task as ``(id, status, priority, queue_pos, task_type,
    dedup_key, expires_at)``, or ``None``.  ``insert(new_id, queue_pos)`` adds the
    task; ``upgrade(old_id)`` raises the pending task's priority to the row's;
    ``supersede(old_id, new_id)`` moves the old task to history as replaced;
    ``expire(old_id)`` moves a task that was not started by its expiry time to
    history as expired (its key is free: the submit goes on as if it were gone).  A
    task that supersedes a pending one takes its place in the queue.  What the four
    actions return is not used (a cursor, the rows moved …).
    """
    info = (row.task_type, row.dedup_key, row.group, row.priority)
    if existing is not None and existing[1] != "running" and is_due(existing[6], now):
        expire(existing[0])
        existing = None
    if existing is not None and tuple(existing[4:6]) != (row.task_type, row.dedup_key):
        raise InvalidSubmission(
            COLLISION.format(row.task_type, row.dedup_key, f"active task {existing[0]}"),
            kind="key_collision",
            field="dedup_key",
        )
    if existing is None:
        new_id = next_id()
        insert(new_id, new_id)
        return SubmitOutcome("submitted", new_id, None, *info)
    old_id, old_status, old_priority, old_pos = existing[:4]
    strategy = row.on_duplicate
    if strategy is DuplicateStrategy.REJECT:
        raise DuplicateTask(
            f"an active task (id {old_id}, {old_status}) already has task_type "
            f"'{row.task_type}' and dedup_key '{row.dedup_key}'",
            existing_task_id=old_id,
        )
    if strategy is DuplicateStrategy.SKIP:
        if old_status == "pending" and row.priority < old_priority:
            upgrade(old_id)
            return SubmitOutcome("upgraded", old_id, None, *info)
        return SubmitOutcome("deduplicated", old_id, None, *info)
    new_id = next_id()
    supersede(old_id, new_id)
    insert(new_id, old_pos if old_status == "pending" else new_id)
    return SubmitOutcome("superseded", new_id, old_id, *info)


def is_due(expires_at: float | None, now: float) -> bool:
    """Whether a task that expires at ``expires_at`` has expired at ``now``."""
    return expires_at is not None and expires_at <= now


def stats_frame(rows: list[tuple[Any, ...]], by: str) -> pl.DataFrame:
    """``(key, status, count)`` rows as one row per key, a column per status and the
    total, keys in order (no key last)."""
    statuses = (*ACTIVE_STATUSES, *FINAL_STATUSES)
    dtype = pl.Int64 if by == "priority" else pl.String
    long = pl.DataFrame(rows, schema={by: dtype, "status": pl.String, "n": pl.Int64}, orient="row")
    wide = long.group_by(by).agg(
        [pl.col("n").filter(pl.col("status") == st).sum().alias(st) for st in statuses]
    )
    return wide.with_columns(pl.sum_horizontal(statuses).alias("total")).sort(by, nulls_last=True)


Filter = str | Sequence[str] | None


def as_list(value: str | Sequence[str]) -> list[str]:
    """A query filter as a list: a ``str`` is one value."""
    return [value] if isinstance(value, str) else list(value)


class _ToList(Protocol):
    def to_list(self) -> list[Any]: ...


def _has_to_list(value: object) -> TypeGuard[_ToList]:
    """Whether ``value`` has a ``to_list`` (a polars or pandas Series …)."""
    return hasattr(value, "to_list")


def filter_values(name: str, value: Any) -> list[str] | None:
    """A filter argument as a list of strings (``None``: no filter).

    A ``str`` is one value; any other iterable of ``str`` (a list, a tuple, a set, a
    polars Series…) is many.  Anything else — or a string holding a NUL character, which
    no stored text holds — raises ``SchedulerError(kind="invalid_argument")`` naming
    the argument."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if isinstance(value, bytes | bytearray | Mapping) or not isinstance(value, Iterable):
        raise SchedulerError(
            f"{name}= takes a string or a sequence of strings, not {type(value).__name__}",
            kind="invalid_argument",
        )
    values = value.to_list() if _has_to_list(value) else list(value)
    for i, item in enumerate(values):
        if not isinstance(item, str):
            raise SchedulerError(
                f"{name}= holds {item!r} ({type(item).__name__}) at position {i}: every "
                "value must be a string",
                kind="invalid_argument",
            )
        if "\x00" in item:
            raise SchedulerError(
                NUL_MESSAGE.format(f"{name}= (at position {i})"), kind="invalid_argument"
            )
    return values


def ids_argument(value: Any, name: str = "ids") -> list[int] | None:
    """Task ids to select: one id or an iterable of them (``None``: no filter)."""
    if value is None:
        return None
    if isinstance(value, str | bytes | bytearray | Mapping) or not isinstance(value, Iterable):
        return [task_id_argument(value, name)]
    values = value.to_list() if _has_to_list(value) else list(value)
    return [task_id_argument(v, f"{name}[{i}]") for i, v in enumerate(values)]


def task_types_argument(task_types: Any) -> list[str]:
    """The task types a worker takes (a claim's ``task_types``): as a filter, a ``str``
    being one, or the keys of a mapping (the executors by task type)."""
    if isinstance(task_types, Mapping):
        task_types = list(task_types)
    types = filter_values("task_types", task_types)
    if types is None:
        raise SchedulerError(
            "task_types must name the task types to take, not None", kind="invalid_argument"
        )
    return types


def limit_argument(limit: Any) -> int | None:
    """The ``limit`` of a query: ``None`` or a whole number (negative: no limit, as
    SQLite's ``LIMIT -1``)."""
    if limit is None:
        return None
    return whole_number(limit, "limit", low=-MAX_INT64 - 1)


def since_timestamp(since: dt.datetime | dt.timedelta | None, now: float) -> float | None:
    """``since`` as Unix seconds: a datetime (naive means UTC), or a timedelta before
    ``now``."""
    if since is None:
        return None
    if isinstance(since, dt.timedelta):
        if since < dt.timedelta(0):
            raise SchedulerError(
                f"since={since!r} is negative: give how long ago (a positive timedelta)",
                kind="invalid_argument",
            )
        return now - since.total_seconds()
    if isinstance(since, dt.datetime):
        aware = since if since.tzinfo is not None else since.replace(tzinfo=dt.UTC)
        return aware.timestamp()
    raise SchedulerError(
        f"since= takes a datetime or a timedelta, not {type(since).__name__}",
        kind="invalid_argument",
    )


@dataclass(frozen=True)
class CancelFilter:
    """What :meth:`StoreMethods.cancel_where` cancels: active tasks matching every field
    that is not ``None`` (each a list of accepted values; ``status`` is always set)."""

    status: list[str]
    task_type: list[str] | None = None
    group: list[str] | None = None
    label: list[str] | None = None
    dedup_keys: list[str] | None = None

    @classmethod
    def of(
        cls,
        *,
        task_type: Any,
        group: Any,
        label: Any,
        status: Any,
        dedup_keys: Any,
    ) -> CancelFilter:
        """Check and normalise :meth:`StoreMethods.cancel_where`'s arguments."""
        if all(v is None for v in (task_type, group, label, status, dedup_keys)):
            raise SchedulerError(
                "cancel_where() needs at least one filter (task_type, group, label, status "
                "or dedup_keys); to cancel every active task, say so: "
                "status=['pending', 'running', 'paused']",
                kind="invalid_argument",
            )
        statuses = filter_values("status", status)
        wrong = sorted(set(statuses or ()) - set(ACTIVE_STATUSES))
        if wrong:
            raise SchedulerError(
                f"status={wrong[0]!r}: only active tasks can be cancelled; status takes "
                f"{', '.join(ACTIVE_STATUSES)}",
                kind="invalid_argument",
            )
        keys = filter_values("dedup_keys", dedup_keys)
        return cls(
            status=list(ACTIVE_STATUSES) if statuses is None else sorted(set(statuses)),
            task_type=filter_values("task_type", task_type),
            group=filter_values("group", group),
            label=filter_values("label", label),
            dedup_keys=None if keys is None else sorted(set(keys)),
        )

    def matches_nothing(self) -> bool:
        """Whether an explicitly empty filter rules out every task."""
        lists = (self.status, self.task_type, self.group, self.label, self.dedup_keys)
        return any(v is not None and not v for v in lists)


class StoreMethods:
    """The public methods both stores share.  A store class inherits them and supplies
    ``_submit_checked``, ``_batch``, ``complete_many``, ``_select``, ``_stats_rows``,
    ``_pause_group``, the three steps of a prune (``_prune_select``, ``_prune_rows``,
    ``_prune_delete``) and, for the bulk controls, ``_last_task_id``,
    ``_active_task_types``, ``_cancel_batch`` and ``_failed_rows``."""

    #: The export file of this store object's last :meth:`prune_history` (``None``: that
    #: prune had no ``export`` folder, or removed nothing).
    last_export: Path | None = None

    def _submit_checked(self, row: Row, now: float) -> SubmitOutcome:
        raise NotImplementedError

    def _batch(
        self,
        tasks: Any,
        *,
        dry_run: bool,
        on_commit: CommitHook | None,
        progress: Callable[[int, int], None] | None,
        retries: Sequence[int] | None = None,
    ) -> BatchOutcome:
        """Submit (or plan) ``tasks``.  ``retries``, for :meth:`retry_failed` alone: the
        history id of the failure each input row retries, by input index.  Each merge
        transaction then passes over a keyed row whose key has a history record newer
        than its failure (deduplicated, ``task_id`` that record): so a failure retried by
        a concurrent call since this one read it is never submitted a second time."""
        raise NotImplementedError

    def complete_many(
        self, task_ids: Sequence[int], *, owner: str, attempts: Sequence[int] | None = None
    ) -> set[int]:
        raise NotImplementedError

    def _select(
        self,
        table: str,
        columns: Mapping[str, Any],
        *,
        status: Filter,
        task_type: Filter,
        group: Filter,
        limit: int | None,
        ids: list[int] | None = None,
    ) -> pl.DataFrame:
        raise NotImplementedError

    def _attempt_rows(
        self, task_ids: list[int] | None, outcomes: list[str] | None, limit: int | None
    ) -> list[tuple[Any, ...]]:
        """The recorded attempts (of ``task_ids``; ending as one of ``outcomes``), newest
        first, at most ``limit`` of them; columns as :data:`ATTEMPT_COLUMNS`."""
        raise NotImplementedError

    def _stats_rows(self, by: str) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _last_task_id(self) -> int:
        raise NotImplementedError

    def _active_task_types(self) -> list[str]:
        raise NotImplementedError

    def _cancel_batch(
        self,
        where: CancelFilter,
        *,
        after: int,
        last: int,
        keyed: tuple[list[int], list[str], list[str]] | None,
    ) -> tuple[int, int | None]:
        raise NotImplementedError

    def _failed_rows(
        self, task_type: list[str] | None, group: list[str] | None, since: float | None
    ) -> list[tuple[Any, ...]]:
        """The failures :meth:`retry_failed` resubmits, in history order: each one's
        history id, then the columns of :data:`RETRY_COLUMNS`."""
        raise NotImplementedError

    def _prune_select(self, selection: PruneSelection) -> list[int]:
        """Ids of the history rows ``selection`` removes (one read)."""
        raise NotImplementedError

    def _prune_rows(self, ids: list[int]) -> pl.DataFrame:
        """The history rows of ``ids`` as :meth:`history` shows them, by id."""
        raise NotImplementedError

    def _prune_delete(self, ids: list[int]) -> int:
        """Delete the history rows of ``ids`` in one transaction; returns how many."""
        raise NotImplementedError

    def _prune_lock(self) -> contextlib.AbstractContextManager[None]:
        """Held around a whole prune: prunes of the store never overlap, in any process
        (or, on PostgreSQL, machine); waits for the prune under way."""
        raise NotImplementedError

    def _prune_recorded(self) -> str | None:
        """The store's record of the export of a prune under way (``None``: none)."""
        raise NotImplementedError

    def _prune_record(self, value: str | None) -> None:
        """Set (``None``: clear) the record of :meth:`_prune_recorded`, committed."""
        raise NotImplementedError

    def _describe(self) -> str:
        """The store, for messages."""
        return repr(self)

    def _pause_group(self, group: str, until: float | None, now: float) -> None:
        raise NotImplementedError

    def now(self) -> float:
        """The store's clock, in seconds since the epoch (see the backends)."""
        raise NotImplementedError

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
        self._pause_group(group, end, now)

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
        return self._submit_checked(row, self.now())

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
    ) -> int:
        """Cancel every active task matching all the filters given; returns how many.

        Each filter is a string or a sequence of strings (any of them matches);
        ``dedup_keys`` is any number of keys (100,000 are fine), of any task type unless
        ``task_type`` says which.  ``status`` may name ``pending``, ``running`` and
        ``paused`` only (default: all three).  At least one filter is required — none
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
            task_type=task_type, group=group, label=label, status=status, dedup_keys=dedup_keys
        )
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
        last = self._last_task_id()
        count = 0
        if where.dedup_keys is None:
            after = 0
            while True:
                moved, last_picked = self._cancel_batch(where, after=after, last=last, keyed=None)
                count += moved
                if last_picked is None:
                    return count
                after = last_picked
        types = where.task_type if where.task_type is not None else self._active_task_types()
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
            count += self._cancel_batch(where, after=0, last=last, keyed=keyed)[0]
        return count

    def retry_failed(
        self,
        *,
        task_type: Filter = None,
        group: Filter = None,
        since: dt.datetime | dt.timedelta | None = None,
        on_commit: CommitHook | None = None,
    ) -> BatchOutcome:
        """Submit again the failed tasks of history that match; returns the batch's
        outcome (one row per task resubmitted, in history order).

        ``since``: only tasks that finished at or after it — a datetime (naive means
        UTC) or a timedelta before now.  Each task goes through :meth:`submit_batch`
        with its task type, dedup key, group, priority, payload, label, expected bytes
        and ``max_retries``, and the ``skip`` strategy: a key that is active again is
        *deduplicated* (or *upgraded*), never doubled.  The history rows stay as they
        are (history is a log); the new tasks get new ids.

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
        from ..plan import BatchSubmission

        types = filter_values("task_type", task_type)
        groups = filter_values("group", group)
        after = since_timestamp(since, time.time())
        rows = [] if types == [] or groups == [] else self._failed_rows(types, groups, after)
        table = frame([row[1:] for row in rows], RETRY_COLUMNS)
        batch = BatchSubmission().on_duplicate("skip").tasks(table)
        failures = [int(row[0]) for row in rows]
        return self._batch(
            batch, dry_run=False, on_commit=on_commit, progress=None, retries=failures
        )

    # ------------------------------------------------------------------ queries

    def tasks(
        self,
        *,
        status: Filter = None,
        task_type: Filter = None,
        group: Filter = None,
        limit: int | None = None,
        ids: int | Iterable[int] | None = None,
    ) -> pl.DataFrame:
        """Active tasks (pending, running, paused) in dispatch order, as a polars DataFrame.

        Each filter is a string or a sequence of strings (any of them matches); ``ids`` a
        task id or several; ``limit`` a whole number (negative: no limit)."""
        return self._query("tasks", TASK_COLUMNS, status, task_type, group, limit, ids)

    def history(
        self,
        *,
        status: Filter = None,
        task_type: Filter = None,
        group: Filter = None,
        limit: int | None = None,
        ids: int | Iterable[int] | None = None,
    ) -> pl.DataFrame:
        """Finished tasks (completed, failed, cancelled, superseded, expired) by id; the
        filters, ``ids`` and ``limit`` as :meth:`tasks`'s."""
        return self._query("history", HISTORY_COLUMNS, status, task_type, group, limit, ids)

    def _query(
        self,
        table: str,
        columns: Mapping[str, Any],
        status: Any,
        task_type: Any,
        group: Any,
        limit: Any,
        ids: Any = None,
    ) -> pl.DataFrame:
        """:meth:`tasks` or :meth:`history`, its arguments checked."""
        return self._select(
            table,
            columns,
            status=filter_values("status", status),
            task_type=filter_values("task_type", task_type),
            group=filter_values("group", group),
            limit=limit_argument(limit),
            ids=ids_argument(ids),
        )

    def task(self, task_id: int) -> dict[str, Any] | None:
        """Task ``task_id`` wherever it is: its row of :meth:`tasks` (with ``active``
        true) or of :meth:`history` (``active`` false) as a dict, or ``None`` when the
        store holds no such task (never submitted, or pruned).  Looked up by id."""
        task_id = task_id_argument(task_id)
        for active, table, columns in (
            (True, "tasks", TASK_COLUMNS),
            (False, "history", HISTORY_COLUMNS),
        ):
            found = self._select(
                table, columns, status=None, task_type=None, group=None, limit=1, ids=[task_id]
            )
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
        rows = self._attempt_rows(
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
            select=self._prune_select,
            rows=self._prune_rows,
            delete=self._prune_delete,
            recorded=self._prune_recorded,
            record=self._prune_record,
        )
        with self._prune_lock():
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
        return stats_frame(self._stats_rows(by), by)
