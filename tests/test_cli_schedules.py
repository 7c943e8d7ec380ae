"""Schedules from the command line (in-process, Click's runner, on both engines):
``schedule`` makes and replaces one with the task options, ``schedules`` lists them (a
table and JSON), ``pause-schedule``, ``resume-schedule`` and ``unschedule``; bad timing is
one clear error line, nothing written.  Once as a real process: a schedule made at the
shell is fired by ``taskmill worker``."""

from __future__ import annotations

import json
import subprocess
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

import taskmill as tm
from taskmill.cli import cli

from conftest import ENV, PYTHON

pytestmark = pytest.mark.backends("sqlite", "postgres")


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_schedule_makes_one_with_the_tasks_options(location: str | Path) -> None:
    db = str(location)
    code, out = invoke(
        "schedule", "tick", "--db", db, "--every", "15m", "--type", "ping", "--group", "net",
        "--priority", "high", "--payload", '{"bucket": "b1"}', "--label", "l",
        "--max-retries", "2", "--expires-after", "5m",
    )  # fmt: skip
    assert code == 0, out
    assert out.startswith("scheduled tick in ") and ": ping, every 15m; next " in out
    code, out = invoke(
        "schedule", "nightly", "--db", db, "--cron", "0 3 * * MON-FRI", "--timezone",
        "Europe/Paris", "--type", "report", "--dedup-key", "report",
    )  # fmt: skip
    assert code == 0 and "cron '0 3 * * MON-FRI' (Europe/Paris)" in out, out
    with tm.TaskStore.open(location) as store:
        rows = {r["name"]: r for r in store.schedules(details=True).iter_rows(named=True)}
        assert rows["tick"]["every"] == timedelta(minutes=15) and rows["tick"]["cron"] is None
        assert (rows["tick"]["group"], rows["tick"]["priority"]) == ("net", 64)
        assert (rows["nightly"]["timezone"], rows["nightly"]["dedup_key"]) == (
            "Europe/Paris",
            "report",
        )
        [run] = [r for r in store.run_schedules() if r.name == "tick"]  # due at once
        task = store.task(run.task_id)
    assert task is not None
    assert (task["payload"], task["label"], task["max_retries"]) == (b'{"bucket":"b1"}', "l", 2)
    assert task["expires_at"].timestamp() == run.at + 300

    code, out = invoke("schedules", "--db", db)
    assert code == 0 and "every 15m" in out and "0 3 * *" in out and "Europe/Paris" in out, out
    code, out = invoke("schedules", "--db", db, "--json")
    listed = json.loads(out)["schedules"]
    assert [(s["name"], s["every"], s["cron"]) for s in listed] == [
        ("nightly", None, "0 3 * * MON-FRI"),
        ("tick", 900.0, None),
    ]
    assert listed[1]["last_task_id"] == run.task_id

    assert invoke("pause-schedule", "tick", "--db", db) == (0, "paused schedule tick\n")
    assert invoke("pause-schedule", "tick", "--db", db) == (
        0,
        "schedule tick was paused already\n",
    )
    code, out = invoke("schedules", "--db", db)
    assert "paused" in out
    code, out = invoke("resume-schedule", "tick", "--db", db)
    assert code == 0 and out.startswith("resumed schedule tick: next "), out
    code, out = invoke("unschedule", "nightly", "--db", db)
    assert code == 0 and out.startswith("removed schedule nightly from "), out
    assert invoke("unschedule", "nightly", "--db", db) == (0, "no schedule named nightly\n")
    with tm.TaskStore.open(location) as store:
        assert store.schedules()["name"].to_list() == ["tick"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--every", "1m", "--cron", "* * * * *"], "give exactly one of --every and --cron"),
        ([], "give exactly one of --every and --cron"),
        (["--cron", "* * * *"], "is not a five-field cron expression"),
        (["--cron", "* * * * *", "--timezone", "Mars/Olympus"], "not a known time zone"),
        (["--every", "500ms"], "is not a duration"),
        (["--every", "1m", "--priority", "999"], "priority must be within 0..255"),
        (["--every", "1m", "--payload", "{x"], "is not JSON"),
        (["--every", "1m", "--start-at", "soon"], "is not an ISO time"),
    ],
)
def test_bad_arguments_are_one_clear_error(
    location: str | Path, args: list[str], message: str
) -> None:
    code, out = invoke("schedule", "s", "--db", str(location), "--type", "t", *args)
    assert code in (1, 2) and message in out, out
    with tm.TaskStore.open(location) as store:
        assert store.schedules().height == 0


def test_pausing_an_unknown_schedule_is_an_error(location: str | Path) -> None:
    tm.TaskStore.open(location).close()
    for command in ("pause-schedule", "resume-schedule"):
        code, out = invoke(command, "nope", "--db", str(location))
        assert (code, out) == (1, "taskmill: error: no schedule named 'nope'\n")


@pytest.mark.sqlite_only(reason="one real process is enough: the store part runs above")
def test_a_schedule_made_at_the_shell_is_fired_by_a_worker(
    location: str | Path, tmp_path: Path
) -> None:
    (tmp_path / "job.py").write_text(textwrap.dedent("def run(ctx):\n    pass\n"))
    env = {**ENV, "PYTHONPATH": f"{tmp_path}:{ENV['PYTHONPATH']}", "TASKMILL_DB": str(location)}
    made = subprocess.run(
        [PYTHON, "-m", "taskmill", "schedule", "tick", "--every", "1s", "--type", "job"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    worker = subprocess.Popen(
        [PYTHON, "-m", "taskmill", "worker", "--executor", "job=job:run", "--poll-interval", "0.2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with tm.TaskStore.open(location) as store:
            deadline = time.monotonic() + 60
            while store.counts()["completed"] < 2 and time.monotonic() < deadline:
                time.sleep(0.1)
            assert store.counts()["completed"] >= 2
    finally:
        worker.terminate()
        _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    listed = subprocess.run(
        [PYTHON, "-m", "taskmill", "schedules", "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    [tick] = json.loads(listed.stdout)["schedules"]
    assert tick["last_task_id"] is not None and tick["skipped"] == 0
