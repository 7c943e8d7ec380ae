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


def test_demo_runs_the_sample_plan_and_reruns_idempotently(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    result = CliRunner().invoke(cli, ["demo", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "sync plan: 3,000 actions" in result.output
    with tm.TaskStore.open(db) as store:
        counts = store.counts()
        assert counts["pending"] == counts["running"] == 0
        assert counts["completed"] + counts["failed"] == 2_927
        assert counts["failed"] > 0  # some objects always fail in the demo
        history = store.history()
    again = CliRunner().invoke(cli, ["demo", "--db", str(db)])
    assert again.exit_code == 0, again.output
    assert "2,987 actions were already done by an earlier run" in again.output
    assert "idempotent rerun" in again.output
    with tm.TaskStore.open(db) as store:
        assert store.counts() == counts
        assert store.history().height == history.height


def test_stats_json(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    with tm.TaskStore.open(db) as store:
        store.submit(tm.TaskSubmission("t"))
    result = CliRunner().invoke(cli, ["stats", "--db", str(db), "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["counts"]["pending"] == 1


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
