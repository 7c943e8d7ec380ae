"""Batch input → one canonical polars frame: normalise, validate, dedup (last wins).

Whatever the input — a list of :class:`TaskSubmission`, an Arrow table or stream, a
polars or pandas frame, a Parquet file or folder — it leaves this module as one
:class:`Prepared` frame, one row per input row, with the defaults applied, every
invalid row marked with its error, and each valid row marked as the winner of its
``(task_type, dedup_key)`` or not.  Table input never becomes one Python object per
row; only a list of submissions is walked (once) in Python.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
import weakref
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import pyarrow as pa
from polars.datatypes import DataTypeClass  # a dtype's inner or field type may be a class

from ..columns import frame_schema
from ..model import (
    MAX_GROUP_LENGTH,
    MAX_KEY_LENGTH,
    MAX_PAYLOAD_BYTES,
    NON_FINITE_PAYLOAD,
    PRIORITY_TIERS,
    DuplicateStrategy,
    InvalidSubmission,
    Priority,
    SchedulerError,
    TaskSubmission,
)
from .validate import (
    EXPECTED_FIELDS,
    MAX_INT64,
    MAX_TIME,
    NUL_MESSAGE,
    Defaults,
    check_submission,
    encodes,
    to_seconds,
)

__all__ = ["CANONICAL", "BatchSubmission", "Prepared", "prepare"]

#: The canonical columns of table input and their types (times: Unix seconds, given as
#: datetimes or numbers).
CANONICAL: dict[str, pl.DataType] = frame_schema("plan")
_TEXT = tuple(name for name, dtype in CANONICAL.items() if dtype == pl.String)
_TIMES = tuple(name for name, dtype in CANONICAL.items() if dtype == pl.Float64)
_INTS = tuple(name for name, dtype in CANONICAL.items() if dtype == pl.Int64)
_STRATEGIES = tuple(s.value for s in DuplicateStrategy)

T = TypeVar("T")

DEFAULT_CHUNK_SIZE = 10_000
DEFAULT_TRANSACTION_LIMIT = 100_000


@dataclass(frozen=True)
class BatchSubmission:
    """Batch-wide settings and the tasks, built fluently::

        tm.BatchSubmission().default_group("s3://eu").on_duplicate("supersede").tasks(df)

    Every method returns a new ``BatchSubmission``.
    """

    _tasks: Any = None
    _default_group: str | None = None
    _default_priority: int = int(Priority.NORMAL)
    _on_duplicate: DuplicateStrategy = DuplicateStrategy.SKIP
    _columns: Mapping[str, str] = field(default_factory=dict)
    _payload_columns: tuple[str, ...] = ()
    _chunk_size: int = DEFAULT_CHUNK_SIZE
    _transaction_limit: int = DEFAULT_TRANSACTION_LIMIT
    _run_after: float | None = None
    _expires_at: float | None = None

    def tasks(self, tasks: Any) -> BatchSubmission:
        """The tasks: submissions, a table, or a Parquet path (not another BatchSubmission)."""
        if isinstance(tasks, BatchSubmission):
            raise InvalidSubmission(
                "tasks() cannot take another BatchSubmission", kind="invalid_input"
            )
        return dataclasses.replace(self, _tasks=tasks)

    def default_group(self, group: str | None) -> BatchSubmission:
        """Group of every task that sets none."""
        if group is not None and not isinstance(group, str):
            raise InvalidSubmission(
                "default_group must be a string", kind="invalid_group", field="group"
            )
        return dataclasses.replace(self, _default_group=group)

    def default_priority(self, priority: int) -> BatchSubmission:
        """Priority of every task that sets none."""
        return dataclasses.replace(self, _default_priority=int(Priority(priority)))

    def on_duplicate(self, strategy: DuplicateStrategy | str) -> BatchSubmission:
        """Strategy of every task that sets none."""
        return dataclasses.replace(self, _on_duplicate=DuplicateStrategy.parse(strategy))

    def columns(
        self,
        mapping: Mapping[str, str] | None = None,
        /,
        **fields: str,
    ) -> BatchSubmission:
        """Map table columns to fields: ``.columns(task_type="action", dedup_key="key")``."""
        merged = {**(mapping or {}), **fields}
        for name in merged:
            if name not in CANONICAL:
                raise InvalidSubmission(
                    f"columns(): {name!r} is not a task field (fields: {', '.join(CANONICAL)})",
                    kind="invalid_input",
                    field=name,
                )
        return dataclasses.replace(self, _columns={**self._columns, **merged})

    def payload_columns(self, columns: Sequence[str]) -> BatchSubmission:
        """Pack these table columns into each task's payload, as a JSON object."""
        if isinstance(columns, str):
            columns = [columns]
        return dataclasses.replace(self, _payload_columns=tuple(columns))

    def run_after(self, when: Any) -> BatchSubmission:
        """Start time of the rows that set none: a ``datetime`` (naive means UTC), a
        ``timedelta`` from now (this call) or Unix seconds; ``None`` for none."""
        return dataclasses.replace(self, _run_after=_batch_time(when, "run_after"))

    def expires_at(self, when: Any) -> BatchSubmission:
        """Expiry time of the rows that set none (as :meth:`run_after`)."""
        return dataclasses.replace(self, _expires_at=_batch_time(when, "expires_at"))

    def chunk_size(self, n: int) -> BatchSubmission:
        """Rows per transaction for batches larger than the transaction limit."""
        if n < 1:
            raise _bad_input(f"chunk_size must be at least 1, got {n}")
        return dataclasses.replace(self, _chunk_size=int(n))

    def transaction_limit(self, n: int) -> BatchSubmission:
        """Largest batch committed in one transaction; larger ones commit in chunks."""
        if n < 1:
            raise _bad_input(f"transaction_limit must be at least 1, got {n}")
        return dataclasses.replace(self, _transaction_limit=int(n))

    @property
    def defaults(self) -> Defaults:
        return Defaults(
            self._default_group,
            self._default_priority,
            self._on_duplicate,
            self._run_after,
            self._expires_at,
        )


def _batch_time(when: Any, field: str) -> float | None:
    """A batch-wide time as Unix seconds (a bad one raises, naming the field)."""
    return to_seconds(when, field, time.time())


class Spool:
    """A private temporary file, removed by :meth:`remove` or when the last object
    holding it (a :class:`Prepared` batch, the outcome reading its keys) is gone."""

    def __init__(self, suffix: str = ".parquet") -> None:
        import tempfile

        fd, name = tempfile.mkstemp(prefix=f"taskmill-plan-{os.getpid()}-", suffix=suffix)
        os.close(fd)
        self.path = Path(name)
        self._finalizer = weakref.finalize(self, _unlink, name)

    def remove(self) -> None:
        """Remove the file now (idempotent)."""
        self._finalizer()


def _unlink(name: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name)


#: The columns of a row's key, read back from the plan for every outcome row (each
#: :class:`~taskmill.batch.outcome.BatchOutcome` row shows them beside its action).
KEY_COLUMNS = ("task_type", "dedup_key", "group", "priority")


