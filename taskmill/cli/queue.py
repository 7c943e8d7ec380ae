"""What is in the store: ``stats``, ``paused``, ``tasks``, ``history`` and ``show``."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import polars as pl

from ..model import ACTIVE_STATUSES, SchedulerError
from .common import (
    DB_OPTION,
    JSON_OPTION,
    TAG_OPTION,
    _console,
    _echo_json,
    _existing,
    _json_value,
    _plural,
    _shown,
    _utc,
)


@click.command()
@DB_OPTION
@JSON_OPTION
def stats(db: str, as_json: bool) -> None:
    """Queue counts by status, by group and by priority."""
    from ..render import count_tables

    with _existing(db) as store:
        counts = store.counts()
        by_group = store.stats("group")
        by_priority = store.stats("priority")
        paused = store.paused_groups()
    if as_json:
        _echo_json(
            db,
            counts=counts,
            by_group=by_group.to_dicts(),
            by_priority=by_priority.to_dicts(),
            paused_groups=_paused_json(paused),
        )
        return
    console = _console()
    # wrapped at the terminal's width, never at a number
    line = f"{_shown(db)}: " + ", ".join(f"{k}\u00a0{v:,}" for k, v in counts.items())
    console.print(line, soft_wrap=False)
    if paused:
        console.print("paused groups: " + ", ".join(_pause_text(g, e) for g, e in paused.items()))
    for title, frame in (("by group", by_group), ("by priority", by_priority)):
        if frame.height == 0:
            console.print(f"{title}: no tasks")
            continue
        for table in count_tables(frame, title, console.width):
            console.print(table)


def _pause_text(group: str, end: float | None) -> str:
    """One paused group as the CLI says it: ``g until 2026-… UTC`` or ``until resume-group``."""
    return f"{group} until " + ("resume-group" if end is None else _utc(end))


def _paused_json(paused: dict[str, float | None]) -> list[dict[str, str | None]]:
    """The paused groups for ``--json``: each group and its end as an ISO time (or null)."""
    return [
        {
            "group": group,
            "until": None if end is None else dt.datetime.fromtimestamp(end, dt.UTC).isoformat(),
        }
        for group, end in sorted(paused.items())
    ]


@click.command()
@DB_OPTION
@JSON_OPTION
def paused(db: str, as_json: bool) -> None:
    """The paused groups and when each pause ends (pause-group, resume-group)."""
    with _existing(db) as store:
        groups = store.paused_groups()
    if as_json:
        _echo_json(db, paused_groups=_paused_json(groups))
        return
    if not groups:
        click.echo(f"no group is paused in {_shown(db)}")
        return
    click.echo(f"{_plural(len(groups), 'paused group')} in {_shown(db)}:")
    for group, end in sorted(groups.items()):
        click.echo(f"  {_pause_text(group, end)}")


#: Each column `tasks` and `history` print: its header, and how a long value is shortened
#: to fit the terminal (see ListingColumn).
_COLUMNS: dict[str, tuple[str, str]] = {
    "id": ("id", ""),
    "task_type": ("task_type", "middle"),
    "dedup_key": ("dedup_key", "middle"),
    "group": ("group", "middle"),
    "priority": ("priority", ""),
    "status": ("status", ""),
    "attempts": ("tries", ""),
    "run_after": ("next try", ""),
    "depends_on": ("waits for", "end"),
    "progress": ("progress", "end"),
    "finished_at": ("finished", ""),
    "last_error": ("last_error", "end"),
}
#: What `tasks` and `history` print (every column goes to -o FILE), as ListingColumns.
_SHOWN: dict[str, list[tuple[str, str, str]]] = {
    which: [(name, *_COLUMNS[name]) for name in names.split()]
    for which, names in {
        "tasks": "id task_type dedup_key group priority status progress depends_on attempts "
        "run_after",
        "history": "id task_type dedup_key group status attempts finished_at last_error",
    }.items()
}
#: The columns left out first when a listing does not fit the terminal.
_DROP_FIRST = {
    "tasks": ("priority", "attempts", "depends_on", "progress", "task_type"),
    "history": ("attempts", "task_type", "group"),
}
_SHOW_ROWS = 20
#: The statuses each listing holds, to count its rows without reading them.
_LISTED = {
    "tasks": ("blocked", "pending", "running", "paused", "waiting"),
    "history": ("completed", "failed", "cancelled", "superseded", "expired"),
}


def _listing_cells(
    frame: Any, which: str, children: dict[int, dict[str, int]] | None = None
) -> dict[str, list[str]]:
    """Each shown column of a `tasks` or `history` frame as text: times in UTC to the
    minute (a next try only while it is ahead), an error by its first line, what a task
    waits for (a blocked one: the ids; a waiting one: its active ``children``)."""
    from ..render import _cell

    now = dt.datetime.now(dt.UTC)
    cells: dict[str, list[str]] = {}
    for name, _, _ in _SHOWN[which]:
        values = frame[name].to_list() if name in frame.columns else [None] * frame.height
        if name in ("run_after", "finished_at"):
            ahead = name == "finished_at"
            cells[name] = [
                v.strftime("%m-%d %H:%M") if v is not None and (ahead or v > now) else "–"
                for v in values
            ]
        elif name == "depends_on":  # a blocked task: the ids it still waits for
            cells[name] = ["–" if not v else ", ".join(map(str, v)) for v in values]
            for i, tid in enumerate(frame["id"].to_list()):
                if children and tid in children:  # a parent: how many children still run
                    counts = children[tid]
                    active = sum(counts.get(s, 0) for s in ACTIVE_STATUSES)
                    cells[name][i] = f"{active:,} of {sum(counts.values()):,} children"
        elif name == "progress":  # a running attempt's last report: "42% copying"
            notes = frame["progress_message"].to_list()
            cells[name] = [
                "–" if v is None else f"{v:.0%}" + ("" if m is None else f" {m}")
                for v, m in zip(values, notes, strict=True)
            ]
        elif name == "status" and "preempted_at" in frame.columns:  # why a task is paused
            marks = frame["preempted_at"].to_list()
            cells[name] = [
                f"{v} (preempted)" if v == "paused" and m is not None else _cell(v)
                for v, m in zip(values, marks, strict=True)
            ]
        elif name == "priority" and "effective_priority" in frame.columns:  # aged: 200→50
            aged = frame["effective_priority"].to_list()
            cells[name] = [
                f"{v}→{e}" if e is not None and e != v else _cell(v)
                for v, e in zip(values, aged, strict=True)
            ]
        elif name == "last_error":
            cells[name] = ["–" if v is None else v.strip().splitlines()[-1] for v in values]
        else:
            cells[name] = [_cell(v) for v in values]
    return cells


def _listing_total(store: Any, which: str, frame: Any, limit: int | None, **filters: Any) -> int:
    """How many rows the listing's filters match (``frame`` is the first ``limit``)."""
    if limit is None or frame.height < limit:
        return int(frame.height)
    if all(filters[f] is None for f in ("group", "task_type", "batch_id", "tags")):
        counts = store.counts()
        wanted = filters["status"] or _LISTED[which]
        return sum(counts.get(status, 0) for status in wanted)
    query = store.tasks if which == "tasks" else store.history
    return int(query(**filters).height)


