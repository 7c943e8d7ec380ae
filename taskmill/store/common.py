"""What the two stores share, written once: the frames their queries return, the decision a
single submit makes on a key, and the public methods that only check arguments or shape
results.  Each store (``sqlite.py``, ``postgres/store.py``) brings its SQL, its
connections and its transactions; :class:`StoreMethods` turns those into the API."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

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
from ..validation import Defaults, Row, check_submission, to_seconds
from .base import CommitHook
from .keys import COLLISION
from .retention import ExportFolder, PruneSelection, check_prune_args, run_prune

__all__ = ["HISTORY_COLUMNS", "TASK_COLUMNS", "StoreMethods", "frame", "submit_row"]

#: The columns of :meth:`StoreMethods.tasks`, with their polars types.
TASK_COLUMNS: dict[str, Any] = {
    "id": pl.Int64,
    "task_type": pl.String,
    "dedup_key": pl.String,
    "group": pl.String,
    "priority": pl.Int64,
    "status": pl.String,
    "queue_pos": pl.Int64,
    "payload": pl.Binary,
    "label": pl.String,
    "expected_read_bytes": pl.Int64,
    "expected_write_bytes": pl.Int64,
    "expected_net_rx_bytes": pl.Int64,
    "expected_net_tx_bytes": pl.Int64,
    "max_retries": pl.Int64,
    "attempts": pl.Int64,
    "last_error": pl.String,
    "run_after": pl.Float64,
    "expires_at": pl.Float64,
    "created_at": pl.Float64,
    "started_at": pl.Float64,
}


def _history_columns() -> dict[str, Any]:
    columns: dict[str, Any] = {}
    for name, dtype in TASK_COLUMNS.items():
        if name not in ("queue_pos", "run_after", "expires_at"):  # no longer waiting
            columns[name] = dtype
        if name == "last_error":
            columns["replaced_by"] = pl.Int64
    return {**columns, "finished_at": pl.Float64}


#: The columns of :meth:`StoreMethods.history`, with their polars types.
HISTORY_COLUMNS: dict[str, Any] = _history_columns()
#: Columns stored as Unix seconds and shown as UTC datetimes.
TIME_COLUMNS = ("run_after", "expires_at", "created_at", "started_at", "finished_at")
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
    insert: Callable[[int, int], None],
    upgrade: Callable[[int], None],
    supersede: Callable[[int, int], None],
    expire: Callable[[int], None],
) -> SubmitOutcome:
    """Decide one checked submission against the active task holding its key, and carry
    it out through the store's own statements.

    ``existing``: that task as ``(id, status, priority, queue_pos, task_type,
    dedup_key, expires_at)``, or ``None``.  ``insert(new_id, queue_pos)`` adds the
    task; ``upgrade(old_id)`` raises the pending task's priority to the row's;
    ``supersede(old_id, new_id)`` moves the old task to history as replaced;
    ``expire(old_id)`` moves a task that was not started by its expiry time to
    history as expired (its key is free: the submit goes on as if it were gone).  A
    task that supersedes a pending one takes its place in the queue.
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


class StoreMethods:
    """The public methods both stores share.  A store class inherits them and supplies
    ``_submit_checked``, ``_batch``, ``complete_many``, ``_select``, ``_stats_rows`` and
    the three steps of a prune (``_prune_select``, ``_prune_rows``, ``_prune_delete``)."""

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
    ) -> BatchOutcome:
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
    ) -> pl.DataFrame:
        raise NotImplementedError

    def _stats_rows(self, by: str) -> list[tuple[Any, ...]]:
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

    def _describe(self) -> str:
        """The store, for messages."""
        return repr(self)

    def _pause_group(self, group: str, until: float | None, now: float) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------ control

    def pause_group(self, group: str, until: Any = None) -> None:
        """Dispatch none of ``group``'s tasks until ``until`` (a ``datetime``, naive
        meaning UTC, a ``timedelta`` from now, or Unix seconds), or until
        :meth:`resume_group` when ``None``.  Running attempts go on; every scheduler on
        the store holds the group.  Pausing a paused group sets its new end."""
        if not isinstance(group, str) or not group:
            raise SchedulerError(
                f"pause_group: the group must be a non-empty string, not {group!r}",
                kind="invalid_argument",
            )
        now = time.time()
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
        return self._submit_checked(row, time.time())

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
        return task_id in self.complete_many([task_id], owner=owner)

    # ------------------------------------------------------------------ queries

    def tasks(
        self,
        *,
        status: Filter = None,
        task_type: Filter = None,
        group: Filter = None,
        limit: int | None = None,
    ) -> pl.DataFrame:
        """Active tasks (pending, running, paused) in dispatch order, as a polars DataFrame."""
        return self._select(
            "tasks", TASK_COLUMNS, status=status, task_type=task_type, group=group, limit=limit
        )

    def history(
        self,
        *,
        status: Filter = None,
        task_type: Filter = None,
        group: Filter = None,
        limit: int | None = None,
    ) -> pl.DataFrame:
        """Finished tasks (completed, failed, cancelled, superseded) by id, as a DataFrame."""
        return self._select(
            "history", HISTORY_COLUMNS, status=status, task_type=task_type, group=group, limit=limit
        )

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

        ``export``: a folder (created if missing) that first receives exactly the rows
        removed, as one Parquet file with the columns and types of :meth:`history`
        (``history-<UTC time>-<n>.parquet``, written under a temporary name and then
        renamed, never replacing a file; :attr:`last_export` names it).  If the export
        cannot be written, nothing is removed and ``SchedulerError(kind="export")``
        names the folder.  Nothing selected: no file.

        The ids are selected once; they are then deleted in transactions of
        :data:`~taskmill.store.retention.PRUNE_BATCH` ids, so dispatch and submits go
        on between them however large the prune.  Should a later transaction fail, the
        earlier ones stay removed (the export holds them all).
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
        removed, path = run_prune(
            selection,
            select=self._prune_select,
            rows=self._prune_rows,
            delete=self._prune_delete,
            export=folder,
            where=self._describe(),
        )
        self.last_export = path
        return removed

    def stats(self, by: str = "group") -> pl.DataFrame:
        """Task counts per status (one column each), per ``group``, ``priority`` or
        ``task_type`` — active tasks and history together."""
        if by not in STATS_BY:
            raise SchedulerError(
                f"stats() by {by!r}: use group, priority or task_type", kind="invalid"
            )
        return stats_frame(self._stats_rows(by), by)
