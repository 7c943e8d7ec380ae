"""What the engines share, written once: the columns and frames their queries return, the
decision a single submit makes on a key, and the checks of query arguments.  The public
methods written once are :class:`~taskmill.store.store.TaskStore`'s (``store.py``)."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard

import polars as pl

from ..backends.base import Driver
from ..backends.calls import Ending, NewTask
from ..backends.keys import COLLISION, key_hash
from ..batch.validate import (
    MAX_INT64,
    NUL_MESSAGE,
    Row,
    clock_argument,
    tags_argument,
    task_id_argument,
    text_argument,
    whole_number,
)
from ..columns import BROWSED, TIME_COLUMNS, column, frame_schema
from ..model import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    DuplicateStrategy,
    DuplicateTask,
    InvalidSubmission,
    SchedulerError,
    SubmitOutcome,
)

__all__ = [
    "ATTEMPT_COLUMNS",
    "ATTEMPT_OUTCOMES",
    "BROWSE_COLUMNS",
    "CANCEL_BATCH",
    "HISTORY_COLUMNS",
    "RETRY_COLUMNS",
    "TASK_COLUMNS",
    "CancelFilter",
    "clock_argument",
    "frame",
    "ids_argument",
    "limit_argument",
    "ranked_pairs",
    "rarest_first",
    "submit_in",
    "submit_row",
    "task_id_argument",
    "task_types_argument",
    "text_argument",
    "utc_times",
    "whole_number",
]

log = logging.getLogger("taskmill")

#: The columns of :meth:`TaskStore.tasks`, with their polars types.
TASK_COLUMNS: dict[str, pl.DataType] = frame_schema("tasks")
#: The columns of :meth:`TaskStore.history`, with their polars types.
HISTORY_COLUMNS: dict[str, pl.DataType] = frame_schema("history")
#: The columns of :meth:`TaskStore.browse`, with their polars types: the fields of
#: :data:`~taskmill.columns.BROWSED`, then whether the task is active.
BROWSE_COLUMNS: dict[str, pl.DataType] = {name: column(name).polars for name in BROWSED} | {
    "active": pl.Boolean()
}
#: The columns of :meth:`TaskStore.attempts`, with their polars types.
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
#: worker died or its lease ran out); or ``waiting``: its code returned, and its task waits
#: for the child tasks it spawned.
ATTEMPT_OUTCOMES = (
    "completed",
    "failed",
    "cancelled",
    "superseded",
    "expired",
    "released",
    "lost",
    "waiting",
)
#: The history columns :meth:`TaskStore.retry_failed` resubmits, as the batch's
#: canonical columns (``group`` is the store's ``group_name``).
RETRY_COLUMNS: dict[str, pl.DataType] = {
    name: dtype for name, dtype in HISTORY_COLUMNS.items() if column(name).submitted
}
#: Tasks :meth:`TaskStore.cancel_where` moves to history per transaction.
CANCEL_BATCH = 10_000
#: What ``stats(by=…)`` accepts.
STATS_BY = ("group", "priority", "task_type")
#: How far a tag filter counts the tasks of each of its pairs to pick the rarest.
TAG_COUNT_CAP = 10_000


def utc_times(*names: str) -> list[pl.Expr]:
    """The columns ``names`` (Unix seconds) as UTC datetimes, in microseconds."""
    return [(pl.col(c) * 1_000_000).cast(pl.Int64).cast(pl.Datetime("us", "UTC")) for c in names]


def frame(rows: list[tuple[Any, ...]], columns: Mapping[str, Any]) -> pl.DataFrame:
    """A DataFrame of query ``rows`` whose fields are ``columns`` in order; times become
    UTC datetimes (microseconds)."""
    data = (
        {name: [] for name in columns}
        if not rows
        else dict(zip(columns, (list(col) for col in zip(*rows, strict=True)), strict=True))
    )
    df = pl.DataFrame(data, schema=dict(columns), orient="col")
    return df.with_columns(utc_times(*(c for c in TIME_COLUMNS if c in columns)))


def rarest_first(
    driver: Driver[Any], pairs: list[tuple[str, str]] | None
) -> list[tuple[str, str]] | None:
    """A tag filter's pairs, the one fewest tasks carry first (counted up to
    :data:`TAG_COUNT_CAP` each): the filter reads that pair's tasks through the index
    and checks the others task by task."""
    if pairs is None or len(pairs) < 2:
        return pairs
    return [p for p, _ in ranked_pairs(driver, pairs)]


def ranked_pairs(
    driver: Driver[Any], pairs: list[tuple[str, str]]
) -> list[tuple[tuple[str, str], int]]:
    """Each pair of a tag filter with how many tasks carry it (counted up to
    :data:`TAG_COUNT_CAP`), the rarest first."""
    counts = {p: driver.tag_pair_count(*p, TAG_COUNT_CAP) for p in pairs}
    return sorted(counts.items(), key=lambda item: (item[1], item[0]))


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


def submit_in(driver: Driver[Any], conn: Any, row: Row, now: float) -> SubmitOutcome:
    """Decide one checked submission against the store and carry it out in the write
    transaction of ``conn`` (:func:`submit_row` over ``driver``'s statements; what a
    single submit runs, and a schedule's occurrence).  Run it with ``retry_unique``: a
    clash on the active-key index runs the transaction again."""
    hashed = key_hash(row.task_type, row.dedup_key)
    # no key: never a duplicate, no lock to take
    existing = None if hashed is None else driver.find_active(conn, hashed)
    adopted: list[int | None] = [None]  # the parent a successor takes on

    def supersede(old_id: int, new_id: int) -> None:
        adopted[0] = None if existing is None else existing[7]
        driver.finish(conn, [old_id], Ending("superseded", now, replaced_by=new_id))

    return submit_row(
        row,
        existing,
        now,
        next_id=lambda: driver.new_task_id(conn),
        insert=lambda new_id, pos: driver.insert(
            conn, NewTask(new_id, pos, row, hashed, now, adopted[0])
        ),
        upgrade=lambda old_id: driver.upgrade_priority(conn, old_id, row.priority),
        supersede=supersede,
        expire=lambda old_id: driver.finish(conn, [old_id], Ending("expired", now)),
    )


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
    """What :meth:`TaskStore.cancel_where` cancels: active tasks matching every field
    that is not ``None`` (each a list of accepted values; ``status`` is always set)."""

    status: list[str]
    task_type: list[str] | None = None
    group: list[str] | None = None
    label: list[str] | None = None
    dedup_keys: list[str] | None = None
    #: ``(key, value)`` pairs a task must all carry.
    tags: list[tuple[str, str]] | None = None

    @classmethod
    def of(
        cls,
        *,
        task_type: Any,
        group: Any,
        label: Any,
        status: Any,
        dedup_keys: Any,
        tags: Any = None,
    ) -> CancelFilter:
        """Check and normalise :meth:`TaskStore.cancel_where`'s arguments."""
        pairs = tags_argument(tags)
        if all(v is None for v in (task_type, group, label, status, dedup_keys, pairs)):
            raise SchedulerError(
                "cancel_where() needs at least one filter (task_type, group, label, status, "
                "dedup_keys or tags); to cancel every active task, say so: "
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
            tags=pairs,
        )

    def matches_nothing(self) -> bool:
        """Whether an explicitly empty filter rules out every task."""
        lists = (self.status, self.task_type, self.group, self.label, self.dedup_keys)
        return any(v is not None and not v for v in lists)
