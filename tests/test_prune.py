"""History retention on both backends: ``store.prune_history`` (which rows go, the Parquet
export, bounded transactions), ``Scheduler(history_retention=…)`` and ``taskmill prune``."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import subprocess
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner
from polars.testing import assert_frame_equal

import taskmill as tm
from taskmill.cli import Duration, cli
from taskmill.scheduler import retention as scheduler_retention
from taskmill.store import retention

from conftest import ENV, PYTHON, assert_store_consistent, run_sql, table

pytestmark = pytest.mark.backends("sqlite", "postgres")

HOUR = 3600.0


def fill_history(store: tm.TaskStore, n: int, *, prefix: str = "h") -> list[int]:
    """``n`` finished tasks — completed, failed and cancelled in turn — with payloads,
    groups and labels; returns their ids."""
    out = store.submit_batch(
        [
            tm.TaskSubmission(
                "t", dedup_key=f"{prefix}{i}", group=f"g{i % 2}", payload={"i": i}, label="x"
            )
            for i in range(n)
        ]
    )
    owner = store.new_owner()
    claimed = store.claim(n, task_types=["t"], owner=owner)
    assert len(claimed) == n
    store.complete_many([t.id for t in claimed if t.id % 3 == 0], owner=owner)
    for task in claimed:
        if task.id % 3 == 1:
            store.fail(task.id, owner=owner, error="boom", retry_at=None)
        elif task.id % 3 == 2:
            store.cancel(task.id)
    store.release_owner(owner)
    return out.submitted


def set_finished(location: str | Path, hours_ago: dict[int, float], *, now: float) -> None:
    """Make history row ``id`` finish ``hours_ago[id]`` hours before ``now`` (one
    statement, numbers only)."""
    cases = " ".join(f"WHEN {i} THEN {now - h * HOUR!r}" for i, h in hours_ago.items())
    ids = ", ".join(str(i) for i in hours_ago)
    run_sql(
        location,
        f"UPDATE {table(location, 'history')} SET finished_at = CASE id {cases} END "
        f"WHERE id IN ({ids})",
    )


def scrambled_ages(ids: list[int]) -> dict[int, float]:
    """Ages (hours) that do not follow id order, two of them equal: 1, 8, 15, … mod n."""
    n = len(ids)
    ages = {i: float((k * 7) % n + 1) for k, i in enumerate(ids)}
    ages[ids[-1]] = ages[ids[-2]]  # a tie in finish time: the larger id counts as newer
    return ages


def expected(
    ages: dict[int, float], *, older_than_h: float | None, keep_last: int | None
) -> set[int]:
    """What a prune removes, computed here from the ages (newest first: smallest age,
    then largest id)."""
    by_recency = sorted(ages, key=lambda i: (ages[i], -i))
    kept = set(by_recency[: keep_last or 0])
    return {
        i
        for i, age in ages.items()
        if (older_than_h is None or age > older_than_h) and i not in kept
    }


@pytest.fixture
def aged(store: tm.TaskStore, location: str | Path) -> dict[int, float]:
    """A store with 30 finished tasks of scrambled ages and 2 active ones."""
    ids = fill_history(store, 30)
    ages = scrambled_ages(ids)
    set_finished(location, ages, now=time.time())
    store.submit(tm.TaskSubmission("t", dedup_key="active-1"))
    store.submit(tm.TaskSubmission("t", dedup_key="active-2", priority=0))
    return ages


def history_ids(store: tm.TaskStore) -> set[int]:
    return set(store.history()["id"].to_list())


# ---------------------------------------------------------------- which rows go


@pytest.mark.parametrize(
    ("older_than_h", "keep_last"),
    [
        (10.5, None),
        (0.0, None),
        (1000.0, None),
        (None, 5),
        (None, 17),
        (None, 0),
        (None, 100),
        (10.5, 25),
    ],
    ids=["older", "older-all", "older-none", "keep", "keep-tie", "keep-0", "keep-more", "both"],
)
def test_prune_removes_exactly_the_selected_rows(
    store: tm.TaskStore, aged: dict[int, float], older_than_h: float | None, keep_last: int | None
) -> None:
    want = expected(aged, older_than_h=older_than_h, keep_last=keep_last)
    older = None if older_than_h is None else timedelta(hours=older_than_h)
    before = store.history()
    tasks_before = store.tasks()

    removed = store.prune_history(older_than=older, keep_last=keep_last)

    assert removed == len(want)
    assert history_ids(store) == set(aged) - want
    # what stays is untouched, and active tasks are never pruned
    assert_frame_equal(store.history(), before.filter(~pl.col("id").is_in(sorted(want))))
    assert_frame_equal(store.tasks(), tasks_before)
    assert store.last_export is None
    assert_store_consistent(store)


def test_both_criteria_are_an_intersection(store: tm.TaskStore, aged: dict[int, float]) -> None:
    """older_than=10.5h alone removes the 20 oldest; keep_last=25 alone the 5 oldest;
    together the rows both would remove: the 5 oldest."""
    older = expected(aged, older_than_h=10.5, keep_last=None)
    keep = expected(aged, older_than_h=None, keep_last=25)
    assert len(older) == 20 and len(keep) == 5 and keep < older
    assert store.prune_history(older_than=timedelta(hours=10.5), keep_last=25) == 5
    assert history_ids(store) == set(aged) - keep


def test_a_second_prune_removes_nothing_more(store: tm.TaskStore, aged: dict[int, float]) -> None:
    assert store.prune_history(older_than=timedelta(hours=10.5)) == 20
    assert store.prune_history(older_than=timedelta(hours=10.5)) == 0
    assert store.prune_history(keep_last=10) == 0  # ten are left: all of them kept


def test_pruned_ids_are_never_handed_out_again(store: tm.TaskStore, location: str | Path) -> None:
    ids = fill_history(store, 5)
    assert store.prune_history(keep_last=0) == 5
    assert store.history().height == 0
    new = store.submit(tm.TaskSubmission("t", dedup_key="after")).task_id
    assert new > max(ids)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({}, "needs older_than"),
        ({"keep_last": -1}, "keep_last must be a whole number >= 0"),
        ({"keep_last": 2.5}, "keep_last must be a whole number"),
        ({"keep_last": True}, "keep_last must be a whole number"),
        ({"older_than": 7}, "older_than must be a datetime.timedelta"),
        ({"older_than": "7d"}, "older_than must be a datetime.timedelta"),
        ({"older_than": timedelta(days=-1)}, "older_than must not be negative"),
        ({"keep_last": 1, "export": 3}, "export must name a folder"),
        ({"keep_last": 1, "export": ""}, "export must name a folder"),
    ],
)
def test_bad_arguments_are_refused_and_remove_nothing(
    store: tm.TaskStore, aged: dict[int, float], kwargs: dict[str, Any], words: str
) -> None:
    with pytest.raises(tm.SchedulerError, match=re.escape(words)) as err:
        store.prune_history(**kwargs)
    assert err.value.kind == "invalid_argument"
    assert history_ids(store) == set(aged)


def test_every_final_status_is_pruned_alike(store: tm.TaskStore, tmp_path: Path) -> None:
    """Retention looks at finish times only: expired and superseded rows go like the rest."""
    fill_history(store, 3)  # completed, failed, cancelled
    store.submit(tm.TaskSubmission("t", dedup_key="e", expires_at=1.0))  # expired long ago
    store.submit(tm.TaskSubmission("t", dedup_key="e"))  # … which the next submit records
    store.submit(tm.TaskSubmission("t", dedup_key="e", on_duplicate="supersede"))
    before = store.history()
    assert set(before["status"]) == {"completed", "failed", "cancelled", "expired", "superseded"}
    assert store.prune_history(keep_last=0, export=tmp_path / "archive") == before.height
    assert_frame_equal(pl.read_parquet(store.last_export), before)
    assert store.history().height == 0 and store.tasks()["dedup_key"].to_list() == ["e"]


# ---------------------------------------------------------------- the export


def test_export_holds_exactly_the_removed_rows(
    store: tm.TaskStore, aged: dict[int, float], tmp_path: Path
) -> None:
    folder = tmp_path / "archive" / "deep"  # created, parents too
    want = expected(aged, older_than_h=10.5, keep_last=None)
    before = store.history()

    removed = store.prune_history(older_than=timedelta(hours=10.5), export=folder)

    assert removed == len(want) == 20
    path = store.last_export
    assert path is not None and path.parent == folder
    assert re.fullmatch(r"history-\d{8}T\d{6}\.\d{6}Z-1\.parquet", path.name)
    assert sorted(p.name for p in folder.iterdir()) == [path.name]  # no temporary file left
    exported = pl.read_parquet(path)
    assert exported.schema == before.schema  # the columns and types of history()
    assert_frame_equal(exported, before.filter(pl.col("id").is_in(sorted(want))))
    assert set(exported["status"].unique()) == {"completed", "failed", "cancelled"}


def test_every_prune_writes_a_new_file_and_an_empty_one_writes_none(
    store: tm.TaskStore, aged: dict[int, float], tmp_path: Path
) -> None:
    folder = tmp_path / "archive"
    store.prune_history(keep_last=20, export=folder)
    first = store.last_export
    store.prune_history(keep_last=10, export=folder)
    second = store.last_export
    assert first is not None and second is not None and first != second
    assert pl.read_parquet(first).height == pl.read_parquet(second).height == 10
    assert store.prune_history(keep_last=10, export=folder) == 0
    assert store.last_export is None
    assert sorted(folder.iterdir()) == sorted([first, second])


@pytest.mark.sqlite_only("the export's file naming, whatever the store")
def test_an_export_never_replaces_a_file(tmp_path: Path) -> None:
    taken = tmp_path / "history-STAMP-1.parquet"
    taken.write_bytes(b"earlier archive")
    folder = retention.ExportFolder(tmp_path)
    tmp = tmp_path / ".new.tmp"
    tmp.write_bytes(b"new rows")
    final = folder._publish(tmp, "STAMP")
    assert final.name == "history-STAMP-2.parquet"
    assert taken.read_bytes() == b"earlier archive" and final.read_bytes() == b"new rows"


def test_a_failed_export_removes_nothing_and_names_the_folder(
    store: tm.TaskStore, aged: dict[int, float], tmp_path: Path
) -> None:
    not_a_folder = tmp_path / "archive"
    not_a_folder.write_text("a file in the way")
    before = store.history()
    with pytest.raises(tm.SchedulerError, match=re.escape(str(not_a_folder))) as err:
        store.prune_history(older_than=timedelta(hours=1), export=not_a_folder)
    assert err.value.kind == "export"
    assert "nothing was removed" in str(err.value)
    assert_frame_equal(store.history(), before)


def test_an_export_that_fails_midway_removes_nothing_and_leaves_no_file(
    store: tm.TaskStore,
    aged: dict[int, float],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The disk fills up after the first row group: no file, no temporary, no delete."""
    monkeypatch.setattr(retention, "EXPORT_ROWS", 4)
    reads = []
    read_rows = store._prune_rows

    def rows_then_full_disk(ids: list[int]) -> pl.DataFrame:
        reads.append(ids)
        if len(reads) == 2:
            raise OSError(28, "No space left on device")
        return read_rows(ids)

    monkeypatch.setattr(store, "_prune_rows", rows_then_full_disk)
    deletes: list[list[int]] = []
    monkeypatch.setattr(store, "_prune_delete", lambda ids: deletes.append(ids) or 0)
    before = store.history()
    folder = tmp_path / "archive"
    with pytest.raises(tm.SchedulerError, match="No space left on device") as err:
        store.prune_history(older_than=timedelta(hours=1), export=folder)
    assert err.value.kind == "export" and str(folder) in str(err.value)
    assert len(reads) == 2 and deletes == []
    assert list(folder.iterdir()) == []
    assert_frame_equal(store.history(), before)


