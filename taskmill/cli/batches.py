"""Batches as units of work: ``batches`` (every batch, newest first) and ``batch ID`` (one
batch's progress, counts, bytes and failures; ``--wait`` follows it to its end)."""

from __future__ import annotations

import time
from typing import Any

import click
import polars as pl

from ..batch.status import BATCH_STATUSES, ENDED
from .common import (
    DB_OPTION,
    JSON_OPTION,
    _console,
    _echo_json,
    _existing,
    _json_value,
    _plural,
    _shown,
)

#: Failed tasks ``batch`` lists (the rest: ``taskmill history --batch ID --status failed``).
_FAILURES_SHOWN = 5


@click.command()
@DB_OPTION
@click.option("--limit", type=click.IntRange(min=0), default=20, help="The newest this many.")
@JSON_OPTION
def batches(db: str, limit: int, as_json: bool) -> None:
    """Every batch submitted, newest first: its name, when, how many tasks, how far."""
    from ..render import data_table

    with _existing(db) as store:
        frame = store.batches(limit=limit)
    if as_json:
        rows = [{k: _json_value(v) for k, v in row.items()} for row in frame.iter_rows(named=True)]
        _echo_json(db, batches=rows)
        return
    if frame.height == 0:
        click.echo(f"no batches in {_shown(db)}")
        return
    console = _console()
    console.print(f"batches in {_shown(db)} (times UTC)", soft_wrap=True)
    shown = _batches_shown(frame)
    if frame["finished_at"].is_null().all():
        shown = shown.drop("finished")  # none has finished: room for the rest on 80 columns
    console.print(data_table(shown, drop_zero=True, keep=("total",)))


def _batches_shown(frame: pl.DataFrame) -> pl.DataFrame:
    """``store.batches()`` as the ``batches`` table shows it: short times, how far each
    batch is, its bytes in units."""
    from rich.filesize import decimal

    def size(n: int) -> str:
        return decimal(n).replace(" bytes", " B").replace(" byte", " B")

    ended = pl.sum_horizontal(*ENDED)
    return frame.select(
        pl.col("batch_id").alias("id"),
        pl.col("name").fill_null("–"),
        pl.col("created_at").dt.strftime("%m-%d %H:%M").alias("submitted"),
        pl.col("finished_at").dt.strftime("%m-%d %H:%M").fill_null("–").alias("finished"),
        "total",
        *BATCH_STATUSES,
        pl.when(pl.col("total") > 0)
        .then((100 * ended / pl.col("total")).round(1).cast(pl.String) + "%")
        .otherwise(pl.lit("–"))
        .alias("ended"),
        pl.format(
            "{}/{}",
            pl.col("completed_bytes").map_elements(size, return_dtype=pl.String),
            pl.col("expected_bytes").map_elements(size, return_dtype=pl.String),
        ).alias("bytes done"),
    )


def _status_json(status: Any) -> dict[str, Any]:
    return {
        "batch_id": status.batch_id,
        "name": status.name,
        "created_at": _json_value(status.created_at),
        "finished_at": _json_value(status.finished_at),
        "done": status.done,
        "total": status.total,
        "counts": status.counts,
        "expected_bytes": status.expected_bytes,
        "completed_bytes": status.completed_bytes,
    }


@click.command()
@DB_OPTION
@click.argument("batch_id", metavar="ID", type=click.IntRange(min=1))
@click.option(
    "--wait",
    is_flag=True,
    help="Follow the batch until it is done (a progress bar on a terminal), then print it.",
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    help="Seconds between two readings with --wait.",
)
@JSON_OPTION
def batch(db: str, batch_id: int, wait: bool, interval: float, as_json: bool) -> None:
    """One batch: how far it is, its tasks by status, their bytes, and what failed.  Exits
    with 3 when waiting stops (Ctrl-C) before it is done."""
    with _existing(db) as store:
        status = store.batch(batch_id)
        if wait and not status.done:
            status = _follow(store, status, interval)
        failed = store.history(batch_id=batch_id, status="failed", limit=_FAILURES_SHOWN)
    if as_json:
        failures = [
            {
                "id": r["id"],
                "task_type": r["task_type"],
                "dedup_key": r["dedup_key"],
                "error": r["last_error"],
            }
            for r in failed.iter_rows(named=True)
        ]
        _echo_json(db, **_status_json(status), failed_tasks=failures)
    else:
        _print_status(status, failed)
    if wait and not status.done:
        raise SystemExit(3)


def _follow(store: Any, status: Any, interval: float) -> Any:
    """Read ``status`` again every ``interval`` seconds until it is done (or Ctrl-C), with
    a progress bar on stderr when it is a terminal."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    err = _console(stderr=True)
    with Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        disable=not err.is_terminal,
        transient=True,
    ) as bar:
        task = bar.add_task(f"batch {status.batch_id}", total=status.total)
        try:
            while not status.done:
                bar.update(task, completed=status.ended)
                time.sleep(interval)
                status = status.refresh()
        except KeyboardInterrupt:
            pass
    return status


def _print_status(status: Any, failed: Any) -> None:
    console = _console()
    name = f" {status.name!r}" if status.name else ""
    state = "done" if status.done else "in progress"
    console.print(f"batch {status.batch_id}{name}: {state}", markup=False, soft_wrap=False)
    created = status.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    line = f"  submitted   {created}"
    if status.finished_at is not None:
        took = (status.finished_at - status.created_at).total_seconds()
        line += f" · finished {status.finished_at:%Y-%m-%d %H:%M:%S UTC} ({took:,.1f} s later)"
    console.print(line, soft_wrap=False)
    share = 100 * status.fraction
    console.print(
        f"  ended       {status.ended:,} of {_plural(status.total, 'task')} ({share:.1f}%)",
        soft_wrap=False,
    )
    for key, n in status.counts.items():
        if n:
            console.print(f"  {key:<11} {n:>12,}", soft_wrap=False)
    if status.expected_bytes:  # a batch that announced no size has no bytes line
        console.print(
            f"  bytes       {status.completed_bytes:,} of {status.expected_bytes:,} completed",
            soft_wrap=False,
        )
    if failed.height:
        console.print("failed tasks:")
        for row in failed.iter_rows(named=True):
            console.print(
                f"  {row['id']}  {row['task_type']}  {row['dedup_key'] or '–'}: "
                f"{row['last_error'] or '–'}",
                markup=False,
                soft_wrap=False,
            )
        more = status.counts["failed"] - failed.height
        if more > 0:
            console.print(
                f"  … {more:,} more: taskmill history --batch {status.batch_id} --status failed",
                soft_wrap=False,
            )