def _print_listing(
    frame: Any,
    which: str,
    total: int,
    db: str,
    children: dict[int, dict[str, int]] | None = None,
) -> None:
    """A `tasks` or `history` listing: one line per task fitting the terminal, and how
    many of how many it shows (``children``: of the waiting parents shown, by id)."""
    from ..render import listing_table

    console = _console()
    head = frame.head(_SHOW_ROWS)
    cells = _listing_cells(head, which, children)
    columns = _SHOWN[which]
    if which == "tasks" and all(v == "–" for v in cells["run_after"]):
        columns = columns[:-1]  # no task waits for a later time: no next-try column
    if which == "tasks" and all(v == "–" for v in cells["depends_on"]):
        columns = [c for c in columns if c[0] != "depends_on"]  # none blocked or waiting
    if which == "tasks" and all(v == "–" for v in cells["progress"]):
        columns = [c for c in columns if c[0] != "progress"]  # nothing reported
    noun = "active task" if which == "tasks" else "finished task"
    console.print(f"{which} in {_shown(db)}", soft_wrap=False)
    table = listing_table(cells, columns, console.width, drop_order=_DROP_FIRST[which])
    console.print(table)
    line = f"{head.height:,} of {_plural(total, noun)}"
    if head.height < total:
        line += "; -o FILE.parquet or FILE.csv writes all of them"
    console.print(line, soft_wrap=False)


