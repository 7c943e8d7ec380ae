"""Every schedule guarantee with several real worker processes on one store (both engines):
three ``taskmill worker`` processes fire the same schedules for a few seconds.  Each
occurrence is submitted once (one task per dedup key, run once) and every one between the
first and the last is accounted for (submitted, skipped or counted missed); a schedule
whose task is never taken submits no second one (no pile-up); one left behind by 300 s
submits its latest occurrence only (missed ones are not replayed, and counted); a paused
one submits nothing."""

from __future__ import annotations

import datetime as dt
import signal
import subprocess
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

import taskmill as tm

from conftest import run_sql, table, worker_process

pytestmark = pytest.mark.backends("sqlite", "postgres")

WORKERS = 3
RUN_FOR = 4.5  # seconds all of them run together


def worker(location: str | Path, folder: Path) -> subprocess.Popen[str]:
    executors = ("--executor", "tick=steps:run", "--executor", "late=steps:run")
    return worker_process(
        location, folder, *executors, "--poll-interval", "0.2", "--max-concurrency", "2"
    )


def occurrence(key: str) -> float:
    """The time of an occurrence, from its dedup key."""
    return dt.datetime.fromisoformat(key.split("@", 1)[1]).timestamp()


def test_several_workers_fire_each_occurrence_once(location: str | Path, tmp_path: Path) -> None:
    log = tmp_path / "ran.log"
    (tmp_path / "steps.py").write_text(
        textwrap.dedent(
            f"""
            import os, time

            def run(ctx):
                time.sleep(0.2)
                fd = os.open({str(log)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                try:  # one append: whole lines
                    os.write(fd, f"{{ctx.dedup_key}} {{os.getpid()}}\\n".encode())
                finally:
                    os.close(fd)
            """
        )
    )
    second = timedelta(seconds=1)
    with tm.TaskStore.open(location) as store:
        made = {
            "tick": store.schedule("tick", tm.TaskSubmission("tick"), every=second),
            "late": store.schedule(
                "late", tm.TaskSubmission("late"), every=second, now=store.now() - 300
            ),
        }
        store.schedule("stuck", tm.TaskSubmission("stuck"), every=second)  # no executor
        store.schedule("off", tm.TaskSubmission("tick", group="off"), every=second)
        store.pause_schedule("off")
        spawned = store.now()
        procs = [worker(location, tmp_path) for _ in range(WORKERS)]
        try:
            deadline = time.monotonic() + 90
            workers = table(location, "workers")
            while run_sql(location, f"SELECT count(*) FROM {workers}")[0][0] < WORKERS:
                assert time.monotonic() < deadline, "the workers did not start"
                assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
                time.sleep(0.1)
            time.sleep(RUN_FOR)
        finally:
            for p in procs:
                p.send_signal(signal.SIGTERM)
            errors = [p.communicate(timeout=60)[1] for p in procs]
        assert [p.returncode for p in procs] == [0] * WORKERS, errors
        state = {r["name"]: r for r in store.schedules(details=True).iter_rows(named=True)}
        tasks = pl.concat(
            [
                store.tasks().select("id", "task_type", "dedup_key", "status"),
                store.history().select("id", "task_type", "dedup_key", "status"),
            ]
        ).sort("id")
        completed = store.attempts(outcome="completed")["task_id"].to_list()
    ran = [line.split() for line in log.read_text().splitlines()]
    for name in ("tick", "late"):
        mine = tasks.filter(pl.col("task_type") == name)
        keys = mine["dedup_key"].to_list()
        # once per occurrence: one task per key, and each ran at most once (once if done)
        assert len(keys) == len(set(keys)) >= 3, (name, keys)
        assert sorted(k for k, _ in ran if k.startswith(f"{name}@")) == sorted(
            mine.filter(pl.col("status") == "completed")["dedup_key"].to_list()
        )
        times = sorted(occurrence(k) for k in keys)
        # every occurrence from the schedule's first to the one still to come was submitted,
        # or skipped (the last one's task waited), or missed (no worker fired it in time)
        first, coming = made[name]["next_at"].timestamp(), state[name]["next_at"].timestamp()
        counted = len(times) + state[name]["skipped"] + state[name]["missed"]
        assert counted == round(coming - first), (name, times, state[name])
        assert all(float(t - first).is_integer() for t in times) and times[0] >= first
        assert state[name]["last_at"].timestamp() == times[-1]
    assert sorted(completed) == sorted(
        tasks.filter(pl.col("status") == "completed")["id"].to_list()
    )
    # missed occurrences are not replayed: "late" came due 300 s before the workers began,
    # and its first task is the occurrence due when one first fired it
    late = tasks.filter(pl.col("task_type") == "late")["dedup_key"]
    assert min(occurrence(k) for k in late) >= spawned - 1
    assert state["late"]["missed"] >= 299
    # no pile-up: the first task of "stuck" is never taken, so no other one is submitted
    stuck = tasks.filter(pl.col("task_type") == "stuck")
    assert stuck["status"].to_list() == ["pending"]
    assert state["stuck"]["skipped"] >= 3 and state["stuck"]["last_task_id"] == stuck["id"][0]
    # paused: nothing
    assert tasks.filter(pl.col("dedup_key").str.starts_with("off@")).height == 0
    assert state["off"]["last_at"] is None
