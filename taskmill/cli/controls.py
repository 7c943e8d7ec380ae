"""Changing what is queued: ``prune``, ``cancel``, ``retry-failed``, ``pause-group`` and
``resume-group``."""

from __future__ import annotations

import datetime as dt
import json
from datetime import timedelta
from pathlib import Path

import click

from ..model import ACTIVE_STATUSES
from .common import (
    DB_OPTION,
    JSON_OPTION,
    TAG_OPTION,
    Duration,
    When,
    _console,
    _echo_json,
    _existing,
    _plural,
    _shown,
    _summary,
    _utc,
    options,
)


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


@click.command()
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
        _echo_json(db, removed=removed, export=None if exported is None else str(exported))
        return
    click.echo(f"removed {removed:,} finished task(s) from {_shown(db)}")
    if exported is not None:
        click.echo(f"exported them to {exported}")
    elif export is not None:
        click.echo(f"nothing to export to {export}")


#: ``cancel``'s and ``retry-failed``'s first filters: the tasks' types and groups.
_TYPE_AND_GROUP = options(
    click.option(
        "--type", "task_type", multiple=True, help="Only tasks of these types (repeatable)."
    ),
    click.option("--group", multiple=True, help="Only tasks of these groups (repeatable)."),
)


@click.command()
@DB_OPTION
@_TYPE_AND_GROUP
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
@TAG_OPTION
@JSON_OPTION
def cancel(
    db: str,
    task_type: tuple[str, ...],
    group: tuple[str, ...],
    label: tuple[str, ...],
    status: tuple[str, ...],
    keys_file: Path | None,
    ids: tuple[int, ...],
    tags: dict[str, str],
    as_json: bool,
) -> None:
    """Cancel every active task matching all the filters given (at least one), or the
    tasks given by --id.

    They move to history as cancelled; a worker running one of them stops it within its
    poll interval."""
    filtered = bool(task_type or group or label or status or keys_file or tags)
    if ids:
        if filtered:
            raise click.UsageError("give either --id or filters, not both")
        _cancel_ids(db, ids, as_json)
        return
    if not filtered:
        raise click.UsageError(
            "give at least one of --type, --group, --label, --status, --keys-file, --tag, --id (to "
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
            tags=tags or None,
        )
    if as_json:
        _echo_json(db, cancelled=count)
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
        not_active_json = [{"id": i, "status": why} for i, why in not_active]
        _echo_json(db, cancelled=len(done), ids=done, not_active=not_active_json)
        return
    line = f"cancelled {_plural(len(done), 'task')} in {_shown(db)}"
    if not_active:
        line += "; not active: " + ", ".join(f"{i} ({why})" for i, why in not_active)
    click.echo(line)


@click.command("retry-failed")
@DB_OPTION
@_TYPE_AND_GROUP
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


@click.command("pause-group")
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
    from ..store import TaskStore

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


@click.command("resume-group")
@DB_OPTION
@click.argument("group")
def resume_group(db: str, group: str) -> None:
    """Dispatch GROUP's tasks again."""

    with _existing(db) as store:
        resumed = store.resume_group(group)
    click.echo(
        f"resumed group {group} in {_shown(db)}" if resumed else f"group {group} was not paused"
    )