def _export_command(which: str) -> Callable[..., None]:
    @DB_OPTION
    @click.option("--status", multiple=True, help="Only these statuses (repeatable).")
    @click.option("--group", multiple=True, help="Only these groups (repeatable).")
    @click.option("--type", "task_type", multiple=True, help="Only these task types.")
    @click.option(
        "--batch",
        "batch_id",
        multiple=True,
        type=click.IntRange(min=1),
        help="Only the tasks of these batches (repeatable).",
    )
    @TAG_OPTION
    @click.option("--limit", type=click.IntRange(min=0), help="At most this many rows.")
    @click.option(
        "--output",
        "-o",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Write to a .parquet or .csv file instead of printing.",
    )
    def command(
        db: str,
        status: tuple[str, ...],
        group: tuple[str, ...],
        task_type: tuple[str, ...],
        batch_id: tuple[int, ...],
        tags: dict[str, str],
        limit: int | None,
        output: Path | None,
    ) -> None:

        filters = {
            "status": status or None,
            "group": group or None,
            "task_type": task_type or None,
            "batch_id": list(batch_id) or None,
            "tags": tags or None,
        }
        with _existing(db) as store:
            query = store.tasks if which == "tasks" else store.history
            frame = query(**filters, limit=limit)
            total = _listing_total(store, which, frame, limit, **filters) if output is None else 0
            children = {}
            if output is None and which == "tasks":  # the waiting parents shown
                shown = frame.head(_SHOW_ROWS).filter(pl.col("status") == "waiting")
                children = {tid: store.children(tid) for tid in shown["id"].to_list()}
        if output is None:
            _print_listing(frame, which, total, db, children)
            return
        suffix = output.suffix.lower()
        if suffix == ".parquet":
            frame.write_parquet(output)
        elif suffix == ".csv":  # CSV holds no binary or list: ids awaited as "17 18"
            pair = pl.format(
                "{}={}", pl.element().struct.field("key"), pl.element().struct.field("value")
            )
            frame = frame.with_columns(pl.col("tags").list.eval(pair))  # tags as "k=v k2=v2"
            lists = [n for n, t in frame.schema.items() if isinstance(t, pl.List)]
            frame.drop("payload").with_columns(
                pl.col(n).list.eval(pl.element().cast(pl.String)).list.join(" ") for n in lists
            ).write_csv(output)
        else:
            raise click.BadParameter("use a .parquet or .csv file name", param_hint="--output")
        noun = "active task" if which == "tasks" else "finished task"
        click.echo(f"wrote {_plural(frame.height, noun)} to {output}")

    return command


tasks = click.command(
    "tasks",
    help="Active tasks (blocked, pending, running, paused, waiting) in dispatch order; "
    "export them.",
)(_export_command("tasks"))
history = click.command("history", help="Finished tasks with their final status; export them.")(
    _export_command("history")
)


def _payload_value(payload: bytes | None) -> tuple[Any, str]:
    """A payload for ``show``: its JSON value (or text, or hex) and how it reads."""
    if payload is None:
        return None, "–"
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        return payload.hex(), f"{payload!r} ({_plural(len(payload), 'byte')}, not UTF-8)"
    try:
        value = json.loads(text)
    except ValueError:
        return text, text
    return value, json.dumps(value, ensure_ascii=False)


