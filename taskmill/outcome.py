"""BatchOutcome: what a batch did to every input row — lists, DataFrames, text and HTML."""

from __future__ import annotations

import html
from functools import cached_property
from typing import Any

import polars as pl
import pyarrow as pa

from .model import DuplicateTask, InvalidSubmission, SchedulerError

__all__ = ["ACTIONS", "OUTCOME_SCHEMA", "BatchOutcome"]

#: The actions a row can end with, in display order.
ACTIONS = ("submitted", "deduplicated", "superseded", "upgraded", "failed")

#: Columns of :meth:`BatchOutcome.to_polars`.
OUTCOME_SCHEMA: dict[str, Any] = {
    "index": pl.Int64,
    "task_type": pl.String,
    "dedup_key": pl.String,
    "group": pl.String,
    "priority": pl.Int64,
    "action": pl.Enum(list(ACTIONS)),
    "reason": pl.String,
    "task_id": pl.Int64,
    "replaced_task_id": pl.Int64,
    "error": pl.String,
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
        self._frame = frame.select(
            *(pl.col(name).cast(dtype) for name, dtype in OUTCOME_SCHEMA.items()),
            pl.col("error_field").cast(pl.String),
        )
        self.planned = planned
        self.elapsed = elapsed
        #: The detail view last taken out with the notebook widget's "take this view out"
        #: button (a polars DataFrame), reachable from the displayed outcome: ``out.exported``.
        self.exported: pl.DataFrame | None = None

    # ------------------------------------------------------------------ the lists

    def _ids(self, action: str, column: str = "task_id") -> list[int]:
        return self._frame.filter(pl.col("action") == action)[column].to_list()

    @cached_property
    def submitted(self) -> list[int]:
        """Ids of the newly inserted tasks, in input order (predicted, for a plan)."""
        return self._ids("submitted")

    @cached_property
    def deduplicated(self) -> list[str]:
        """Dedup keys of the rows skipped, inside the batch or against the store."""
        return self._frame.filter(pl.col("action") == "deduplicated")["dedup_key"].to_list()

    @cached_property
    def superseded(self) -> list[tuple[int, int]]:
        """``(new_id, replaced_id)`` pairs."""
        df = self._frame.filter(pl.col("action") == "superseded")
        return list(zip(df["task_id"].to_list(), df["replaced_task_id"].to_list(), strict=True))

    @cached_property
    def upgraded(self) -> list[int]:
        """Ids of existing pending tasks whose priority was raised."""
        return self._ids("upgraded")

    @cached_property
    def failed(self) -> list[tuple[int, SchedulerError]]:
        """``(input index, error)`` for every failed row."""
        df = self._frame.filter(pl.col("action") == "failed")
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
        return self._frame.height

    # ------------------------------------------------------------------ tables

    def to_polars(self) -> pl.DataFrame:
        """One row per input row, in input order (see ``OUTCOME_SCHEMA``)."""
        return self._frame.select(list(OUTCOME_SCHEMA))

    def to_arrow(self) -> pa.Table:
        """The same table as :meth:`to_polars`, as Arrow (``action`` as a string)."""
        return self.to_polars().with_columns(pl.col("action").cast(pl.String)).to_arrow()

    def counts(self) -> dict[str, int]:
        """Rows per action, every action present."""
        got = dict(self._frame["action"].cast(pl.String).value_counts().iter_rows())
        return {a: int(got.get(a, 0)) for a in ACTIONS}

    def summary(self, by: str | list[str] = "group") -> pl.DataFrame:
        """Rows per action, broken down by ``by`` (``"group"``, ``"priority"``, ``"task_type"``
        …): one row per value, one column per action, plus ``rows``."""
        keys = [by] if isinstance(by, str) else list(by)
        wide = self._frame.group_by(keys).agg(
            pl.len().alias("rows"),
            *[(pl.col("action") == a).sum().alias(a) for a in ACTIONS],
        )
        return wide.sort(keys, nulls_last=True)

    def reasons(self) -> pl.DataFrame:
        """Rows per ``(action, reason)`` — why rows were deduplicated or failed."""
        return (
            self._frame.group_by("action", "reason")
            .agg(pl.len().alias("rows"))
            .sort("action", "reason", nulls_last=True)
        )

    # ------------------------------------------------------------------ analysis

    def view(self, name: str) -> pl.DataFrame:
        """One detail view as a DataFrame: ``"in batch"``, ``"already queued"``,
        ``"superseded"``, ``"upgraded"`` or ``"failed"``."""
        from .notebook import view_frame

        return view_frame(self, name)

    def join_input(self, plan: Any) -> pl.DataFrame:
        """The input plan (any table) with each row's outcome beside it, by row index.

        Outcome columns that the plan also has are suffixed ``_outcome``.
        """
        from .plan import BAD_TEXT, _to_polars

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
        extra = self.to_polars().select(
            "index", "action", "reason", "task_id", "replaced_task_id", "error"
        )
        return frame.join(extra, on="index", how="left", suffix="_outcome", maintain_order="left")

    def widget(self) -> Any:
        """The interactive view (an ipywidgets widget) — what Jupyter shows for an outcome."""
        from .notebook import OutcomeWidget

        return OutcomeWidget(self)

    # ------------------------------------------------------------------ display

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """In a Jupyter kernel: the widget, with HTML and text for frontends without
        widgets (GitHub, nbconvert); elsewhere the HTML and text alone."""
        try:
            from IPython import get_ipython

            shell = get_ipython()
        except ImportError:
            shell = None
        if shell is not None and getattr(shell, "kernel", None) is not None:
            from .notebook import outcome_bundle

            return outcome_bundle(self)
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
        failed = self._frame.filter(pl.col("action") == "failed").head(5)
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
        failed = self._frame.filter(pl.col("action") == "failed").head(10)
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


def build_outcome(
    frame: pl.DataFrame,
    results: list[pl.DataFrame],
    *,
    planned: bool,
    elapsed: float | None,
    interrupted: str | None = None,
) -> BatchOutcome:
    """Combine the prepared rows with the merge results of their winners.

    Failed rows keep their validation error; a valid row that lost to a later row of
    the same key is ``deduplicated`` (``in_batch``) and points at the winner's task.

    ``interrupted`` (the outcome of the committed part of a batch that stopped): a row
    whose winner sat in the part that did not commit is ``failed`` with kind
    ``interrupted`` and this message — the store holds nothing for it.
    """
    merged = (
        pl.concat(results)
        if results
        else pl.DataFrame(
            schema={
                "index": pl.Int64,
                "action": pl.String,
                "reason": pl.String,
                "task_id": pl.Int64,
                "replaced_task_id": pl.Int64,
                "error": pl.String,
            }
        )
    )
    merged = merged.with_columns(pl.col("action").cast(pl.String))
    winners = merged.select(
        pl.col("index").alias("winner_index"),
        pl.col("task_id").alias("winner_task_id"),
        pl.when(pl.col("reason") == "key_collision")
        .then(pl.col("error"))
        .alias("winner_collision"),
    )
    # join only the narrow columns; the wide text columns of `frame` are reused as they
    # are (the joins keep input order), so a million-row outcome does not copy them
    keys = frame.select("index", "winner", "winner_index", "error_kind", "error")
    joined = keys.join(
        merged.rename({"error": "merge_error"}), on="index", how="left", maintain_order="left"
    ).join(winners, on="winner_index", how="left", maintain_order="left")
    if interrupted is not None:  # winners beyond the committed rows never reached the store
        cut = (
            ~pl.col("winner")
            & pl.col("error_kind").is_null()
            & (pl.col("winner_index") >= frame.height)
        )
        joined = joined.with_columns(
            pl.when(cut)
            .then(pl.lit("interrupted"))
            .otherwise(pl.col("error_kind"))
            .alias("error_kind"),
            pl.when(cut)
            .then(pl.format(interrupted, pl.col("winner_index")))
            .otherwise(pl.col("error"))
            .alias("error"),
        )
    # the earlier rows of a key whose last row met a key-hash collision share its fate
    shared = ~pl.col("winner") & pl.col("error_kind").is_null()
    shared = shared & pl.col("winner_collision").is_not_null()
    joined = joined.with_columns(
        pl.when(shared)
        .then(pl.lit("key_collision"))
        .otherwise(pl.col("error_kind"))
        .alias("error_kind"),
        pl.when(shared).then(pl.col("winner_collision")).otherwise(pl.col("error")).alias("error"),
    )
    failed = pl.col("error_kind").is_not_null()
    lost = ~failed & ~pl.col("winner")
    decided = joined.select(
        pl.when(failed)
        .then(pl.lit("failed"))
        .when(lost)
        .then(pl.lit("deduplicated"))
        .otherwise(pl.col("action"))
        .alias("action"),
        pl.when(failed)
        .then(pl.col("error_kind"))
        .when(lost)
        .then(pl.lit("in_batch"))
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
    )
    error_field = joined.select(
        pl.when(pl.col("error_kind") == "interrupted")
        .then(pl.lit(None, dtype=pl.String))
        .when((pl.col("error_kind") == "key_collision") | (pl.col("reason") == "key_collision"))
        .then(pl.lit("dedup_key"))
        .otherwise(frame["error_field"])
        .alias("error_field")
    ).to_series()
    out = (
        frame.select("index", "task_type", "dedup_key", "group", "priority")
        .hstack(decided)
        .with_columns(error_field)
    )
    return BatchOutcome(out, planned=planned, elapsed=elapsed)
