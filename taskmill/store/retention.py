"""History retention: which finished tasks a prune removes, the Parquet export of those
rows, and the order of the work — under the store's prune lock, complete a prune that
died, select the ids once, export exactly those rows to a file that stays unpublished,
record it in the store, delete those ids in bounded transactions, then publish the file.

The SQL is each store's (named queries ``prune_select``, ``prune_rows`` and
``prune_delete``, the lock and the record); this module holds what both stores share and
never talks to a database itself.  :meth:`~taskmill.store.store.TaskStore.prune_history`
is the public entry.

Why each removed row is in exactly one export: prunes of a store never overlap (the lock
is held from before the selection to after the publication), and a prune's file is
published only once every one of its rows is deleted.  A prune that dies between its
first delete and its publication leaves its file under a hidden name and the store's
record of it (:data:`PENDING_KEY`); the next prune of the store, whatever its folder,
deletes the rest of that file's rows and publishes it before it selects anything.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from ..batch.validate import whole_number
from ..model import SchedulerError

__all__ = [
    "EXPORT_ROWS",
    "PENDING_KEY",
    "PRUNE_BATCH",
    "PRUNE_PAUSE",
    "ExportFolder",
    "PruneSelection",
    "PruneSteps",
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
#: The key of the store's meta table recording the export of a prune under way (JSON:
#: the hidden file's absolute ``path`` and its ``stamp``), from before its first delete
#: until its file is published.
PENDING_KEY = "prune_export"


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

    The file is written under a hidden temporary name and flushed to disk
    (:meth:`stage`); once the prune has deleted its rows it gets its final name
    (:meth:`publish`) — ``history-YYYYMMDDTHHMMSS.ffffffZ-N.parquet``, in UTC, ``N``
    counting up from 1 past any name already taken — without ever replacing an existing
    file.  A failure to write raises :class:`SchedulerError` (``kind="export"``) naming
    the folder and leaves no temporary file behind.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)

    def error(self, exc: BaseException) -> SchedulerError:
        """The error of a failed export (nothing was deleted)."""
        return SchedulerError(
            f"cannot export the pruned history to folder {self.folder}: {exc}; nothing was removed",
            kind="export",
        )

    def stage(self, chunks: Iterator[pl.DataFrame]) -> tuple[Path, str]:
        """Write every frame of ``chunks`` (one row group each, all of one schema) to a
        new hidden file in the folder, flushed to disk; returns its path and the stamp of
        its final name."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self.error(exc) from exc
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        tmp = self.folder / f".history-{stamp}-{uuid.uuid4().hex[:12]}.parquet.tmp"
        try:
            _write_parquet(tmp, chunks)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if isinstance(exc, Exception) and not isinstance(exc, SchedulerError):
                raise self.error(exc) from exc  # OSError, or pyarrow's own errors
            raise
        return tmp.resolve(), stamp

    def publish(self, tmp: Path, stamp: str) -> Path:
        """Give the staged file ``tmp`` its final name; returns it.  Its hidden name goes
        only once the final one is durable; :class:`SchedulerError` (``kind="export"``)
        if that fails (``tmp`` is left as it is)."""
        try:
            final = self._publish(tmp, stamp)
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            _sync_folder(self.folder)
            return final
        except OSError as exc:
            raise SchedulerError(
                f"cannot publish the export {tmp} in folder {self.folder}: {exc}; its rows "
                "were removed, and the next prune of the store publishes it",
                kind="export",
            ) from exc

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


@dataclass(frozen=True, slots=True)
class PruneSteps:
    """What a store provides to :func:`run_prune`.

    ``select``: the ids a selection removes (one read).  ``rows``: the history rows of
    some ids, as ``history()`` shows them.  ``delete``: delete the rows of some ids in
    one transaction; how many went.  ``recorded`` / ``record``: read / set (``None``:
    clear) the store's record of the export under way (:data:`PENDING_KEY`).
    """

    select: Callable[[PruneSelection], list[int]]
    rows: Callable[[list[int]], pl.DataFrame]
    delete: Callable[[list[int]], int]
    recorded: Callable[[], str | None]
    record: Callable[[str | None], None]


