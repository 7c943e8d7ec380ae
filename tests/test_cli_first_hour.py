"""Issue 22, the first hour at the terminal: what the CLI prints at 80 columns, on a real
pseudo-terminal (util-linux ``script``) and piped, must tell the truth."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import shlex
import subprocess
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import taskmill as tm
from taskmill.cli import cli
from taskmill.demo import SAMPLE_PLAN

from conftest import ENV, PYTHON

#: Terminal escape sequences (styles, cursor moves), left out of what a test reads.
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
NARROW = {**ENV, "COLUMNS": "80", "LINES": "40"}


def piped(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``taskmill ARGS`` with stdout and stderr piped, COLUMNS=80."""
    return subprocess.run(
        [PYTHON, "-m", "taskmill", *args],
        env=NARROW,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def on_pty(*args: str, cwd: Path | None = None) -> tuple[int, str]:
    """``taskmill ARGS`` on a pseudo-terminal of 80 columns; its output with ``\\n`` ends."""
    command = "stty cols 80 rows 40; " + shlex.join([PYTHON, "-m", "taskmill", *args])
    proc = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        env=NARROW,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
    )
    return proc.returncode, ANSI.sub("", proc.stdout.replace("\r\n", "\n"))


def fits(text: str, width: int = 80) -> None:
    """Every line of ``text`` (escape sequences removed) fits ``width`` columns."""
    plain = ANSI.sub("", text)
    too_long = [line for line in plain.splitlines() if len(line) > width]
    assert not too_long, "\n".join(too_long)


def table_rows(text: str) -> list[str]:
    """The body lines of the rich tables in ``text``."""
    return [line for line in text.splitlines() if line.startswith("│")]


@pytest.fixture
def busy(tmp_path: Path) -> Path:
    """A store of 153 active tasks with long keys and groups, and 12 failed ones."""
    db = tmp_path / "busy.db"
    groups = ["s3://us-east-1.amazonaws.com/bucket-a", "s3://us-east-1.amazonaws.com/bucket-b"]
    with tm.TaskStore.open(db) as store:
        store.submit_batch(
            pl.DataFrame(
                {
                    "task_type": ["sync.upload"] * 153,
                    "dedup_key": [
                        f"photos/2026/holiday/album-{i:04d}/IMG_{i:06d}.jpg" for i in range(153)
                    ],
                    "group": [groups[i % 2] for i in range(153)],
                }
            )
        )
        store.submit_batch(
            [
                tm.TaskSubmission("sync.copy", dedup_key=f"copy/very/long/path/{i}", max_retries=0)
                for i in range(12)
            ]
        )

    def boom(ctx: tm.TaskContext) -> None:
        raise PermissionError(f"simulated 403 Forbidden from the far side for {ctx.dedup_key}")

    async def run() -> None:
        async with tm.Scheduler(db, executors={"sync.copy": boom}, max_retries=0) as sched:
            await sched.wait_idle()

    asyncio.run(run())
    return db


# --------------------------------------------------------------------------- item 1


def test_the_progress_bar_prints_no_markup_of_its_own(tmp_path: Path) -> None:
    """1: the bar read `[progress.description]submitting ━━╸━━━ 20000/200000`."""
    plan = tmp_path / "p.parquet"
    assert (
        CliRunner().invoke(cli, ["gen-plan", "--rows", "60000", "--out", str(plan)]).exit_code == 0
    )
    code, out = on_pty("submit", str(plan), "--db", str(tmp_path / "t.db"), "--chunk-size", "10000")
    assert code == 0, out
    assert re.search(r"submitting .*\d+/60000", out), out
    assert "[progress" not in out


# --------------------------------------------------------------------------- item 2


