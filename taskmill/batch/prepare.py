"""Batch input -> one :class:`Prepared` plan: normalise, validate, dedup (last wins).

Whatever the input, it leaves :func:`prepare` as one prepared plan, one row per input row,
with the defaults applied, every invalid row marked with its error, and each valid row
marked as the winner of its ``(task_type, dedup_key)`` or not: what the store needs to
decide, read back chunk by chunk (:meth:`Prepared.rows`).  The way runs straight down:
:mod:`~taskmill.batch.inputs` -> :mod:`~taskmill.batch.validate` ->
:mod:`~taskmill.batch.dedup`.  A plan larger than :data:`IN_MEMORY_ROWS` read from a file or
a stream is checked batch by batch into a private file (pass 1) and read again per chunk
while merging (pass 2).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from ..model import SchedulerError
from .dedup import _FINGERPRINT, _fingerprinted, _mark_winners, _repeated
from .depends import DependencyPlan, plan_dependencies
from .inputs import (
    _READ_BATCH,
    ColumnStream,
    Spool,
    _arrow_to_polars,
    _canonical_columns,
    _check_unchanged,
    _empty,
    _first_line,
    _from_arrow,
    _head,
    _identity,
    _is_native_panic,
    _is_stream,
    _is_table,
    _parquet_plan,
    _pinned_batches,
    _read_ahead,
    _stream_batches,
    _to_polars,
)
from .payload import _payload_source
from .submission import BatchSubmission
from .validate import BAD_TEXT, _bad_input, _check_table, _from_submissions

__all__ = ["IN_MEMORY_ROWS", "KEY_COLUMNS", "Prepared", "prepare"]


#: The columns of a row's key, read back from the plan for every outcome row (each
#: :class:`~taskmill.batch.outcome.BatchOutcome` row shows them beside its action).
KEY_COLUMNS = ("task_type", "dedup_key", "group", "priority")


@dataclass
class Prepared:
    """A batch ready to merge: one row per input row, in input order.

    Input held in memory keeps its canonical columns in ``frame`` (defaults applied,
    ``on_duplicate`` lower-cased), beside ``index``, ``error_kind`` / ``error_field`` /
    ``error`` (null for valid rows), ``winner`` (the valid row that goes on for its key)
    and ``winner_index``.  A plan read from a file or a stream keeps far less
    (``sparse``, a :class:`SparseMarks`): per row whether it wins, and apart the failed
    rows and the rows that lose to a later one; its checked rows wait in a private
    Parquet file (``checked``), read again chunk by chunk by :meth:`rows`, with the
    payloads of a Parquet plan read from the plan itself (a stream's are in ``checked``).
    :meth:`marks` gives either back as the same columns, a range of rows at a time.
    """

    frame: pl.DataFrame
    chunk_size: int
    transaction_limit: int
    #: The batch's name (``BatchSubmission().name(...)``), recorded with it.
    name: str | None = None
    #: What the batch decided about its rows' dependencies (``None``: no row has any).
    dependencies: DependencyPlan | None = None
    #: Rows failed by the store's answer about their dependencies (``unknown_dependency``),
    #: kept for a plan on disk, whose marks are decided again from its file.
    store_failures: pl.DataFrame | None = None
    payloads: ColumnStream | None = None
    checked: Spool | None = None
    stored: ColumnStream | None = None  # the rows of `checked`, read chunk by chunk
    sparse: SparseMarks | None = None

    def close(self) -> None:
        """Close the files the batch reads (idempotent).  The checked rows stay while an
        outcome reads its keys from them."""
        for stream in (self.payloads, self.stored):
            if stream is not None:
                stream.close()

    def rows(self, lo: int, hi: int) -> pl.DataFrame:
        """Rows ``lo..hi-1`` with their payloads (read now, for a plan kept on disk).

        Calls must go through the rows in order, each range once.
        """
        if self.stored is not None:
            marks = self.marks(lo, hi).select("winner", "winner_index")
            part = self.stored.take(hi - lo).hstack(marks)
        else:
            part = self.frame.slice(lo, hi - lo)
        if self.payloads is not None:
            part = part.with_columns(self.payloads.take(hi - lo).to_series().alias("payload"))
        return part

    def marks(self, lo: int, hi: int) -> pl.DataFrame:
        """Rows ``lo..hi-1`` as ``index``, ``error_kind``, ``error_field``, ``error``,
        ``winner_index`` and ``winner`` (what an outcome is made from)."""
        if self.sparse is not None:
            return self.sparse.marks(lo, hi)
        return self.frame.slice(lo, hi - lo).select(_MARKS)

    def lost_winners(self, height: int) -> pl.Series:
        """The rows below ``height`` that earlier valid rows of their key lost to."""
        if self.sparse is not None:
            return self.sparse.lost_winners(height)
        frame = self.frame.slice(0, height)
        return frame.filter(
            ~pl.col("winner") & pl.col("error_kind").is_null() & (pl.col("winner_index") < height)
        )["winner_index"].unique()

    def keys(self) -> pl.LazyFrame:
        """:data:`KEY_COLUMNS` of every row, in input order (lazy: a plan kept on disk
        is read again only when the result is collected)."""
        if self.checked is not None:
            return pl.scan_parquet(self.checked.path).select(KEY_COLUMNS)
        return self.frame.lazy().select(KEY_COLUMNS)

    def __len__(self) -> int:
        return self.frame.height


#: The columns :meth:`Prepared.marks` gives.
_MARKS = ["index", "error_kind", "error_field", "error", "winner_index", "winner"]


def _prepare_batches(
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    spec: BatchSubmission,
    *,
    keep_payloads: bool,
    where: str,
) -> tuple[SparseMarks, Spool, ColumnStream]:
    """Pass 1 over a plan's Arrow batches: each batch is validated on its own and
    written, checked, to a private Parquet file (``keep_payloads=False``: without its
    payloads, only their sizes — they are read again from the plan itself, and with each
    row's 64-bit key fingerprint); memory keeps only the failed rows, with their errors.
    In-batch dedup then reads the fingerprints back from that file, a share of them at a
    time (:func:`_losers`).  Returns the :class:`SparseMarks` that dedup leaves, the file,
    and the stream that reads the checked rows again, chunk by chunk, while the batch is
    merged (pass 2).

    Input-level problems (a column type, an unknown column) are raised before the first
    row is read; ``where`` names the plan in read errors."""
    import pyarrow.parquet as pq

    if BAD_TEXT in schema.names:
        raise _bad_input(f"the column name {BAD_TEXT!r} is reserved", BAD_TEXT)
    spool = Spool()

    def errors_of(checked: pl.DataFrame) -> pl.DataFrame:
        # the failed rows alone, with their errors (few, as a rule)
        return checked.filter(pl.col("error_kind").is_not_null()).select(
            "index", *(pl.col(c).cast(pl.String) for c in _ERRORS)
        )

    try:
        checked = _checked_batch(_empty(schema), spec, keep_payloads, 0)
        out_schema = checked.to_arrow(compat_level=pl.CompatLevel.oldest()).schema
        failed = [errors_of(checked)]
        offset = 0
        with pq.ParquetWriter(spool.path, out_schema, **_SPOOL_OPTIONS) as writer:
            for batch in _slices(_read_ahead(batches)):
                checked = _checked_batch(
                    pa.Table.from_batches([batch]), spec, keep_payloads, offset
                )
                writer.write_table(checked.to_arrow(compat_level=pl.CompatLevel.oldest()))
                failed.append(errors_of(checked))
                offset += batch.num_rows
                del checked
    except BaseException as exc:
        spool.remove()
        if isinstance(exc, SchedulerError) or not isinstance(
            exc, pl.exceptions.PolarsError | pa.ArrowException | OSError
        ):
            raise
        raise _bad_input(f"cannot read {where}: {_first_line(exc)}") from None
    errors = pl.concat(failed)
    del failed
    losers = _losers(pl.scan_parquet(spool.path), offset)
    winner = pl.Series("winner", [], dtype=pl.Boolean).extend_constant(True, offset)
    for lost in (errors["index"], losers["index"]):
        if lost.len():
            winner = winner.scatter(lost, False)
    marks = SparseMarks(pl.DataFrame([winner]), errors, losers)
    columns = [c for c in out_schema.names if c != _FINGERPRINT]
    return marks, spool, ColumnStream([spool.path], columns)


#: In-batch dedup of a plan kept on disk sorts the key fingerprints of about this many
#: rows at a time (each share holds the fingerprints ``≡ p`` modulo the number of shares,
#: so every repeat of a key falls in one share): memory set by this, not by the plan.
DEDUP_SHARE_ROWS = 1 << 20


def _losers(stored: pl.LazyFrame, height: int) -> pl.DataFrame:
    """The valid rows of the checked plan ``stored`` (``height`` rows) that lose to a later
    row of their key (``index``, ``winner_index``), in input order: as
    :func:`~taskmill.batch.dedup._with_winners`, but read from the file — the fingerprints
    a share at a time (:data:`DEDUP_SHARE_ROWS`), and the exact keys only of the rows
    whose fingerprint repeats (the real duplicates, and any collision)."""
    shares = max(1, -(-height // DEDUP_SHARE_ROWS))
    fingerprint = pl.col(_FINGERPRINT)
    found: list[pl.Series] = []
    for share in range(shares):
        keyed = stored.select("index", _FINGERPRINT).filter(fingerprint.is_not_null())
        if shares > 1:
            keyed = keyed.filter(fingerprint % shares == share)
        part = keyed.collect(engine="streaming")
        found.append(part["index"].filter(_repeated(part[_FINGERPRINT])))
        del part
    rows = pl.concat(found)
    if not rows.len():
        return pl.DataFrame(schema={"index": pl.Int64, "winner_index": pl.Int64})
    dupes = (
        stored.filter(pl.col("index").is_in(rows.implode()))
        .select("index", pl.col("index").max().over("task_type", "dedup_key").alias("winner_index"))
        .collect(engine="streaming")
    )
    return dupes.filter(pl.col("index") != pl.col("winner_index")).sort("index")


class SparseMarks:
    """What a plan kept on disk holds in memory per row: whether it wins (a bit), and
    apart from that the failed rows with their errors and the rows that lose to a later
    row of their key with that row's index — a few bytes a row however large the plan
    (:meth:`Prepared.marks` gives them back per range of rows, as full columns)."""

    def __init__(self, frame: pl.DataFrame, errors: pl.DataFrame, losers: pl.DataFrame) -> None:
        self.frame = frame  # winner
        self.errors = errors  # index, error_kind, error_field, error (failed rows)
        self.losers = losers  # index, winner_index (valid rows that lose)

    @property
    def height(self) -> int:
        return self.frame.height

    def marks(self, lo: int, hi: int) -> pl.DataFrame:
        """Rows ``lo .. hi - 1``: ``index``, the error columns, ``winner_index``, ``winner``."""
        n = hi - lo
        index = pl.int_range(lo, hi, dtype=pl.Int64, eager=True).alias("index")
        errors = self.errors.filter(pl.col("index").is_between(lo, hi - 1))
        losers = self.losers.filter(pl.col("index").is_between(lo, hi - 1))
        failed = (
            pl.Series("failed", [], dtype=pl.Boolean)
            .extend_constant(False, n)
            .scatter(errors["index"] - lo, True)
        )
        winner_index = index.clone().alias("winner_index")
        if losers.height:
            winner_index = winner_index.scatter(losers["index"] - lo, losers["winner_index"])
        frame = pl.DataFrame([index]).join(errors, on="index", how="left", maintain_order="left")
        return frame.select(
            "index",
            *(pl.col(c).cast(pl.Categorical) for c in _ERRORS),
            pl.when(~failed).then(winner_index).alias("winner_index"),
            self.frame["winner"].slice(lo, n),
        )

    def lost_winners(self, height: int) -> pl.Series:
        """The rows (below ``height``) that earlier rows of their key lost to."""
        return (
            self.losers.filter(pl.col("winner_index") < height)["winner_index"]
            .unique()
            .alias("winner_index")
        )


def _slices(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``batches`` cut into slices of at most :data:`_READ_BATCH` rows (views, no copy):
    a stream's batches are as large as its producer made them, and checking one costs
    memory in proportion to its rows."""
    for batch in batches:
        for lo in range(0, batch.num_rows, _READ_BATCH):
            yield batch.slice(lo, _READ_BATCH)
        if batch.num_rows == 0:
            yield batch


#: How the private file of checked rows is written: it is read once more, on this machine,
#: so it is not compressed, and nothing reads its statistics.
_SPOOL_OPTIONS: dict[str, Any] = {
    "compression": "none",
    "write_statistics": False,
    "use_dictionary": False,
}


#: The error columns of a prepared row.
_ERRORS = ("error_kind", "error_field", "error")


def _checked_batch(
    table: pa.Table, spec: BatchSubmission, keep_payloads: bool, offset: int
) -> pl.DataFrame:
    """One batch of a plan, validated (rows numbered from ``offset``), with each valid
    row's key fingerprint; without its payloads (their sizes instead) unless kept."""
    # one lazy query per batch: one optimised pass instead of a frame per step
    canonical = _canonical_columns(_from_arrow(table).lazy(), spec)
    if not keep_payloads:
        canonical = canonical.with_columns(
            pl.col("payload").bin.size().alias("_payload_size"),
            pl.lit(None, dtype=pl.Binary).alias("payload"),
        )
    checked = _check_table(canonical, spec.defaults, offset=offset)
    if not keep_payloads:
        checked = checked.drop("payload")
    return _fingerprinted(checked).collect()


def prepare(x: Any, spec: BatchSubmission | None = None) -> Prepared:
    """Normalise, validate and dedup any batch input (see the module docstring).

    Raises only :class:`SchedulerError`: whatever else a reader raises on input it
    cannot handle (a polars or Arrow error, a panic in native code) is wrapped.
    """
    try:
        return _prepare(x, spec)
    except SchedulerError:
        raise
    except MemoryError as exc:
        raise SchedulerError(
            "not enough memory to prepare this batch; submit it in parts", kind="out_of_memory"
        ) from exc
    except BaseException as exc:
        if not (isinstance(exc, Exception) or _is_native_panic(exc)):
            raise  # KeyboardInterrupt, SystemExit: not ours to wrap
        raise _bad_input(
            f"the batch input cannot be read: {type(exc).__name__}: {_first_line(exc)}"
        ) from exc


def _prepare(x: Any, spec: BatchSubmission | None) -> Prepared:
    if isinstance(x, BatchSubmission):
        if spec is not None:
            raise _bad_input("a BatchSubmission cannot be given settings twice")
        spec, x = x, x._tasks
        if x is None:
            raise _bad_input("the BatchSubmission has no tasks (call .tasks(...))")
    spec = spec or BatchSubmission()
    defaults = spec.defaults
    settings = (spec._chunk_size, spec._transaction_limit, spec._name)
    if isinstance(x, str | os.PathLike):
        return _prepare_parquet(Path(x), spec)
    if _is_stream(x):
        # read batch by batch: past IN_MEMORY_ROWS the checked rows, payloads included,
        # go to a private Parquet file, so a stream is never held whole in memory
        schema, batches, where = _stream_batches(x)
        head, rest = _head(batches, IN_MEMORY_ROWS)
        if rest is None:
            return _in_memory(schema, head, spec)
        marks, checked, stored = _prepare_batches(
            schema, rest, spec, keep_payloads=True, where=where
        )
        prepared = Prepared(marks.frame, *settings, checked=checked, stored=stored, sparse=marks)
        return _on_disk_dependencies(prepared)
    if _is_table(x):
        df = _check_table(_canonical_columns(_to_polars(x), spec), defaults)
    elif isinstance(x, Iterable) and not isinstance(x, bytes | dict):
        if spec._columns or spec._payload_columns:
            raise _bad_input(".columns() and .payload_columns() apply to table input only")
        df = _from_submissions(x, defaults)
    else:
        raise _bad_input(
            f"cannot submit a {type(x).__name__}: expected TaskSubmissions, a table "
            "(Arrow, polars, pandas) or a Parquet path"
        )
    return _in_memory_plan(df, *settings)


def _in_memory_plan(
    df: pl.DataFrame, chunk_size: int, transaction_limit: int, name: str | None
) -> Prepared:
    """A plan held in memory: dedup, then its dependencies decided."""
    frame, dependencies = _with_dependencies(_mark_winners(df))
    return Prepared(frame, chunk_size, transaction_limit, name, dependencies=dependencies)


def fail_dependencies(prepared: Prepared, failures: pl.DataFrame) -> Prepared:
    """``prepared`` with the rows of ``failures`` (``index``, ``error_kind``, ``error``:
    dependencies the store cannot resolve) failed, and its dedup and dependencies decided
    again (a row failed so loses its key to the last valid row, and the rows that wait for
    it fail in turn)."""
    if prepared.sparse is not None:
        known = prepared.store_failures
        prepared.store_failures = failures if known is None else pl.concat([known, failures])
        return _on_disk_dependencies(prepared)
    prepared.frame, prepared.dependencies = _with_dependencies(
        _failed_by_dependencies(prepared.frame, failures)
    )
    return prepared


def _failed_by_dependencies(df: pl.DataFrame, failures: pl.DataFrame) -> pl.DataFrame:
    """``df`` with the rows of ``failures`` (``index``, ``error_kind``, ``error``) failed
    on ``depends_on``, deduplicated again (the last valid row of a key wins)."""
    failed = failures.with_columns(pl.lit("depends_on").alias("error_field"))
    unmarked = df.drop("winner", "winner_index", strict=False)
    return _mark_winners(unmarked.update(failed, on="index", how="left"))


def _on_disk_dependencies(prepared: Prepared) -> Prepared:
    """A plan kept on disk whose rows name dependencies: its key and dependency columns
    read back from its file of checked rows (not its payloads), deduplicated and decided
    as a plan in memory is, and its marks made again from that (with the rows the store
    failed, :attr:`Prepared.store_failures`).  A plan without dependencies is returned as
    it is, after one read of that column."""
    assert prepared.checked is not None and prepared.sparse is not None
    scan = pl.scan_parquet(prepared.checked.path)
    named = pl.col("depends_on").list.len().fill_null(0).gt(0).any()
    if prepared.store_failures is None and not scan.select(named).collect().item():
        return prepared
    narrow = scan.select("index", "task_type", "dedup_key", *_ERRORS, "depends_on").collect()
    if prepared.store_failures is not None:
        narrow = _failed_by_dependencies(narrow, prepared.store_failures)
    else:
        narrow = _mark_winners(narrow)
    frame, dependencies = _with_dependencies(narrow)
    marks = SparseMarks(
        frame.select("winner"),
        frame.filter(pl.col("error_kind").is_not_null()).select(
            "index", *(pl.col(c).cast(pl.String) for c in _ERRORS)
        ),
        frame.filter(pl.col("error_kind").is_null() & ~pl.col("winner")).select(
            "index", "winner_index"
        ),
    )
    prepared.frame, prepared.sparse, prepared.dependencies = marks.frame, marks, dependencies
    return prepared


def _with_dependencies(df: pl.DataFrame) -> tuple[pl.DataFrame, DependencyPlan | None]:
    """``df`` (deduplicated) with the rows its dependencies fail marked failed, and what
    the batch decided (``None`` when no row names a dependency).

    A row failed by its dependencies is as a row that failed its checks: the last *valid*
    row of its key wins instead, so dedup runs again, and so do the dependencies of the
    new winners, until no row fails any more (each round fails at least one more row)."""
    deps = pl.col("depends_on")
    if not df.select(deps.list.len().fill_null(0).gt(0).any()).item():
        return df, None
    while True:
        plan = plan_dependencies(
            df.select(
                "index",
                "dedup_key",
                pl.col("error_kind").is_null().alias("valid"),
                "winner",
                deps.list.eval(pl.element().struct.field("key"))
                .list.drop_nulls()
                .alias("dep_keys"),
                deps.list.eval(pl.element().struct.field("id")).list.drop_nulls().alias("dep_ids"),
            )
        )
        if plan.failures.height == 0:
            return df, plan
        df = _failed_by_dependencies(df, plan.failures)


def _prepare_parquet(path: Path, spec: BatchSubmission) -> Prepared:
    """A Parquet plan (a file or a folder), read twice through pinned descriptors: once
    to validate and dedup, then chunk by chunk for the payloads while merging."""
    files, schema, declared = _parquet_plan(path)
    pinned = [_identity(f) for f in files]
    if declared > IN_MEMORY_ROWS:  # known large from the footers: no head held in memory
        head, rest = [], _pinned_batches(files, pinned)
    else:
        head, rest = _head(_pinned_batches(files, pinned, small=True), IN_MEMORY_ROWS)
    if rest is None:  # a small plan: read once, whole, and prepared in memory
        _check_unchanged(files, pinned)
        return _in_memory(schema, head, spec)
    marks, checked, stored = _prepare_batches(
        schema, rest, spec, keep_payloads=False, where=f"Parquet input {path}"
    )
    try:
        _check_unchanged(files, pinned)
    except SchedulerError:
        checked.remove()
        raise
    columns, expr = _payload_source(_arrow_to_polars(_empty(schema)).schema, spec)
    prepared = Prepared(
        marks.frame,
        spec._chunk_size,
        spec._transaction_limit,
        spec._name,
        payloads=ColumnStream(files, columns, expr, pinned),
        checked=checked,
        stored=stored,
        sparse=marks,
    )
    return _on_disk_dependencies(prepared)


#: A plan read from a file or a stream with at most this many rows is prepared in memory,
#: like a DataFrame (one read, no private file: faster for small plans); a larger one
#: streams through a private file of checked rows, keeping ~30 bytes a row in memory.
IN_MEMORY_ROWS = 200_000


def _in_memory(schema: pa.Schema, batches: list[pa.RecordBatch], spec: BatchSubmission) -> Prepared:
    """A small plan, read whole, prepared like an in-memory table."""
    table = pa.Table.from_batches(batches) if batches else _empty(schema)
    df = _check_table(_canonical_columns(_from_arrow(table), spec), spec.defaults)
    return _in_memory_plan(df, spec._chunk_size, spec._transaction_limit, spec._name)
