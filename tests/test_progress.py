"""Stored progress on both backends: what a running attempt reports through
``ctx.progress()`` is written a few times a second at most and seen by every process in
``tasks()``, ``taskmill tasks`` and the live view; a new attempt starts with none."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import taskmill as tm
from taskmill.cli import cli
from taskmill.scheduler.attempts import TaskContext
from taskmill.views.notebook import progress_html

pytestmark = pytest.mark.backends("sqlite", "postgres")


def running(store: tm.TaskStore, n: int = 1) -> tuple[list[int], str]:
    """``n`` tasks submitted and claimed: their ids and owner."""
    store.submit_batch([tm.TaskSubmission("copy", dedup_key=f"k{i}") for i in range(n)])
    owner = store.new_owner()
    return [t.id for t in store.claim(n, task_types=["copy"], owner=owner)], owner


def shown(store: tm.TaskStore) -> list[tuple[int, float | None, str | None]]:
    return store.tasks().select("id", "progress", "progress_message").sort("id").rows()


def test_progress_is_stored_for_the_attempt_that_runs(store: tm.TaskStore) -> None:
    [a, b], owner = running(store, 2)
    assert shown(store) == [(a, None, None), (b, None, None)]
    stored = store.record_progress({a: (1, 0.25, "copying"), b: (1, 1.7, None)}, owner=owner)
    assert stored == 2
    assert shown(store) == [(a, 0.25, "copying"), (b, 1.0, None)]  # clamped to 0..1
    # another attempt, or another worker's, is left out
    assert store.record_progress({a: (2, 0.5, "x")}, owner=owner) == 0
    assert store.record_progress({a: (1, 0.5, "x")}, owner="someone else") == 0
    assert store.record_progress({a: (1, float("nan"), "nan")}, owner=owner) == 1
    assert shown(store)[0] == (a, 0.0, "nan")
    # given back and claimed again: the new attempt starts with no progress
    assert store.release([a], owner=owner) == 1
    assert shown(store)[0] == (a, 0.0, "nan")
    [again] = store.claim(1, task_types=["copy"], owner=owner)
    assert again.id == a and again.attempt == 1
    assert shown(store)[0] == (a, None, None)
    assert store.record_progress({}, owner=owner) == 0


async def test_a_running_attempts_progress_is_seen_from_another_store(
    store: tm.TaskStore, location: str | Path
) -> None:
    """An executor reports 200 times in a burst: the last report reaches the store in a
    handful of writes, not 200, and another connection reads it while the task runs."""
    reported = threading.Event()
    release = threading.Event()

    def copy(ctx: TaskContext) -> None:
        for i in range(200):
            ctx.progress(i / 200, f"part {i} of 200")
        reported.set()
        release.wait(30)

    task = store.submit(tm.TaskSubmission("copy", dedup_key="big")).task_id
    async with tm.Scheduler(store, executors={"copy": copy}, poll_interval=0.05) as sched:
        await asyncio.to_thread(reported.wait, 30)
        with tm.TaskStore.open(location) as other:
            deadline = time.monotonic() + 10
            row: tuple[int, float | None, str | None] = (task, None, None)
            while row[2] != "part 199 of 200" and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                row = shown(other)[0]
            assert row == (task, 199 / 200, "part 199 of 200")
            writer = sched._progress
            assert writer is not None and 1 <= writer.writes <= 5, writer.writes
            listed = CliRunner().invoke(cli, ["tasks", "--db", str(location)])
            assert listed.exit_code == 0, listed.output
            assert "100% part 199 of 200" in listed.stdout or "99%" in listed.stdout
        release.set()
        await sched.wait_idle()
    # ended: it is in history, with no progress column
    assert store.tasks().height == 0
    assert "progress" not in store.history().columns


def test_the_live_view_draws_a_bar_per_task_that_reported(store: tm.TaskStore) -> None:
    [a, _, c], owner = running(store, 3)
    store.record_progress({a: (1, 0.3, "<b>eu</b>"), c: (1, 0.9, None)}, owner=owner)
    page = progress_html(store.tasks(status="running"))
    assert page.count("taskmill-progress-row") == 2  # b reported nothing
    assert page.index(f"#{c} k2") < page.index(f"#{a} k0")  # most advanced first
    assert "width:30%" in page and "&lt;b&gt;eu&lt;/b&gt;" in page and "<b>eu" not in page
    assert progress_html(store.tasks(status="running"), shown=1).endswith(
        "<div><i>and 1 more</i></div></div>"
    )
    assert progress_html(pl.DataFrame(schema=store.tasks().schema)) == ""
