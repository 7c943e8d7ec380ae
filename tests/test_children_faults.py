"""Child tasks when workers die: real worker processes killed (SIGKILL) while a parent
waits for the children it spawned, again and again, then one left to finish.  Nothing is
lost and nothing ends twice: every child completes exactly once, the parent completes
once, after its finalizer saw every child completed."""

from __future__ import annotations

import json
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

N = 60  # objects of the folder: one child task each


def worker(location: str | Path, folder: Path, *, until_idle: bool) -> subprocess.Popen[str]:
    options = ["--executor=folder=sync_steps:folder", "--executor=object=sync_steps:obj"]
    options += ["--finalizer=folder=sync_steps:marker", "--lease-timeout", "1.5"]
    options += ["--poll-interval", "0.1", "--max-concurrency", "3"]
    return worker_process(location, folder, *options, *(["--until-idle"] if until_idle else []))


def test_killed_workers_leave_a_waiting_parent_to_end_once(
    location: str | Path, tmp_path: Path
) -> None:
    log = tmp_path / "steps.log"
    (tmp_path / "sync_steps.py").write_text(
        textwrap.dedent(
            f"""
            import json, os, time

            import taskmill as tm

            def note(*what):  # one append each: whole lines, in the order they happened
                fd = os.open({str(log)!r}, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
                try:
                    os.write(fd, json.dumps(what).encode() + b"\\n")
                finally:
                    os.close(fd)

            def folder(ctx):
                keys = [f"obj/{{i:02}}" for i in range({N})]
                ctx.spawn([tm.TaskSubmission("object", dedup_key=k) for k in keys])
                note("spawned", ctx.task_id)

            def obj(ctx):
                note("start", ctx.dedup_key)
                time.sleep(0.1)
                note("end", ctx.dedup_key)

            def marker(ctx):
                note("finalize", {{s: n for s, n in ctx.children.items() if n}})
            """
        )
    )
    with tm.TaskStore.open(location) as store:
        parent = store.submit(tm.TaskSubmission("folder", dedup_key="sync eu/")).task_id
    rng = random.Random(11)
    for round in range(4):  # each killed while children run and their parent waits
        with tm.TaskStore.open(location) as store:
            before = store.counts()["completed"]
            proc = worker(location, tmp_path, until_idle=False)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                store.counts()["waiting"] == 1 and store.counts()["completed"] > before
            ):
                time.sleep(0.05)  # the parent waits and a child completed here
            assert store.counts()["waiting"] == 1, (round, store.tasks().rows())
        time.sleep(rng.uniform(0.05, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    if is_postgres(location):
        time.sleep(2)  # the killed workers' leases run out (SQLite sees them dead at once)
    last = worker(location, tmp_path, until_idle=True)
    _, err = last.communicate(timeout=120)
    assert last.returncode == 0, err
    with tm.TaskStore.open(location) as store:
        assert store.tasks().height == 0, store.tasks().rows()
        history = store.history()
        assert history.select("id", "status").row(0) == (parent, "completed")
        children = history.filter(pl.col("parent_id") == parent)
        assert children.height == N and set(children["status"]) == {"completed"}
        attempts = store.attempts()
        assert attempts.filter(pl.col("outcome") == "lost").height > 0  # kills hit work
        completed = attempts.filter(pl.col("outcome") == "completed")
        # each task completed exactly once; the parent by its finalizing attempt
        assert sorted(completed["task_id"].to_list()) == sorted(history["id"].to_list())
        assert store.attempts(parent)["outcome"].to_list() == ["waiting", "completed"]
    notes = [json.loads(line) for line in log.read_text().splitlines()]
    assert [n for n in notes if n[0] == "spawned"] == [["spawned", parent]]  # spawned once
    finals = [n for n in notes if n[0] == "finalize"]
    assert finals and finals[-1] == ["finalize", {"completed": N}]
    # the finalizer ran after every child's last run had ended
    first_final = notes.index(finals[0])
    assert all(notes.index(n) < first_final for n in notes if n[0] == "end")