@dataclass
class Prepared:
    """A batch ready to merge: one row per input row, in input order.

    ``frame`` columns: ``index``, ``error_kind`` / ``error_field`` / ``error`` (null for
    valid rows), ``winner`` (the valid row that goes on for its key) and
    ``winner_index``.  Input held in memory keeps its canonical columns in ``frame`` too
    (defaults applied, ``on_duplicate`` lower-cased).  A plan read from a file or a
    stream keeps only those narrow columns in memory — the error texts as categoricals;
    its checked rows wait in a private Parquet file (``checked``), read again chunk by
    chunk by :meth:`rows`, with the payloads of a Parquet plan read from the plan itself
    (a stream's are in ``checked``).  So memory per planned row is what in-batch dedup
    needs.
    """

    frame: pl.DataFrame
    chunk_size: int
    transaction_limit: int
    payloads: ColumnStream | None = None
    checked: Spool | None = None
    stored: ColumnStream | None = None  # the rows of `checked`, read chunk by chunk

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
        part = self.frame.slice(lo, hi - lo)
        if self.stored is not None:
            part = self.stored.take(hi - lo).hstack(part.select("winner", "winner_index"))
        if self.payloads is not None:
            part = part.with_columns(self.payloads.take(hi - lo).to_series().alias("payload"))
        return part

    def keys(self) -> pl.LazyFrame:
        """:data:`KEY_COLUMNS` of every row, in input order (lazy: a plan kept on disk
        is read again only when the result is collected)."""
        if self.checked is not None:
            return pl.scan_parquet(self.checked.path).select(KEY_COLUMNS)
        return self.frame.lazy().select(KEY_COLUMNS)

    def __len__(self) -> int:
        return self.frame.height


# --------------------------------------------------------------------------- input


def _bad_input(message: str, column: str | None = None) -> InvalidSubmission:
    return InvalidSubmission(message, kind="invalid_input", field=column)


class NoTaskType(InvalidSubmission):
    """Table input has no ``task_type`` column; :meth:`advice` says how to map one in the
    terms of the interface used."""

    def __init__(self) -> None:
        super().__init__(self.advice(), kind="invalid_input", field="task_type")

    def advice(self, *, cli: bool = False) -> str:
        """The message, with the fix spelled as a builder call or, with ``cli``, a flag."""
        fix = "--map COLUMN=task_type" if cli else ".columns(task_type=...)"
        return f"the input has no task_type column (map one with {fix})"


