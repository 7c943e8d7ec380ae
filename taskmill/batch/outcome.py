"""BatchOutcome: what a batch did to every input row — lists, DataFrames, text and HTML."""

from __future__ import annotations

import html
from functools import cached_property
from typing import Any, Protocol

import polars as pl
import pyarrow as pa

from .. import display
from ..columns import column
from ..model import DuplicateTask, InvalidSubmission, SchedulerError
from .inputs import _to_polars
from .prepare import KEY_COLUMNS
from .validate import BAD_TEXT

__all__ = ["ACTIONS", "OUTCOME_SCHEMA", "VIEWS", "BatchOutcome", "view_frame"]

#: The actions a row can end with, in display order.
ACTIONS = ("submitted", "deduplicated", "superseded", "upgraded", "failed")

#: What an outcome says of each row, after its index and its keys (as
#: :meth:`BatchOutcome.to_polars` gives it).
_RESULTS: dict[str, Any] = {
    "action": pl.Enum(list(ACTIONS)),
    "reason": pl.String,
    "task_id": pl.Int64,
    "replaced_task_id": pl.Int64,
    "error": pl.String,
}

#: Columns of :meth:`BatchOutcome.to_polars`.
OUTCOME_SCHEMA: dict[str, Any] = {
    "index": pl.Int64,
    **{name: column(name).polars for name in KEY_COLUMNS},
    **_RESULTS,
}

#: What an outcome holds in memory per row: the index, the results with their texts as
#: categoricals (a 5M-row outcome stays small; the keys are read from the plan when looked
#: at), and the field an error names.
_CORE: dict[str, Any] = {
    "index": pl.Int64,
    **{name: pl.Categorical if dtype == pl.String else dtype for name, dtype in _RESULTS.items()},
    "error_field": pl.Categorical,
}

#: The detail views of an outcome, in the notebook widget's tab order, with what each one
#: holds (:meth:`BatchOutcome.view`, :func:`view_frame`).
VIEWS: dict[str, str] = {
    "in batch": "rows skipped because a later row of the batch has the same key",
    "already queued": "rows skipped because an active task already has the key",
    "superseded": "rows that replaced an active task (new id ↔ replaced id)",
    "upgraded": "rows that raised the priority of a queued task",
    "failed": "rows that failed, with the error kind and message",
}
_VIEW_COLUMNS: dict[str, list[str]] = {
    "in batch": ["index", "task_type", "dedup_key", "group", "priority", "task_id"],
    "already queued": ["index", "task_type", "dedup_key", "group", "priority", "task_id"],
    "superseded": [
        "index",
        "task_type",
        "dedup_key",
        "group",
        "priority",
        "task_id",
        "replaced_task_id",
    ],
    "upgraded": ["index", "task_type", "dedup_key", "group", "priority", "task_id"],
    "failed": ["index", "task_type", "dedup_key", "group", "priority", "reason", "error"],
}


