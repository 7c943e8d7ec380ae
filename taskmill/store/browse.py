"""Reading a store as a dashboard does: every task page by page, active and finished
together (:meth:`BrowseMethods.browse`), the tasks that ended per minute
(:meth:`BrowseMethods.throughput`) and the registered workers
(:meth:`BrowseMethods.workers`) — each one statement on the store, cheap on a store of
millions of tasks.  Methods of :class:`~taskmill.store.TaskStore` (a mixin, as
:class:`~taskmill.store.schedules.ScheduleMethods`)."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl

from ..backends.base import Driver
from ..backends.calls import Browse
from ..batch.validate import NUL_MESSAGE, tags_argument, whole_number
from ..columns import MAX_INT64
from ..model import ACTIVE_STATUSES, FINAL_STATUSES, SchedulerError
from .common import (
    BROWSE_COLUMNS,
    TAG_COUNT_CAP,
    Filter,
    filter_values,
    frame,
    ids_argument,
    ranked_pairs,
    utc_times,
)

__all__ = ["MAX_PAGE", "MAX_THROUGHPUT_MINUTES", "WORKER_COLUMNS", "BrowseMethods"]

#: The most tasks one page of :meth:`BrowseMethods.browse` holds.
MAX_PAGE = 1_000
#: The longest window :meth:`BrowseMethods.throughput` counts, in minutes (a week).
MAX_THROUGHPUT_MINUTES = 7 * 24 * 60
#: The columns of :meth:`BrowseMethods.workers`, with their polars types.
WORKER_COLUMNS: dict[str, pl.DataType] = {
    "owner": pl.String(),
    "host": pl.String(),
    "pid": pl.Int64(),
    "started_at": pl.Datetime("us", "UTC"),
    "heartbeat_at": pl.Datetime("us", "UTC"),
    "lease_timeout": pl.Float64(),
    "lease_expires_at": pl.Datetime("us", "UTC"),
    "alive": pl.Boolean(),
    "running": pl.Int64(),
}
#: What the driver's rows of :meth:`BrowseMethods.recent` hold.
_RECENT_ROW = {
    "group": pl.String(),
    "task_type": pl.String(),
    "status": pl.String(),
    "tasks": pl.Int64(),
}
#: What the driver's rows of workers hold (:meth:`~taskmill.backends.base.Driver.worker_rows`).
_WORKER_ROW = {
    "owner": pl.String(),
    "host": pl.String(),
    "pid": pl.Int64(),
    "started_at": pl.Float64(),
    "heartbeat_at": pl.Float64(),
    "lease_timeout": pl.Float64(),
    "running": pl.Int64(),
}


def prefix_argument(value: Any) -> str | None:
    """``browse``'s ``key_prefix``: a string (``None``: no filter)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise SchedulerError(
            f"key_prefix= takes a string, not {type(value).__name__}", kind="invalid_argument"
        )
    if "\x00" in value:
        raise SchedulerError(NUL_MESSAGE.format("key_prefix="), kind="invalid_argument")
    return value


def page_of(
    driver: Driver[Any],
    *,
    status: Any,
    task_type: Any,
    group: Any,
    batch_id: Any,
    tags: Any,
    key_prefix: Any,
    before: Any,
    limit: Any,
    parent_id: Any = None,
) -> Browse:
    """The page :meth:`BrowseMethods.browse` asks for, its arguments checked (everything
    before the tag filter's pairs are counted): a table that no status of the filter
    can be in is not read."""
    statuses = filter_values("status", status)
    types = filter_values("task_type", task_type)
    groups = filter_values("group", group)
    batches = ids_argument(batch_id, "batch_id")
    pairs = tags_argument(tags)
    prefix = prefix_argument(key_prefix)
    parent = None if parent_id is None else whole_number(parent_id, "parent_id", low=1)
    last = MAX_INT64 if before is None else whole_number(before, "before", low=-MAX_INT64 - 1)
    size = whole_number(limit, "limit", low=1, high=MAX_PAGE)
    ranked = [] if pairs is None else ranked_pairs(driver, pairs)
    return Browse(
        before=last,
        limit=size,
        active=statuses is None or any(s in ACTIVE_STATUSES for s in statuses),
        finished=statuses is None or any(s in FINAL_STATUSES for s in statuses),
        status=statuses,
        task_type=types,
        group=groups,
        batch_ids=batches,
        tags=None if pairs is None else [p for p, _ in ranked],
        tags_common=bool(ranked) and ranked[0][1] >= TAG_COUNT_CAP,
        key_prefix=prefix,
        parent_id=parent,
    )


def throughput_frame(rows: Iterable[tuple[int, str, int]], first: int, last: int) -> pl.DataFrame:
    """``(minute, status, count)`` rows as one row per minute from ``first`` to ``last``
    (minutes of Unix time), each final status a column, zeros where none ended."""
    counts = {(int(m), str(s)): int(n) for m, s, n in rows}
    minutes = range(first, last + 1)
    data: dict[str, Any] = {"minute": [m * 60 for m in minutes]}
    for status in FINAL_STATUSES:
        data[status] = [counts.get((m, status), 0) for m in minutes]
    schema = {"minute": pl.Int64(), **dict.fromkeys(FINAL_STATUSES, pl.Int64())}
    return pl.DataFrame(data, schema=schema).with_columns(utc_times("minute"))


