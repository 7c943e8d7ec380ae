"""Terminal rendering shared by the CLI and the demo (rich is imported lazily)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..batch.outcome import ACTIONS
from ..model import Event, TaskCompleted, TaskFailed

if TYPE_CHECKING:
    import polars as pl

    from ..batch.outcome import BatchOutcome


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


def _width(header: str, values: Iterable[str]) -> int:
    """The width a column needs to show its header and every value whole."""
    return max([len(header), *(len(v) for v in values)])


def _add_column(table: Any, header: str, *, numeric: bool, **fit: Any) -> None:
    """Add a column to a rich ``table``: numbers right-aligned, text left; ``fit`` says how
    wide it is and what a long value does (rich's ``add_column`` keywords)."""
    table.add_column(header, justify="right" if numeric else "left", **fit)


def _zero_columns(frame: pl.DataFrame, keep: Iterable[str]) -> list[str]:
    """The count (integer) columns of ``frame`` that are zero on every row, but ``keep``."""
    return [
        name
        for name, dtype in frame.schema.items()
        if dtype.is_integer() and name not in keep and frame[name].fill_null(0).eq(0).all()
    ]


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
        zero = _zero_columns(frame, keep)
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
        longest = _width(name, (r[i] for r in rows))
        width = longest if numeric else min(longest, 10)
        _add_column(table, name, numeric=numeric, no_wrap=numeric, min_width=width, overflow="fold")
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


#: A column of :func:`listing_table`: the frame column, its header, and how a long value
#: is shortened: ``"middle"`` (keys, names), ``"end"`` (messages: their start tells most)
#: or ``""`` (a short value, always whole).
ListingColumn = tuple[str, str, str]


def shorten(text: str, width: int, where: str = "middle") -> str:
    """``text`` in at most ``width`` characters: cut in the middle with "…", keeping more
    of the end (object keys and group names differ at their end), or with ``where="end"``
    at its end."""
    if len(text) <= width:
        return text
    if width <= 1:
        return "…"[:width]
    if where == "end":
        return text[: width - 1] + "…"
    head = (width - 1) // 4
    return text[:head] + "…" + text[len(text) - (width - 1 - head) :]


def _fit(natural: list[int], floors: list[int], room: int) -> list[int] | None:
    """Widths of the shortenable columns sharing ``room`` characters: each gets its
    natural width when all fit, else a fair share (never under its floor); None when even
    the floors do not fit."""
    if sum(floors) > room:
        return None
    widths = list(floors)
    left = room - sum(floors)
    # water-filling: the narrowest needs are met first, the rest share what remains
    for i in sorted(range(len(natural)), key=lambda j: natural[j]):
        want = natural[i] - widths[i]
        pending = sum(1 for j in range(len(natural)) if natural[j] - widths[j] > 0)
        give = min(want, left // max(pending, 1))
        widths[i] += give
        left -= give
    return widths


def listing_table(
    cells: dict[str, list[str]],
    columns: list[ListingColumn],
    width: int,
    *,
    drop_order: tuple[str, ...] = (),
) -> Any:
    """A rich table of one line per row that fits ``width`` columns: short values whole,
    long text shortened in the middle, and, when even that does not fit, the columns of
    ``drop_order`` left out in turn.  ``cells`` holds each column's values as text."""
    from rich.table import Table
    from rich.text import Text

    cells = dict(cells)  # shortened below; the caller's values stay as they were
    shown = list(columns)
    while True:
        fixed = [_width(h, cells[n]) for n, h, long in shown if not long]
        natural = [_width(h, cells[n]) for n, h, long in shown if long]
        floors = [
            min(nat, max(len(h), 30 if long == "end" else 16))
            for nat, (_, h, long) in zip(natural, [c for c in shown if c[2]], strict=True)
        ]
        room = width - (3 * len(shown) + 1) - sum(fixed)
        widths = _fit(natural, floors, room)
        droppable = [c for c in shown if c[0] in drop_order]
        if widths is not None or not droppable:
            break
        first = min(droppable, key=lambda c: drop_order.index(c[0]))
        shown.remove(first)
    if widths is None:  # even the floors overflow: the widest give way, never a short value
        widths = list(floors)
        for _ in range(sum(widths) - max(room, len(widths))):
            widths[widths.index(max(widths))] -= 1
    table = Table()
    sizes = iter(widths)
    for name, header, long in shown:
        size = next(sizes) if long else _width(header, cells[name])
        numeric = not long and all(v.replace(",", "").isdigit() or v == "–" for v in cells[name])
        _add_column(table, header, numeric=numeric, no_wrap=True, width=size, overflow="ellipsis")
        cells[name] = [shorten(v, size, long or "middle") for v in cells[name]]
    for row in zip(*(cells[name] for name, _, _ in shown), strict=True):
        table.add_row(*(Text(v) for v in row))
    return table


#: The count columns of ``stats`` tables that hold active tasks (the rest are finished).
ACTIVE_COUNTS = ("blocked", "pending", "running", "paused", "waiting")


def count_tables(frame: pl.DataFrame, title: str, width: int) -> list[Any]:
    """``stats`` tables of a frame of counts (a key column, one column per status and
    ``total``) that fit ``width`` columns with every header on one line: the columns that
    are zero on every row left out, and when the rest still do not fit, one table of the
    active statuses and one of the finished ones with the total."""
    frame = frame.drop(_zero_columns(frame, keep=("total",)))
    key = frame.columns[0]

    def need(part: pl.DataFrame) -> int:
        cells = [[_cell(v) for v in part[name].to_list()] for name in part.columns]
        sizes = [_width(name, col) for name, col in zip(part.columns, cells, strict=True)]
        sizes[0] = min(sizes[0], 16)  # the key folds; counts never do
        return sum(sizes) + 3 * len(sizes) + 1

    if need(frame) <= width:
        return [data_table(frame, title)]
    active = [c for c in frame.columns[1:] if c in ACTIVE_COUNTS]
    finished = [c for c in frame.columns[1:] if c not in ACTIVE_COUNTS]
    parts = [(f"{title}: active", active), (f"{title}: finished", finished)]
    return [data_table(frame.select(key, *names), head) for head, names in parts if names]
