"""Schedules: ``schedule`` (make or replace one), ``schedules`` (list them),
``unschedule``, ``pause-schedule`` and ``resume-schedule``.  The workers of the store
(``taskmill worker``) submit each occurrence, once."""

from __future__ import annotations

import datetime as dt
import json
from datetime import timedelta
from typing import Any

import click
import polars as pl

from ..store.schedules import every_text
from .common import (
    DB_OPTION,
    JSON_OPTION,
    Duration,
    _console,
    _echo_json,
    _existing,
    _json_value,
    _shown,
    options,
)


def _payload(text: str | None) -> Any:
    """``--payload``: JSON text, stored as its JSON encoding."""
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise click.BadParameter(f"{text!r} is not JSON: {exc}", param_hint="--payload") from None


def _priority(text: str | None) -> int | str | None:
    """``--priority``: 0..255 or a tier name (checked with the submission)."""
    if text is None:
        return None
    stripped = text.strip()
    return int(stripped) if stripped.lstrip("-").isdigit() else stripped


def _start(text: str | None) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r} is not an ISO time (2026-12-08T02:00; naive: in --timezone)",
            param_hint="--start-at",
        ) from None


def _when(row: dict[str, Any]) -> str:
    """A schedule's timing, as said on one line."""
    if row["every"] is not None:
        return f"every {every_text(row['every'])}"
    zone = row.get("timezone")
    return f"cron '{row['cron']}'" + ("" if zone in (None, "UTC") else f" ({zone})")


def _utc(value: dt.datetime | None) -> str:
    return "–" if value is None else value.strftime("%Y-%m-%d %H:%M:%S")


#: ``schedule``'s options of the task each occurrence submits.
_TASK_OPTIONS = options(
    click.option("--type", "task_type", required=True, help="The task type of each occurrence."),
    click.option("--group", help="Its group."),
    click.option("--priority", help="Its priority: 0..255 or a tier name (default normal)."),
    click.option("--payload", metavar="JSON", help="Its payload: JSON text."),
    click.option("--label", help="Its label."),
    click.option(
        "--dedup-key",
        help="One dedup key for every occurrence (default: NAME@<occurrence, ISO UTC>).",
    ),
    click.option(
        "--max-retries", type=click.IntRange(min=0, max=1000), help="Its retries after a failure."
    ),
    click.option(
        "--expires-after",
        type=Duration(),
        metavar="DURATION",
        help="An occurrence's task not started this long after its time ends as expired.",
    ),
)


@click.command()
@DB_OPTION
@click.argument("name")
@click.option("--every", type=Duration(), help="Every this long: 30s, 15m, 12h, 1d, 1d12h.")
@click.option("--cron", metavar="EXPR", help='A five-field cron expression, such as "0 3 * * *".')
@click.option(
    "--timezone",
    default="UTC",
    help="The time zone --cron (and a naive --start-at) is read in: an IANA name.",
)
@click.option(
    "--start-at",
    metavar="TIME",
    help="The first occurrence (--every) or none before it (--cron): an ISO time; default now.",
)
@_TASK_OPTIONS
@JSON_OPTION
def schedule(
    db: str,
    name: str,
    every: timedelta | None,
    cron: str | None,
    timezone: str,
    start_at: str | None,
    task_type: str,
    group: str | None,
    priority: str | None,
    payload: str | None,
    label: str | None,
    dedup_key: str | None,
    max_retries: int | None,
    expires_after: timedelta | None,
    as_json: bool,
) -> None:
    """Make schedule NAME, or replace it: a task of --type submitted at each occurrence,
    --every so long or at each match of --cron, once however many workers run.

    An occurrence is skipped while the last one's task still waits (pending or blocked);
    occurrences missed while no worker ran are not replayed (the latest is submitted).
    Replacing a schedule with the same timing keeps its next occurrence.
    """
    from ..model import TaskSubmission
    from ..store import TaskStore

    if (every is None) == (cron is None):
        raise click.UsageError("give exactly one of --every and --cron")
    submission = TaskSubmission(
        task_type,
        dedup_key=dedup_key,
        group=group,
        priority=_priority(priority),
        payload=_payload(payload),
        label=label,
        max_retries=max_retries,
        expires_at=expires_after,
    )
    with TaskStore.open(db) as store:
        row = store.schedule(
            name,
            submission,
            every=every,
            cron=cron,
            start_at=_start(start_at),
            timezone=timezone,
        )
    if as_json:
        _echo_json(db, schedule={k: _json_value(v) for k, v in row.items()})
        return
    paused = " (paused: resume-schedule to run it)" if row["paused"] else ""
    click.echo(
        f"scheduled {name} in {_shown(db)}: {task_type}, {_when(row)}; "
        f"next {_utc(row['next_at'])} UTC{paused}"
    )


