"""``taskmill batches`` and ``taskmill batch ID``: a batch submitted from the command line
followed to its end, while a real worker process runs it."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import polars as pl
from click.testing import CliRunner

import taskmill as tm
from taskmill.cli import cli

from conftest import ENV, PYTHON


def taskmill(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-m", "taskmill", *args],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_a_batch_is_followed_from_the_command_line_to_its_end(tmp_path: Path) -> None:
    plan, db = tmp_path / "plan.parquet", tmp_path / "t.db"
    pl.DataFrame(
        {
            "task_type": ["sync.upload"] * 6,
            "dedup_key": [f"obj-{i}" for i in range(6)],
            "expected_write_bytes": [1_000_000] * 6,
        }
    ).write_parquet(plan)
    runner = CliRunner()
    submitted = runner.invoke(
        cli, ["submit", str(plan), "--db", str(db), "--name", "nightly <eu>", "--json"]
    )
    assert submitted.exit_code == 0, submitted.output
    batch_id = json.loads(submitted.stdout)["batch_id"]
    assert batch_id == 1
    listed = runner.invoke(cli, ["batches", "--db", str(db)])
    assert listed.exit_code == 0, listed.output
    assert "nightly <eu>" in listed.stdout and "0 B/6.0 MB" in listed.stdout
    assert max(len(line) for line in listed.stdout.splitlines()[1:]) <= 80
    shown = runner.invoke(cli, ["batch", "1", "--db", str(db)])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.splitlines()[0] == "batch 1 'nightly <eu>': in progress"
    assert "ended       0 of 6 tasks (0.0%)" in shown.stdout
    assert "bytes       0 of 6,000,000 completed" in shown.stdout
    # a process waits for the batch while another one runs it
    waiting = taskmill("batch", "1", "--db", str(db), "--wait", "--interval", "0.1", "--json")
    worker = subprocess.run(
        [PYTHON, "-m", "taskmill", "worker", "--db", str(db), "--demo-executors", "--until-idle"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert worker.returncode == 0, worker.stderr
    out, err = waiting.communicate(timeout=60)
    assert waiting.returncode == 0, err
    status = json.loads(out)
    assert status["done"] is True and status["total"] == 6
    assert sum(status["counts"].values()) == 6 and status["counts"]["pending"] == 0
    completed = status["counts"]["completed"]
    assert status["completed_bytes"] == completed * 1_000_000
    with tm.TaskStore.open(db) as store:
        failed = store.history(batch_id=1, status="failed")
    assert [f["id"] for f in status["failed_tasks"]] == failed["id"].to_list()[:5]
    history = runner.invoke(cli, ["history", "--db", str(db), "--batch", "1"])
    assert history.exit_code == 0 and "6 of 6 finished tasks" in history.stdout


def test_an_unknown_batch_is_one_line_and_exit_1(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    tm.TaskStore.open(db).close()
    result = CliRunner().invoke(cli, ["batch", "9", "--db", str(db)])
    assert result.exit_code == 1
    assert result.stderr == "taskmill: error: no batch 9 in this store\n"
    empty = CliRunner().invoke(cli, ["batches", "--db", str(db)])
    assert empty.exit_code == 0 and empty.stdout == f"no batches in {db}\n"


def test_a_batch_of_no_announced_size_shows_no_bytes(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    with tm.TaskStore.open(db) as store:
        store.submit_batch([tm.TaskSubmission("sync.delete", dedup_key="a")])
    shown = CliRunner().invoke(cli, ["batch", "1", "--db", str(db)])
    assert shown.exit_code == 0, shown.output
    assert "pending" in shown.stdout and "bytes" not in shown.stdout