# ---------------------------------------------------------------- bounded transactions


def test_a_prune_larger_than_a_batch_deletes_in_batches_others_writing_between(
    store: tm.TaskStore, location: str | Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each batch is a transaction of its own: after each one another connection sees
    the rows gone, and can submit, claim and complete (the scheduler's calls) — on SQLite
    a write lock held across batches would make those wait out busy_timeout and fail."""
    ids = fill_history(store, 50)
    set_finished(location, dict.fromkeys(ids, 48.0), now=time.time())
    monkeypatch.setattr(retention, "PRUNE_BATCH", 7)
    other = tm.TaskStore.open(location, busy_timeout=1.0)
    owner = other.new_owner()
    seen: list[tuple[int, int]] = []  # (ids in the batch, history rows another sees)
    delete = store._prune_delete

    def delete_then_others_write(batch: list[int]) -> int:
        n = delete(batch)
        [(left,)] = run_sql(location, f"SELECT COUNT(*) FROM {table(location, 'history')}")
        seen.append((len(batch), int(left)))
        other.submit(tm.TaskSubmission("t", dedup_key=f"between-{len(seen)}"))
        [task] = other.claim(1, task_types=["t"], owner=owner)
        assert other.complete(task.id, owner=owner)
        return n

    monkeypatch.setattr(store, "_prune_delete", delete_then_others_write)
    try:
        removed = store.prune_history(older_than=timedelta(days=1), export=tmp_path)
    finally:
        other.release_owner(owner)
        other.close()

    assert removed == 50
    assert len(seen) == math.ceil(50 / 7) == 8
    assert [n for n, _ in seen] == [7] * 7 + [1]
    # committed per batch: 50 old rows, minus each batch, plus each task completed between
    assert [left for _, left in seen] == [50 - min(7 * k, 50) + k - 1 for k in range(1, 9)]
    # a row exported is a row deleted: the tasks finished meanwhile were not selected
    exported = pl.read_parquet(store.last_export)
    assert sorted(exported["id"].to_list()) == sorted(ids)
    assert sorted(store.history()["dedup_key"].to_list()) == sorted(
        f"between-{k}" for k in range(1, 9)
    )
    assert_store_consistent(store)


def test_rows_that_age_during_a_prune_wait_for_the_next_one(
    store: tm.TaskStore, location: str | Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ids are selected once: a row that qualifies only after the selection (here,
    backdated between two batches) stays, and is neither exported nor counted."""
    ids = fill_history(store, 10)
    now = time.time()
    set_finished(location, dict.fromkeys(ids[:6], 48.0), now=now)
    monkeypatch.setattr(retention, "PRUNE_BATCH", 2)
    delete = store._prune_delete
    calls = []

    def delete_and_age_the_rest(batch: list[int]) -> int:
        calls.append(batch)
        if len(calls) == 1:
            set_finished(location, dict.fromkeys(ids[6:], 48.0), now=now)
        return delete(batch)

    monkeypatch.setattr(store, "_prune_delete", delete_and_age_the_rest)
    assert store.prune_history(older_than=timedelta(days=1), export=tmp_path) == 6
    assert sorted(pl.read_parquet(store.last_export)["id"].to_list()) == ids[:6]
    assert history_ids(store) == set(ids[6:])
    monkeypatch.setattr(store, "_prune_delete", delete)
    assert store.prune_history(older_than=timedelta(days=1)) == 4


# ---------------------------------------------------------------- the scheduler


@pytest.fixture
def quick_retention(monkeypatch: pytest.MonkeyPatch) -> None:
    """The scheduler prunes right away and then every 50 ms."""
    monkeypatch.setattr(scheduler_retention, "RETENTION_FIRST_DELAY", 0.01)
    monkeypatch.setattr(scheduler_retention, "RETENTION_INTERVAL", 0.05)


async def until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait (polling) until ``condition()``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def test_scheduler_prunes_old_history_while_it_runs(
    location: str | Path, quick_retention: None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="taskmill")
    with tm.TaskStore.open(location) as store:
        old = fill_history(store, 12)
        set_finished(location, dict.fromkeys(old, 24 * 40.0), now=time.time())
    ran: list[str] = []

    async with tm.Scheduler(
        location,
        executors={"t": lambda ctx: ran.append(ctx.dedup_key)},
        history_retention=timedelta(days=30),
    ) as sched:
        await until(lambda: sched.store.history().height == 0, "the first prune")
        # it keeps dispatching, and what it finishes now stays (it is recent)
        await sched.submit_batch([tm.TaskSubmission("t", dedup_key=f"new{i}") for i in range(5)])
        await sched.wait_idle()
        recent = set(sched.store.history()["id"].to_list())
        assert len(recent) == 5 and sorted(ran) == [f"new{i}" for i in range(5)]
        # rows that grow old while it runs go at a later turn
        set_finished(location, dict.fromkeys(sorted(recent)[:2], 24 * 31.0), now=time.time())
        await until(lambda: sched.store.history().height == 3, "a later prune")
        assert set(sched.store.history()["id"].to_list()) == set(sorted(recent)[2:])
    assert any("history retention removed 12 task(s)" in r.getMessage() for r in caplog.records)


async def test_a_failing_prune_is_logged_and_tried_again_never_fatal(
    store: tm.TaskStore,
    location: str | Path,
    quick_retention: None,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = fill_history(store, 4)
    set_finished(location, dict.fromkeys(old, 24 * 40.0), now=time.time())
    prune = store.prune_history
    tries: list[dict[str, Any]] = []

    def locked_twice(**kwargs: Any) -> int:
        tries.append(kwargs)
        if len(tries) <= 2:
            raise tm.StoreLocked("task store is locked by another writer (test)")
        return prune(**kwargs)

    monkeypatch.setattr(store, "prune_history", locked_twice)
    async with tm.Scheduler(
        store, executors={"t": lambda ctx: None}, history_retention=timedelta(days=1)
    ) as sched:
        await until(lambda: store.history().height == 0, "a prune after two failures")
        await sched.submit(tm.TaskSubmission("t", dedup_key="still-dispatching"))
        await sched.wait_idle()
    assert len(tries) >= 3 and tries[0] == {"older_than": timedelta(days=1)}
    warnings = [r for r in caplog.records if "could not prune history" in r.getMessage()]
    assert len(warnings) == 2 and warnings[0].levelno == logging.WARNING
    assert store.history()["dedup_key"].to_list() == ["still-dispatching"]


@pytest.mark.sqlite_only("argument checks, before any store is opened")
@pytest.mark.parametrize("bad", [30, 3600.0, "30d", timedelta(0), timedelta(seconds=-1)])
def test_scheduler_refuses_a_bad_history_retention(tmp_path: Path, bad: Any) -> None:
    with pytest.raises(tm.SchedulerError, match="history_retention must be") as err:
        tm.Scheduler(tmp_path / "t.db", history_retention=bad)
    assert err.value.kind == "invalid_argument"


# ---------------------------------------------------------------- the command line


@pytest.mark.sqlite_only("parsing durations, no store")
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("15m", 900),
        ("12h", 43_200),
        ("7d", 604_800),
        ("2w", 1_209_600),
        ("1d12h", 129_600),
        ("1.5h", 5_400),
        ("7D", 604_800),
    ],
)
def test_durations(text: str, seconds: int) -> None:
    assert Duration().convert(text, None, None) == timedelta(seconds=seconds)


def test_cli_prune_end_to_end(store: tm.TaskStore, aged: dict[int, float], tmp_path: Path) -> None:
    db = str(store.driver._url) if hasattr(store.driver, "_url") else str(store.driver.path)
    want = expected(aged, older_than_h=10.5, keep_last=25)
    before = store.history()
    folder = tmp_path / "archive"
    result = CliRunner().invoke(
        cli,
        ["prune", "--db", db, "--older-than", "630m", "--keep-last", "25", "--export", str(folder)],
    )
    assert result.exit_code == 0, result.output
    [path] = folder.iterdir()
    assert result.output.splitlines() == [
        f"removed {len(want)} finished task(s) from {db}",
        f"exported them to {path}",
    ]
    assert_frame_equal(pl.read_parquet(path), before.filter(pl.col("id").is_in(sorted(want))))
    assert history_ids(store) == set(aged) - want
    # the same through the environment, as JSON
    again = CliRunner().invoke(
        cli, ["prune", "--keep-last", "3", "--json"], env={"TASKMILL_DB": db}
    )
    assert again.exit_code == 0, again.output
    assert json.loads(again.output) == {
        "db": db,
        "removed": len(aged) - len(want) - 3,
        "export": None,
    }


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ([], "give --older-than, --keep-last or both"),
        (["--older-than", "7"], "is not a duration"),
        (["--older-than", "7 days"], "is not a duration"),
        (["--keep-last", "-1"], "--keep-last"),
    ],
)
def test_cli_prune_usage_errors_exit_2(location: str | Path, args: list[str], words: str) -> None:
    result = CliRunner().invoke(cli, ["prune", "--db", str(location), *args])
    assert result.exit_code == 2 and words in result.output, result.output