def _shown_rows(frame: pl.DataFrame) -> pl.DataFrame:
    """``store.schedules(details=True)`` as the ``schedules`` table shows it, on 80
    columns: a cron's time zone under it when it is not UTC."""

    def when(time: str) -> pl.Expr:
        return pl.col(time).dt.strftime("%m-%d %H:%M:%S").fill_null("–")

    every = pl.col("every").map_elements(every_text, return_dtype=pl.String)
    utc = pl.col("timezone") == "UTC"
    zone = pl.when(utc).then(pl.lit("")).otherwise("\n" + pl.col("timezone"))
    return frame.select(
        "name",
        pl.col("task_type").alias("task type"),
        pl.when(pl.col("every").is_not_null())
        .then(pl.lit("every ") + every)
        .otherwise(pl.col("cron") + zone)
        .alias("when"),
        pl.when(pl.col("paused")).then(pl.lit("paused")).otherwise(when("next_at")).alias("next"),
        when("last_at").alias("last"),
        "skipped",
        "missed",
    )


@click.command()
@DB_OPTION
@JSON_OPTION
def schedules(db: str, as_json: bool) -> None:
    """Every schedule: its task type, when it fires, its next and last occurrence, the
    occurrences skipped while the last one's task waited and those missed while no worker
    ran (--json: the task too)."""
    from ..render import data_table

    with _existing(db) as store:
        frame = store.schedules(details=True)
    if as_json:
        rows = [{k: _json_value(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]
        for row in rows:
            every = row["every"]
            row["every"] = None if every is None else every.total_seconds()
        _echo_json(db, schedules=rows)
        return
    if frame.height == 0:
        click.echo(f"no schedules in {_shown(db)}")
        return
    console = _console()
    console.print(f"schedules in {_shown(db)} (times UTC)")
    console.print(data_table(_shown_rows(frame), drop_zero=True))


@click.command()
@DB_OPTION
@click.argument("name")
def unschedule(db: str, name: str) -> None:
    """Remove schedule NAME (the tasks it submitted stay as they are)."""
    with _existing(db) as store:
        removed = store.unschedule(name)
    click.echo(
        f"removed schedule {name} from {_shown(db)}" if removed else f"no schedule named {name}"
    )


@click.command("pause-schedule")
@DB_OPTION
@click.argument("name")
def pause_schedule(db: str, name: str) -> None:
    """Submit none of schedule NAME's occurrences until resume-schedule."""
    with _existing(db) as store:
        paused = store.pause_schedule(name)
    click.echo(f"paused schedule {name}" if paused else f"schedule {name} was paused already")


@click.command("resume-schedule")
@DB_OPTION
@click.argument("name")
def resume_schedule(db: str, name: str) -> None:
    """Submit schedule NAME's occurrences again, from the next one on (those that came due
    while it was paused are not submitted)."""
    with _existing(db) as store:
        resumed = store.resume_schedule(name)
        row = store.schedules().filter(pl.col("name") == name).row(0, named=True)
    if resumed:
        click.echo(f"resumed schedule {name}: next {_utc(row['next_at'])} UTC")
    else:
        click.echo(f"schedule {name} was not paused")