class UnknownColumns(InvalidSubmission):
    """Table input has columns that are no task field, and were neither mapped nor packed.

    ``columns`` lists every one of them; :meth:`advice` says what to do in the terms of the
    interface used (builder methods in Python, flags on the command line)."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = list(columns)
        super().__init__(self.advice(), kind="invalid_input", field=self.columns[0])

    def advice(self, *, cli: bool = False) -> str:
        shown = ", ".join(repr(c) for c in self.columns)
        noun = "column" if len(self.columns) == 1 else "columns"
        first = self.columns[0]
        if cli:
            fix = (
                f"map one to a field with --map {first}=FIELD, or pack them into the payload "
                f"with --payload-columns {','.join(self.columns)}"
            )
        else:
            fix = (
                f"map one to a field with .columns(FIELD={first!r}), or pack them into the "
                f"payload with .payload_columns({self.columns!r})"
            )
        return f"unknown {noun} {shown}: not task fields ({', '.join(CANONICAL)}); {fix}"


def _is_table(x: Any) -> bool:
    return (
        isinstance(
            x, pl.DataFrame | pl.LazyFrame | pa.Table | pa.RecordBatch | pa.RecordBatchReader
        )
        or hasattr(x, "__arrow_c_stream__")
        or (type(x).__module__.split(".")[0] == "pandas" and type(x).__name__ == "DataFrame")
    )


def _parquet_files(path: Path) -> list[Path]:
    if not path.exists():
        raise _bad_input(f"Parquet input {path} does not exist")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.parquet") if p.is_file())
        if not files:
            raise _bad_input(f"folder {path} holds no .parquet files")
        return files
    return [path]


def _check_footer(path: Path, meta: Any) -> None:
    """Refuse a Parquet footer whose row counts disagree with each other (a damaged or
    crafted file that would make a reader allocate for rows that are not there)."""
    groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
    total = sum(g.num_rows for g in groups)
    if meta.num_rows != total:
        raise _bad_input(
            f"{path} is a damaged Parquet file: its footer claims {meta.num_rows:,} rows but "
            f"its row groups hold {total:,}"
        )
    flat = [c for c in range(meta.num_columns) if meta.schema.column(c).max_repetition_level == 0]
    for i, group in enumerate(groups):
        for c in flat:
            values = group.column(c).num_values
            if values != group.num_rows:
                raise _bad_input(
                    f"{path} is a damaged Parquet file: row group {i} claims "
                    f"{group.num_rows:,} rows but its column {meta.schema.column(c).name!r} "
                    f"holds {values:,} values"
                )


def _parquet_plan(path: Path) -> tuple[list[Path], pa.Schema]:
    """The files of a Parquet plan and their (one) schema, every footer checked."""
    import pyarrow.parquet as pq

    files = _parquet_files(path)
    schema = None
    for f in files:
        try:
            file_schema = pq.read_schema(f)
            _check_footer(f, pq.read_metadata(f))
        except (pa.ArrowInvalid, OSError) as exc:
            raise _bad_input(f"{f} is not a Parquet file ({exc})") from None
        if schema is None:
            schema = file_schema
        elif not file_schema.equals(schema):
            raise _bad_input(f"{f} has different columns from {files[0]}")
    assert schema is not None
    _check_names(schema.names)
    return files, schema


def _prepare_batches(
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    spec: BatchSubmission,
    *,
    keep_payloads: bool,
    where: str,
) -> tuple[pl.DataFrame, Spool, ColumnStream]:
    """Pass 1 over a plan's Arrow batches: each batch is validated on its own and
    written, checked, to a private Parquet file (``keep_payloads=False``: without its
    payloads, only their sizes — they are read again from the plan itself); memory keeps
    only what in-batch dedup needs (the narrow ``frame`` of :class:`Prepared`, plus a
    64-bit key fingerprint per row).  Returns that frame, the file, and the stream that
    reads the checked rows again, chunk by chunk, while the batch is merged (pass 2).

    Input-level problems (a column type, an unknown column) are raised before the first
    row is read; ``where`` names the plan in read errors."""
    import pyarrow.parquet as pq

    if BAD_TEXT in schema.names:
        raise _bad_input(f"the column name {BAD_TEXT!r} is reserved", BAD_TEXT)
    spool = Spool()

    def narrow_of(checked: pl.DataFrame) -> pl.DataFrame:
        errors = (pl.col(c).cast(pl.Categorical) for c in _ERRORS)
        return checked.select("index", _FINGERPRINT, *errors)

    try:
        checked = _checked_batch(_empty(schema), spec, keep_payloads, 0)
        out_schema = checked.to_arrow(compat_level=pl.CompatLevel.oldest()).schema
        narrow = [narrow_of(checked)]
        offset = 0
        with pq.ParquetWriter(spool.path, out_schema, **_SPOOL_OPTIONS) as writer:
            for batch in _read_ahead(batches):
                checked = _checked_batch(
                    pa.Table.from_batches([batch]), spec, keep_payloads, offset
                )
                writer.write_table(checked.to_arrow(compat_level=pl.CompatLevel.oldest()))
                narrow.append(narrow_of(checked))
                offset += batch.num_rows
                del checked
    except BaseException as exc:
        spool.remove()
        if isinstance(exc, SchedulerError) or not isinstance(
            exc, pl.exceptions.PolarsError | pa.ArrowException | OSError
        ):
            raise
        raise _bad_input(f"cannot read {where}: {_first_line(exc)}") from None
    keyed = pl.concat(narrow)
    del narrow
    stored = pl.scan_parquet(spool.path)

    def exact(rows: pl.Series) -> pl.DataFrame:
        return (
            stored.filter(pl.col("index").is_in(rows.implode()))
            .select("index", "task_type", "dedup_key")
            .collect(engine="streaming")
        )

    marked = _with_winners(keyed, exact).drop(_FINGERPRINT)
    columns = [c for c in out_schema.names if c != _FINGERPRINT]
    return marked, spool, ColumnStream([spool.path], columns)


#: Rows per Arrow batch when a plan is read from a file: small enough that a batch's
#: wide text (keys, payloads) stays a few MB, large enough that per-batch costs vanish.
_READ_BATCH = 32_768

#: How the private file of checked rows is written: it is read once more, on this machine,
#: so it is not compressed, and nothing reads its statistics.
_SPOOL_OPTIONS: dict[str, Any] = {
    "compression": "none",
    "write_statistics": False,
    "use_dictionary": False,
}

#: The error columns of a prepared row.
_ERRORS = ("error_kind", "error_field", "error")


def _read_ahead(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """``items``, produced by a thread of their own up to ``depth`` ahead: reading and
    decoding the next batch (Arrow releases the GIL) overlaps checking this one.  An
    error raised while producing is raised here, in order; a consumer that stops early
    stops the thread."""
    import queue
    import threading

    box: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        box.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put(("end", None))
        except BaseException as exc:  # handed to the consumer, raised there
            box.put(("error", exc))

    thread = threading.Thread(target=produce, name="taskmill-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            what, value = box.get()
            if what == "end":
                return
            if what == "error":
                raise value
            yield value
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            with contextlib.suppress(queue.Empty):
                box.get(timeout=0.1)
        thread.join()


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
    return checked.with_columns(_fingerprint().alias(_FINGERPRINT)).collect()


def _pinned_batches(
    files: list[Path],
    pinned: list[tuple[int, int, int, int]],
    columns: list[str] | None = None,
) -> Iterator[pa.RecordBatch]:
    """The rows of Parquet files as Arrow batches, each file read through one descriptor
    whose identity must equal ``pinned``, checked again after every batch: every pass
    over a plan reads the same bytes, or the batch stops naming the file."""
    import pyarrow.parquet as pq

    for path, identity in zip(files, pinned, strict=True):
        with open(path, "rb") as fh:
            _check_pinned(path, fh.fileno(), identity)
            try:
                # read column chunk by column chunk, not whole row groups at once
                handle = pq.ParquetFile(fh, pre_buffer=False, buffer_size=1 << 20)
                for batch in handle.iter_batches(batch_size=_READ_BATCH, columns=columns):
                    _check_pinned(path, fh.fileno(), identity)
                    yield batch
            except (pa.ArrowException, OSError) as exc:
                _check_pinned(path, fh.fileno(), identity)
                raise _bad_input(f"cannot read {path}: {_first_line(exc)}") from None


def _check_pinned(path: Path, fd: int, pinned: tuple[int, int, int, int]) -> None:
    if _identity(fd) != pinned:
        raise _bad_input(
            f"the Parquet input {path} changed while the batch was submitted (keys and "
            "payloads would come from different versions); nothing more is written"
        )


def _identity(path: Path | int) -> tuple[int, int, int, int]:
    """What tells one version of a file from another: device, inode, size, mtime."""
    st = os.stat(path) if not isinstance(path, int) else os.fstat(path)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


#: A hidden column of table input: per row, the first input column whose text is not
#: valid UTF-8 (that row fails with ``invalid_encoding``; its bad value never goes on).
BAD_TEXT = "__taskmill_bad_text"


def _is_native_panic(exc: BaseException) -> bool:
    """A Rust panic surfacing from polars (``pyo3_runtime.PanicException``, a BaseException)."""
    return type(exc).__name__ == "PanicException"


def _to_polars(x: Any) -> pl.DataFrame:
    """Any table-like input as a polars DataFrame (Arrow-backed, no per-row objects).

    Text that is not valid UTF-8 (Arrow does not check it; Python strings may hold lone
    surrogates) is nulled and named in :data:`BAD_TEXT`, so only those rows fail.
    """
    if isinstance(x, pl.LazyFrame):
        x = x.collect()
    if isinstance(x, pl.DataFrame):
        return _from_arrow(x.to_arrow(), x)
    if isinstance(x, pa.RecordBatchReader):
        x = x.read_all()
    if isinstance(x, pa.RecordBatch):
        x = pa.Table.from_batches([x])
    if isinstance(x, pa.Table):
        _check_names(x.column_names)
        return _from_arrow(x)
    if type(x).__module__.split(".")[0] == "pandas":
        _check_names([str(c) for c in x.columns])
        return _from_pandas(x)
    return _to_polars(pa.RecordBatchReader.from_stream(x))


def _check_names(names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _bad_input(f"duplicate column names: {', '.join(map(repr, dupes))}", dupes[0])


def _from_arrow(table: pa.Table, frame: pl.DataFrame | None = None) -> pl.DataFrame:
    """``table`` as polars, with invalid text nulled and named (``frame``: the same data,
    already in polars, used as it is when all of its text is valid)."""
    table, bad = _null_invalid_text(table)
    if frame is None or bad is not None:
        frame = _arrow_to_polars(table)
    if bad is not None:
        frame = frame.with_columns(pl.Series(BAD_TEXT, bad, dtype=pl.String))
    return frame


def _has_decimal256(kind: pa.DataType) -> bool:
    if pa.types.is_decimal256(kind):
        return True
    return any(_has_decimal256(kind.field(i).type) for i in range(kind.num_fields))


def _arrow_to_polars(table: pa.Table) -> pl.DataFrame:
    """``pl.DataFrame(table)``; a column polars cannot read is named in a clear error."""
    for column in table.schema:  # polars panics on these: refuse them before it sees them
        if _has_decimal256(column.type):
            raise _bad_input(
                f"column {column.name!r} has type {column.type}, which taskmill cannot read "
                "(256-bit decimals; cast it to decimal128 or to a string)",
                column.name,
            )
    try:
        return pl.DataFrame(table)
    except BaseException as exc:
        if not (isinstance(exc, Exception) or _is_native_panic(exc)):
            raise
        for i, column in enumerate(table.schema):
            try:
                pl.DataFrame(table.select([i]))
            except BaseException as col_exc:
                if not (isinstance(col_exc, Exception) or _is_native_panic(col_exc)):
                    raise
                raise _bad_input(
                    f"column {column.name!r} has type {column.type}, which taskmill cannot read "
                    f"({_first_line(col_exc)})",
                    column.name,
                ) from None
        raise _bad_input(f"the input cannot be read as a table: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:200]


def _invalid_text_rows(column: pa.ChunkedArray) -> set[int]:
    """Rows of ``column`` whose text (at any depth) is not valid UTF-8."""
    try:
        column.validate(full=True)
        return set()
    except pa.ArrowInvalid:
        pass
    rows: set[int] = set()
    offset = 0
    for chunk in column.chunks:
        rows.update(offset + r for r in _invalid_rows_in(chunk))
        offset += len(chunk)
    return rows


def _null_rows(column: pa.ChunkedArray, rows: list[int]) -> pa.Array:
    """``column`` with ``rows`` set to null (any type: spans of it joined by nulls)."""
    array = column.combine_chunks()
    pieces: list[pa.Array] = []
    start = 0
    for r in rows:
        pieces.append(array.slice(start, r - start))
        pieces.append(pa.nulls(1, array.type))
        start = r + 1
    pieces.append(array.slice(start))
    return pa.concat_arrays(pieces)


def _invalid_rows_in(array: pa.Array) -> list[int]:
    kind = array.type
    if pa.types.is_dictionary(kind):
        array = array.dictionary_decode()
        kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        as_bytes = array.cast(
            pa.binary_view()
            if pa.types.is_string_view(kind)
            else pa.binary()
            if pa.types.is_string(kind)
            else pa.large_binary()
        )
        out = []
        for r, value in enumerate(as_bytes.to_pylist()):
            if value is None:
                continue
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                out.append(r)
        return out
    # nested: halve until the invalid rows are found (valid halves are skipped whole)
    found: list[int] = []

    def search(lo: int, hi: int) -> None:
        try:
            array.slice(lo, hi - lo).validate(full=True)
            return
        except pa.ArrowInvalid:
            pass
        if hi - lo == 1:
            found.append(lo)
            return
        mid = (lo + hi) // 2
        search(lo, mid)
        search(mid, hi)

    search(0, len(array))
    return found


def _from_pandas(x: Any) -> pl.DataFrame:
    try:
        return pl.from_pandas(x, nan_to_null=True)
    except UnicodeEncodeError:
        pass
    # a text column holds a string that is not valid Unicode (a lone surrogate, as
    # os.listdir gives for a file name that is not UTF-8): null it, name it, go on
    x = x.copy()
    bad: list[str | None] = [None] * len(x)
    for name in x.columns:
        if x[name].dtype != object:
            continue
        values = x[name].tolist()
        hits = [r for r, v in enumerate(values) if isinstance(v, str) and not encodes(v)]
        for r in hits:
            bad[r] = bad[r] or str(name)
            values[r] = None
        if hits:
            x[name] = values
    frame = pl.from_pandas(x, nan_to_null=True)
    return frame.with_columns(pl.Series(BAD_TEXT, bad, dtype=pl.String))


# --------------------------------------------------------------------------- lists


def _from_submissions(subs: Iterable[Any], defaults: Defaults) -> pl.DataFrame:
    """Walk a list of submissions once, checking each and building columns."""
    cols: dict[str, list[Any]] = {name: [] for name in CANONICAL}
    kinds: list[str | None] = []
    fields: list[str | None] = []
    errors: list[str | None] = []

    def shown(value: Any, kind: type) -> Any:
        if not isinstance(value, kind) or isinstance(value, bool):
            return None
        if isinstance(value, str) and not encodes(value):  # shown escaped, never stored
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value

    task_types, keys, groups, priorities = (
        cols["task_type"],
        cols["dedup_key"],
        cols["group"],
        cols["priority"],
    )
    payloads, labels, strategies, retries = (
        cols["payload"],
        cols["label"],
        cols["on_duplicate"],
        cols["max_retries"],
    )
    rb, wb, rx, tx = (cols[f] for f in EXPECTED_FIELDS)
    starts, expiries = cols["run_after"], cols["expires_at"]
    d_group, d_priority, d_strategy = defaults.group, defaults.priority, defaults.on_duplicate.value
    for sub in subs:
        # the common case, checked inline; anything unusual goes through check_submission
        if type(sub) is TaskSubmission:
            tt, key, group, prio, payload = (
                sub.task_type,
                sub.dedup_key,
                sub.group,
                sub.priority,
                sub.payload,
            )
            e1, e2, e3, e4 = (
                sub.expected_read_bytes,
                sub.expected_write_bytes,
                sub.expected_net_rx_bytes,
                sub.expected_net_tx_bytes,
            )
            if (
                type(tt) is str
                and 0 < len(tt) <= MAX_KEY_LENGTH
                and (tt.isascii() or encodes(tt))  # inline: the hot path
                and "\x00" not in tt
                and (
                    key is None
                    or (
                        type(key) is str
                        and 0 < len(key) <= MAX_KEY_LENGTH
                        and (key.isascii() or encodes(key))
                        and "\x00" not in key
                    )
                )
                and (
                    group is None
                    or (
                        type(group) is str
                        and len(group) <= MAX_GROUP_LENGTH
                        and (group.isascii() or encodes(group))
                        and "\x00" not in group
                    )
                )
                and (prio is None or (type(prio) is int and 0 <= prio <= 255))
                and type(e1) is int
                and type(e2) is int
                and type(e3) is int
                and type(e4) is int
                and 0 <= e1 <= MAX_INT64
                and 0 <= e2 <= MAX_INT64
                and 0 <= e3 <= MAX_INT64
                and 0 <= e4 <= MAX_INT64
                and sub.label is None
                and sub.on_duplicate is None
                and sub.max_retries is None
                and sub.run_after is None
                and sub.expires_at is None
                and (
                    payload is None
                    or (type(payload) is bytes and len(payload) <= MAX_PAYLOAD_BYTES)
                )
            ):
                task_types.append(tt)
                keys.append(key)
                groups.append(d_group if group is None else group)
                priorities.append(d_priority if prio is None else prio)
                payloads.append(payload)
                labels.append(None)
                rb.append(e1)
                wb.append(e2)
                rx.append(e3)
                tx.append(e4)
                strategies.append(d_strategy)
                retries.append(None)
                starts.append(defaults.run_after)
                expiries.append(defaults.expires_at)
                kinds.append(None)
                fields.append(None)
                errors.append(None)
                continue
        try:
            row = check_submission(sub, defaults)
        except InvalidSubmission as exc:
            kinds.append(exc.kind)
            fields.append(exc.field)
            errors.append(exc.message)
            ok = isinstance(sub, TaskSubmission)
            for name in CANONICAL:
                value = getattr(sub, name, None) if ok else None
                if name in ("payload", *_TIMES):  # times are shown once checked
                    value = None
                elif name in _INTS:
                    value = shown(value, int)
                    if value is not None and not -(2**63) <= value <= MAX_INT64:
                        value = None
                elif name == "on_duplicate":
                    value = (
                        value.value if isinstance(value, DuplicateStrategy) else shown(value, str)
                    )
                else:
                    value = shown(value, str)
                cols[name].append(value)
            if ok:
                if cols["group"][-1] is None:
                    cols["group"][-1] = defaults.group
                if sub.priority is None:
                    cols["priority"][-1] = defaults.priority
                if sub.on_duplicate is None:
                    cols["on_duplicate"][-1] = defaults.on_duplicate.value
            continue
        kinds.append(None)
        fields.append(None)
        errors.append(None)
        task_types.append(row.task_type)
        keys.append(row.dedup_key)
        groups.append(row.group)
        priorities.append(row.priority)
        payloads.append(row.payload)
        labels.append(row.label)
        rb.append(row.expected_read_bytes)
        wb.append(row.expected_write_bytes)
        rx.append(row.expected_net_rx_bytes)
        tx.append(row.expected_net_tx_bytes)
        strategies.append(row.on_duplicate.value)
        retries.append(row.max_retries)
        starts.append(row.run_after)
        expiries.append(row.expires_at)
    frame = pl.DataFrame(
        {**cols, "error_kind": kinds, "error_field": fields, "error": errors},
        schema={**CANONICAL, "error_kind": pl.String, "error_field": pl.String, "error": pl.String},
    )
    return frame.with_row_index("index").with_columns(pl.col("index").cast(pl.Int64))


# --------------------------------------------------------------------------- tables


Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)


def _canonical_columns(df: Frame, spec: BatchSubmission) -> Frame:
    """Rename mapped columns, pack payload columns, check names and types."""
    schema = df.collect_schema()
    names = schema.names()
    mapping = dict(spec._columns)
    for target, source in mapping.items():
        if source not in names:
            raise _bad_input(
                f"columns(): column {source!r} (mapped to {target}) is not in the input "
                f"(columns: {', '.join(names)})",
                source,
            )
    sources = set(mapping.values())
    for name in names:
        if name in mapping and name not in sources and mapping[name] != name:
            raise _bad_input(
                f"column {name!r} is also the target of columns({name}={mapping[name]!r}); "
                "rename or drop one",
                name,
            )
    packed = list(spec._payload_columns)
    for name in packed:
        if name not in names:
            raise _bad_input(f"payload_columns(): column {name!r} is not in the input", name)
    if packed and ("payload" in names or "payload" in mapping):
        raise _bad_input("payload_columns() cannot be combined with a payload column", "payload")
    renames = {source: target for target, source in mapping.items()}
    unknown = [
        name
        for name in names
        if name not in packed and name not in renames and name != BAD_TEXT and name not in CANONICAL
    ]
    if unknown:
        raise UnknownColumns(unknown)
    exprs: list[pl.Expr] = []
    if packed:
        exprs.append(_packed_payload(schema, packed))
        exprs.append(_payload_check(schema, packed))
    for source, target in renames.items():
        exprs.append(pl.col(source).alias(target))
    for name in names:
        if name in CANONICAL and name not in renames and name not in mapping:
            exprs.append(pl.col(name))
    if BAD_TEXT in names:
        exprs.append(pl.col(BAD_TEXT))
    out = df.select(exprs)
    return _coerce_types(out, {v: k for k, v in renames.items()})


def _payload_source(schema: pl.Schema, spec: BatchSubmission) -> tuple[list[str], pl.Expr]:
    """The raw columns a payload is made of, and the expression making it (binary)."""
    if spec._payload_columns:
        cols = list(spec._payload_columns)
        return cols, _packed_payload(schema, cols)
    source = spec._columns.get("payload")
    if source is None and "payload" in schema and "payload" not in spec._columns.values():
        source = "payload"
    if source is None:
        return [], pl.lit(None, dtype=pl.Binary).alias("payload")
    return [source], pl.col(source).cast(pl.Binary).alias("payload")


def _packed_payload(schema: pl.Schema, columns: list[str]) -> pl.Expr:
    for name in columns:
        dtype = schema[name]
        if _no_json_form(dtype):
            raise _bad_input(
                f"payload_columns(): column {name!r} has type {dtype}, which has no JSON form "
                "(binary data, at any depth, cannot be packed; pass it as the payload column)",
                name,
            )
    return pl.struct(columns).struct.json_encode().cast(pl.Binary).alias("payload")


def _no_json_form(dtype: pl.DataType | DataTypeClass) -> bool:
    """Whether a value of ``dtype`` (at any depth) has no JSON form: binary or objects."""
    if dtype == pl.Binary or isinstance(dtype, pl.Object):
        return True
    if isinstance(dtype, pl.List | pl.Array):
        return _no_json_form(dtype.inner)
    if isinstance(dtype, pl.Struct):
        return any(_no_json_form(f.dtype) for f in dtype.fields)
    return False


def _non_finite(expr: pl.Expr, dtype: pl.DataType | DataTypeClass) -> pl.Expr | None:
    """True where a value (at any depth) is NaN or infinite: JSON has no such numbers."""
    if dtype.is_float():
        return expr.is_nan() | expr.is_infinite()
    if isinstance(dtype, pl.List | pl.Array):
        inner = _non_finite(pl.element(), dtype.inner)
        if inner is None:
            return None
        as_list = expr if isinstance(dtype, pl.List) else expr.cast(pl.List(dtype.inner))
        return as_list.list.eval(inner.fill_null(False)).list.any()
    if isinstance(dtype, pl.Struct):
        parts = [_non_finite(expr.struct.field(f.name), f.dtype) for f in dtype.fields]
        found = [p.fill_null(False) for p in parts if p is not None]
        return pl.any_horizontal(found) if found else None
    return None


#: A hidden column of table input: a priority given as text that is no tier name.
BAD_PRIORITY = "__taskmill_bad_priority"


def _tier_or_null(text: pl.Expr) -> pl.Expr:
    """A text priority as its number: a tier name (any case) or digits; else null."""
    name = text.str.strip_chars().str.to_uppercase()
    return (
        name.replace_strict(PRIORITY_TIERS, default=None, return_dtype=pl.Int64)
        .fill_null(name.str.to_integer(strict=False))
        .cast(pl.Int64)
    )


#: A hidden column of table input packed with ``payload_columns()``: true where a packed
#: value is NaN or infinite (JSON has no such numbers; the row fails as ``submit()`` would).
BAD_PAYLOAD = "__taskmill_bad_payload"


def _payload_check(schema: pl.Schema, columns: list[str]) -> pl.Expr:
    found = [
        e.fill_null(False)
        for name in columns
        if (e := _non_finite(pl.col(name), schema[name])) is not None
    ]
    return (pl.any_horizontal(found) if found else pl.lit(False)).alias(BAD_PAYLOAD)


class ColumnStream:
    """Columns of a Parquet input, read again in input order, chunk by chunk.

    A large plan is prepared without its payloads (only their sizes, to validate them),
    and its other columns are spooled once checked, so the whole plan never sits in
    memory; each chunk's rows and payloads are read when the chunk is merged.
    ``columns=None`` reads every column as it is; otherwise ``expr`` makes the one
    column (the payload) out of ``columns``.
    """

    def __init__(
        self,
        files: list[Path],
        columns: list[str] | None,
        expr: pl.Expr | None = None,
        pinned: list[tuple[int, int, int, int]] | None = None,
    ) -> None:
        self.files = files
        self.columns = columns
        self.expr = expr
        self.pinned = pinned or [_identity(f) for f in files]
        self._batches = self._read()
        self._buffer: pl.DataFrame | None = None

    def _read(self) -> Generator[pl.DataFrame, None, None]:
        for batch in _pinned_batches(self.files, self.pinned, self.columns):
            if self.expr is None:
                frame = pl.from_arrow(batch)
                assert isinstance(frame, pl.DataFrame)
                yield frame
            else:  # text that is not UTF-8 is nulled (its row failed in pass 1)
                yield _from_arrow(pa.Table.from_batches([batch])).select(self.expr)

    def close(self) -> None:
        """Stop reading (closes the file being read)."""
        self._batches.close()

    def take(self, n: int) -> pl.DataFrame:
        """The next ``n`` rows."""
        if self.columns == []:  # the plan has no payloads
            return pl.DataFrame({"payload": pl.Series([None] * n, dtype=pl.Binary)})
        pieces: list[pl.DataFrame] = []
        while n > 0:
            if self._buffer is None or self._buffer.height == 0:
                try:
                    self._buffer = next(self._batches)
                except StopIteration:
                    raise _bad_input("the Parquet input changed while it was read") from None
            piece = self._buffer.head(n)
            self._buffer = self._buffer.slice(piece.height)
            pieces.append(piece)
            n -= piece.height
        if not pieces:
            return self._empty()
        return pl.concat(pieces)

    def _empty(self) -> pl.DataFrame:
        if self.expr is not None:
            return pl.DataFrame({"payload": pl.Series([], dtype=pl.Binary)})
        return pl.scan_parquet(self.files[0]).head(0).collect()


def _coerce_types(df: Frame, source_of: Mapping[str, str]) -> Frame:
    """Cast each canonical column to its type, or raise naming the column."""
    exprs = []
    schema = df.collect_schema()
    for name in schema.names():
        dtype = schema[name]
        if name in (BAD_TEXT, BAD_PAYLOAD):
            exprs.append(pl.col(name))
            continue
        want = CANONICAL[name]
        shown = source_of.get(name, name)
        label = shown if shown == name else f"{shown} (as {name})"
        if dtype == want:
            exprs.append(pl.col(name))
        elif dtype == pl.Null:
            exprs.append(pl.col(name).cast(want))
        elif name == "payload" and dtype in (pl.String, pl.Binary):
            exprs.append(pl.col(name).cast(pl.Binary))
        elif name in _TEXT and isinstance(dtype, pl.String | pl.Categorical | pl.Enum):
            exprs.append(pl.col(name).cast(pl.String))
        elif name == "priority" and isinstance(dtype, pl.String | pl.Categorical | pl.Enum):
            # tier names ("high", any case) as a column: the same names as tm.Priority
            text = pl.col(name).cast(pl.String)
            exprs.append(_tier_or_null(text).alias(name))
            exprs.append(
                pl.when(text.is_not_null() & _tier_or_null(text).is_null())
                .then(text)
                .alias(BAD_PRIORITY)
            )
        elif name in _INTS and dtype.is_integer():
            # UInt64 stays unsigned until checked: a value past the Int64 range fails its row
            exprs.append(pl.col(name) if dtype == pl.UInt64 else pl.col(name).cast(pl.Int64))
        elif name in _INTS and dtype.is_float():
            exprs.append(pl.col(name).cast(pl.Float64))
        elif name in _TIMES and isinstance(dtype, pl.Datetime):
            # naive means UTC; an aware one is the same instant in any zone
            exprs.append((pl.col(name).dt.epoch("us") / 1_000_000).alias(name))
        elif name in _TIMES and dtype == pl.Date:
            exprs.append(pl.col(name).cast(pl.Datetime("us")).dt.epoch("s").cast(pl.Float64))
        elif name in _TIMES and (dtype.is_integer() or dtype.is_float()):
            exprs.append(pl.col(name).cast(pl.Float64))  # Unix seconds
        else:
            expected = "a datetime, a date or Unix seconds" if name in _TIMES else str(want)
            raise _bad_input(
                f"column {label} has type {dtype}; expected {expected}"
                + (" (or binary/string)" if name == "payload" else ""),
                shown,
            )
    out = df.select(exprs)
    present = set(schema.names())
    missing = [pl.lit(None, dtype=CANONICAL[n]).alias(n) for n in CANONICAL if n not in present]
    if missing:
        out = out.with_columns(missing)
    if "task_type" not in present:
        raise NoTaskType()
    if BAD_TEXT not in present:
        out = out.with_columns(pl.lit(None, dtype=pl.String).alias(BAD_TEXT))
    if BAD_PAYLOAD not in present:
        out = out.with_columns(pl.lit(False).alias(BAD_PAYLOAD))
    if BAD_PRIORITY not in out.collect_schema().names():
        out = out.with_columns(pl.lit(None, dtype=pl.String).alias(BAD_PRIORITY))
    return out.select([*CANONICAL, BAD_TEXT, BAD_PAYLOAD, BAD_PRIORITY])


def _check_table(df: Frame, defaults: Defaults, *, offset: int = 0) -> Frame:
    """Vectorised validation: the same kinds and messages as ``check_submission``.

    Pure expressions, so a LazyFrame stays lazy (each batch of a plan read from a file
    is checked in one query); rows are numbered from ``offset``."""
    df = df.with_columns(  # batch-wide times for the rows that set none
        pl.col("run_after").fill_null(pl.lit(defaults.run_after, dtype=pl.Float64)),
        pl.col("expires_at").fill_null(pl.lit(defaults.expires_at, dtype=pl.Float64)),
    )
    schema = df.collect_schema()
    float_ints = {n for n in _INTS if schema[n].is_float()}  # given as floats: must be whole
    checks: list[tuple[pl.Expr, str, str | pl.Expr, pl.Expr]] = []

    def text_checks(name: str, kind: str, limit: int, *, required: bool, empty_ok: bool) -> None:
        col = pl.col(name)
        if required:
            checks.append((col.is_null(), kind, name, pl.lit(f"{name} is missing")))
        nul = col.str.contains("\x00", literal=True)
        checks.append((nul, "invalid_encoding", name, pl.lit(NUL_MESSAGE.format(name))))
        if not empty_ok:
            checks.append((col == "", kind, name, pl.lit(f"{name} is an empty string")))
        checks.append(
            (
                col.str.len_chars() > limit,
                kind,
                name,
                pl.lit(f"{name} is longer than {limit:,} characters"),
            )
        )

    checks.append(
        (
            pl.col(BAD_TEXT).is_not_null(),
            "invalid_encoding",
            pl.col(BAD_TEXT),
            pl.format("{} is not valid UTF-8", pl.col(BAD_TEXT)),
        )
    )
    text_checks("task_type", "invalid_task_type", MAX_KEY_LENGTH, required=True, empty_ok=False)
    text_checks("dedup_key", "invalid_dedup_key", MAX_KEY_LENGTH, required=False, empty_ok=False)
    text_checks("group", "invalid_group", MAX_GROUP_LENGTH, required=False, empty_ok=True)
    text_checks("label", "invalid_label", MAX_GROUP_LENGTH, required=False, empty_ok=True)

    def int_checks(name: str, kind: str, low: int, high: int) -> None:
        col = pl.col(name)
        if name in float_ints:
            whole = col.is_finite() & (col == col.floor())
            checks.append(
                (
                    col.is_not_null() & ~whole,
                    kind,
                    name,
                    pl.lit(f"{name} must be an integer, got float"),
                )
            )
            col = pl.when(whole).then(col)
        checks.append(
            (
                (col < low) | (col > high),
                kind,
                name,
                pl.format(
                    f"{name} must be within {low}..{high}, got {{}}",
                    col.cast(pl.Int64, strict=False) if name in float_ints else col,
                ),
            )
        )

    checks.append(
        (
            pl.col(BAD_PRIORITY).is_not_null(),
            "invalid_priority",
            "priority",
            pl.format(
                "priority must be within 0..255 or a tier name "
                f"({', '.join(t.lower() for t in PRIORITY_TIERS)}), got '{{}}'",
                pl.col(BAD_PRIORITY),
            ),
        )
    )
    int_checks("priority", "invalid_priority", 0, 255)
    for name in EXPECTED_FIELDS:
        int_checks(name, "invalid_expected_bytes", 0, MAX_INT64)
    strategy = pl.col("on_duplicate").str.strip_chars().str.to_lowercase()
    checks.append(
        (
            pl.col("on_duplicate").is_not_null() & ~strategy.is_in(_STRATEGIES),
            "invalid_strategy",
            "on_duplicate",
            pl.format(
                "on_duplicate must be one of skip, supersede, reject; got '{}'",
                pl.col("on_duplicate"),
            ),
        )
    )
    int_checks("max_retries", "invalid_max_retries", 0, 1000)
    for name in _TIMES:
        col = pl.col(name)
        checks.append(
            (
                col.is_not_null() & ~(col.is_finite() & (col >= 0) & (col <= MAX_TIME)),
                f"invalid_{name}",
                name,
                pl.format(f"{name} must be a time between 1970 and 9999, got {{}}", col),
            )
        )
    checks.append(
        (
            pl.col("expires_at") <= pl.col("run_after"),
            "invalid_expires_at",
            "expires_at",
            pl.lit("expires_at must be later than run_after (the task could never start)"),
        )
    )
    checks.append((pl.col(BAD_PAYLOAD), "invalid_payload", "payload", pl.lit(NON_FINITE_PAYLOAD)))
    size = pl.col("_payload_size") if "_payload_size" in schema else pl.col("payload").bin.size()
    checks.append(
        (
            size > MAX_PAYLOAD_BYTES,
            "payload_too_large",
            "payload",
            pl.format(
                f"payload is {{}} bytes, over the {MAX_PAYLOAD_BYTES:,}-byte limit",
                _thousands(size),
            ),
        )
    )

    kind = pl.lit(None, dtype=pl.String)
    fld = pl.lit(None, dtype=pl.String)
    msg = pl.lit(None, dtype=pl.String)
    for cond, k, f, m in reversed(checks):  # the first failing check wins
        cond = cond.fill_null(False)
        kind = pl.when(cond).then(pl.lit(k)).otherwise(kind)
        fld = pl.when(cond).then(pl.lit(f) if isinstance(f, str) else f).otherwise(fld)
        msg = pl.when(cond).then(m).otherwise(msg)
    # negative out-of-range expected bytes stay shown as given; ints are cast after checks
    int_cast = [
        pl.when(pl.col(n).is_finite() & (pl.col(n) == pl.col(n).floor()))
        .then(pl.col(n))
        .cast(pl.Int64, strict=False)
        .alias(n)
        if n in float_ints
        else pl.col(n).cast(pl.Int64, strict=False)  # past-range UInt64 rows have failed
        for n in _INTS
    ]
    out = df.with_columns(
        kind.alias("error_kind"), fld.alias("error_field"), msg.alias("error")
    ).drop(BAD_TEXT, BAD_PAYLOAD)
    out = out.with_columns(
        pl.col("group").fill_null(pl.lit(defaults.group, dtype=pl.String)),
        pl.when(pl.col(BAD_PRIORITY).is_null())  # a bad tier name shows as no priority
        .then(pl.col("priority").fill_null(defaults.priority))
        .alias("priority"),
        pl.col("on_duplicate")
        .str.strip_chars()
        .str.to_lowercase()
        .fill_null(defaults.on_duplicate.value),
        *(pl.col(n).fill_null(0) for n in EXPECTED_FIELDS),
    ).with_columns(int_cast)
    out = out.drop(BAD_PRIORITY)
    return out.with_row_index("index", offset=offset).with_columns(pl.col("index").cast(pl.Int64))


def _thousands(expr: pl.Expr) -> pl.Expr:
    """An integer expression formatted with thousands separators (as ``f"{n:,}"``)."""
    s = expr.cast(pl.String)
    rev = s.str.reverse()
    grouped = rev.str.replace_all(r"(\d{3})", "$1,").str.strip_suffix(",").str.reverse()
    return grouped


# --------------------------------------------------------------------------- prepare


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
    settings = (spec._chunk_size, spec._transaction_limit)
    if isinstance(x, str | os.PathLike):
        return _prepare_parquet(Path(x), spec)
    if _is_stream(x):
        # read batch by batch: past IN_MEMORY_ROWS the checked rows, payloads included,
        # go to a private Parquet file, so a stream is never held whole in memory
        schema, batches, where = _stream_batches(x)
        head, rest = _head(batches, IN_MEMORY_ROWS)
        if rest is None:
            return _in_memory(schema, head, spec)
        frame, checked, stored = _prepare_batches(
            schema, rest, spec, keep_payloads=True, where=where
        )
        return Prepared(frame, *settings, checked=checked, stored=stored)
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
    return Prepared(_mark_winners(df), *settings)


def _prepare_parquet(path: Path, spec: BatchSubmission) -> Prepared:
    """A Parquet plan (a file or a folder), read twice through pinned descriptors: once
    to validate and dedup, then chunk by chunk for the payloads while merging."""
    files, schema = _parquet_plan(path)
    pinned = [_identity(f) for f in files]
    head, rest = _head(_pinned_batches(files, pinned), IN_MEMORY_ROWS)
    if rest is None:  # a small plan: read once, whole, and prepared in memory
        _check_unchanged(files, pinned)
        return _in_memory(schema, head, spec)
    frame, checked, stored = _prepare_batches(
        schema, rest, spec, keep_payloads=False, where=f"Parquet input {path}"
    )
    try:
        _check_unchanged(files, pinned)
    except SchedulerError:
        checked.remove()
        raise
    columns, expr = _payload_source(_arrow_to_polars(_empty(schema)).schema, spec)
    return Prepared(
        frame,
        spec._chunk_size,
        spec._transaction_limit,
        payloads=ColumnStream(files, columns, expr, pinned),
        checked=checked,
        stored=stored,
    )


#: A plan read from a file or a stream with at most this many rows is prepared in memory,
#: like a DataFrame (one read, no private file: faster for small plans); a larger one
#: streams through a private file of checked rows, keeping ~30 bytes a row in memory.
IN_MEMORY_ROWS = 200_000


def _head(
    batches: Iterable[pa.RecordBatch], limit: int
) -> tuple[list[pa.RecordBatch], Iterator[pa.RecordBatch] | None]:
    """The first batches, up to just past ``limit`` rows, and an iterator over every
    batch (those first ones included) when the input goes past ``limit`` — ``None``
    when the first batches are all of it."""
    source = iter(batches)
    head: list[pa.RecordBatch] = []
    rows = 0
    for batch in source:
        head.append(batch)
        rows += batch.num_rows
        if rows > limit:

            def everything() -> Iterator[pa.RecordBatch]:
                while head:  # handed over one by one: none is kept once read
                    yield head.pop(0)
                yield from source

            return [], everything()
    return head, None


def _in_memory(schema: pa.Schema, batches: list[pa.RecordBatch], spec: BatchSubmission) -> Prepared:
    """A small plan, read whole, prepared like an in-memory table."""
    table = pa.Table.from_batches(batches) if batches else _empty(schema)
    df = _check_table(_canonical_columns(_from_arrow(table), spec), spec.defaults)
    return Prepared(_mark_winners(df), spec._chunk_size, spec._transaction_limit)


def _check_unchanged(files: list[Path], pinned: list[tuple[int, int, int, int]]) -> None:
    for f, before in zip(files, pinned, strict=True):
        if _identity(f) != before:
            raise _bad_input(
                f"the Parquet input {f} changed while it was read; nothing was written"
            )


def _empty(schema: pa.Schema) -> pa.Table:
    """An empty table of ``schema`` (``Schema.empty_table`` imports pandas: ~0.7 s)."""
    return pa.Table.from_batches([], schema=schema)


def _stream_batches(x: Any) -> tuple[pa.Schema, Iterator[pa.RecordBatch], str]:
    """A streaming input's schema, its Arrow batches, and its name for errors."""
    if isinstance(x, pl.LazyFrame):
        try:
            schema = x.collect_schema()
        except pl.exceptions.PolarsError as exc:
            raise _bad_input(f"the LazyFrame cannot be computed: {_first_line(exc)}") from None
        empty = pl.DataFrame(schema=schema).to_arrow(compat_level=pl.CompatLevel.oldest())

        def frames() -> Iterator[pa.RecordBatch]:
            # lazy: nothing runs ahead of this loop, so batches never pile up unread
            for df in x.collect_batches(lazy=True, chunk_size=_READ_BATCH):
                yield from df.to_arrow(compat_level=pl.CompatLevel.oldest()).to_batches()

        return empty.schema, frames(), "the LazyFrame"
    reader = x if isinstance(x, pa.RecordBatchReader) else pa.RecordBatchReader.from_stream(x)
    _check_names(reader.schema.names)
    return reader.schema, iter(reader), "the stream"


