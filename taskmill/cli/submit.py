"""``submit`` and ``plan`` (a sync plan into the store, or what that would do), and
``gen-plan`` (a synthetic plan to try them with)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import tempfile
from datetime import timedelta
from pathlib import Path
from typing import Any

import click

from ..model import DuplicateStrategy, Priority, SchedulerError
from .common import (
    DB_OPTION,
    JSON_OPTION,
    When,
    _console,
    _pairs,
    _shown,
    _summary,
    options,
)


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


#: The argument and options of ``submit`` and ``plan``.
plan_options = options(
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
    click.option("--priority", help="Priority of the rows that set none: 0..255 or a tier name."),
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
        "--name",
        help="A name for the batch, recorded with it (taskmill batches; at most 200 characters).",
    ),
    click.option(
        "--outcome",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Write the per-row outcome to this Parquet file.",
    ),
    JSON_OPTION,
)


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
    name: str | None,
) -> Any:
    from ..batch.submission import BatchSubmission

    batch = BatchSubmission().tasks(plan).name(name)
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


def _print_outcome(outcome: Any, db: str) -> None:
    from ..render import outcome_table

    console = _console()
    head = "plan (nothing written)" if outcome.planned else "submitted"
    elapsed = outcome.elapsed or 0
    console.print(f"{head}: {len(outcome):,} rows into {_shown(db)} in {elapsed:.2f} s")
    if outcome.batch_id is not None:
        console.print(f"batch {outcome.batch_id} (follow it: taskmill batch {outcome.batch_id})")
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
    from ..store.location import parse_location

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
            from ..model import BatchInterrupted

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

    from ..store import TaskStore

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


@click.command()
@plan_options
def submit(plan: Path, db: str, outcome: Path | None, as_json: bool, **options: Any) -> None:
    """Submit a Parquet sync plan (a file or a folder of files) to the store.

    Columns are the task fields (task_type, dedup_key, group, priority, payload, …);
    --map renames others, --payload-columns packs the rest into the payload.  Every row
    gets an outcome: submitted, deduplicated, superseded, upgraded or failed.
    """
    _run_plan(False, plan, db, outcome, as_json, **options)


@click.command()
@plan_options
def plan(plan: Path, db: str, outcome: Path | None, as_json: bool, **options: Any) -> None:
    """What `submit` would do now with this plan; writes nothing."""
    _run_plan(True, plan, db, outcome, as_json, **options)


@click.command("gen-plan")
@click.option("--rows", default=10_000, type=click.IntRange(min=0))
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", default=0, help="Same seed, same plan.")
@click.option(
    "--duplicate-rate",
    default=0.02,
    help="Share of rows repeating an earlier key.",
)
@click.option(
    "--invalid-rate",
    default=0.0,
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

        from ..demo import SAMPLE_PLAN

        shutil.copyfile(SAMPLE_PLAN, out)
        click.echo(f"wrote the sample plan (3,000 rows) to {out}")
        return
    from ..sample import make_plan

    frame = make_plan(rows, seed=seed, duplicate_rate=duplicate_rate, invalid_rate=invalid_rate)
    frame.write_parquet(out)
    click.echo(f"wrote {frame.height:,} rows to {out}")