@pytest.mark.parametrize(
    "argv",
    [
        ["stats"],
        ["stats", "--json"],
        ["tasks"],
        ["history"],
        ["tasks", "-o", "out.csv"],
        ["show", "1"],
        ["cancel", "--status", "pending"],
        ["retry-failed"],
        ["prune", "--keep-last", "0"],
        ["resume-group", "g"],
    ],
)
def test_commands_that_only_read_create_no_store(tmp_path: Path, argv: list[str]) -> None:
    """2: `stats --db typo.db` made typo.db and printed empty tables."""
    proc = piped(*argv, "--db", "typo.db", cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert proc.stderr == (
        "taskmill: error: typo.db does not exist: no task store there (check --db; "
        "`taskmill submit` creates one)\n"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_failed_submit_leaves_no_new_store_behind(tmp_path: Path) -> None:
    """2: `submit nope.parquet --db y.db` failed but left y.db."""
    proc = piped("submit", "nope.parquet", "--db", "y.db", cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr == "taskmill: error: Parquet input nope.parquet does not exist\n"
    assert list(tmp_path.iterdir()) == []
    bad = tmp_path / "bad.parquet"
    pl.DataFrame({"x": [1]}).write_parquet(bad)
    assert piped("submit", "bad.parquet", "--db", "y.db", cwd=tmp_path).returncode == 1
    assert [p.name for p in tmp_path.iterdir()] == ["bad.parquet"]


def test_a_failed_submit_into_an_existing_store_keeps_it(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    tm.TaskStore.open(db).close()
    assert piped("submit", "nope.parquet", "--db", str(db), cwd=tmp_path).returncode == 1
    assert db.exists()


# --------------------------------------------------------------------------- item 3


def test_stats_of_an_empty_store_has_no_zero_width_column(tmp_path: Path) -> None:
    """3: the by-group table of an empty store began `┏┳━━━`."""
    db = tmp_path / "t.db"
    tm.TaskStore.open(db).close()
    for out in (piped("stats", "--db", str(db)).stdout, on_pty("stats", "--db", str(db))[1]):
        assert "┏┳" not in out and "┃┃" not in out, out
        fits(out)


def test_wide_tables_never_wrap_inside_a_header_at_80_columns(tmp_path: Path) -> None:
    """3: ten count columns wrapped their headers at 80 columns ("ex / pired")."""
    db = tmp_path / "t.db"
    with tm.TaskStore.open(db) as store:
        store.submit_batch(pl.DataFrame({"task_type": ["t"] * 12, "group": ["s3://a-group"] * 12}))
        ids = store.tasks()["id"].to_list()
    with tm.TaskStore.open(db) as store:
        store.cancel(ids[0])
    for out in (piped("stats", "--db", str(db)).stdout, on_pty("stats", "--db", str(db))[1]):
        fits(out)
        headers = [line for line in out.splitlines() if line.startswith("┃")]
        # every header sits on one line: a table's header is a single ┃ line
        assert len(headers) == 2, out
        for word in ("pending", "cancelled", "total"):
            assert all(word in h for h in headers), out


# --------------------------------------------------------------------------- item 4


def test_paused_groups_show_in_stats_and_its_json(tmp_path: Path) -> None:
    """4: after `pause-group … --until 30m`, stats and --json showed nothing."""
    db = tmp_path / "t.db"
    with tm.TaskStore.open(db) as store:
        store.submit(tm.TaskSubmission("t", group="s3://eu"))
    runner = CliRunner()
    paused = runner.invoke(cli, ["pause-group", "s3://eu", "--until", "30m", "--db", str(db)])
    assert paused.exit_code == 0, paused.output
    assert "note:" not in paused.output
    runner.invoke(cli, ["pause-group", "s3://us", "--db", str(db)])
    shown = runner.invoke(cli, ["stats", "--db", str(db)], env={"COLUMNS": "80"})
    assert shown.exit_code == 0
    assert re.search(
        r"paused groups: s3://eu until \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC, "
        r"s3://us until resume-group\n",
        shown.output,
    ), shown.output
    data = json.loads(runner.invoke(cli, ["stats", "--db", str(db), "--json"]).output)
    assert [p["group"] for p in data["paused_groups"]] == ["s3://eu", "s3://us"]
    assert data["paused_groups"][1]["until"] is None
    assert dt.datetime.fromisoformat(data["paused_groups"][0]["until"]) > dt.datetime.now(dt.UTC)
    listed = runner.invoke(cli, ["paused", "--db", str(db)])
    assert listed.exit_code == 0
    assert "s3://eu" in listed.output and "until resume-group" in listed.output


def test_pausing_a_group_no_task_has_is_accepted_with_a_note(tmp_path: Path) -> None:
    """4: pausing a group no task has was accepted silently."""
    db = tmp_path / "t.db"
    with tm.TaskStore.open(db) as store:
        store.submit(tm.TaskSubmission("t", group="s3://eu"))
    proc = piped("pause-group", "s3://ue", "--db", str(db))
    assert proc.returncode == 0
    assert proc.stdout == f"paused group s3://ue in {db} until resume-group\n"
    assert proc.stderr == (
        "taskmill: note: no task in the store has group s3://ue (yet): the pause holds for "
        "its tasks to come\n"
    )


# --------------------------------------------------------------------------- item 5


def test_a_plan_without_task_type_is_told_the_cli_spelling(tmp_path: Path) -> None:
    """5: the CLI told a user to call `.columns(task_type=...)`."""
    plan = tmp_path / "p.parquet"
    pl.DataFrame({"dedup_key": ["a"]}).write_parquet(plan)
    for command in ("submit", "plan"):
        proc = piped(command, str(plan), "--db", str(tmp_path / "t.db"))
        assert proc.returncode == 1
        assert proc.stderr == (
            "taskmill: error: the input has no task_type column (map one with "
            "--map COLUMN=task_type)\n"
        )
    with (
        tm.TaskStore.open(tmp_path / "py.db") as store,
        pytest.raises(tm.SchedulerError, match=r"\.columns\(task_type=\.\.\.\)"),
    ):
        store.submit_batch(pl.DataFrame({"dedup_key": ["a"]}))


# --------------------------------------------------------------------------- item 6


def _check_listing(out: str, rows: int) -> list[str]:
    fits(out)
    body = table_rows(out)
    assert len(body) == rows, out  # one line per task: no cell wraps
    return body


def test_tasks_limit_5_is_readable_at_80_columns(busy: Path) -> None:
    """6: `tasks --limit 5` wrapped every cell mid-word, 6–9 lines a row; no "5 of N"."""
    for out in (
        piped("tasks", "--db", str(busy), "--limit", "5").stdout,
        on_pty("tasks", "--db", str(busy), "--limit", "5")[1],
    ):
        body = _check_listing(out, 5)
        assert "5 of 153 active tasks" in out, out
        # long values are shortened in the middle, so both groups stay told apart
        assert "…" in body[0] and "/bucket-a │" in body[0] and "/bucket-b │" in body[1], out
        assert "G_000000.jpg │" in body[0], out


def test_tasks_show_when_a_task_will_run(tmp_path: Path) -> None:
    """6: no next-try column."""
    db = tmp_path / "t.db"
    with tm.TaskStore.open(db) as store:
        store.submit(tm.TaskSubmission("t", dedup_key="later", run_after=dt.timedelta(hours=2)))
        store.submit(tm.TaskSubmission("t", dedup_key="now"))
    out = piped("tasks", "--db", str(db)).stdout
    assert "next try" in out, out
    later = next(line for line in table_rows(out) if "later" in line)
    assert re.search(r"\d\d-\d\d \d\d:\d\d", later), out
    assert "2 of 2 active tasks" in out


def test_history_of_failures_is_readable_at_80_columns(busy: Path) -> None:
    """6: `history --status failed` wrapped every cell; no finished-at column."""
    for out in (
        piped("history", "--db", str(busy), "--status", "failed").stdout,
        on_pty("history", "--db", str(busy), "--status", "failed")[1],
    ):
        body = _check_listing(out, 12)
        assert "12 of 12 finished tasks" in out, out
        assert "finished" in out
        assert all("PermissionError" in line or "simulated" in line for line in body), out


def test_a_listing_of_more_rows_than_shown_says_how_many(busy: Path) -> None:
    out = piped("tasks", "--db", str(busy)).stdout
    _check_listing(out, 20)
    assert "20 of 153 active tasks" in out


# --------------------------------------------------------------------------- item 13


def test_a_refused_postgresql_connection_is_one_line() -> None:
    """13: a refused connection printed a second `\\tIs the server running…` line."""
    proc = piped("stats", "--db", "postgresql://nobody@127.0.0.1:1/nothing")
    assert proc.returncode == 1
    assert proc.stderr.startswith("taskmill: error: cannot connect")
    assert proc.stderr.count("\n") == 1 and "\t" not in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- item 14


def test_help_at_80_columns_cuts_no_description_and_names_both_engines() -> None:
    """14: `taskmill --help` ended every description in "..." and said "SQLite" only."""
    for out in (piped("--help").stdout, on_pty("--help")[1]):
        fits(out)
        assert "..." not in out.split("Commands:")[1], out
        assert "PostgreSQL" in out and "SQLite" in out
        # the listing wraps a long description onto the next line, aligned (under the
        # descriptions: past the longest command's name)
        first = re.search(r"\n(  batch +)\S", out)
        assert first, out
        indent = len(first.group(1))
        wrapped = rf"\n  submit +Submit a Parquet sync plan[^\n]*\n {{{indent}}}\S"
        assert re.search(wrapped, out), out


# --------------------------------------------------------------------------- item 15


def test_cancel_by_id(tmp_path: Path) -> None:
    """15: `cancel` had no --id."""
    db = tmp_path / "t.db"
    with tm.TaskStore.open(db) as store:
        out = store.submit_batch([tm.TaskSubmission("t", dedup_key=str(i)) for i in range(4)])
        ids = out.submitted
        store.cancel(ids[3])
    proc = piped(
        "cancel",
        "--db",
        str(db),
        "--id",
        str(ids[0]),
        "--id",
        str(ids[1]),
        "--id",
        str(ids[3]),
        "--id",
        "99",
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == (
        f"cancelled 2 tasks in {db}; not active: {ids[3]} (cancelled), 99 (no such task)\n"
    )
    with tm.TaskStore.open(db) as store:
        assert store.tasks()["id"].to_list() == [ids[2]]
    data = json.loads(piped("cancel", "--db", str(db), "--id", str(ids[2]), "--json").stdout)
    assert data["cancelled"] == 1 and data["ids"] == [ids[2]] and data["not_active"] == []
    both = piped("cancel", "--db", str(db), "--id", "1", "--group", "g")
    assert both.returncode == 2 and "--id" in both.stderr


def test_show_one_task_active_or_finished(busy: Path, tmp_path: Path) -> None:
    """15: there was no `taskmill show ID`."""
    with tm.TaskStore.open(busy) as store:
        failed = store.history(status="failed", limit=1).row(0, named=True)
        active = store.tasks(limit=1).row(0, named=True)
        out = store.submit(tm.TaskSubmission("t", payload={"src": "/a", "size": 3}))
        raw = store.submit(tm.TaskSubmission("t", payload=b"\xff\x00"))
    shown = piped("show", str(failed["id"]), "--db", str(busy))
    assert shown.returncode == 0, shown.stderr
    fits(shown.stdout)
    text = shown.stdout
    assert f"task {failed['id']}: failed" in text.splitlines()[0]
    assert "attempts     1" in text
    assert f"dedup_key    {failed['dedup_key']}" in text
    assert "last_error   PermissionError: simulated 403 Forbidden" in text
    assert "finished_at  " in text
    active_text = piped("show", str(active["id"]), "--db", str(busy)).stdout
    assert f"task {active['id']}: pending" in active_text
    assert f"group        {active['group']}" in active_text
    payload = piped("show", str(out.task_id), "--db", str(busy)).stdout
    assert 'payload      {"src": "/a", "size": 3}' in payload
    assert (
        "payload      b'\\xff\\x00' (2 bytes, not UTF-8)"
        in piped("show", str(raw.task_id), "--db", str(busy)).stdout
    )
    data = json.loads(piped("show", str(out.task_id), "--db", str(busy), "--json").stdout)
    assert data["id"] == out.task_id and data["status"] == "pending"
    assert data["payload"] == {"src": "/a", "size": 3} and data["active"] is True
    missing = piped("show", "9999", "--db", str(busy))
    assert missing.returncode == 1
    assert missing.stderr == f"taskmill: error: no task 9999 in {busy}\n"


# --------------------------------------------------------------------------- item 16


def test_export_says_what_it_wrote(busy: Path, tmp_path: Path) -> None:
    """16: "wrote 3 tasks rows to some.csv"."""
    csv = tmp_path / "some.csv"
    done = piped("tasks", "--db", str(busy), "--limit", "3", "-o", str(csv))
    assert done.stdout == f"wrote 3 active tasks to {csv}\n"
    one = piped("history", "--db", str(busy), "--limit", "1", "-o", str(csv))
    assert one.stdout == f"wrote 1 finished task to {csv}\n"


def test_the_demo_words_failed_rows_as_submit_does(tmp_path: Path) -> None:
    """16: the demo said "invalid plan row N" and pointed at a plan inside the package."""
    result = CliRunner().invoke(cli, ["demo", "--db", str(tmp_path / "d.db")])
    assert result.exit_code == 0, result.output
    assert "failed row 285: [invalid_task_type]" in result.output
    assert "invalid plan row" not in result.output
    assert "… 10 more failed rows" in result.output
    assert str(SAMPLE_PLAN.parent) not in result.output
    assert "taskmill gen-plan --sample --out sample.parquet" in result.output


def _every_status(db: Path) -> None:
    """A store whose group s3://a-group has a task in every status a CLI user meets."""
    with tm.TaskStore.open(db) as store:
        store.submit_batch(
            [tm.TaskSubmission("t", dedup_key=k, group="s3://a-group") for k in "abcdef"]
        )
        store.submit(tm.TaskSubmission("fails", dedup_key="x", group="s3://a-group"))
        store.submit(
            tm.TaskSubmission("t", dedup_key="a", group="s3://a-group", on_duplicate="supersede")
        )
        ids = {r["dedup_key"]: r["id"] for r in store.tasks().iter_rows(named=True)}
        store.cancel(ids["b"])
        store.pause(ids["c"])
        store.submit(
            tm.TaskSubmission(
                "t", dedup_key="late", group="s3://a-group", expires_at=dt.timedelta(seconds=-1)
            )
        )
        store.expire_due()

    def fails(ctx: tm.TaskContext) -> None:
        raise RuntimeError("no")

    async def run() -> None:
        executors = {"fails": fails}
        async with tm.Scheduler(db, executors=executors, max_retries=0) as sched:
            await sched.wait_idle()
        with tm.TaskStore.open(db) as store:
            done = store.tasks(task_type="t").filter(pl.col("dedup_key") == "d")["id"][0]
        async with tm.Scheduler(db, executors={"t": lambda ctx: None}) as sched:
            for task in (await asyncio.to_thread(sched.store.tasks)).iter_rows(named=True):
                if task["id"] != done and task["status"] == "pending":
                    await asyncio.to_thread(sched.store.pause, task["id"])
            await sched.wait_idle()

    asyncio.run(run())


def test_stats_with_every_status_fits_80_columns_with_whole_headers(tmp_path: Path) -> None:
    """3: ten count columns wrapped their headers at 80 columns ("ex / pired")."""
    db = tmp_path / "t.db"
    _every_status(db)
    with tm.TaskStore.open(db) as store:
        counts = store.counts()
    assert all(counts[s] for s in ("paused", "completed", "failed", "cancelled", "superseded"))
    assert counts["expired"]
    for out in (piped("stats", "--db", str(db)).stdout, on_pty("stats", "--db", str(db))[1]):
        fits(out)
        lines = out.splitlines()
        headers = [line for line in lines if line.startswith("┃")]
        for word in ("paused", "completed", "failed", "cancelled", "superseded", "expired"):
            assert any(re.search(rf"┃ +{word} +┃", h) for h in headers), out
        # no header is folded onto a second line
        for k, line in enumerate(lines):
            if line.startswith("┏"):
                assert lines[k + 2].startswith("┡"), out
        assert "s3://a-group" in out


def test_a_listing_too_narrow_for_its_long_columns_keeps_short_values_whole() -> None:
    """Before: when even the long columns' floors overflowed the width, rich squeezed
    the short ones instead ("failed" read "fail…", its header "stat…")."""
    import io

    from rich.console import Console

    from taskmill.render import listing_table

    cells = {
        "id": ["179"],
        "dedup_key": ["gcs://europe-west4/data/0123456789abcdef/object-000180.parquet"],
        "status": ["failed"],
        "finished": ["12-02 21:55"],
        "last_error": ["PermissionError: simulated 403 from the endpoint, once more"],
    }
    columns = [
        ("id", "id", ""),
        ("dedup_key", "dedup_key", "middle"),
        ("status", "status", ""),
        ("finished", "finished", ""),
        ("last_error", "last_error", "end"),
    ]
    out = io.StringIO()
    Console(file=out, width=80, color_system=None).print(listing_table(cells, columns, 80))
    lines = out.getvalue().splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "│ failed │" in out.getvalue() and "┃ status ┃" in out.getvalue()
