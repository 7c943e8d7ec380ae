"""Every attempt is kept (issue 22): its start, end, worker, outcome, error and the last
frames of a failure's traceback — whichever way it ended — on both backends, and
`taskmill show ID` lists them.  Before schema 6 the store kept a task's attempt count and
its last error only: `store.attempts()` did not exist, and `show` printed the last error."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

import taskmill as tm
from taskmill.cli import cli

from conftest import run_sql, table

pytestmark = pytest.mark.backends("sqlite", "postgres")


def _flaky(fails: int) -> tuple[dict[str, int], object]:
    tries: dict[str, int] = {}

    def upload(ctx: tm.TaskContext) -> None:
        key = ctx.dedup_key or ""
        tries[key] = tries.get(key, 0) + 1
        if tries[key] <= fails:
            _reach_the_bucket(key, tries[key])

    return tries, upload


def _reach_the_bucket(key: str, n: int) -> None:
    raise ConnectionError(f"bucket unreachable for {key} (try {n})")


async def _run(
    location: str | Path, key: str, *, fails: int, max_retries: int
) -> tuple[dict[str, int], int, str | None]:
    """One task whose first ``fails`` attempts raise, run to its end: the tries made, its
    id and the worker that ran it."""
    tries, upload = _flaky(fails)
    async with tm.Scheduler(
        location,
        executors={"up": upload},
        max_retries=max_retries,
        retry_delay=0.01,
        poll_interval=0.02,
    ) as sched:
        done = await sched.submit(tm.TaskSubmission("up", dedup_key=key))
        await sched.wait_idle(timeout=20)
        assert done.task_id is not None
        return tries, done.task_id, sched.worker


def _attempts(location: str | Path, *args: object, **kwargs: object) -> pl.DataFrame:
    with tm.TaskStore.open(location) as store:
        return store.attempts(*args, **kwargs)  # type: ignore[arg-type]


async def test_each_attempt_is_kept_with_its_worker_error_and_traceback(
    location: str | Path,
) -> None:
    tries, task_id, owner = await _run(location, "a.jpg", fails=2, max_retries=3)
    attempts = _attempts(location, task_id)
    assert tries == {"a.jpg": 3}
    assert attempts["task_id"].to_list() == [task_id] * 3
    assert attempts["attempt"].to_list() == [1, 2, 3]
    assert attempts["outcome"].to_list() == ["failed", "failed", "completed"]
    assert attempts["worker"].to_list() == [owner] * 3
    assert attempts["error"].to_list() == [
        "ConnectionError: bucket unreachable for a.jpg (try 1)",
        "ConnectionError: bucket unreachable for a.jpg (try 2)",
        None,
    ]
    first = attempts["traceback"][0]
    # the executor's frames, innermost last, then the error; not the scheduler's own
    assert first.startswith("Traceback (most recent call last):\n")
    assert "in upload\n" in first and "in _reach_the_bucket\n" in first
    assert first.endswith("ConnectionError: bucket unreachable for a.jpg (try 1)")
    assert "scheduler.py" not in first and "concurrent" not in first
    assert attempts["traceback"][2] is None
    starts, ends = attempts["started_at"].to_list(), attempts["finished_at"].to_list()
    assert all(s <= e for s, e in zip(starts, ends, strict=True))
    assert ends[0] <= starts[1] and ends[1] <= starts[2]
    assert attempts.schema["started_at"] == pl.Datetime("us", "UTC")


async def test_a_final_failure_and_its_traceback(location: str | Path) -> None:
    _, task_id, _ = await _run(location, "b.jpg", fails=10, max_retries=1)
    attempts = _attempts(location, task_id)
    failed = _attempts(location, outcome="failed", limit=1)
    assert attempts["outcome"].to_list() == ["failed", "failed"]
    assert attempts["error"][1] == "ConnectionError: bucket unreachable for b.jpg (try 2)"
    assert "try 2" in attempts["traceback"][1]
    # limit keeps the most recent
    assert failed.select("task_id", "attempt").rows() == [(task_id, 2)]


def test_attempts_that_end_without_a_result(store: tm.TaskStore) -> None:
    """Released (shutdown: not a try, so the next attempt has its number again), lost (a
    lease that ran out), cancelled and superseded while running, and expired never ran."""
    for key in ("lost", "released", "cancelled", "superseded"):
        store.submit(tm.TaskSubmission("t", dedup_key=key))
    ids = dict(zip(store.tasks()["dedup_key"], store.tasks()["id"], strict=True))
    owner = store.new_owner(lease_timeout=5)
    remote = "elsewhere:4242:0123456789ab"  # a worker on another machine: its lease decides
    store.register(remote, lease_timeout=30.0)
    [lost] = store.claim(1, task_types=["t"], owner=remote)
    claimed = store.claim(3, task_types=["t"], owner=owner)
    assert lost.dedup_key == "lost" and len(claimed) == 3
    assert [c.attempt for c in (lost, *claimed)] == [1, 1, 1, 1]
    assert store.release([ids["released"]], owner=owner, attempts=[1]) == 1
    assert store.cancel(ids["cancelled"]) == "running"
    store.submit(tm.TaskSubmission("t", dedup_key="superseded", on_duplicate="supersede"))
    # the lease ran out (as judged later by the store's clock): recovered, not a try
    assert store.recover(now=store.now() + 60) == 1
    got = store.attempts().select("task_id", "attempt", "worker", "outcome").rows()
    assert sorted(got) == sorted(
        [
            (ids["released"], 1, owner, "released"),
            (ids["cancelled"], 1, owner, "cancelled"),
            (ids["superseded"], 1, owner, "superseded"),
            (ids["lost"], 1, remote, "lost"),
        ]
    )
    lost_row = store.attempts(ids["lost"]).row(0, named=True)
    assert lost_row["error"] == f"the lease of worker {remote} ran out"
    # released and lost attempts were no tries: the next one is number 1 again
    other = store.new_owner()
    again = store.claim(5, task_types=["t"], owner=other)
    assert sorted((c.dedup_key, c.attempt) for c in again) == [
        ("lost", 1),
        ("released", 1),
        ("superseded", 1),
    ]
    assert store.complete_many([c.id for c in again], owner=other) == {c.id for c in again}
    released = store.attempts(ids["released"])
    assert released.select("attempt", "worker", "outcome").rows() == [
        (1, owner, "released"),
        (1, other, "completed"),
    ]
    # a task that never ran has no attempts
    store.submit(tm.TaskSubmission("t", dedup_key="never", expires_at=1.0))
    store.expire_due()
    never = store.history(status="expired")["id"][0]
    assert store.attempts(never).height == 0


def test_attempts_go_with_their_task_when_history_is_pruned(store: tm.TaskStore) -> None:
    for key in ("old", "kept"):
        store.submit(tm.TaskSubmission("t", dedup_key=key))
    owner = store.new_owner()
    first, second = store.claim(2, task_types=["t"], owner=owner)
    store.complete_many([first.id], owner=owner)
    assert store.fail(second.id, owner=owner, error="E: x", retry_at=None, traceback="tb") == (
        "failed"
    )
    assert store.attempts().height == 2
    assert store.prune_history(keep_last=1) == 1
    assert store.attempts()["task_id"].to_list() == [second.id]
    assert store.attempts(second.id)["traceback"].to_list() == ["tb"]


def test_a_task_is_found_by_id(store: tm.TaskStore, location: str | Path) -> None:
    for key in ("a", "b", "c"):
        store.submit(tm.TaskSubmission("t", dedup_key=key))
    store.cancel_where(dedup_keys=["b"])
    assert store.tasks(ids=[1, 3])["dedup_key"].to_list() == ["a", "c"]
    assert store.tasks(ids=2).height == 0
    assert store.history(ids=2)["status"].to_list() == ["cancelled"]
    task = store.task(2)
    assert task is not None
    assert (task["dedup_key"], task["status"], task["active"]) == ("b", "cancelled", False)
    active = store.task(3)
    assert active is not None and (active["status"], active["active"]) == ("pending", True)
    assert store.task(99) is None
    with pytest.raises(tm.SchedulerError, match=r"ids\[1\] must be a whole number") as err:
        store.tasks(ids=[1, "2"])  # type: ignore[list-item]
    assert err.value.kind == "invalid_argument"
    with pytest.raises(tm.SchedulerError, match="outcome='crashed' is not an attempt's outcome"):
        store.attempts(outcome="crashed")


def test_show_lists_every_attempt(location: str | Path) -> None:
    """Before: `show` printed the task's fields and its last error only."""
    _, task_id, _ = asyncio.run(_run(location, "c.jpg", fails=5, max_retries=1))
    runner = CliRunner()
    shown = runner.invoke(cli, ["show", str(task_id), "--db", str(location)], env={"COLUMNS": "80"})
    assert shown.exit_code == 0, shown.output
    out = shown.output
    assert "attempts (2)" in out
    lines = out.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("  #1 "))
    assert "failed" in lines[first] and " on " in lines[first]
    assert lines[first + 1].strip() == "ConnectionError: bucket unreachable for c.jpg (try 1)"
    second = next(i for i, ln in enumerate(lines) if ln.startswith("  #2 "))
    # the last failure with its traceback, which ends with its error
    assert lines[second + 1].strip() == "Traceback (most recent call last):"
    assert "in _reach_the_bucket" in " ".join(out.split())  # wrapped at 80 columns
    assert lines[-1].strip() == "ConnectionError: bucket unreachable for c.jpg (try 2)"
    assert all(len(line) <= 80 for line in lines), out
    data = json.loads(
        runner.invoke(cli, ["show", str(task_id), "--db", str(location), "--json"]).output
    )
    tried = data["attempt_history"]
    assert [(a["attempt"], a["outcome"]) for a in tried] == [(1, "failed"), (2, "failed")]
    assert dt.datetime.fromisoformat(tried[0]["started_at"]).tzinfo is not None
    assert "in upload" in tried[1]["traceback"]


def test_an_attempt_is_recorded_in_the_same_transaction_as_its_result(
    store: tm.TaskStore, location: str | Path
) -> None:
    """The triggers write the attempt with the statement that ends it: a completion the
    store refuses (not owned) leaves no attempt, and one row of attempts per ended try
    is all there is."""
    store.submit(tm.TaskSubmission("t", dedup_key="x"))
    owner = store.new_owner()
    [task] = store.claim(1, task_types=["t"], owner=owner)
    assert store.complete_many([task.id], owner="someone:1:else") == set()
    assert store.attempts().height == 0
    assert store.complete_many([task.id], owner=owner) == {task.id}
    assert store.complete_many([task.id], owner=owner) == set()  # a retried call
    rows = run_sql(location, f"SELECT task_id, outcome FROM {table(location, 'attempts')}")
    assert rows == [(task.id, "completed")]
    assert time.time() - store.attempts()["finished_at"][0].timestamp() < 60