@click.command()
@DB_OPTION
@click.argument("task_id", metavar="ID", type=click.IntRange(min=1))
@JSON_OPTION
def show(db: str, task_id: int, as_json: bool) -> None:
    """One task, active or finished: its status, fields, payload and every attempt (when
    and where it ran, how it ended, its error; a failure's traceback)."""
    with _existing(db) as store:
        task = store.task(task_id)
        attempts = store.attempts(task_id) if task is not None else None
    if task is None or attempts is None:
        raise SchedulerError(f"no task {task_id} in {_shown(db)}", kind="unknown_task")
    value, shown = _payload_value(task.pop("payload"))
    if as_json:
        fields = {k: _json_value(v) for k, v in task.items()}
        tries = [
            {k: _json_value(v) for k, v in row.items()} for row in attempts.iter_rows(named=True)
        ]
        click.echo(json.dumps({**fields, "payload": value, "attempt_history": tries}))
        return
    where = "active" if task["active"] else "finished"
    click.echo(f"task {task_id}: {task['status']} ({where})")
    names = {"read": "read", "write": "write", "net_rx": "net rx", "net_tx": "net tx"}
    sizes = [f"{shown_as} {task.pop(f'expected_{k}_bytes'):,}" for k, shown_as in names.items()]
    skip = {"id", "status", "active", "queue_pos"}
    rows = [(k, v) for k, v in task.items() if k not in skip]
    rows.insert(4, ("payload", shown))
    rows.insert(6, ("bytes", " · ".join(sizes)))
    width = max(shutil.get_terminal_size().columns, 40)
    for name, item in rows:
        _echo_field(name, item, width)
    _echo_attempts(task, attempts, width)


def _echo_field(name: str, item: Any, width: int) -> None:
    if isinstance(item, dt.datetime):
        item = item.strftime("%Y-%m-%d %H:%M:%S UTC")
    text = "–" if item is None else str(item)
    lines = textwrap.wrap(text, width, initial_indent=f"  {name:<12} ", subsequent_indent=" " * 15)
    click.echo("\n".join(lines or [f"  {name:<12}"]))


def _echo_attempts(task: dict[str, Any], attempts: Any, width: int) -> None:
    """``show``'s attempts: one line each (number, outcome, start, how long, worker), its
    error below; the traceback of the last failure; a running attempt last."""
    running = task["status"] == "running"
    count = attempts.height + running
    click.echo(f"attempts ({count})" if count else "attempts     none yet")
    last_failure = None
    for i, row in enumerate(attempts.iter_rows(named=True)):
        if row["traceback"]:
            last_failure = i
    for i, row in enumerate(attempts.iter_rows(named=True)):
        started, finished = row["started_at"], row["finished_at"]
        took = (finished - started).total_seconds() if started else None
        _echo_attempt(row["attempt"], row["outcome"], started, took, row["worker"], width)
        if i == last_failure:  # its traceback ends with the error
            for line in row["traceback"].splitlines():
                indent = " " * (6 + len(line) - len(line.lstrip()))
                wrapped = textwrap.wrap(
                    line.strip(), width, initial_indent=indent, subsequent_indent=indent + "  "
                )
                click.echo("\n".join(wrapped))
        elif row["error"]:
            indent = " " * 6
            for line in textwrap.wrap(
                row["error"], width, initial_indent=indent, subsequent_indent=indent
            ):
                click.echo(line)
    if running:
        _echo_attempt(
            task["attempts"], "running", task["started_at"], None, task.get("owner"), width
        )


def _echo_attempt(
    number: int,
    outcome: str,
    started: dt.datetime | None,
    took: float | None,
    worker: Any,
    width: int,
) -> None:
    at = started.strftime("%Y-%m-%d %H:%M:%S") if started else "–"
    line = f"  #{number:<3} {outcome:<10} {at}"
    if took is not None:
        line += f"  {took:.2f} s"
    if worker:
        line += f"  on {worker}"
    click.echo(line if len(line) <= width else line[: width - 1] + "…")