class BatchOutcome:
    """The outcome of ``submit_batch`` (or, with ``planned=True``, of ``plan_batch``).

    Every input row appears exactly once.  The lists follow the original request
    (``submitted``, ``deduplicated``, ``superseded``, ``upgraded``, ``failed``); the
    whole table is :meth:`to_polars` / :meth:`to_arrow`, one row per input row in
    input order.
    """

    def __init__(
        self, frame: pl.DataFrame, *, planned: bool = False, elapsed: float | None = None
    ) -> None:
        if "error_field" not in frame.columns:
            frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("error_field"))
        self._setup(
            frame.select(*(pl.col(n).cast(t) for n, t in _CORE.items())).lazy(),
            frame.height,
            frame.select(*(pl.col(n).cast(OUTCOME_SCHEMA[n]) for n in KEY_COLUMNS)).lazy(),
            planned=planned,
            elapsed=elapsed,
            files=(),
        )

    def _setup(
        self,
        core: pl.LazyFrame,
        height: int,
        keys: pl.LazyFrame,
        *,
        planned: bool,
        elapsed: float | None,
        files: tuple[object, ...],
    ) -> None:
        # `core`: one row per input row, in input order (``index`` is the row number),
        # texts as categoricals — a frame in memory, or for a large batch a scan of the
        # spooled file it was written to chunk by chunk; `keys`: the rows' KEY_COLUMNS,
        # lazily — for a plan kept on disk a scan of its checked rows, read only for the
        # rows a caller looks at; `files` keeps the files scanned while this outcome lives
        self._core = core
        self._height = height
        self._keys = keys
        self._files = files
        self._keys_in_memory = not any(f is not None for f in files[1:])
        #: Whether this outcome lives in a private Parquet file (a batch of more than
        #: ``OUTCOME_IN_MEMORY`` rows) rather than in memory.
        self.spooled = bool(files) and files[0] is not None
        self.planned = planned
        self.elapsed = elapsed
        #: Seconds the batch spent in each phase, on the caller's thread: ``prepare``
        #: (read, validate, dedup), ``stage`` (waiting for DuckDB's bulk copy), ``merge``
        #: (the store's transactions), ``outcome`` (assembling this); and beside them
        #: ``staging`` (DuckDB's own copy time, much of it overlapped with the merges) and
        #: ``write_lock`` (how long the store's write lock was held).  Set by the store.
        self.phases: dict[str, float] = {}
        #: The batch recorded in the store (``store.batch(out.batch_id)``): ``None`` for a
        #: plan and for a batch that inserted no task.  Set by the store.
        self.batch_id: int | None = None
        #: The detail view last taken out with the notebook widget's "take this view out"
        #: button (a polars DataFrame), reachable from the displayed outcome: ``out.exported``.
        self.exported: pl.DataFrame | None = None

    @classmethod
    def _of(
        cls,
        core: pl.LazyFrame,
        height: int,
        keys: pl.LazyFrame,
        *,
        planned: bool,
        elapsed: float | None,
        files: tuple[object, ...],
    ) -> BatchOutcome:
        out = cls.__new__(cls)
        out._setup(core, height, keys, planned=planned, elapsed=elapsed, files=files)
        return out

    def _collect(self, frame: pl.LazyFrame) -> pl.DataFrame:
        """``frame`` (a query over the core) computed; streamed when the core is a file."""
        return frame.collect(engine="streaming") if self.spooled else frame.collect()

    def rows(self, where: pl.Expr | None = None, *, limit: int | None = None) -> pl.DataFrame:
        """The outcome rows matching ``where`` (an expression over the outcome's own
        columns: ``action``, ``reason``, ``task_id``, ``replaced_task_id``, ``error``,
        ``error_field``), at most ``limit`` of them, with every column of
        :meth:`to_polars` plus ``error_field``.

        For a plan read from a file the keys are read again for the matching rows only,
        so looking at the failed rows of a 5M-row batch costs what those rows hold.
        """
        query = self._core if where is None else self._core.filter(where)
        if limit is not None:
            query = query.head(limit)
        core = self._collect(query)
        if where is None and limit is None:
            keys = self._keys.collect(engine="streaming")
        elif self._keys_in_memory:
            keys = self._keys.select(pl.all().gather(core["index"])).collect()
        else:
            keys = (
                self._keys.with_row_index("_row")
                .filter(pl.col("_row").is_in(core["index"].cast(pl.UInt32).implode()))
                .drop("_row")
                .collect(engine="streaming")
            )
        both = core.hstack(keys)
        return both.select(
            *(pl.col(n).cast(t) for n, t in OUTCOME_SCHEMA.items()),
            pl.col("error_field").cast(pl.String),
        )

    # ------------------------------------------------------------------ the lists

    def _ids(self, action: str, column: str = "task_id") -> list[int]:
        picked = self._core.filter(pl.col("action") == action).select(column)
        return self._collect(picked)[column].to_list()

    @cached_property
    def submitted(self) -> list[int]:
        """Ids of the newly inserted tasks, in input order (predicted, for a plan)."""
        return self._ids("submitted")

    @cached_property
    def deduplicated(self) -> list[str]:
        """Dedup keys of the rows skipped, inside the batch or against the store."""
        return self.rows(pl.col("action") == "deduplicated")["dedup_key"].to_list()

    @cached_property
    def superseded(self) -> list[tuple[int, int]]:
        """``(new_id, replaced_id)`` pairs."""
        df = self._collect(
            self._core.filter(pl.col("action") == "superseded").select(
                "task_id", "replaced_task_id"
            )
        )
        return list(zip(df["task_id"].to_list(), df["replaced_task_id"].to_list(), strict=True))

    @cached_property
    def upgraded(self) -> list[int]:
        """Ids of existing pending tasks whose priority was raised."""
        return self._ids("upgraded")

    @cached_property
    def failed(self) -> list[tuple[int, SchedulerError]]:
        """``(input index, error)`` for every failed row."""
        df = self._collect(
            self._core.filter(pl.col("action") == "failed").with_columns(
                pl.col("reason", "error", "error_field").cast(pl.String)
            )
        )
        out: list[tuple[int, SchedulerError]] = []
        for index, kind, message, existing, field in df.select(
            "index", "reason", "error", "task_id", "error_field"
        ).iter_rows():
            err: SchedulerError
            if kind == "duplicate":
                err = DuplicateTask(message, existing_task_id=existing)
            else:
                err = InvalidSubmission(message, kind=kind, field=field, index=index)
            out.append((index, err))
        return out

    def __len__(self) -> int:
        return self._height

    # ------------------------------------------------------------------ tables

    def to_polars(self) -> pl.DataFrame:
        """One row per input row, in input order (see ``OUTCOME_SCHEMA``)."""
        return self.rows().select(list(OUTCOME_SCHEMA))

    def to_arrow(self) -> pa.Table:
        """The same table as :meth:`to_polars`, as Arrow (``action`` as a string)."""
        return self.to_polars().with_columns(pl.col("action").cast(pl.String)).to_arrow()

    def counts(self) -> dict[str, int]:
        """Rows per action, every action present."""
        return dict(self._counts)

    @cached_property
    def _counts(self) -> dict[str, int]:
        counted = self._collect(  # on the enum: no text per row
            self._core.group_by("action").agg(pl.len().alias("n"))
        )
        got = dict(counted.with_columns(pl.col("action").cast(pl.String)).iter_rows())
        return {a: int(got.get(a, 0)) for a in ACTIONS}

    def summary(self, by: str | list[str] = "group") -> pl.DataFrame:
        """Rows per action, broken down by ``by`` (``"group"``, ``"priority"``, ``"task_type"``
        …): one row per value, one column per action, plus ``rows``."""
        keys = [by] if isinstance(by, str) else list(by)
        unknown = [k for k in keys if k not in OUTCOME_SCHEMA and k != "error_field"]
        if unknown:
            raise SchedulerError(
                f"summary(): no outcome column {unknown[0]!r}; columns: "
                + ", ".join(OUTCOME_SCHEMA),
                kind="invalid_input",
            )
        own = [k for k in keys if k in _CORE]
        read = [k for k in keys if k not in _CORE]
        frame = self._collect(self._core.select(list(dict.fromkeys(["action", *own]))))
        if read:  # only the key columns asked for, as categoricals
            texts = [k for k in read if OUTCOME_SCHEMA[k] == pl.String]
            extra = self._keys.select(
                *(pl.col(k).cast(pl.Categorical) if k in texts else pl.col(k) for k in read)
            ).collect(engine="streaming")
            frame = frame.hstack(extra)
        wide = frame.group_by(keys).agg(
            pl.len().alias("rows"),
            *[(pl.col("action") == a).sum().alias(a) for a in ACTIONS],
        )
        wide = wide.with_columns(
            pl.col(k).cast(OUTCOME_SCHEMA.get(k, pl.String)) for k in keys if k != "action"
        )
        return wide.sort(keys, nulls_last=True)

    def reasons(self) -> pl.DataFrame:
        """Rows per ``(action, reason)`` — why rows were deduplicated or failed."""
        return self._collect(
            self._core.group_by("action", "reason")
            .agg(pl.len().alias("rows"))
            .with_columns(pl.col("reason").cast(pl.String))
            .sort("action", "reason", nulls_last=True)
        )

    # ------------------------------------------------------------------ analysis

    def view(self, name: str) -> pl.DataFrame:
        """One detail view as a DataFrame: ``"in batch"``, ``"already queued"``,
        ``"superseded"``, ``"upgraded"`` or ``"failed"``."""
        return view_frame(self, name)

    def join_input(self, plan: Any) -> pl.DataFrame:
        """The input plan (any table) with each row's outcome beside it, by row index.

        Outcome columns that the plan also has are suffixed ``_outcome``.
        """
        frame = (
            _to_polars(plan)
            .drop(BAD_TEXT, strict=False)
            .with_row_index("index")
            .with_columns(pl.col("index").cast(pl.Int64))
        )
        if frame.height != len(self):
            raise SchedulerError(
                f"join_input(): the plan has {frame.height:,} rows, the outcome {len(self):,}",
                kind="invalid_input",
            )
        extra = self._collect(
            self._core.select(
                "index", "action", "reason", "task_id", "replaced_task_id", "error"
            ).with_columns(pl.col("reason", "error").cast(pl.String))
        )
        return frame.join(extra, on="index", how="left", suffix="_outcome", maintain_order="left")

    def widget(self) -> Any:
        """The interactive view (an ipywidgets widget) — what Jupyter shows for an outcome."""
        return display.outcome_widget(self)

    # ------------------------------------------------------------------ display

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """In a Jupyter kernel: the widget, with HTML and text for frontends without
        widgets (GitHub, nbconvert); elsewhere the HTML and text alone."""
        if display.in_kernel():
            return display.outcome_bundle(self)
        return {"text/plain": str(self), "text/html": self._repr_html_()}

    def _headline(self) -> str:
        what = "BatchOutcome (plan — nothing written)" if self.planned else "BatchOutcome"
        took = f" in {self.elapsed:.3f} s" if self.elapsed is not None else ""
        return f"{what}: {len(self):,} rows{took}"

    def __repr__(self) -> str:
        counts = self.counts()
        parts = ", ".join(f"{a}={n:,}" for a, n in counts.items())
        return f"<{self._headline()}; {parts}>"

    def __str__(self) -> str:
        counts = self.counts()
        total = max(len(self), 1)
        lines = [self._headline()]
        for action, n in counts.items():
            lines.append(f"  {action:<13}{n:>10,}  {100 * n / total:5.1f}%")
        failed = self.rows(pl.col("action") == "failed", limit=5)
        for index, reason, error in failed.select("index", "reason", "error").iter_rows():
            lines.append(f"  failed row {index}: [{reason}] {error}")
        more = counts["failed"] - failed.height
        if more > 0:
            lines.append(f"  … and {more:,} more failed rows")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        counts = self.counts()
        total = max(len(self), 1)
        rows = "".join(
            f"<tr><td>{a}</td><td style='text-align:right'>{n:,}</td>"
            f"<td style='text-align:right'>{100 * n / total:.1f}%</td></tr>"
            for a, n in counts.items()
        )
        failed = self.rows(pl.col("action") == "failed", limit=10)
        fail_rows = "".join(
            f"<tr><td>{i}</td><td>{html.escape(str(r))}</td><td>{html.escape(str(e))}</td></tr>"
            for i, r, e in failed.select("index", "reason", "error").iter_rows()
        )
        fail_table = (
            "<p>First failed rows:</p><table><tr><th>row</th><th>kind</th><th>error</th></tr>"
            f"{fail_rows}</table>"
            if fail_rows
            else ""
        )
        return (
            f"<div class='taskmill-outcome'><p><b>{html.escape(self._headline())}</b></p>"
            f"<table><tr><th>action</th><th>rows</th><th>share</th></tr>{rows}</table>"
            f"{fail_table}</div>"
        )


