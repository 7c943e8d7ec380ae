"""Terminal rendering shared by the CLI and the demo (rich is imported lazily)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from .model import Event, TaskCompleted, TaskFailed
from .outcome import ACTIONS

if TYPE_CHECKING:
    from .outcome import BatchOutcome


def outcome_table(outcome: BatchOutcome, title: str) -> Any:
    """A rich table of rows per action, one line per group and a total."""
    from rich.table import Table

    table = Table("group", "rows", *ACTIONS, title=title)
    for row in outcome.summary("group").iter_rows(named=True):
        table.add_row(str(row["group"]), f"{row['rows']:,}", *(f"{row[a]:,}" for a in ACTIONS))
    counts = outcome.counts()
    table.add_row("all", f"{len(outcome):,}", *(f"{counts[a]:,}" for a in ACTIONS), style="bold")
    return table


def tally(seen: Counter[str], event: Event) -> None:
    """Count an attempt's end: ``completed``, ``retried`` or ``failed`` (for good)."""
    if isinstance(event, TaskCompleted):
        seen["completed"] += 1
    elif isinstance(event, TaskFailed):
        seen["retried" if event.will_retry else "failed"] += 1
