"""History retention: which finished tasks a prune removes, the Parquet export of those
rows, and the order of the work — select the ids once, export exactly those rows, then
delete those ids in bounded transactions.

The SQL is each store's (named queries ``prune_select``, ``prune_rows`` and
``prune_delete``); this module holds what both stores share and never talks to a
database itself.  :meth:`~taskmill.store.common.StoreMethods.prune_history` is the
public entry.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from ..model import SchedulerError
from ..validation import whole_number

__all__ = [
    "EXPORT_ROWS",
    "PRUNE_BATCH",
    "PRUNE_PAUSE",
    "ExportFolder",
    "PruneSelection",
    "run_prune",
]

log = logging.getLogger("taskmill")

#: Ids deleted per transaction: each one holds the store's write lock only briefly, and
#: dispatch and submits go on between them.
PRUNE_BATCH = 5_000
#: History rows read (and written as one Parquet row group) at a time by an export, so a
#: prune of millions never holds them all in memory.
EXPORT_ROWS = 10_000
#: Longest pause between two delete transactions.  Each pause lasts as long as the last
#: transaction held the lock (at least a millisecond, at most this), so writers that
#: wait with a backoff — other processes on a SQLite file — find the lock free.
PRUNE_PAUSE = 0.1


@dataclass(frozen=True, slots=True)
class PruneSelection:
    """What a prune removes, as the store's selection query takes it.

    ``cutoff``: Unix seconds; rows finished before it qualify (``inf``: any time).
    ``keep_last``: how many of the most recently finished rows stay whatever their
    age (``None``: none held back).
    """

    cutoff: float
    keep_last: int | None


def check_prune_args(
    older_than: timedelta | None, keep_last: int | None, *, now: float
) -> PruneSelection:
    """The selection of ``prune_history(older_than=…, keep_last=…)`` at time ``now``;
    :class:`SchedulerError` (``kind="invalid_argument"``) for arguments that are not."""
    if older_than is None and keep_last is None:
        raise SchedulerError(
            "prune_history() needs older_than (a timedelta: remove tasks finished longer "
            "ago than that) or keep_last (how many of the most recently finished tasks to "
            "keep), or both",
            kind="invalid_argument",
        )
    if older_than is not None:
        if not isinstance(older_than, timedelta):
            raise SchedulerError(
                f"older_than must be a datetime.timedelta (such as timedelta(days=7)), not "
                f"{type(older_than).__name__} {older_than!r}",
                kind="invalid_argument",
            )
        if older_than < timedelta(0):
            raise SchedulerError(
                f"older_than must not be negative, not {older_than}", kind="invalid_argument"
            )
    if keep_last is not None:
        keep_last = whole_number(keep_last, "keep_last", low=0)
    cutoff = float("inf") if older_than is None else now - older_than.total_seconds()
    # keeping the last 0 holds nothing back: the same as no keep_last
    return PruneSelection(cutoff, keep_last or None)


def batches(ids: Sequence[int], size: int) -> Iterator[list[int]]:
    """``ids`` in consecutive lists of at most ``size``."""
    it = iter(ids)
    while chunk := list(itertools.islice(it, max(1, size))):
        yield chunk


class ExportFolder:
    """A folder receiving one Parquet file per prune.

    The file is written under a hidden temporary name, flushed to disk, then given its
    final name — ``history-YYYYMMDDTHHMMSS.ffffffZ-N.parquet``, in UTC, ``N`` counting up
    from 1 past any name already taken — without ever replacing an existing file.  Any
    failure raises :class:`SchedulerError` (``kind="export"``) naming the folder and
    leaves no temporary file behind.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def error(self, exc: BaseException) -> SchedulerError:
        """The error of a failed export (nothing was deleted)."""
        return SchedulerError(
            f"cannot export the pruned history to folder {self.folder}: {exc}; nothing was removed",
            kind="export",
        )

    def write(self, chunks: Iterator[pl.DataFrame]) -> Path:
        """Write every frame of ``chunks`` (one row group each, all of one schema) to a
        new file in the folder; returns its path."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self.error(exc) from exc
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        tmp = self.folder / f".history-{stamp}-{uuid.uuid4().hex[:12]}.parquet.tmp"
        try:
            _write_parquet(tmp, chunks)
            return self._publish(tmp, stamp)
        except SchedulerError:
            raise
        except Exception as exc:  # OSError, or pyarrow's own errors
            raise self.error(exc) from exc
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _publish(self, tmp: Path, stamp: str) -> Path:
        """Give ``tmp`` its final name (the first free counter); never replaces a file."""
        for n in itertools.count(1):
            final = self.folder / f"history-{stamp}-{n}.parquet"
            try:
                os.link(tmp, final)  # fails when the name is taken: atomic, no overwrite
            except FileExistsError:
                continue
            except OSError:  # a file system without hard links
                if final.exists():
                    continue
                os.rename(tmp, final)
            _sync_folder(self.folder)
            return final
        raise AssertionError("unreachable")  # pragma: no cover


def _write_parquet(path: Path, chunks: Iterator[pl.DataFrame]) -> None:
    """Write the frames to ``path`` as one Parquet file and flush it to disk."""
    import pyarrow.parquet as pq

    writer: pq.ParquetWriter | None = None
    try:
        for chunk in chunks:
            table = chunk.to_arrow()
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            writer.write_table(table)
    finally:
        if writer is not None:
            writer.close()
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _sync_folder(folder: Path) -> None:
    """Make a new name in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def run_prune(
    selection: PruneSelection,
    *,
    select: Callable[[PruneSelection], list[int]],
    rows: Callable[[list[int]], pl.DataFrame],
    delete: Callable[[list[int]], int],
    export: ExportFolder | None,
    where: str,
) -> tuple[int, Path | None]:
    """One prune: the ids ``select`` finds (once), their rows exported through ``rows``
    when there is an ``export`` folder, then ``delete`` called on batches of at most
    :data:`PRUNE_BATCH` ids, each its own transaction, with a short pause between them.

    Returns how many rows were deleted and the export file (``None`` without an export,
    or when nothing was selected: no file is written then).  A failed export raises
    before anything is deleted.
    """
    started = time.monotonic()
    ids = sorted(select(selection))
    if not ids:
        return 0, None
    path = None
    if export is not None:
        path = export.write(rows(chunk) for chunk in batches(ids, EXPORT_ROWS))
    removed = 0
    held = 0.0
    size = PRUNE_BATCH
    for i, chunk in enumerate(batches(ids, size)):
        if i:
            time.sleep(min(PRUNE_PAUSE, max(0.001, held)))
        began = time.monotonic()
        removed += delete(chunk)
        held = time.monotonic() - began
    if removed < len(ids):  # another prune (or a direct write) removed some meanwhile
        log.info(
            "taskmill: %d of %d selected history row(s) were already gone from %s",
            len(ids) - removed,
            len(ids),
            where,
        )
    log.debug(
        "taskmill: pruned %d history row(s) from %s in %.2f s (%d transaction(s))",
        removed,
        where,
        time.monotonic() - started,
        -(-len(ids) // max(1, size)),
    )
    return removed, path