@pytest.mark.sqlite_only("one real subprocess is enough; the in-process test covers both")
def test_cli_prune_as_a_subprocess(db_path: Path, tmp_path: Path) -> None:
    with tm.TaskStore.open(db_path) as store:
        ids = fill_history(store, 6)
    set_finished(db_path, dict.fromkeys(ids[:4], 24 * 8.0), now=time.time())
    done = subprocess.run(
        [
            PYTHON,
            "-m",
            "taskmill",
            "prune",
            "--db",
            str(db_path),
            "--older-than",
            "7d",
            "--export",
            "archive",
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(
        f"removed 4 finished task(s) from {db_path}\nexported them to archive/history-"
    )
    [path] = (tmp_path / "archive").iterdir()
    assert sorted(pl.read_parquet(path)["id"].to_list()) == ids[:4]
    bad = subprocess.run(
        [
            PYTHON,
            "-m",
            "taskmill",
            "prune",
            "--db",
            str(db_path),
            "--keep-last",
            "1",
            "--export",
            str(path / "sub"),  # under a file: only making the folder finds out
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith("taskmill: error: cannot export the pruned history to folder")
    with tm.TaskStore.open(db_path) as store:
        assert history_ids(store) == set(ids[4:])


@pytest.mark.sqlite_only("the worker's options reach its Scheduler; no store is opened")
def test_cli_worker_history_retention_reaches_the_scheduler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import taskmill.cli.worker as cli_module

    got: dict[str, Any] = {}

    async def fake_run_worker(db: str, executors: Any, **settings: Any) -> Any:
        got.update(settings)
        from collections import Counter

        return Counter()

    monkeypatch.setattr(cli_module, "run_worker", fake_run_worker)
    db = str(tmp_path / "t.db")
    argv = ["worker", "--db", db, "--demo-executors", "--until-idle", "--json"]
    result = CliRunner().invoke(cli, [*argv, "--history-retention", "30d"])
    assert result.exit_code == 0, result.output
    assert got["history_retention"] == timedelta(days=30)
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0 and got["history_retention"] is None
    bad = CliRunner().invoke(cli, [*argv, "--history-retention", "soon"])
    assert bad.exit_code == 2 and "is not a duration" in bad.output