def view_frame(outcome: BatchOutcome, view: str) -> pl.DataFrame:
    """The rows of one detail view (see :data:`VIEWS`) as a polars DataFrame."""
    action = pl.col("action")  # the enum, compared without text per row
    filters = {
        "in batch": (action == "deduplicated") & (pl.col("reason") == "in_batch"),
        "already queued": (action == "deduplicated") & (pl.col("reason") == "existing"),
        "superseded": action == "superseded",
        "upgraded": action == "upgraded",
        "failed": action == "failed",
    }
    if view not in filters:
        raise KeyError(f"no view {view!r}; views: {', '.join(VIEWS)}")
    return outcome.rows(filters[view]).select(_VIEW_COLUMNS[view])  # keys of those rows only


class OutcomeSource(Protocol):
    """What :func:`build_outcome` reads of a prepared batch (``prepare.Prepared``)."""

    checked: Any  # the file its keys are read from, or None when they are in memory

    def marks(self, lo: int, hi: int) -> pl.DataFrame:
        """Rows ``lo..hi-1``: index, error_kind, error_field, error, winner_index, winner."""
        ...

    def lost_winners(self, height: int) -> pl.Series:
        """The rows below ``height`` that earlier valid rows of their key lost to."""
        ...

    def keys(self) -> pl.LazyFrame: ...

    def __len__(self) -> int: ...