def run_prune(
    selection: PruneSelection,
    *,
    steps: PruneSteps,
    export: ExportFolder | None,
    where: str,
) -> tuple[int, Path | None]:
    """One prune, the caller holding the store's prune lock: first an earlier prune that
    died mid-way is completed (:func:`complete_unfinished`); then the ids ``steps.select``
    finds (once), their rows exported to a staged file when there is an ``export``
    folder, the file recorded, the ids deleted in batches of at most
    :data:`PRUNE_BATCH`, each its own transaction with a short pause between them, and
    the file published.

    Returns how many rows were deleted (those of a completed earlier prune included) and
    this prune's export file (``None`` without an export, or when nothing was selected:
    no file is written then).  A failed export raises before anything is deleted.
    """
    started = time.monotonic()
    completed = complete_unfinished(steps, where)
    ids = sorted(steps.select(selection))
    if not ids:
        return completed, None
    staged: tuple[Path, str] | None = None
    if export is not None:
        staged = export.stage(steps.rows(chunk) for chunk in batches(ids, EXPORT_ROWS))
        try:
            steps.record(json.dumps({"path": str(staged[0]), "stamp": staged[1]}))
        except BaseException:
            with contextlib.suppress(OSError):
                staged[0].unlink()
            raise
    removed = _delete_all(ids, steps.delete)
    path = None
    if export is not None and staged is not None:
        path = export.publish(*staged)
        steps.record(None)
    if removed < len(ids):  # a direct write removed some meanwhile
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
        -(-len(ids) // max(1, PRUNE_BATCH)),
    )
    return completed + removed, path


def _delete_all(ids: list[int], delete: Callable[[list[int]], int]) -> int:
    """``delete`` called on consecutive batches of ``ids`` with a short pause between
    them (as long as the last one held the lock, within bounds); how many went."""
    removed = 0
    held = 0.0
    for i, chunk in enumerate(batches(ids, PRUNE_BATCH)):
        if i:
            time.sleep(min(PRUNE_PAUSE, max(0.001, held)))
        began = time.monotonic()
        removed += delete(chunk)
        held = time.monotonic() - began
    return removed


def complete_unfinished(steps: PruneSteps, where: str) -> int:
    """Complete the prune the store records as under way (its process died, or one of
    its deletes or its publication failed): delete the rows of its staged file that are
    still there, publish the file in its own folder, clear the record.  Returns how many
    rows it deleted (0 when nothing was recorded).

    A record whose file is gone, or already published (a second name: the process died
    between the two renaming steps), is only cleared.  A staged file that cannot be read
    raises :class:`SchedulerError` (``kind="export"``) naming it, and nothing is deleted.
    """
    text = steps.recorded()
    if text is None:
        return 0
    record = json.loads(text)
    tmp, stamp = Path(record["path"]), str(record["stamp"])
    try:
        links = tmp.stat().st_nlink
        if links > 1:  # published already, the hidden name was still there
            tmp.unlink()
    except FileNotFoundError:
        log.warning(
            "taskmill: the export %s of an unfinished prune of %s is gone; forgetting it",
            tmp,
            where,
        )
        links = 0
    except OSError as exc:
        raise SchedulerError(
            f"cannot reach {tmp}, the export of an unfinished prune of {where}: {exc}",
            kind="export",
        ) from exc
    if links != 1:
        steps.record(None)
        return 0
    try:
        import pyarrow.parquet as pq

        ids = sorted(pq.read_table(tmp, columns=["id"]).column("id").to_pylist())
    except Exception as exc:
        raise SchedulerError(
            f"cannot read {tmp}, the export of an unfinished prune of {where}: {exc}; move "
            "the file away to prune again (its rows that are gone from history are in it)",
            kind="export",
        ) from exc
    removed = _delete_all(ids, steps.delete)
    final = ExportFolder(tmp.parent).publish(tmp, stamp)
    steps.record(None)
    log.warning(
        "taskmill: completed an unfinished prune of %s: removed its last %d row(s) and "
        "published its export %s (%d rows)",
        where,
        removed,
        final,
        len(ids),
    )
    return removed
