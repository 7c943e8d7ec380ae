"""Terminal rendering shared by the CLI and the demo (rich is imported lazily)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from .model import Event, TaskCompleted, TaskFailed
from .outcome import ACTIONS

if TYPE_CHECKING:
    import polars as pl

    from .outcome import BatchOutcome


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.3f}"
    return str(value)


def data_table(
    frame: pl.DataFrame,
    title: str | None = None,
    *,
    total: list[Any] | None = None,
    keep: tuple[str, ...] = (),
    drop_zero: bool = False,
) -> Any:
    """A rich table of a frame that never cuts a value: numbers keep their full width
    (thousands separated), text folds onto more lines instead of ending in "…" (two long
    group names must never both read ``s3://…``).  Values are text, never markup.

    ``drop_zero`` leaves out count columns that are zero on every row (but ``keep``), so
    the rest fit an 80-column terminal."""
    from rich.table import Table
    from rich.text import Text

    if drop_zero and frame.height:
        zero = [
            name
            for name, dtype in frame.schema.items()
            if dtype.is_integer() and name not in keep and frame[name].fill_null(0).eq(0).all()
        ]
        if zero:
            positions = [i for i, n in enumerate(frame.columns) if n not in zero]
            frame = frame.drop(zero)
            if total is not None:
                total = [total[i] for i in positions]
    rows = [[_cell(v) for v in row] for row in frame.iter_rows()]
    if total is not None:
        rows.append([_cell(v) for v in total])
    table = Table(title=title)
    for i, (name, dtype) in enumerate(frame.schema.items()):
        numeric = dtype.is_numeric()
        longest = max([len(name), *(len(r[i]) for r in rows)])
        width = longest if numeric else min(longest, 10)
        table.add_column(
            name,
            justify="right" if numeric else "left",
            no_wrap=numeric,
            min_width=width,
            overflow="fold",
        )
    for k, row in enumerate(rows):
        style = "bold" if total is not None and k == len(rows) - 1 else None
        table.add_row(*(Text(v) for v in row), style=style)
    return table


def outcome_table(outcome: BatchOutcome, title: str) -> Any:
    """A rich table of rows per action, one line per group and a total."""
    import polars as pl

    summary = outcome.summary("group").select("group", "rows", *ACTIONS)
    summary = summary.with_columns(pl.col("group").cast(pl.String))
    counts = outcome.counts()
    return data_table(
        summary,
        title,
        total=["all", len(outcome), *(counts[a] for a in ACTIONS)],
        keep=("rows", "submitted"),
        drop_zero=True,
    )


def tally(seen: Counter[str], event: Event) -> None:
    """Count an attempt's end: ``completed``, ``retried`` or ``failed`` (for good)."""
    if isinstance(event, TaskCompleted):
        seen["completed"] += 1
    elif isinstance(event, TaskFailed):
        seen["retried" if event.will_retry else "failed"] += 1