def compact(result: pl.DataFrame) -> pl.DataFrame:
    """One chunk's merge result (``index``, ``action``, ``reason``, ``task_id``,
    ``replaced_task_id``, ``error``) with its texts as categoricals, as it is kept until
    the batch ends."""
    return result.select(
        pl.col("index").cast(pl.Int64),
        pl.col("action").cast(pl.String).cast(_CORE["action"]),
        pl.col("reason").cast(pl.Categorical),
        pl.col("task_id").cast(pl.Int64),
        pl.col("replaced_task_id").cast(pl.Int64),
        pl.col("error").cast(pl.Categorical),
    )


#: An outcome of more rows than this is written to a private Parquet file slice by slice
#: (:data:`OUTCOME_SLICE` rows at a time) and read from there when asked, as are the merge
#: results it is made from: its memory is set by the slice, not by the batch.  Smaller
#: ones stay in memory.
OUTCOME_IN_MEMORY = 200_000
OUTCOME_SLICE = 65_536

#: The result columns of a merge (``decide``), as kept until the batch ends.
_RESULT_SCHEMA = {
    "index": pl.Int64,
    "action": pl.String,
    "reason": pl.String,
    "task_id": pl.Int64,
    "replaced_task_id": pl.Int64,
    "error": pl.String,
}


