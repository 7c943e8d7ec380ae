"""Batches as units of work, read and finished over any driver (schema 7).

Each ``submit_batch`` that inserts a task records its batch (the batch's merges, through
:class:`~taskmill.backends.calls.BatchTag`); here the store's face reads it back — live
counts while any of its tasks is active, the counts frozen at its end once it finished —
and finishes the batches that are done (:func:`finish_done`, which a scheduler runs after
attempts end and on its polls, and which says which batches *this* call finished: each is
announced once, whoever runs it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import polars as pl

from ..backends.base import Driver
from ..batch.status import ACTIVE, BATCH_STATUSES, ENDED, BatchStatus
from ..columns import MAX_INT64
from ..model import SchedulerError

__all__ = ["BATCHES_SCHEMA", "batches_frame", "finish_done", "read_status"]

#: The columns of ``store.batches()``, in order.
BATCHES_SCHEMA: dict[str, pl.DataType] = {
    "batch_id": pl.Int64(),
    "name": pl.String(),
    "created_at": pl.Datetime("us", "UTC"),
    "finished_at": pl.Datetime("us", "UTC"),
    "total": pl.Int64(),
    **{status: pl.Int64() for status in BATCH_STATUSES},
    "expected_bytes": pl.Int64(),
    "completed_bytes": pl.Int64(),
}


def _zero() -> dict[str, int]:
    """Every status a batch counts, at zero."""
    return dict.fromkeys(BATCH_STATUSES, 0)


@dataclass
class _Tally:
    """A batch's tasks as counted from the tables."""

    counts: dict[str, int] = field(default_factory=lambda: _zero())
    expected_bytes: int = 0
    completed_bytes: int = 0
    last_end: float | None = None


def _tallies(rows: list[tuple[Any, ...]]) -> dict[int, _Tally]:
    """:meth:`Driver.batch_tallies`' rows, by batch."""
    out: dict[int, _Tally] = {}
    for batch_id, stored, n, size, ended in rows:
        tally = out.setdefault(int(batch_id), _Tally())
        status = "running" if stored == "waiting" else stored  # a parent still at work
        tally.counts[status] = tally.counts.get(status, 0) + int(n)
        tally.expected_bytes += int(size or 0)
        if status == "completed":
            tally.completed_bytes += int(size or 0)
        if ended is not None:
            tally.last_end = max(float(ended), tally.last_end or 0.0)
    return out


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _time(seconds: float | None) -> dt.datetime | None:
    """Stored seconds as a UTC datetime, to the microsecond as the frames of ``tasks()``
    and ``history()`` show them."""
    if seconds is None:
        return None
    return _EPOCH + dt.timedelta(microseconds=int(float(seconds) * 1_000_000))


def _status(row: tuple[Any, ...], tally: _Tally | None, source: Any) -> BatchStatus:
    """One stored batch row (as :meth:`Driver.batch_rows` gives it) as a status: its
    frozen counts once finished, else ``tally``'s."""
    batch_id, name, created_at, sealed, total, finished_at, *frozen = row
    if finished_at is not None:
        counts = _zero()
        counts.update({s: int(n or 0) for s, n in zip(ENDED, frozen[: len(ENDED)], strict=True)})
        expected, completed = (int(v or 0) for v in frozen[len(ENDED) :])
        done, end = True, float(finished_at)
    else:
        tally = tally or _Tally()
        counts = tally.counts
        expected, completed = tally.expected_bytes, tally.completed_bytes
        done = bool(sealed) and not any(counts[s] for s in ACTIVE)
        end = (tally.last_end or float(created_at)) if done else None
    created = _time(created_at)
    assert created is not None
    return BatchStatus(
        batch_id=int(batch_id),
        name=name,
        created_at=created,
        finished_at=_time(end),
        done=done,
        total=int(total),
        counts=counts,
        expected_bytes=expected,
        completed_bytes=completed,
        _source=source,
    )


def _read(
    driver: Driver[Any], batch_id: int | None, limit: int | None, source: Any
) -> list[BatchStatus]:
    """The stored batches as statuses, read in one snapshot."""

    if limit is not None and limit < 0:
        limit = None  # as SQLite's LIMIT -1: no limit

    def body(conn: Any) -> list[BatchStatus]:
        rows = driver.batch_rows(conn, batch_id, limit)
        open_ids = [int(r[0]) for r in rows if r[5] is None]
        tallies = _tallies(driver.batch_tallies(conn, open_ids)) if open_ids else {}
        return [_status(r, tallies.get(int(r[0])), source) for r in rows]

    return driver.read(body)


def read_status(driver: Driver[Any], batch_id: int, source: Any) -> BatchStatus:
    """Batch ``batch_id`` (``SchedulerError(kind="unknown_batch")`` when there is none)."""
    found = _read(driver, batch_id, 1, source)
    if not found:
        raise SchedulerError(f"no batch {batch_id} in this store", kind="unknown_batch")
    return found[0]


def batches_frame(driver: Driver[Any], limit: int | None) -> pl.DataFrame:
    """Every batch (at most ``limit``, the newest), newest first, as ``store.batches()``
    shows them."""
    rows = [
        {
            "batch_id": s.batch_id,
            "name": s.name,
            "created_at": s.created_at,
            "finished_at": s.finished_at,
            "total": s.total,
            **{status: s.counts[status] for status in BATCH_STATUSES},
            "expected_bytes": s.expected_bytes,
            "completed_bytes": s.completed_bytes,
        }
        for s in _read(driver, None, limit, None)
    ]
    return pl.DataFrame(rows, schema=BATCHES_SCHEMA, orient="row")


def finish_done(driver: Driver[Any]) -> list[tuple[int, dict[str, int]]]:
    """Finish the batches that are done — sealed, none of their tasks active —, freezing
    their counts; ``(batch_id, counts)`` of each one *this* call finished (a batch another
    call finished first is not among them).  Only reads when none is done."""
    if not driver.read(driver.batches_done):
        return []

    def body(conn: Any) -> list[tuple[int, dict[str, int]]]:
        ids = driver.batches_done(conn)
        if not ids:
            return []
        tallies = _tallies(driver.batch_tallies(conn, ids))
        now = driver.clock_in(conn)
        finished: list[tuple[int, dict[str, int]]] = []
        for batch_id in ids:
            tally = tallies.get(batch_id) or _Tally()
            values: dict[str, Any] = {status: tally.counts[status] for status in ENDED}
            values |= {
                "finished_at": tally.last_end if tally.last_end is not None else now,
                # (four 64-bit figures a task may sum past a 64-bit column)
                "expected_bytes": min(tally.expected_bytes, MAX_INT64),
                "completed_bytes": min(tally.completed_bytes, MAX_INT64),
            }
            if driver.batch_finish(conn, batch_id, values):
                finished.append((batch_id, tally.counts))
        return finished

    return driver.write("cannot finish batches in", body)
