"""Every table-like input -> Arrow batches and polars frames with the canonical columns.

The six forms a plan comes in — a list of :class:`TaskSubmission` (walked in
:mod:`~taskmill.batch.validate`), an Arrow table or stream, a polars DataFrame or
LazyFrame, a pandas frame, a Parquet file or folder — are read here: text that is not
valid UTF-8 is nulled and named, mapped columns renamed, payload columns packed, types
coerced (a bad column type raises, naming the column).  Parquet input is read through
pinned descriptors (every pass reads the same bytes), streams batch by batch with a
read-ahead thread; :class:`Spool` is the private file a large plan's checked rows wait in,
and :class:`ColumnStream` reads them (or a Parquet plan's payloads) again chunk by chunk.
Table input never becomes one Python object per row.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import pyarrow as pa

from ..model import PRIORITY_TIERS, InvalidSubmission
from .payload import _packed_payload, _payload_check
from .submission import BatchSubmission
from .validate import (
    _INTS,
    _TEXT,
    _TIMES,
    BAD_PAYLOAD,
    BAD_PRIORITY,
    BAD_TEXT,
    CANONICAL,
    Frame,
    _bad_input,
    encodes,
)

T = TypeVar("T")


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


def _parquet_plan(path: Path) -> tuple[list[Path], pa.Schema, int]:
    """The files of a Parquet plan, their (one) schema and the rows their footers
    declare, every footer checked."""
    import pyarrow.parquet as pq

    files = _parquet_files(path)
    schema = None
    rows = 0
    for f in files:
        try:
            file_schema = pq.read_schema(f)
            meta = pq.read_metadata(f)
            _check_footer(f, meta)
            rows += meta.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise _bad_input(f"{f} is not a Parquet file ({exc})") from None
        if schema is None:
            schema = file_schema
        elif not file_schema.equals(schema):
            raise _bad_input(f"{f} has different columns from {files[0]}")
    assert schema is not None
    _check_names(schema.names)
    return files, schema, rows


#: Rows per Arrow batch when a plan is read from a file: small enough that a batch's
#: wide text (keys, payloads) stays a few MB, large enough that per-batch costs vanish.
_READ_BATCH = 8_192
#: Rows per Arrow batch when a small plan (read whole) is read from a file.
_SMALL_READ_BATCH = 65_536


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


def _pinned_batches(
    files: list[Path],
    pinned: list[tuple[int, int, int, int]],
    columns: list[str] | None = None,
    *,
    small: bool = False,
) -> Iterator[pa.RecordBatch]:
    """The rows of Parquet files as Arrow batches, each file read through one descriptor
    whose identity must equal ``pinned``, checked again after every batch: every pass
    over a plan reads the same bytes, or the batch stops naming the file.

    A large plan is read in batches of :data:`_READ_BATCH` rows on one thread (memory
    set by the batch); a ``small`` one (read whole anyway) in large batches, its columns
    decoded by Arrow's threads."""
    import pyarrow.parquet as pq

    for path, identity in zip(files, pinned, strict=True):
        with open(path, "rb") as fh:
            _check_pinned(path, fh.fileno(), identity)
            try:
                # read column chunk by column chunk, not whole row groups at once
                handle = pq.ParquetFile(fh, pre_buffer=False, buffer_size=1 << 20)
                for batch in handle.iter_batches(
                    batch_size=_SMALL_READ_BATCH if small else _READ_BATCH,
                    columns=columns,
                    use_threads=small,
                ):
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


def _tier_or_null(text: pl.Expr) -> pl.Expr:
    """A text priority as its number: a tier name (any case) or digits; else null."""
    name = text.str.strip_chars().str.to_uppercase()
    return (
        name.replace_strict(PRIORITY_TIERS, default=None, return_dtype=pl.Int64)
        .fill_null(name.str.to_integer(strict=False))
        .cast(pl.Int64)
    )


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


