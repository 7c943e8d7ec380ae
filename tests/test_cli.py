"""The command line, in-process (Click's runner) and as real subprocesses."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import taskmill as tm
from taskmill.cli import cli, reference

from conftest import ENV, PYTHON, ROOT


def run(*args: str, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "taskmill", *args],
        env={**ENV, **kw.pop("env", {})},
        capture_output=True,
        text=True,
        timeout=120,
        **kw,
    )


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    path = tmp_path / "plan.parquet"
    pl.DataFrame(
        {
            "action": ["sync.upload", "sync.upload", "sync.delete", "sync.upload", "sync.copy"],
            "key": ["a", "b", "c", "a", "d"],
            "endpoint": ["s3://one", "s3://one", "s3://two", "s3://one", None],
            "src": ["/a", "/b", None, "/a2", "/d"],
            "priority": [128, 128, 64, 128, 300],
        }
    ).write_parquet(path)
    return path


MAP = [
    "--map",
    "action=task_type",
    "--map",
    "key=dedup_key",
    "--map",
    "endpoint=group",
    "--payload-columns",
    "src",
]


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


def test_submit_json_and_outcome(tmp_path: Path, plan: Path) -> None:
    db, out = tmp_path / "t.db", tmp_path / "outcome.parquet"
    result = CliRunner().invoke(
        cli,
        [
            "submit",
            str(plan),
            "--db",
            str(db),
            *MAP,
            "--group",
            "s3://default",
            "--outcome",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["rows"] == 5 and summary["planned"] is False
    assert summary["counts"] == {
        "submitted": 3,
        "deduplicated": 1,
        "superseded": 0,
        "upgraded": 0,
        "failed": 1,
    }
    assert summary["failed"][0]["index"] == 4 and summary["failed"][0]["kind"] == (
        "invalid_priority"
    )
    outcome = pl.read_parquet(out)
    assert outcome.select("index", "dedup_key", "action", "reason", "task_id").rows() == [
        (0, "a", "deduplicated", "in_batch", 3),
        (1, "b", "submitted", None, 1),
        (2, "c", "submitted", None, 2),
        (3, "a", "submitted", None, 3),
        (4, "d", "failed", "invalid_priority", None),
    ]
    with tm.TaskStore.open(db) as store:
        assert store.tasks().select("dedup_key", "group", "payload").rows() == [
            ("c", "s3://two", b'{"src":null}'),
            ("b", "s3://one", b'{"src":"/b"}'),
            ("a", "s3://one", b'{"src":"/a2"}'),
        ]


def test_submit_table_output_and_plan_writes_nothing(tmp_path: Path, plan: Path) -> None:
    db = tmp_path / "t.db"
    planned = CliRunner().invoke(cli, ["plan", str(plan), "--db", str(db), *MAP])
    assert planned.exit_code == 0, planned.output
    assert "plan (nothing written): 5 rows" in planned.output
    # 0.1 created the store file; planning against a store that does not exist writes nothing
    assert "does not exist yet: planned against an empty store" in planned.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.parquet"]
    as_json = CliRunner().invoke(cli, ["plan", str(plan), "--db", str(db), *MAP, "--json"])
    assert json.loads(as_json.stdout)["store_exists"] is False
    assert json.loads(as_json.stdout)["counts"]["submitted"] == 3
    assert not db.exists()
    done = CliRunner().invoke(
        cli,
        [
            "submit",
            str(plan),
            "--db",
            str(db),
            *MAP,
            "--on-duplicate",
            "supersede",
            "--chunk-size",
            "2",
            "--transaction-limit",
            "2",
        ],
    )
    assert done.exit_code == 0, done.output
    assert "submitted: 5 rows" in done.output
    assert "failed row 4: [invalid_priority] priority must be within 0..255, got 300" in (
        done.output
    )
    again = CliRunner().invoke(cli, ["plan", str(plan), "--db", str(db), *MAP, "--json"])
    assert json.loads(again.stdout)["counts"]["deduplicated"] == 4


def test_stats_tasks_history_export(tmp_path: Path, plan: Path) -> None:
    db = tmp_path / "t.db"
    assert CliRunner().invoke(cli, ["submit", str(plan), "--db", str(db), *MAP]).exit_code == 0
    with tm.TaskStore.open(db) as store:
        store.cancel(1)
    result = CliRunner().invoke(cli, ["stats", "--db", str(db), "--json"])
    stats = json.loads(result.stdout)
    assert stats["counts"]["pending"] == 2 and stats["counts"]["cancelled"] == 1
    groups = {row["group"]: row for row in stats["by_group"]}
    assert groups["s3://one"]["pending"] == 1 and groups["s3://one"]["cancelled"] == 1
    assert {row["priority"]: row["total"] for row in stats["by_priority"]} == {64: 1, 128: 2}
    text = CliRunner().invoke(cli, ["stats", "--db", str(db)])
    assert text.exit_code == 0 and "by group" in text.output
    csv = tmp_path / "tasks.csv"
    res = CliRunner().invoke(cli, ["tasks", "--db", str(db), "--group", "s3://one", "-o", str(csv)])
    assert res.exit_code == 0 and "wrote 1 active task to" in res.output
    assert pl.read_csv(csv)["dedup_key"].to_list() == ["a"]
    hist = tmp_path / "history.parquet"
    res = CliRunner().invoke(
        cli, ["history", "--db", str(db), "--status", "cancelled", "--output", str(hist)]
    )
    assert res.exit_code == 0
    assert pl.read_parquet(hist).select("id", "status").rows() == [(1, "cancelled")]
    shown = CliRunner().invoke(cli, ["tasks", "--db", str(db), "--type", "sync.delete"])
    assert shown.exit_code == 0 and "sync.delete" in shown.output


def test_db_from_the_environment(tmp_path: Path, plan: Path) -> None:
    db = tmp_path / "env.db"
    result = CliRunner().invoke(
        cli, ["submit", str(plan), *MAP, "--json"], env={"TASKMILL_DB": str(db)}
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["db"] == str(db)
    chunk = CliRunner().invoke(
        cli,
        ["submit", str(plan), *MAP, "--json"],
        env={"TASKMILL_DB": str(db), "TASKMILL_SUBMIT_ON_DUPLICATE": "reject"},
    )
    assert json.loads(chunk.stdout)["counts"]["failed"] == 4


def test_unknown_columns_are_all_named_with_the_fix_in_cli_terms(
    tmp_path: Path, plan: Path
) -> None:
    """0.1: only the first unknown column was named, and the advice was .columns() /
    .payload_columns(), which a shell user cannot call."""
    result = CliRunner().invoke(cli, ["submit", str(plan), "--db", str(tmp_path / "t.db")])
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert "'action', 'key', 'endpoint', 'src'" in message
    assert (
        "--map action=FIELD" in message and "--payload-columns action,key,endpoint,src" in message
    )
    assert ".columns(" not in message and ".payload_columns(" not in message
    with pytest.raises(tm.SchedulerError) as err, tm.TaskStore.open(tmp_path / "py.db") as store:
        store.submit_batch(pl.read_parquet(plan))
    assert ".columns(FIELD='action')" in str(err.value)
    assert ".payload_columns(['action', 'key', 'endpoint', 'src'])" in str(err.value)
    assert "--map" not in str(err.value)


def test_tier_names_are_priorities_in_plan_columns_like_in_flags(tmp_path: Path) -> None:
    """0.1: a priority column of tier names failed with a type error, though --priority
    high was accepted."""
    plan = tmp_path / "tiers.parquet"
    pl.DataFrame(
        {"task_type": ["t"] * 4, "priority": ["high", "IDLE", " Realtime", "soon"]}
    ).write_parquet(plan)
    result = CliRunner().invoke(
        cli, ["submit", str(plan), "--db", str(tmp_path / "t.db"), "--json"]
    )
    assert result.exit_code == 0, result.output
    with tm.TaskStore.open(tmp_path / "t.db") as store:
        assert store.tasks()["priority"].to_list() == [0, 64, 255]
        listed = store.plan_batch([tm.TaskSubmission("t", priority="soon")])
    assert listed.to_polars()["error"][0] == (
        "priority must be within 0..255 or a tier name (realtime, high, normal, background, "
        "idle), got 'soon'"
    )
    out = json.loads(result.output)
    assert out["counts"]["failed"] == 1


def test_worker_without_executors_points_at_the_demo_ones(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["worker", "--db", str(tmp_path / "t.db")])
    assert result.exit_code == 2
    assert "--demo-executors" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["submit", "{tmp}/missing.parquet"], "does not exist"),
        (["submit", "{tmp}/notes.txt"], "is not a Parquet file"),
        (["submit", "{plan}", "--map", "nope=task_type"], "column 'nope'"),
        (["submit", "{plan}", "--db", "{tmp}/foreign.db", *MAP], "not a taskmill store"),
        (
            ["plan", "{plan}"],
            "unknown columns 'action', 'key', 'endpoint', 'src': not task fields",
        ),
    ],
)
def test_bad_input_is_one_line_exit_1_and_writes_nothing(
    tmp_path: Path, plan: Path, args: list[str], message: str
) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    import sqlite3

    foreign = sqlite3.connect(tmp_path / "foreign.db")
    foreign.execute("CREATE TABLE t (x)")
    foreign.commit()
    foreign.close()
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = [a.format(tmp=tmp_path, plan=plan) for a in args]
    if "--db" not in argv:
        argv += ["--db", str(tmp_path / "t.db")]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("taskmill: error: ")
    assert message in lines[0]
    after = sorted(p.name for p in tmp_path.iterdir())
    assert [n for n in after if n not in before] in ([], ["t.db"], ["t.db", "t.db-shm", "t.db-wal"])
    if (tmp_path / "t.db").exists():
        with tm.TaskStore.open(tmp_path / "t.db") as store:
            assert store.counts()["pending"] == 0


def test_usage_errors_exit_2(plan: Path) -> None:
    result = CliRunner().invoke(cli, ["submit", str(plan), "--map", "nonsense"])
    assert result.exit_code == 2
    assert "is not of the form A=B" in result.output
    assert CliRunner().invoke(cli, ["worker"]).exit_code == 2


def test_subprocess_submit_piped_has_no_progress_bar(tmp_path: Path, plan: Path) -> None:
    proc = run("submit", str(plan), "--db", str(tmp_path / "t.db"), *MAP)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # no progress bar when not on a terminal
    assert "submitted: 5 rows" in proc.stdout


def test_subprocess_not_a_store(tmp_path: Path) -> None:
    bad = tmp_path / "notes.db"
    bad.write_text("hello " * 200)
    proc = run("stats", "--db", str(bad))
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("taskmill: error: cannot open task store")
    assert bad.read_text() == "hello " * 200


def test_worker_until_idle_with_demo_and_module_executors(tmp_path: Path, plan: Path) -> None:
    db = tmp_path / "t.db"
    assert CliRunner().invoke(cli, ["submit", str(plan), "--db", str(db), *MAP]).exit_code == 0
    proc = run(
        "worker",
        "--db",
        str(db),
        "--demo-executors",
        "--until-idle",
        "--json",
        "--retry-delay",
        "0.01",
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["counts"]["pending"] == 0
    assert report["counts"]["completed"] + report["counts"]["failed"] == 3
    bad = CliRunner().invoke(
        cli, ["worker", "--db", str(db), "--executor", "t=taskmill.nowhere:fn"]
    )
    assert bad.exit_code == 1 and "cannot load executor" in bad.stderr


def test_worker_stops_gracefully_on_sigterm(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    with tm.TaskStore.open(db) as store:
        store.submit(tm.TaskSubmission("slow"))
    marker = tmp_path / "started"
    module = tmp_path / "slowexec.py"
    module.write_text(
        "import pathlib, time\n"
        f"def run(ctx):\n    pathlib.Path({str(marker)!r}).write_text('x')\n"
        "    while not ctx.cancelled:\n        time.sleep(0.01)\n"
    )
    proc = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "taskmill",
            "worker",
            "--db",
            str(db),
            "--executor",
            "slow=slowexec:run",
            "--close-timeout",
            "0.5",
            "--json",
        ],
        env={**ENV, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert marker.exists()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out)["counts"]["pending"] == 1  # back in the queue, not lost
    with tm.TaskStore.open(db) as store:
        assert store.tasks().select("status", "attempts").rows() == [("pending", 0)]


def test_gen_plan_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    for path in (a, b):
        res = CliRunner().invoke(
            cli,
            [
                "gen-plan",
                "--rows",
                "500",
                "--seed",
                "3",
                "--out",
                str(path),
                "--invalid-rate",
                "0.02",
            ],
        )
        assert res.exit_code == 0 and "wrote 500 rows" in res.output
    assert pl.read_parquet(a).equals(pl.read_parquet(b))
    frame = pl.read_parquet(a)
    assert frame.columns == [
        "task_type",
        "dedup_key",
        "group",
        "priority",
        "payload",
        "expected_net_tx_bytes",
    ]
    with tm.TaskStore.open(tmp_path / "t.db") as store:
        out = store.submit_batch(a)
    assert 0 < out.counts()["failed"] < 30


def test_sample_plan_matches_its_recipe() -> None:
    from taskmill.demo import SAMPLE_PLAN, SAMPLE_SETTINGS
    from taskmill.sample import make_plan

    settings = dict(SAMPLE_SETTINGS)
    assert pl.read_parquet(SAMPLE_PLAN).equals(make_plan(settings.pop("rows"), **settings))


def test_cli_reference_is_current() -> None:
    page = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    match = re.search(
        r"<!-- cli-reference:start -->\n(.*?)<!-- cli-reference:end -->", page, re.DOTALL
    )
    assert match, "docs/cli.md lacks the CLI reference markers"
    assert match.group(1) == reference(), (
        "docs/cli.md's CLI reference is stale: run `python -m taskmill.cli_reference`"
    )


def test_progress_bar_advances_per_chunk_on_a_terminal(tmp_path: Path) -> None:
    """Under a pseudo-terminal (util-linux `script`), submit draws a bar per chunk."""
    plan = tmp_path / "big.parquet"
    assert (
        CliRunner().invoke(cli, ["gen-plan", "--rows", "250000", "--out", str(plan)]).exit_code == 0
    )
    command = f"{PYTHON} -m taskmill submit {plan} --db {tmp_path / 't.db'} --chunk-size 50000"
    proc = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout
    seen = re.findall(r"(\d+)/250000", proc.stdout)
    assert {"50000", "100000", "200000"} <= set(seen)
    assert "submitted: 250,000 rows" in proc.stdout


def test_tables_fit_80_columns_and_never_cut_a_name_or_a_number(tmp_path: Path) -> None:
    """0.1: at 80 columns two groups both read `s3://…` and the total read `19,2…`."""
    db = tmp_path / "t.db"
    groups = ["s3://us-east-1.amazonaws.com/bucket-a"] * 19_234 + [
        "s3://us-east-1.amazonaws.com/bucket-b"
    ] * 1_000
    with tm.TaskStore.open(db) as store:
        store.submit_batch(pl.DataFrame({"task_type": ["t"] * len(groups), "group": groups}))
    narrow = {"COLUMNS": "80"}
    for argv in (["stats", "--db", str(db)], ["tasks", "--db", str(db), "--limit", "3"]):
        result = CliRunner().invoke(cli, argv, env=narrow)
        assert result.exit_code == 0, result.output
        assert max(len(line) for line in result.output.splitlines()) <= 80
    # stats cuts no value short; a listing shortens long ones in the middle (issue 22),
    # keeping the ends that tell two groups apart
    listing = CliRunner().invoke(cli, ["tasks", "--db", str(db), "--limit", "3"], env=narrow)
    assert listing.output.count("/bucket-a │") == 3
    stats = CliRunner().invoke(cli, ["stats", "--db", str(db)], env=narrow).output
    assert "…" not in stats
    assert "19,234" in stats and "20,234" in stats
    assert "s3://us-east-1.amazonaws.com/bucket-a" in stats
    assert "s3://us-east-1.amazonaws.com/bucket-b" in stats


def test_history_without_output_is_a_table(tmp_path: Path, plan: Path) -> None:
    """0.1: `history` without -o printed a raw, wrapped polars frame."""
    db = tmp_path / "t.db"
    assert CliRunner().invoke(cli, ["submit", str(plan), "--db", str(db), *MAP]).exit_code == 0
    with tm.TaskStore.open(db) as store:
        store.cancel(1)
    shown = CliRunner().invoke(cli, ["history", "--db", str(db)], env={"COLUMNS": "100"})
    assert shown.exit_code == 0
    assert "shape:" not in shown.output and "┃ status" in shown.output
    assert "cancelled" in shown.output


def test_a_piped_worker_prints_status_lines(tmp_path: Path) -> None:
    """0.1: piped, `worker` printed nothing for the whole run."""
    db = tmp_path / "t.db"
    with tm.TaskStore.open(db) as store:
        store.submit_batch([tm.TaskSubmission("sync.delete", dedup_key=str(i)) for i in range(300)])
    done = run(
        "worker",
        "--db",
        str(db),
        "--demo-executors",
        "--max-concurrency",
        "1",
        "--status-every",
        "0.1",
        "--until-idle",
    )
    assert done.returncode == 0, done.stderr
    lines = [ln for ln in done.stderr.splitlines() if ln.startswith("worker: running")]
    assert lines and "completed" in lines[-1]
    assert done.stdout.startswith("worker stopped:")


def test_the_demo_numbers_invalid_rows_by_the_plan_and_says_how_many_more(tmp_path: Path) -> None:
    """0.1: the demo listed 3 of 13 failed rows with no "N more", renumbered on a rerun."""
    db = tmp_path / "d.db"
    first = CliRunner().invoke(cli, ["demo", "--db", str(db)])
    again = CliRunner().invoke(cli, ["demo", "--db", str(db)])
    for result in (first, again):
        assert result.exit_code == 0, result.output
        assert "failed row 285: [invalid_task_type]" in result.output
        assert "… 10 more failed rows" in result.output