def _spool_schema(columns: dict[str, Any]) -> pa.Schema:
    """How columns are written to a private Parquet file: integers as they are, every
    other column (text, categorical, enum) as plain text."""
    return pa.schema(
        [(n, pa.int64() if t == pl.Int64 else pa.large_string()) for n, t in columns.items()]
    )


_RESULT_ARROW = _spool_schema(_RESULT_SCHEMA)


class MergeResults:
    """The merge results of a batch's transactions, in input order, kept until the
    outcome is built: in memory (texts as categoricals), or, for a batch of more than
    :data:`OUTCOME_IN_MEMORY` rows, appended to a private Parquet file, one row group per
    transaction (its statistics let a slice of the outcome read only its own)."""

    def __init__(self, rows: int) -> None:
        self._frames: list[pl.DataFrame] = []
        self._spool: Any = None
        self._writer: Any = None
        self.height = 0
        if rows > OUTCOME_IN_MEMORY:
            import pyarrow.parquet as pq

            from .inputs import Spool

            self._spool = Spool()
            self._writer = pq.ParquetWriter(self._spool.path, _RESULT_ARROW, compression="none")

    def append(self, result: pl.DataFrame) -> None:
        """One transaction's result (``decide``'s columns), rows in input order."""
        self.height += result.height
        if self._writer is None:
            self._frames.append(compact(result))
            return
        table = result.select(*(pl.col(n).cast(t) for n, t in _RESULT_SCHEMA.items())).to_arrow()
        self._writer.write_table(table.cast(_RESULT_ARROW))

    def frame(self) -> pl.LazyFrame:
        """Every result so far (the file is closed for writing first)."""
        if self._spool is None:
            return pl.concat(
                self._frames or [compact(pl.DataFrame(schema=_RESULT_SCHEMA))], rechunk=False
            ).lazy()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return pl.scan_parquet(self._spool.path).with_columns(
            pl.col("action").cast(_CORE["action"]), pl.col("reason", "error").cast(pl.Categorical)
        )

    def close(self) -> None:
        """Remove the file (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._spool is not None:
            self._spool.remove()


def build_outcome(
    source: OutcomeSource,
    results: MergeResults,
    *,
    planned: bool,
    elapsed: float | None,
    interrupted: str | None = None,
    rows: int | None = None,
) -> BatchOutcome:
    """Combine the prepared rows (the first ``rows`` of them, or all) with the merge
    results of their winners.

    Failed rows keep their validation error; a valid row that lost to a later row of
    the same key is ``deduplicated`` (``in_batch``) and points at the winner's task.

    ``interrupted`` (the outcome of the committed part of a batch that stopped): a row
    whose winner sat in the part that did not commit is ``failed`` with kind
    ``interrupted`` and this message — the store holds nothing for it.

    Past :data:`OUTCOME_IN_MEMORY` rows the outcome is assembled slice by slice into a
    private Parquet file, which the :class:`BatchOutcome` reads when asked; memory holds
    a slice, and the results of the rows that won over an earlier row of their key.
    """
    height = len(source) if rows is None else rows
    merged = results.frame()
    # the winners that earlier rows of their key point at: read once, kept by row index
    lost = source.lost_winners(height)
    winners = (
        merged.filter(pl.col("index").is_in(lost.implode()))
        .select(
            pl.col("index").alias("winner_index"),
            pl.col("task_id").alias("winner_task_id"),
            pl.when(pl.col("reason") == "key_collision")
            .then(pl.col("error"))
            .alias("winner_collision"),
        )
        .collect(engine="streaming")
    )
    del lost

    def core_of(lo: int, hi: int) -> pl.DataFrame:
        own = merged.filter(pl.col("index").is_between(lo, hi - 1)).collect()
        return _core_slice(source.marks(lo, hi), lo, height, own, winners, interrupted)

    keys = source.keys()
    if rows is not None:
        keys = keys.head(rows)
    keys = keys.select(*(pl.col(n).cast(OUTCOME_SCHEMA[n]) for n in KEY_COLUMNS))
    if height <= OUTCOME_IN_MEMORY:
        return BatchOutcome._of(
            core_of(0, height).lazy(),
            height,
            keys,
            planned=planned,
            elapsed=elapsed,
            files=(None, source.checked),
        )
    import pyarrow.parquet as pq

    from .inputs import Spool

    spool = Spool()
    try:
        with pq.ParquetWriter(spool.path, _SPOOLED, compression="none") as writer:
            for lo in range(0, height, OUTCOME_SLICE):
                part = core_of(lo, min(lo + OUTCOME_SLICE, height))
                writer.write_table(part.with_columns(_AS_TEXT).to_arrow().cast(_SPOOLED))
                del part
    except BaseException:
        spool.remove()
        raise
    core = pl.scan_parquet(spool.path).with_columns(
        pl.col(n).cast(t) for n, t in _CORE.items() if t != pl.Int64
    )
    return BatchOutcome._of(
        core, height, keys, planned=planned, elapsed=elapsed, files=(spool, source.checked)
    )


#: A spooled outcome's columns: its texts (categoricals in memory) as plain strings.
_AS_TEXT = [pl.col(n).cast(pl.String) for n, t in _CORE.items() if t != pl.Int64]
_SPOOLED = _spool_schema(_CORE)


def _core_slice(
    frame: pl.DataFrame,
    lo: int,
    height: int,
    own: pl.DataFrame,
    winners: pl.DataFrame,
    interrupted: str | None,
) -> pl.DataFrame:
    """The outcome rows ``lo .. lo + frame.height - 1`` (see :func:`build_outcome`):
    ``frame`` is that slice of the prepared rows, ``height`` the rows of the outcome,
    ``own`` the merge results of the slice's rows and ``winners`` those of the rows that
    earlier rows lost to (``winner_index``, ``winner_task_id``, ``winner_collision``)."""
    # rows are matched by position (``index`` is the row number), not by joins: a
    # position costs 4 bytes per row
    slot = (
        pl.Series("slot", [], dtype=pl.UInt32)
        .extend_constant(None, frame.height)
        .scatter(own["index"] - lo, pl.int_range(own.height, dtype=pl.UInt32, eager=True))
    )
    base = frame.select(
        "winner",
        pl.col("winner_index"),
        *(pl.col(c).cast(pl.Categorical) for c in ("error_kind", "error_field", "error")),
    )
    mine = own.select(pl.all().gather(slot))  # this row's merge result, if it had one
    theirs = base.select(
        pl.when(~pl.col("winner") & pl.col("error_kind").is_null()).then(pl.col("winner_index"))
    ).join(winners, on="winner_index", how="left", maintain_order="left")
    joined = base.with_columns(
        mine["action"],
        mine["reason"],
        mine["task_id"],
        mine["replaced_task_id"],
        mine["error"].alias("merge_error"),
        theirs["winner_task_id"],
        theirs["winner_collision"],
    )
    del base, mine, theirs, slot
    kind, error, field = pl.col("error_kind"), pl.col("error"), pl.col("error_field")
    if interrupted is not None:  # winners beyond the committed rows never reached the store
        cut = ~pl.col("winner") & kind.is_null() & (pl.col("winner_index") >= height)
        kind = pl.when(cut).then(pl.lit("interrupted", dtype=pl.Categorical)).otherwise(kind)
        error = (
            pl.when(cut)
            .then(pl.format(interrupted, pl.col("winner_index")).cast(pl.Categorical))
            .otherwise(error)
        )
        field = pl.when(cut).then(pl.lit(None, dtype=pl.Categorical)).otherwise(field)
    # the earlier rows of a key whose last row met a key-hash collision share its fate
    shared = ~pl.col("winner") & kind.is_null() & pl.col("winner_collision").is_not_null()
    kind = pl.when(shared).then(pl.lit("key_collision", dtype=pl.Categorical)).otherwise(kind)
    error = pl.when(shared).then(pl.col("winner_collision")).otherwise(error)
    field = pl.when(shared).then(pl.lit("dedup_key", dtype=pl.Categorical)).otherwise(field)
    joined = joined.with_columns(kind.alias("error_kind"), error.alias("error"), field)
    failed = pl.col("error_kind").is_not_null()
    lost = ~failed & ~pl.col("winner")
    core = joined.select(
        pl.int_range(lo, lo + frame.height, dtype=pl.Int64).alias("index"),
        pl.when(failed)
        .then(pl.lit("failed", dtype=_CORE["action"]))
        .when(lost)
        .then(pl.lit("deduplicated", dtype=_CORE["action"]))
        .otherwise(pl.col("action"))
        .alias("action"),
        pl.when(failed)
        .then(pl.col("error_kind"))
        .when(lost)
        .then(pl.lit("in_batch", dtype=pl.Categorical))
        .otherwise(pl.col("reason"))
        .alias("reason"),
        pl.when(failed)
        .then(None)
        .when(lost)
        .then(pl.col("winner_task_id"))
        .otherwise(pl.col("task_id"))
        .alias("task_id"),
        pl.when(failed | lost)
        .then(None)
        .otherwise(pl.col("replaced_task_id"))
        .alias("replaced_task_id"),
        pl.when(failed).then(pl.col("error")).otherwise(pl.col("merge_error")).alias("error"),
        pl.when(pl.col("reason") == "key_collision")  # a winner refused for its key hash
        .then(pl.lit("dedup_key", dtype=pl.Categorical))
        .when(failed)
        .then(pl.col("error_field"))
        .alias("error_field"),
    )
    return core.select(*(pl.col(n).cast(t) for n, t in _CORE.items()))
