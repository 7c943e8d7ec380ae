"""What a group's tasks wait on, in words, and the queue now by group or task type: one
rule for every view of a queue (the live view and the store widget in a notebook, the
dashboard in the browser).  Plain values in, plain values out: no widget library is
imported here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl

from ..model import ACTIVE_STATUSES, FINAL_STATUSES

__all__ = [
    "RECENT",
    "STATUSES",
    "QueueNow",
    "by_status",
    "group_waits",
    "queue_now",
    "reported",
    "waiting_on",
]

#: Every status, active first, in the order the views list them.
STATUSES: tuple[str, ...] = (*ACTIVE_STATUSES, *FINAL_STATUSES)
#: How far back the views of the queue now count the tasks that ended (``store.recent``):
#: their active counts are all, whatever the size of history.
RECENT = timedelta(hours=1)


def group_waits(
    groups: pl.DataFrame,
    paused: dict[str, float | None],
    held: dict[str, str],
    later: dict[str | None, int],
    retry: dict[str | None, int],
) -> list[str]:
    """What the tasks of each group of ``groups`` (a ``stats("group")`` frame) wait on, in
    its order (:func:`waiting_on`; ``later`` counts retries too: they are taken out)."""
    names = groups["group"].to_list()
    start = {g: n - retry.get(g, 0) for g, n in later.items()}
    blocked = dict(zip(names, groups["blocked"].to_list(), strict=True))
    parents = dict(zip(names, groups["waiting"].to_list(), strict=True))
    return [waiting_on(g, paused, held, start, retry, blocked, parents) for g in names]


def waiting_on(
    group: str | None,
    paused: dict[str, float | None],
    held: dict[str, str],
    later: dict[str | None, int],
    retry: dict[str | None, int] | None = None,
    blocked: dict[str | None, int] | None = None,
    parents: dict[str | None, int] | None = None,
) -> str:
    """What a group's tasks wait on: a pause, a limit (the last claim's), their start
    times (given at submission), a retry's backoff (tasks tried before), their
    dependencies (blocked tasks), their children (parents waiting)."""
    parts = []
    if group in paused:
        until = paused[group]
        parts.append(
            "paused"
            if until is None
            else "paused until "
            + datetime.fromtimestamp(until, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        )
    if group is not None and group in held:
        parts.append(held[group])
    if later.get(group):
        parts.append(f"start time ({later[group]:,})")
    if retry and retry.get(group):
        parts.append(f"retry backoff ({retry[group]:,})")
    if blocked and blocked.get(group):
        parts.append(f"dependencies ({blocked[group]:,} blocked)")
    if parents and parents.get(group):
        n = parents[group]
        parts.append(f"child tasks ({n:,} parent{'s' if n > 1 else ''} waiting)")
    return ", ".join(parts)


def by_status(recent: pl.DataFrame, key: str, also: list[str]) -> pl.DataFrame:
    """A ``store.recent()`` frame as one row per ``key`` (``group`` or ``task_type``) with
    a count column per status and ``total``, as ``store.stats()`` lays them out, with a
    row of zeros for each name of ``also`` not found (paused groups with no task)."""
    names = recent.select(pl.col(key).unique())
    missing = pl.DataFrame({key: [n for n in also if n not in set(names[key].to_list())]})
    counts = recent.group_by(key, "status").agg(pl.col("tasks").sum())
    columns = [pl.col("tasks").filter(pl.col("status") == s).sum().alias(s) for s in STATUSES]
    wide = counts.group_by(key, maintain_order=True).agg(columns)
    wide = pl.concat([wide, missing.with_columns(pl.lit(0, pl.Int64).alias(s) for s in STATUSES)])
    return wide.with_columns(total=pl.sum_horizontal(*STATUSES)).sort(key, nulls_last=True)


@dataclass(frozen=True)
class QueueNow:
    """The store's queue now, as every view of it reads it: the tasks of ``recent``
    (``store.recent(RECENT)``) by group (``groups``, in ``stats()``'s layout, a row for
    every paused group) with what each group waits on (``waits``, in its order), the
    groups ``paused`` and what the live workers ``held`` back."""

    recent: pl.DataFrame
    groups: pl.DataFrame
    waits: list[str]
    paused: dict[str, float | None]
    held: dict[str, str]

    @property
    def counts(self) -> dict[str, int]:
        """Tasks by status: every active one, those that ended within :data:`RECENT`."""
        return {s: int(self.groups[s].sum()) for s in STATUSES}


def queue_now(store: Any) -> QueueNow:
    """Read :class:`QueueNow` from ``store`` (a :class:`~taskmill.TaskStore`)."""
    recent = store.recent(RECENT)
    paused = store.paused_groups()
    groups = by_status(recent, "group", list(paused))
    held = store.held_groups()
    later, retry = store.waiting_for_start(), store.waiting_for_retry()
    return QueueNow(recent, groups, group_waits(groups, paused, held, later, retry), paused, held)


def reported(running: pl.DataFrame) -> pl.DataFrame:
    """The tasks of ``running`` (a ``tasks()`` frame) that reported progress, the most
    advanced first."""
    return running.filter(pl.col("progress").is_not_null()).sort(
        "progress", "id", descending=[True, False]
    )