def _dependencies(name: str, dtype: pl.DataType, label: str) -> pl.Expr:
    """A ``depends_on`` column as its canonical items (``{id, key}``, the other null): a
    list of task ids (integers) or a list of dedup keys (strings)."""
    want = CANONICAL[name]
    inner = dtype.inner if isinstance(dtype, pl.List | pl.Array) else None
    col = pl.col(name)
    if isinstance(dtype, pl.Array) and inner is not None:
        col = col.cast(pl.List(inner))
    if dtype == pl.Null or inner == pl.Null:
        return pl.col(name).cast(want)
    if inner is not None and inner.is_integer():
        item = pl.struct(
            pl.element().cast(pl.Int64, strict=False).alias("id"),
            pl.lit(None, dtype=pl.String).alias("key"),
        )
        return col.list.eval(item).alias(name)
    if isinstance(inner, pl.String | pl.Categorical | pl.Enum):
        item = pl.struct(
            pl.lit(None, dtype=pl.Int64).alias("id"), pl.element().cast(pl.String).alias("key")
        )
        return col.list.eval(item).alias(name)
    raise _bad_input(
        f"column {label} has type {dtype}; expected a list of task ids (integers) or a list "
        "of dedup keys (strings)",
        label,
    )


def _tags(name: str, dtype: pl.DataType, label: str) -> pl.Expr:
    """A ``tags`` column as its canonical pairs (a list of ``{key, value}`` strings): a
    struct of string fields (each field a key; a null field is no such tag, as pandas
    dicts arrive: one field per key seen in the column) or a list of ``{key, value}``
    structs; or a map of strings (an Arrow map).  A pair whose value is null is dropped."""
    text = (pl.String, pl.Categorical, pl.Enum, pl.Null)
    if dtype == pl.Null:
        return pl.col(name).cast(CANONICAL[name])
    pairs: pl.Expr | None = None
    if isinstance(dtype, pl.Struct) and all(isinstance(f.dtype, text) for f in dtype.fields):
        if not dtype.fields:
            return pl.lit(None, dtype=CANONICAL[name]).alias(name)
        items = [
            pl.struct(
                pl.lit(f.name, dtype=pl.String).alias("key"),
                pl.col(name).struct.field(f.name).cast(pl.String).alias("value"),
            )
            for f in dtype.fields
        ]
        pairs = pl.when(pl.col(name).is_not_null()).then(pl.concat_list(items))
    if isinstance(dtype, pl.Map) and all(isinstance(t, text) for t in (dtype.key, dtype.value)):
        pairs = pl.col(name).cast(pl.List(pl.Struct({"key": dtype.key, "value": dtype.value})))
        pairs = pairs.list.eval(
            pl.struct(
                pl.element().struct.field("key").cast(pl.String),
                pl.element().struct.field("value").cast(pl.String),
            )
        )
    inner = dtype.inner if isinstance(dtype, pl.List | pl.Array) else None
    if (
        isinstance(inner, pl.Struct)
        and [f.name for f in inner.fields] == ["key", "value"]
        and all(isinstance(f.dtype, text) for f in inner.fields)
    ):
        col = pl.col(name).cast(pl.List(inner)) if isinstance(dtype, pl.Array) else pl.col(name)
        pairs = col.list.eval(
            pl.struct(
                pl.element().struct.field("key").cast(pl.String),
                pl.element().struct.field("value").cast(pl.String),
            )
        )
    if pairs is None:
        raise _bad_input(
            f"column {label} has type {dtype}; expected a struct of strings (a field per key) "
            "or a map of strings to strings",
            label,
        )
    valued = pl.element().struct.field("value").is_not_null()
    return pairs.list.eval(pl.element().filter(valued)).cast(CANONICAL[name]).alias(name)


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
        elif name == "depends_on":
            exprs.append(_dependencies(name, dtype, label))
        elif name == "tags":
            exprs.append(_tags(name, dtype, label))
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