def _is_stream(x: Any) -> bool:
    """A streaming table input: an Arrow stream, a polars LazyFrame, or any object with
    ``__arrow_c_stream__`` that is not an in-memory table."""
    if isinstance(x, pa.RecordBatchReader | pl.LazyFrame):
        return True
    if isinstance(x, pl.DataFrame | pa.Table | pa.RecordBatch):
        return False
    if type(x).__module__.split(".")[0] == "pandas":
        return False
    return hasattr(x, "__arrow_c_stream__")


def _null_invalid_text(table: pa.Table) -> tuple[pa.Table, list[str | None] | None]:
    """``table`` with text that is not valid UTF-8 nulled, and per row the first column
    that held such text (``None`` for the list when every value is valid)."""
    bad: list[str | None] | None = None
    for i, name in enumerate(table.column_names):
        rows = _invalid_text_rows(table.column(i))
        if not rows:
            continue
        bad = bad or [None] * table.num_rows
        for r in rows:
            bad[r] = bad[r] or name
        table = table.set_column(i, name, _null_rows(table.column(i), sorted(rows)))
    return table, bad


#: A hidden column of a plan kept on disk: a 64-bit fingerprint of each valid row's key.
_FINGERPRINT = "__taskmill_key_fingerprint"


def _fingerprint(schema: pl.Schema | None = None) -> pl.Expr:
    """A 64-bit fingerprint of ``(task_type, dedup_key)`` for valid keyed rows, else null
    (stable within the process, which is all in-batch dedup needs)."""
    keyed = pl.col("error_kind").is_null() & pl.col("dedup_key").is_not_null()
    return pl.when(keyed).then(pl.col("task_type").hash(7) ^ pl.col("dedup_key").hash(11))


