"""What each page of the dashboard shows, read from a :class:`~taskmill.TaskStore` into
plain values (the templates only lay them out).  Every read is one of the store's public
methods; none loads more rows than a page shows."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import polars as pl

from ..model import ACTIVE_STATUSES, FINAL_STATUSES, SchedulerError
from ..views.waits import STATUSES, by_status, queue_now, reported

if TYPE_CHECKING:
    from ..store import TaskStore

__all__ = [
    "STATUSES",
    "Bar",
    "Filters",
    "queue_snapshot",
    "task_detail",
    "throughput_chart",
]

#: Groups and task types the queue page lists at most (the busiest first).
SHOWN_GROUPS = 100
#: Minutes of the throughput chart.
CHART_MINUTES = 30
#: Running tasks whose progress the queue page reads.
PROGRESS_READ = 200
#: Rows of one page of tasks.
PAGE_ROWS = 50
#: The tasks a blocked task waits for that its page lists at most.
AWAITED_SHOWN = 50


@dataclass(frozen=True)
class Bar:
    """One minute of the throughput chart: where it is drawn and what it says."""

    x: float
    ok_height: float
    bad_height: float
    other_height: float
    title: str


def throughput_chart(frame: pl.DataFrame, width: int = 600, height: int = 110) -> dict[str, Any]:
    """The throughput chart of a ``store.throughput()`` frame: a stacked bar per minute
    (completed; failed or expired; cancelled or superseded), scaled to the busiest
    minute."""
    rows = frame.with_columns(ended=pl.sum_horizontal(*FINAL_STATUSES)).to_dicts()
    slot = width / max(len(rows), 1)
    most = max((int(row["ended"]) for row in rows), default=0)
    scale = (height - 4) / most if most else 0.0
    bars = []
    for i, row in enumerate(rows):
        ok = int(row["completed"])
        bad = int(row["failed"]) + int(row["expired"])
        other = int(row["cancelled"]) + int(row["superseded"])
        minute: dt.datetime = row["minute"]
        parts = [
            f"{n:,} {what}"
            for n, what in ((ok, "completed"), (bad, "failed"), (other, "cancelled"))
            if n
        ]
        title = f"{minute:%H:%M} UTC — " + (", ".join(parts) if parts else "nothing ended")
        bars.append(Bar(i * slot, ok * scale, bad * scale, other * scale, title))
    total = sum(int(r["ended"]) for r in rows)
    marks = [f"{r['minute']:%H:%M}" for r in (rows[0], rows[len(rows) // 2])] if rows else []
    return {
        "marks": [*marks, "now"] if rows else [],
        "width": width,
        "height": height,
        "slot": max(slot - 1, 1),
        "bars": bars,
        "most": most,
        "total": total,
        "minutes": len(rows),
        "last_minute": int(rows[-1]["ended"]) if rows else 0,
    }


def _rows(frame: pl.DataFrame, key: str, waits: list[str]) -> tuple[list[dict[str, Any]], int]:
    """The rows of a ``stats()`` frame keyed by ``key``, busiest first (active tasks,
    then all), at most :data:`SHOWN_GROUPS`, each with what it waits on; and how many
    were left out."""
    frame = frame.with_columns(pl.Series("waits", waits, dtype=pl.String))
    frame = frame.with_columns(active=pl.sum_horizontal(*ACTIVE_STATUSES)).sort(
        ["active", "total", key], descending=[True, True, False], nulls_last=True
    )
    return frame.head(SHOWN_GROUPS).to_dicts(), max(frame.height - SHOWN_GROUPS, 0)


def queue_snapshot(store: TaskStore) -> dict[str, Any]:
    """The queue now: tasks by status, by group (with what each waits on and whether it
    is paused) and by task type (with what held it back at a worker's last claim); what
    ended per minute; running tasks' progress; the schedules, the aging policy and the
    workers."""
    now = queue_now(store)
    paused, held, counts = now.paused, now.held, now.counts
    types = by_status(now.recent, "task_type", [])
    group_rows, groups_left = _rows(now.groups, "group", now.waits)
    for row in group_rows:
        row["paused_until"] = paused.get(row["group"], False)
        if row["paused_until"] not in (False, None):
            row["paused_until"] = dt.datetime.fromtimestamp(row["paused_until"], dt.UTC)
    type_waits = [held.get(f"type:{t}", "") for t in types["task_type"].to_list()]
    type_rows, types_left = _rows(types, "task_type", type_waits)
    running = store.tasks(status="running", limit=PROGRESS_READ)
    progress = reported(running).head(10).to_dicts()
    schedules = store.schedules()
    upcoming = schedules.filter(~pl.col("paused") & pl.col("next_at").is_not_null()).sort("next_at")
    workers = store.workers()
    return {
        "counts": counts,
        "active": sum(counts[s] for s in ACTIVE_STATUSES),
        "groups": group_rows,
        "groups_left": groups_left,
        "paused_groups": len(paused),
        "types": type_rows,
        "types_left": types_left,
        "chart": throughput_chart(store.throughput(CHART_MINUTES)),
        "progress": progress,
        "running_read": running.height,
        "schedules": schedules.height,
        "schedules_paused": int(schedules["paused"].sum()) if schedules.height else 0,
        "next_schedule": upcoming.row(0, named=True) if upcoming.height else None,
        "aging": store.aging(),
        "workers": workers.height,
        "workers_alive": int(workers["alive"].sum()) if workers.height else 0,
        "now": dt.datetime.fromtimestamp(store.now(), dt.UTC),
    }


#: The longest part of a user's value an error message repeats.
SHOWN = 60


def shown(value: str) -> str:
    """``value`` as a message repeats it: at most :data:`SHOWN` characters, control
    characters (NUL included) written as escapes."""
    cut = value if len(value) <= SHOWN else value[:SHOWN] + "…"
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in cut)


def whole_id(text: str) -> int | None:
    """``text`` as an id: ASCII digits making 1 to 2⁶³−1, else ``None``."""
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        return None
    number = int(text)
    return number if 1 <= number <= MAX_ID else None


#: The largest id a store holds (a signed 64-bit integer).
MAX_ID = 2**63 - 1

#: The filters of the tasks page, as its query parameters name them.
_FILTERS = ("status", "task_type", "group", "tag", "batch", "key", "parent", "before")


#: What the tasks page's form calls each filter.
_LABELS = {"task_type": "type", "group": "group", "tag": "tag", "key": "key prefix"}


@dataclass
class Filters:
    """The filters of the tasks page, as its form gives them (strings; blank: none), and
    what is wrong with them."""

    status: str = ""
    task_type: str = ""
    group: str = ""
    tag: str = ""
    batch: str = ""
    key: str = ""
    parent: str = ""
    before: str = ""
    errors: list[str] = field(default_factory=list, init=False)

    @classmethod
    def of(cls, params: Any) -> Filters:
        """The filters of a request's query parameters (unknown ones ignored)."""
        return cls(**{n: str(params.get(n, "")).strip() for n in _FILTERS})

    def query(self, **changes: str) -> dict[str, str]:
        """These filters as query parameters (blank ones left out), with ``changes``."""
        values = {n: getattr(self, n) for n in _FILTERS} | changes
        return {k: v for k, v in values.items() if v}

    def _whole(self, name: str, value: str) -> int | None:
        if not value:
            return None
        number = whole_id(value)
        if number is None:
            self.errors.append(f"{name} must be a whole number from 1, not “{shown(value)}”")
        return number

    def arguments(self) -> dict[str, Any]:
        """The keyword arguments of ``store.browse`` these filters make; what is wrong
        with them goes to :attr:`errors` (and is left out)."""
        args: dict[str, Any] = {}
        for name in ("task_type", "group", "tag", "key"):
            if "\x00" in getattr(self, name):
                self.errors.append(f"{_LABELS[name]} must not hold a NUL character")
        if self.errors:
            return args
        if self.status:
            if self.status in STATUSES:
                args["status"] = self.status
            else:
                self.errors.append(
                    f"status “{shown(self.status)}” is not one of " + ", ".join(STATUSES)
                )
        if self.task_type:
            args["task_type"] = self.task_type
        if self.group:
            args["group"] = self.group
        if self.key:
            args["key_prefix"] = self.key
        if self.tag:
            key, sep, value = self.tag.partition("=")
            if sep and key.strip():
                args["tags"] = {key.strip(): value.strip()}
            else:
                self.errors.append(f"a tag filter is KEY=VALUE, not “{shown(self.tag)}”")
        for name, arg, value in (
            ("batch", "batch_id", self.batch),
            ("parent", "parent_id", self.parent),
            ("before", "before", self.before),
        ):
            number = self._whole(name, value)
            if number is not None:
                args[arg] = number
            elif name == "before":  # not a field of the form: not shown back either
                self.before = ""
        return args


def tasks_page(store: TaskStore, filters: Filters) -> dict[str, Any]:
    """One page of tasks matching ``filters`` (newest first), and the ``before`` of the
    next page (``None``: this is the last)."""
    args = filters.arguments()
    if filters.errors:
        return {"rows": [], "next": None}
    try:
        page = store.browse(**args, limit=PAGE_ROWS + 1)
    except SchedulerError as exc:
        filters.errors.append(str(exc))
        return {"rows": [], "next": None}
    rows = page.head(PAGE_ROWS).to_dicts()
    more = page.height > PAGE_ROWS
    return {"rows": rows, "next": rows[-1]["id"] if more and rows else None}


def _pretty(payload: Any) -> str:
    """A payload as indented JSON when it is JSON, else as it is."""
    if payload is None:
        return ""
    if isinstance(payload, bytes | bytearray | memoryview):
        payload = bytes(payload).decode("utf-8", "replace")
    try:
        return json.dumps(json.loads(payload), indent=2, ensure_ascii=False, sort_keys=True)
    except (TypeError, ValueError):
        return str(payload)


def task_detail(store: TaskStore, task_id: int) -> dict[str, Any] | None:
    """One task: its row, its payload as JSON, what it waits for, its children by status
    (and the first of them), and every attempt with its worker, times and error."""
    found = store.tasks(ids=task_id)
    active = found.height > 0
    if not active:
        found = store.history(ids=task_id)
        if not found.height:
            return None
    task = {**found.row(0, named=True), "active": active}
    attempts = store.attempts(task_id).to_dicts()
    children = store.children(task_id)
    first_children = (
        store.browse(parent_id=task_id, limit=20).to_dicts() if sum(children.values()) else []
    )
    depends = list(task.get("depends_on") or [])
    awaited = store.tasks(ids=depends[:AWAITED_SHOWN]).to_dicts() if depends else []
    return {
        "task": task,
        "payload": _pretty(task.get("payload")),
        "tags": task.get("tags") or [],
        "depends_on": depends,
        "awaited": awaited,
        "children": {k: v for k, v in children.items() if v},
        "children_total": sum(children.values()),
        "first_children": first_children,
        "attempts": attempts,
    }
