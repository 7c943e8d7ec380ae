"""The command line, in-process (Click's runner) and as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from click.testing import CliRunner
from conftest import PYTHON, ROOT

import taskmill as tm
from taskmill.cli import cli


def test_demo_runs_the_sample_plan(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    result = CliRunner().invoke(cli, ["demo", "--db", str(db), "--tasks", "30"])
    assert result.exit_code == 0, result.output
    assert "submitted 30 tasks" in result.output
    with tm.TaskStore.open(db) as store:
        counts = store.counts()
    assert counts["completed"] == 30
    assert counts["pending"] == counts["running"] == 0


def test_stats_json(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    with tm.TaskStore.open(db) as store:
        store.submit(tm.TaskSubmission("t"))
    result = CliRunner().invoke(cli, ["stats", "--db", str(db), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["pending"] == 1


def test_not_a_store_is_one_clear_line_and_exit_1(tmp_path: Path) -> None:
    bad = tmp_path / "notes.db"
    bad.write_text("hello " * 200)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [PYTHON, "-m", "taskmill", "stats", "--db", str(bad)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("taskmill: error: cannot open task store")
    assert bad.read_text() == "hello " * 200