class BrowseMethods:
    """The dashboard reads of :class:`~taskmill.store.TaskStore` (see the module's
    docstring)."""

    _driver: Driver[Any]

    def browse(
        self,
        *,
        status: Filter = None,
        task_type: Filter = None,
        group: Filter = None,
        batch_id: int | Iterable[int] | None = None,
        tags: Mapping[str, str] | None = None,
        key_prefix: str | None = None,
        parent_id: int | None = None,
        before: int | None = None,
        limit: int = 50,
    ) -> pl.DataFrame:
        """One page of every task, active and finished together, newest first (by id
        descending), as a polars DataFrame: the ``limit`` (1 to :data:`MAX_PAGE`) newest
        tasks matching every filter given, with an id below ``before`` when given.

        Page through a store by passing the last row's ``id`` as the next call's
        ``before``: ids are never reused and a task keeps its id when it finishes, so
        the pages visit every task once, whatever starts and ends meanwhile (a task
        submitted meanwhile is newer than the first page: it is not among them).

        The filters are :meth:`tasks`'s and :meth:`history`'s — ``status``,
        ``task_type``, ``group``: a string or a sequence of strings (any of them
        matches); ``batch_id``: a batch id or several; ``tags``: a dict, the tasks
        carrying every ``key: value`` pair — and ``key_prefix``: the tasks whose
        ``dedup_key`` starts with that text, character for character (case counts;
        ``%`` and ``_`` are themselves; ``""`` matches every task with a key); and
        ``parent_id``: the child tasks of that task (spawned by ``ctx.spawn``; the walk
        stops at the parent's id, its children being newer).

        Columns: ``id``, ``status``, ``task_type``, ``dedup_key``, ``group``,
        ``priority``, ``attempts``, ``label``, ``last_error``, ``created_at``,
        ``started_at``, ``finished_at`` (null while active), ``progress`` (what a running
        attempt reported; null once finished), ``batch_id``, ``parent_id`` and
        ``active``.

        One statement reads each table backwards from ``before`` along its primary key,
        stopping at ``limit`` matches, so a page costs about the same on the first page
        and deep in a store of millions — as long as matches are not rare: a filter few
        tasks match reads every task newer than the page's to find them (a status filter
        that rules a table out skips it whole).
        """
        page = page_of(
            self._driver,
            status=status,
            task_type=task_type,
            group=group,
            batch_id=batch_id,
            tags=tags,
            key_prefix=key_prefix,
            before=before,
            limit=limit,
            parent_id=parent_id,
        )
        rows = self._driver.browse(page) if page.active or page.finished else []
        return frame(rows, BROWSE_COLUMNS)

    def throughput(self, minutes: int = 30) -> pl.DataFrame:
        """The tasks that ended per minute over the last ``minutes`` minutes (1 to
        :data:`MAX_THROUGHPUT_MINUTES`) by the store's clock (:meth:`now`), as a polars
        DataFrame: one row per minute, oldest first, the current (partial) minute last,
        every minute present — ``minute`` (its start, a UTC datetime), then one count
        per final status: ``completed``, ``failed``, ``cancelled``, ``superseded``,
        ``expired`` (zero where none ended).  Read from history by its finish times, so
        a task pruned from history is no longer counted."""
        minutes = whole_number(minutes, "minutes", low=1, high=MAX_THROUGHPUT_MINUTES)
        last = math.floor(self._driver.now() / 60)
        first = last - minutes + 1
        rows = self._driver.throughput_rows(first * 60.0, (last + 1) * 60.0)
        return throughput_frame(rows, first, last)

    def recent(self, window: dt.timedelta = dt.timedelta(hours=1)) -> pl.DataFrame:
        """The queue now, as a polars DataFrame of ``group``, ``task_type``, ``status``
        and ``tasks``: every active task, and the tasks that ended within ``window``
        before now by the store's clock (a ``timedelta``, at most a week), counted per
        group, task type and status (a row for each found).  Unlike :meth:`stats`, which
        counts the whole of history, it reads only the history rows of the window (by
        their finish times), so it costs the same on a store of millions of finished
        tasks: what the dashboard's queue page shows."""
        if not isinstance(window, dt.timedelta) or not (
            dt.timedelta(0) < window <= dt.timedelta(minutes=MAX_THROUGHPUT_MINUTES)
        ):
            raise SchedulerError(
                f"window must be a timedelta of more than 0 and at most a week, not {window!r}",
                kind="invalid_argument",
            )
        since = self._driver.now() - window.total_seconds()
        return pl.DataFrame(
            self._driver.recent_counts(since), schema=_RECENT_ROW, orient="row"
        ).select(pl.col("group"), "task_type", "status", "tasks")

    def workers(self) -> pl.DataFrame:
        """The registered workers (each scheduler, worker process or :meth:`new_owner`
        holds one until it stops or its lease is taken away), as a polars DataFrame by
        host and pid: ``owner`` (``host:pid:token``, what :meth:`attempts` names as the
        worker), ``host``, ``pid``, ``started_at``, ``heartbeat_at`` (its last renewal),
        ``lease_timeout`` (seconds), ``lease_expires_at`` (when its lease runs out
        unless renewed), ``alive`` (its lease has not run out by the store's clock) and
        ``running`` (the tasks it runs now)."""
        rows = self._driver.worker_rows()
        now = self._driver.now()
        found = pl.DataFrame(rows, schema=_WORKER_ROW, orient="row")
        expires = pl.col("heartbeat_at") + pl.col("lease_timeout")
        return (
            found.with_columns(expires.alias("lease_expires_at"), (expires >= now).alias("alive"))
            .with_columns(utc_times("started_at", "heartbeat_at", "lease_expires_at"))
            .select(list(WORKER_COLUMNS))
        )