def _mark_winners(df: pl.DataFrame) -> pl.DataFrame:
    """:func:`_with_winners` for a frame that holds its keys."""
    keyed = df.select("index", "error_kind", _fingerprint().alias(_FINGERPRINT))
    marks = _with_winners(
        keyed,
        lambda rows: df.filter(pl.col("index").is_in(rows.implode())).select(
            "index", "task_type", "dedup_key"
        ),
    )
    return df.with_columns(marks["winner_index"], marks["winner"])


def _repeated(values: pl.Series) -> pl.Series:
    """True where a non-null value occurs more than once.  Found by sorting (a few bytes
    per row) rather than ``is_duplicated`` (a hash table of every value: ~90 bytes per
    row on a million distinct keys)."""
    order = values.arg_sort(nulls_last=True)
    ordered = values.gather(order)
    same = (ordered == ordered.shift(1)).fill_null(False) | (
        ordered == ordered.shift(-1)
    ).fill_null(False)
    flags = pl.Series("repeated", [False] * 0, dtype=pl.Boolean).extend_constant(
        False, values.len()
    )
    return flags.scatter(order.filter(same), True)


def _with_winners(keyed: pl.DataFrame, exact: Callable[[pl.Series], pl.DataFrame]) -> pl.DataFrame:
    """Inside the batch, the last valid row of each ``(task_type, dedup_key)`` wins.

    ``keyed`` holds ``index``, ``error_kind`` and each row's key fingerprint; keys are
    first told apart by it (cheap on millions of rows), and only the rows whose
    fingerprint repeats — the real duplicates, and any collision — are grouped by the
    exact key, which ``exact(indices)`` fetches (``index``, ``task_type``, ``dedup_key``),
    so a collision can never merge two different keys.  Adds ``winner_index`` and
    ``winner``.
    """
    valid = pl.col("error_kind").is_null()
    repeated = _repeated(keyed[_FINGERPRINT])
    winner_index = keyed["index"].clone().alias("winner_index")  # its own row, unless …
    if repeated.any():
        dupes = exact(keyed["index"].filter(repeated)).select(
            "index", pl.col("index").max().over("task_type", "dedup_key").alias("last")
        )
        winner_index = winner_index.scatter(dupes["index"], dupes["last"])
    return keyed.with_columns(
        pl.when(valid).then(winner_index).alias("winner_index"),
    ).with_columns(
        (valid & (pl.col("winner_index") == pl.col("index"))).fill_null(False).alias("winner"),
    )
