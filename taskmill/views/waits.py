"""What a group's tasks wait on, in words, and the queue now by group or task type: one
rule for every view of a queue (the live view and the store widget in a notebook, the
dashboard in the browser).  Plain values in, plain values out: no widget library is
imported here."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl

from ..model import ACTIVE_STATUSES, FINAL_STATUSES

__all__ = ["RECENT", "by_status", "group_waits", "waiting_on"]

_STATUSES = (*ACTIVE_STATUSES, *FINAL_STATUSES)
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
    columns = [pl.col("tasks").filter(pl.col("status") == s).sum().alias(s) for s in _STATUSES]
    wide = counts.group_by(key, maintain_order=True).agg(columns)
    wide = pl.concat([wide, missing.with_columns(pl.lit(0, pl.Int64).alias(s) for s in _STATUSES)])
    return wide.with_columns(total=pl.sum_horizontal(*_STATUSES)).sort(key, nulls_last=True)
