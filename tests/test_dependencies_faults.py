"""Dependencies when workers die: real worker processes killed (SIGKILL) while they run a
move plan, again and again, then one left to finish it.  Nothing is lost and nothing is
released twice: every task completes exactly once, and no task starts before what it
waits for has completed."""

from __future__ import annotations

import random
import signal
import subprocess
import textwrap
import time
from pathlib import Path

import polars as pl
import pytest

import taskmill as tm

from conftest import is_postgres, worker_process

pytestmark = pytest.mark.backends("sqlite", "postgres")

N = 40  # objects moved: N copies, N deletes, one manifest


def worker(location: str | Path, folder: Path, *, until_idle: bool) -> subprocess.Popen[str]:
    steps = [f"--executor={kind}=move_steps:step" for kind in ("copy", "delete", "manifest")]
    options = [*steps, "--lease-timeout", "1.5", "--poll-interval", "0.1"]
    options += ["--max-concurrency", "4", *(["--until-idle"] if until_idle else [])]
    return worker_process(location, folder, *options)


def test_killed_workers_lose_nothing_and_release_nothing_twice(
    location: str | Path, tmp_path: Path
) -> None:
    log = tmp_path / "steps.log"
    (tmp_path / "move_steps.py").write_text(
        textwrap.dedent(
            f"""
            import os, time

            def note(what):  # one append each: whole lines, in the order they happened
                fd = os.open({str(log)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                try:
                    os.write(fd, what.encode() + b"\\n")
                finally:
                    os.close(fd)

            def step(ctx):
                note("start " + ctx.dedup_key)
                time.sleep(0.15)
                note("end " + ctx.dedup_key)
            """
        )
    )
    objects = [f"obj/{i:02}" for i in range(N)]
    plan = pl.concat(
        [
            pl.DataFrame({"task_type": "copy", "dedup_key": objects}),
            pl.DataFrame(
                {
                    "task_type": "delete",
                    "dedup_key": [f"src/{o}" for o in objects],
                    "depends_on": [[o] for o in objects],
                }
            ),
            pl.DataFrame(
                {
                    "task_type": ["manifest"],
                    "dedup_key": ["manifest"],
                    "depends_on": [[f"src/{o}" for o in objects]],
                }
            ),
        ],
        how="diagonal_relaxed",
    )
    with tm.TaskStore.open(location) as store:
        out = store.submit_batch(plan)
        assert out.counts()["submitted"] == 2 * N + 1 and out.batch_id is not None
    rng = random.Random(7)
    for _ in range(4):  # each killed while it runs tasks and releases their dependents
        with tm.TaskStore.open(location) as store:
            before = store.counts()["completed"]
            proc = worker(location, tmp_path, until_idle=False)
            deadline = time.monotonic() + 60
            while store.counts()["completed"] == before and time.monotonic() < deadline:
                time.sleep(0.05)  # until it has work under way, however slow it starts
        time.sleep(rng.uniform(0.05, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)  # reaped, its pipe closed
    if is_postgres(location):
        time.sleep(2)  # the killed workers' leases run out (SQLite sees them dead at once)
    last = worker(location, tmp_path, until_idle=True)
    _, err = last.communicate(timeout=120)
    assert last.returncode == 0, err
    with tm.TaskStore.open(location) as store:
        status = store.batch(out.batch_id)
        left = store.tasks().select("id", "dedup_key", "status", "depends_on").rows()
        assert status.done and status.counts["completed"] == 2 * N + 1, (left, err)
        history = store.history()
        assert history["status"].to_list() == ["completed"] * (2 * N + 1)
        attempts = store.attempts()
        completed = attempts.filter(pl.col("outcome") == "completed")
        # the kills hit running attempts (lost, then run again), not idle workers
        assert attempts.filter(pl.col("outcome") != "completed").height > 0
        # each task completed exactly once: released once, run to its end once
        assert sorted(completed["task_id"].to_list()) == sorted(history["id"].to_list())
        assert store.tasks().height == 0
    # what the executors did, in order: no task's code started before the code of what it
    # waits for had ended (for good: its last run, the one whose completion released it)
    lines = log.read_text().splitlines()
    first_start = {}
    last_end = {}
    for n, line in enumerate(lines):
        what, key = line.split(" ", 1)
        if what == "start":
            first_start.setdefault(key, n)
        else:
            last_end[key] = n
    for o in objects:
        assert first_start[f"src/{o}"] > last_end[o], o
    assert first_start["manifest"] > max(last_end[f"src/{o}"] for o in objects)
