"""The controls from the command line (in-process, Click's runner): start and expiry
times of a plan, paused groups, and a worker's rate limits and byte budgets."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import taskmill as tm
from taskmill.cli import cli


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    path = tmp_path / "plan.parquet"
    pl.DataFrame(
        {
            "task_type": ["t", "t"],
            "dedup_key": ["a", "b"],
            "group": ["g", "h"],
            "run_after": [None, datetime(2031, 1, 1)],
        }
    ).write_parquet(path)
    return path


def test_submit_gives_rows_without_times_the_batch_ones(tmp_path: Path, plan: Path) -> None:
    db = str(tmp_path / "t.db")
    code, out = invoke(
        "submit", str(plan), "--db", db, "--run-after", "2030-01-01", "--expires-at", "2032-01-01"
    )
    assert code == 0, out
    with tm.TaskStore.open(db) as store:
        rows = store.tasks().select("dedup_key", "run_after", "expires_at").rows()
    assert rows == [
        ("a", datetime(2030, 1, 1, tzinfo=UTC), datetime(2032, 1, 1, tzinfo=UTC)),
        ("b", datetime(2031, 1, 1, tzinfo=UTC), datetime(2032, 1, 1, tzinfo=UTC)),
    ]


def test_a_duration_start_is_counted_from_now(tmp_path: Path, plan: Path) -> None:
    db = str(tmp_path / "t.db")
    before = datetime.now(UTC).timestamp()
    assert invoke("submit", str(plan), "--db", db, "--run-after", "2h")[0] == 0
    with tm.TaskStore.open(db) as store:
        first = store.tasks()["run_after"][0].timestamp()
    assert before + 7200 <= first <= datetime.now(UTC).timestamp() + 7200


def test_pause_and_resume_a_group(tmp_path: Path, plan: Path) -> None:
    db = str(tmp_path / "t.db")
    # no task has these groups: each pause is accepted, with a note on stderr (issue 22)
    paused = CliRunner().invoke(cli, ["pause-group", "--db", db, "g", "--until", "2030-01-01"])
    assert paused.stdout == f"paused group g in {db} until 2030-01-01 00:00:00 UTC\n"
    assert paused.stderr.startswith("taskmill: note: no task in the store has group g")
    paused = CliRunner().invoke(cli, ["pause-group", "--db", db, "h"])
    assert paused.stdout == f"paused group h in {db} until resume-group\n"
    with tm.TaskStore.open(db) as store:
        assert store.paused_groups() == {"g": 1893456000.0, "h": None}
    assert invoke("resume-group", "--db", db, "g")[1] == f"resumed group g in {db}\n"
    assert invoke("resume-group", "--db", db, "g")[1] == "group g was not paused\n"
    code, out = invoke("pause-group", "--db", db, "g", "--until", "soon")
    assert code == 2 and "'soon' is neither a duration" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--rate-limit", "type:t=fast"], "give tasks a second, and optionally a burst"),
        (["--rate-limit", "s3=5"], "use 'group:NAME' or 'type:TASK_TYPE'"),
        (["--rate-limit", "type:t=0"], "RateLimit.per_second must be a number > 0"),
        (["--byte-budget", "g=lots"], "'lots' is not a size"),
    ],
)
def test_worker_limits_are_checked(tmp_path: Path, args: list[str], message: str) -> None:
    code, out = invoke(
        "worker", "--db", str(tmp_path / "t.db"), "--demo-executors", "--until-idle", *args
    )
    assert code != 0 and message in out, out


def test_a_worker_runs_under_its_rate_limit_and_byte_budget(tmp_path: Path) -> None:
    db = str(tmp_path / "t.db")
    with tm.TaskStore.open(db) as store:
        for i in range(6):
            store.submit(
                tm.TaskSubmission(
                    "sync.delete", dedup_key=f"k{i}", group="s3://eu", expected_net_tx_bytes=10**9
                )
            )
    code, out = invoke(
        "worker",
        "--db",
        db,
        "--demo-executors",
        "--until-idle",
        "--rate-limit",
        "group:s3://eu=20/2",
        "--byte-budget",
        "s3://eu=2GiB",
        "--json",
    )
    assert code == 0, out
    with tm.TaskStore.open(db) as store:
        hist = store.history()
    assert hist.height == 6
    starts = sorted(t.timestamp() for t in hist["started_at"])
    # the bucket: 2 at once, then one every 1/20 s
    assert all(b - a >= 0 for a, b in itertools.pairwise(starts))
    assert starts[-1] - starts[0] >= (6 - 2) / 20 - 1e-6
