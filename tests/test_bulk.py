"""Bulk control on both backends: ``cancel_where`` (filters, 100,000 keys, running tasks
told through a real Scheduler), ``retry_failed`` (exact outcomes and store contents), bad
arguments that change nothing, and the ``cancel`` / ``retry-failed`` commands."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner

import taskmill as tm
from taskmill.cli import cli

from conftest import ENV, PYTHON, assert_store_consistent, fail_now, run_sql, table

pytestmark = pytest.mark.backends("sqlite", "postgres")


def snapshot(store: tm.TaskStore) -> tuple[pl.DataFrame, pl.DataFrame]:
    return store.tasks().sort("id"), store.history().sort("id")


def assert_unchanged(store: tm.TaskStore, before: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    after = snapshot(store)
    assert after[0].equals(before[0]) and after[1].equals(before[1])


# ---------------------------------------------------------------- cancel_where

#: (task_type, dedup_key, group, label) of the active tasks of :func:`mixed`.
MIXED = [
    ("a", "k1", "g1", "L1"),
    ("a", "k2", "g2", None),
    ("b", "k1", "g1", None),  # the same key as the first, another type
    ("b", "k3", None, "L1"),
    ("a", None, "g2", "L1"),
    ("c", "k4", "g1", "L2"),
    ("b", "k5", "g2", "L2"),
    ("a", "k6", None, None),
]


def mixed(store: tm.TaskStore) -> str:
    """Submit :data:`MIXED`, pause k3, and claim (running) the tasks of type ``c`` and
    k6; returns the owner of the running ones."""
    for task_type, key, group, label in MIXED:
        store.submit(tm.TaskSubmission(task_type, dedup_key=key, group=group, label=label))
    store.pause(4)
    owner = store.new_owner()
    store.claim(10, task_types=["c"], owner=owner)
    others = [1, 2, 5]  # the pending tasks of type a but k6 (id 8)
    for task_id in others:
        store.pause(task_id)
    assert [t.id for t in store.claim(10, task_types=["a"], owner=owner)] == [8]
    for task_id in others:
        store.resume(task_id)
    return owner


def expected_ids(frame: pl.DataFrame, filters: dict[str, Any]) -> list[int]:
    """The ids a filter set selects, computed in Python over the tasks frame."""

    def keep(row: dict[str, Any]) -> bool:
        for name, value in filters.items():
            values = [value] if isinstance(value, str) else list(value)
            if row["dedup_key" if name == "dedup_keys" else name] not in values:
                return False
        return True

    return [row["id"] for row in frame.iter_rows(named=True) if keep(row)]


FILTERS = [
    {"task_type": "a"},
    {"group": ["g1", "g2"]},
    {"label": "L1"},
    {"status": "paused"},
    {"status": "running"},
    {"status": ["pending", "running"], "group": "g1"},
    {"dedup_keys": ["k1", "k5", "absent"]},
    {"dedup_keys": ["k1", "k3"], "task_type": "b"},
    {"dedup_keys": ("k1", "k4", "k6"), "status": "running"},
    {"task_type": ["a", "b"], "group": "g2", "label": ["L1", "L2"], "status": "pending"},
    {"task_type": "zzz"},
]


@pytest.mark.parametrize("filters", FILTERS, ids=lambda f: json.dumps(f, sort_keys=True))
def test_cancel_where_moves_exactly_the_matching_tasks(
    store: tm.TaskStore, filters: dict[str, Any]
) -> None:
    owner = mixed(store)
    before = store.tasks().sort("id")
    statuses = dict(before.select("id", "status").iter_rows())
    want = expected_ids(before, filters)
    assert store.cancel_where(**filters) == len(want)
    after, history = assert_store_consistent(store)
    assert sorted(after["id"].to_list()) == sorted(set(before["id"].to_list()) - set(want))
    assert history.select("id", "status").rows() == [(i, "cancelled") for i in sorted(want)]
    # the others keep their state; a cancelled running task is lost to its owner
    assert dict(after.select("id", "status").iter_rows()) == {
        i: s for i, s in statuses.items() if i not in want
    }
    running = [i for i in want if statuses[i] == "running"]
    owned = [i for i, s in statuses.items() if s == "running"]
    lost = store.lost_tasks(owned, owner=owner)
    assert lost == {i: ("cancelled", None) for i in running}
    # the history rows are the tasks as they were
    kept = history.join(before, on="id", suffix="_active")
    for name in ("task_type", "dedup_key", "group", "label", "priority", "attempts"):
        assert kept[name].to_list() == kept[f"{name}_active"].to_list()
    store.release_owner(owner)


def test_cancel_where_a_second_time_finds_nothing_and_keys_are_free_again(
    store: tm.TaskStore,
) -> None:
    mixed(store)
    assert store.cancel_where(dedup_keys=["k1"]) == 2
    assert store.cancel_where(dedup_keys=["k1"]) == 0
    again = store.submit(tm.TaskSubmission("a", dedup_key="k1"))
    assert again.action == "submitted" and again.task_id == 9


def test_cancel_where_with_an_empty_filter_list_matches_nothing(store: tm.TaskStore) -> None:
    mixed(store)
    before = snapshot(store)
    for filters in ({"dedup_keys": []}, {"task_type": []}, {"status": [], "group": "g1"}):
        assert store.cancel_where(**filters) == 0
    assert_unchanged(store, before)


def test_cancel_where_takes_keys_from_a_polars_series(store: tm.TaskStore) -> None:
    mixed(store)
    keys = pl.Series("dedup_key", ["k2", "k5"])
    assert store.cancel_where(dedup_keys=keys) == 2
    assert store.history()["dedup_key"].to_list() == ["k2", "k5"]


@pytest.mark.timeout(600)
def test_cancel_where_with_100k_keys(store: tm.TaskStore) -> None:
    """100,000 keys, half of them held by active tasks: exactly those are cancelled, over
    several transactions, of every type unless a type is given."""
    n = 100_000
    keys = [f"photos/{i:06d}.jpg" for i in range(n)]
    store.submit_batch(pl.DataFrame({"task_type": "sync.upload", "dedup_key": keys}))
    store.submit_batch(pl.DataFrame({"task_type": "sync.delete", "dedup_key": keys[:1000]}))
    active = store.tasks().select("id", "task_type", "dedup_key")
    wanted = keys[::2] + [f"elsewhere/{i:06d}" for i in range(n // 2)]  # 100,000 keys
    chosen = set(keys[::2])
    expect = active.filter(pl.col("dedup_key").is_in(chosen))["id"].sort().to_list()
    assert len(expect) == n // 2 + 500

    assert store.cancel_where(dedup_keys=wanted) == len(expect)
    history = store.history().select("id", "status")
    assert history["id"].to_list() == expect
    assert set(history["status"]) == {"cancelled"}
    assert store.counts()["pending"] == active.height - len(expect)

    # with a type: only its tasks (the other 500 deletes), the uploads stay
    assert store.cancel_where(task_type="sync.delete", dedup_keys=keys) == 500
    left = store.tasks()
    assert set(left["task_type"]) == {"sync.upload"} and left.height == n // 2
    assert store.integrity_check() == "ok"


def test_cancel_where_beside_concurrent_submits_of_the_same_keys(location: str | Path) -> None:
    """Bulk cancels racing batches (skip) and single submits (supersede) of the same keys,
    each on a store of its own as other processes would: every count returned is what
    history holds, every id handed out is active or finished exactly once, no key is held
    twice, and every outcome names a task that exists."""
    keys = [f"k{i:03d}" for i in range(200)]
    stop = threading.Event()
    cancelled: list[int] = []
    handed: list[int] = []
    errors: list[BaseException] = []

    def batches() -> None:
        with tm.TaskStore.open(location) as store:
            while not stop.is_set():
                out = store.submit_batch(pl.DataFrame({"task_type": "t", "dedup_key": keys}))
                handed.extend(out.submitted)
                handed.extend(out.to_polars()["task_id"].drop_nulls().to_list())

    def singles() -> None:
        with tm.TaskStore.open(location) as store:
            for i in itertools.count():
                if stop.is_set():
                    return
                sub = tm.TaskSubmission("t", dedup_key=keys[i * 7 % 200], on_duplicate="supersede")
                res = store.submit(sub)
                handed.append(res.task_id)

    def cancels() -> None:
        with tm.TaskStore.open(location) as store:
            for i in range(15):
                part = keys if i % 3 == 0 else keys[i % 3 :: 3]
                cancelled.append(store.cancel_where(dedup_keys=part))
                time.sleep(0.01)

    def guarded(fn: Any) -> Any:
        def run() -> None:
            try:
                fn()
            except BaseException as exc:
                errors.append(exc)
                stop.set()

        return run

    workers = [threading.Thread(target=guarded(f)) for f in (batches, singles)]
    for w in workers:
        w.start()
    canceller = threading.Thread(target=guarded(cancels))
    canceller.start()
    canceller.join(120)
    stop.set()
    for w in workers:
        w.join(120)
    assert not errors, errors
    with tm.TaskStore.open(location) as store:
        active, history = assert_store_consistent(store)
    assert sum(cancelled) == history.filter(pl.col("status") == "cancelled").height
    assert sum(cancelled) > 0
    known = set(active["id"].to_list()) | set(history["id"].to_list())
    assert set(handed) <= known
    replaced = history.filter(pl.col("status") == "superseded")["replaced_by"].to_list()
    assert set(replaced) <= known


async def test_running_tasks_cancelled_elsewhere_are_told_to_the_scheduler(
    location: str | Path,
) -> None:
    """A store of its own (as another process would) cancels the running tasks; the
    scheduler running them learns at its next look, its attempts see ``ctx.cancelled``
    (the async one is cancelled) and none of them completes."""
    started = threading.Event()
    async_started = asyncio.Event()
    saw: list[str] = []

    def cooperative(ctx: tm.TaskContext) -> None:
        started.set()
        deadline = time.monotonic() + 20
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.01)
        saw.append(f"sync cancelled={ctx.cancelled}")

    async def sleeper(ctx: tm.TaskContext) -> None:
        async_started.set()
        try:
            await asyncio.sleep(20)
        except asyncio.CancelledError:
            saw.append(f"async cancelled={ctx.cancelled}")
            raise

    async def quick(ctx: tm.TaskContext) -> None:
        return None

    async with tm.Scheduler(
        location,
        executors={"slow.sync": cooperative, "slow.async": sleeper},
        poll_interval=0.05,
    ) as sched:
        events = sched.subscribe()
        a = await sched.submit(tm.TaskSubmission("slow.sync", dedup_key="x", group="bulk"))
        b = await sched.submit(tm.TaskSubmission("slow.async", dedup_key="y", group="bulk"))
        other = await sched.submit(tm.TaskSubmission("other", group="bulk"))  # pending
        kept = await sched.submit(tm.TaskSubmission("slow.sync", group="elsewhere"))
        await asyncio.to_thread(started.wait, 10)
        await asyncio.wait_for(async_started.wait(), 10)
        while len(sched.running) < 2:
            await asyncio.sleep(0.01)
        with tm.TaskStore.open(location) as elsewhere:
            n = await asyncio.to_thread(elsewhere.cancel_where, group="bulk")
        assert n == 3
        deadline = time.monotonic() + 10
        while len(saw) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        # the task of the other group now runs, and is cancelled the same way
        await asyncio.to_thread(sched.store.cancel_where, group="elsewhere", status="running")
        await sched.wait_idle(timeout=10)
        got = events.drain()
        history = sched.store.history().sort("id")
    assert sorted(saw) == ["async cancelled=True", "sync cancelled=True", "sync cancelled=True"]
    assert history.select("id", "status").rows() == [
        (a.task_id, "cancelled"),
        (b.task_id, "cancelled"),
        (other.task_id, "cancelled"),
        (kept.task_id, "cancelled"),
    ]
    cancelled = {e.task_id: e.was_running for e in got if isinstance(e, tm.TaskCancelled)}
    assert cancelled == {a.task_id: True, b.task_id: True, kept.task_id: True}
    assert not [e for e in got if isinstance(e, tm.TaskCompleted | tm.TaskFailed)]


async def test_through_the_scheduler_own_attempts_are_told_at_once_and_retries_run(
    location: str | Path,
) -> None:
    """``sched.cancel_where`` tells this scheduler's attempts before it returns (not at the
    next poll, seconds away); ``sched.retry_failed`` emits ``BatchSubmitted`` and the
    retries run."""
    started = asyncio.Event()
    runs: dict[str | None, int] = {}
    stopped: list[float] = []

    async def flaky(ctx: tm.TaskContext) -> None:
        runs[ctx.dedup_key] = runs.get(ctx.dedup_key, 0) + 1
        if ctx.dedup_key == "slow":
            started.set()
            try:
                await asyncio.sleep(30)
            finally:
                stopped.append(time.monotonic())
        if runs[ctx.dedup_key] == 1:
            raise RuntimeError("the first try fails")

    async with tm.Scheduler(
        location, executors={"t": flaky}, poll_interval=5.0, max_retries=0
    ) as sched:
        events = sched.subscribe()
        slow = await sched.submit(tm.TaskSubmission("t", dedup_key="slow"))
        await asyncio.wait_for(started.wait(), 10)
        asked = time.monotonic()
        assert await sched.cancel_where(dedup_keys=["slow", "absent"]) == 1
        while not stopped and time.monotonic() - asked < 10:
            await asyncio.sleep(0.01)
        assert stopped and stopped[0] - asked < 2.5  # the poll interval is 5 s
        first = [(await sched.submit(tm.TaskSubmission("t", dedup_key=k))).task_id for k in "ab"]
        await sched.wait_idle(timeout=20)
        out = await sched.retry_failed()
        assert out.to_polars().select("dedup_key", "action").rows() == [
            ("a", "submitted"),
            ("b", "submitted"),
        ]
        await sched.wait_idle(timeout=20)
        got = events.drain()
        history = sched.store.history().sort("id")
    assert history.select("id", "status").rows() == [
        (slow.task_id, "cancelled"),
        (first[0], "failed"),
        (first[1], "failed"),
        (out.submitted[0], "completed"),
        (out.submitted[1], "completed"),
    ]
    batches = [e for e in got if isinstance(e, tm.BatchSubmitted)]
    assert [(e.count, list(e.task_ids)) for e in batches] == [(2, out.submitted)]
    cancelled = [e for e in got if isinstance(e, tm.TaskCancelled)]
    assert [(e.task_id, e.was_running) for e in cancelled] == [(slow.task_id, True)]


# ---------------------------------------------------------------- retry_failed


def complete_now(store: tm.TaskStore, task_id: int, task_type: str) -> None:
    owner = store.new_owner()
    assert [t.id for t in store.claim(1, task_types=[task_type], owner=owner)] == [task_id]
    assert store.complete(task_id, owner=owner)
    store.release_owner(owner)


#: What a resubmitted task must carry over.
CARRIED = [
    "task_type",
    "dedup_key",
    "group",
    "priority",
    "payload",
    "label",
    "expected_read_bytes",
    "expected_write_bytes",
    "expected_net_rx_bytes",
    "expected_net_tx_bytes",
    "max_retries",
]


def test_retry_failed_resubmits_each_failure_once_with_its_fields(store: tm.TaskStore) -> None:
    full = tm.TaskSubmission(
        "sync.upload",
        dedup_key="k1",
        group="g1",
        priority=10,
        payload={"src": "/a"},
        label="nightly",
        expected_read_bytes=1,
        expected_write_bytes=2,
        expected_net_rx_bytes=3,
        expected_net_tx_bytes=4,
        max_retries=2,
    )
    [f1] = fail_now(store, full)
    [f2] = fail_now(store, tm.TaskSubmission("sync.delete", dedup_key="k2", payload=b"\x00\xff"))
    [f3] = fail_now(store, tm.TaskSubmission("sync.upload", group="g2"))  # no key
    [f4] = fail_now(store, tm.TaskSubmission("sync.upload", dedup_key="k4", group="g2"))
    active4 = store.submit(tm.TaskSubmission("sync.upload", dedup_key="k4", priority=200))
    [old5] = fail_now(store, tm.TaskSubmission("sync.upload", dedup_key="k5", priority=50))
    [f5] = fail_now(store, tm.TaskSubmission("sync.upload", dedup_key="k5", priority=60))
    [old6] = fail_now(store, tm.TaskSubmission("sync.copy", dedup_key="k6"))
    again6 = store.submit(tm.TaskSubmission("sync.copy", dedup_key="k6")).task_id
    complete_now(store, again6, "sync.copy")  # its retry went through: nothing to do
    done = store.submit(tm.TaskSubmission("sync.copy", dedup_key="k7")).task_id
    complete_now(store, done, "sync.copy")
    store.submit(tm.TaskSubmission("sync.copy", dedup_key="k8"))
    store.cancel_where(dedup_keys=["k8"])
    history_before = store.history().sort("id")
    tasks_before = store.tasks()

    out = store.retry_failed()
    # in history order; k4 is active again (more urgent now: upgraded in place); k5's
    # older failure is followed by a newer one, and k6's by a completed retry
    assert out.counts() == {
        "submitted": 4,
        "deduplicated": 0,
        "superseded": 0,
        "upgraded": 1,
        "failed": 0,
    }
    rows = out.to_polars().select("dedup_key", "action", "task_id").rows()
    new = out.submitted
    assert rows == [
        ("k1", "submitted", new[0]),
        ("k2", "submitted", new[1]),
        (None, "submitted", new[2]),
        ("k4", "upgraded", active4.task_id),
        ("k5", "submitted", new[3]),
    ]
    assert new == sorted(new) and new[0] > history_before["id"].max()
    history = store.history().sort("id")
    assert history.equals(history_before)  # history is a log: untouched
    tasks = store.tasks().sort("id")
    assert tasks.filter(pl.col("id") == active4.task_id)["priority"].to_list() == [128]
    resubmitted = tasks.filter(pl.col("id").is_in(new)).sort("id").select(CARRIED)
    originals = history.filter(pl.col("id").is_in([f1, f2, f3, f5])).sort("id").select(CARRIED)
    assert resubmitted.equals(originals)
    assert tasks.height == tasks_before.height + 4
    assert set(tasks.filter(pl.col("id").is_in(new))["status"]) == {"pending"}
    assert {old5, old6, f4} <= set(history["id"]) and store.integrity_check() == "ok"

    # again: the keyed retries are active, so deduplicated; the keyless one has nothing
    # that ties it to its retry and is submitted again (documented)
    second = store.retry_failed()
    assert second.counts() == {
        "submitted": 1,
        "deduplicated": 4,
        "superseded": 0,
        "upgraded": 0,
        "failed": 0,
    }
    assert second.deduplicated == ["k1", "k2", "k4", "k5"]
    assert second.to_polars().filter(pl.col("action") == "submitted")["dedup_key"].to_list() == [
        None
    ]
    assert store.history().equals(history_before)


def test_retry_failed_after_the_retry_finished_passes_the_failure_over(
    store: tm.TaskStore,
) -> None:
    [first] = fail_now(store, tm.TaskSubmission("t", dedup_key="k"))
    [retry] = store.retry_failed().submitted
    complete_now(store, retry, "t")
    out = store.retry_failed()
    assert len(out) == 0 and store.tasks().height == 0
    # the key failed again: that newer failure is retried, once
    [second] = fail_now(store, tm.TaskSubmission("t", dedup_key="k"))
    out = store.retry_failed()
    assert out.to_polars().select("dedup_key", "action").rows() == [("k", "submitted")]
    assert store.tasks()["id"].to_list() == out.submitted
    assert first < retry < second < out.submitted[0]
    assert store.retry_failed().deduplicated == ["k"]


def test_retry_failed_filters(store: tm.TaskStore, location: str | Path) -> None:
    fail_now(store, tm.TaskSubmission("a", dedup_key="1", group="g1"))
    fail_now(store, tm.TaskSubmission("a", dedup_key="2", group="g2"))
    fail_now(store, tm.TaskSubmission("b", dedup_key="3", group="g1"))
    [old] = fail_now(store, tm.TaskSubmission("b", dedup_key="4"))
    long_ago = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)  # when "4" failed
    mark = "%s" if isinstance(location, str) else "?"
    run_sql(
        location,
        f"UPDATE {table(location, 'history')} SET finished_at = {mark} WHERE id = {mark}",
        (long_ago.timestamp(), old),
    )
    before = snapshot(store)

    def retried(**filters: Any) -> tuple[list[str], list[str]]:
        """The keys submitted and deduplicated by ``retry_failed(**filters)``."""
        out = store.retry_failed(**filters)
        submitted = out.to_polars().filter(pl.col("action") == "submitted")["dedup_key"]
        return submitted.to_list(), out.deduplicated

    assert retried(since=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)) == ([], [])
    assert retried(task_type=[]) == ([], []) and retried(group=[]) == ([], [])
    assert_unchanged(store, before)
    assert retried(since=long_ago + dt.timedelta(seconds=1), task_type="zzz") == ([], [])
    assert retried(task_type="a", group=["g2", "g3"], since=dt.timedelta(hours=1)) == (["2"], [])
    assert retried(group="g1") == (["1", "3"], [])
    assert retried(since=dt.timedelta(hours=1)) == ([], ["1", "2", "3"])
    assert retried(since=long_ago) == (["4"], ["1", "2", "3"])  # at or after
    assert sorted(store.tasks()["dedup_key"].to_list()) == ["1", "2", "3", "4"]
    assert retried(since=dt.datetime(2019, 12, 31, 23)) == ([], ["1", "2", "3", "4"])  # naive: UTC


def test_retry_failed_with_nothing_failed_is_an_empty_outcome(store: tm.TaskStore) -> None:
    store.submit(tm.TaskSubmission("t"))
    out = store.retry_failed()
    assert len(out) == 0 and out.submitted == [] and store.tasks().height == 1


# ---------------------------------------------------------------- bad arguments

BAD_CALLS = [
    ("cancel_where", {}, "at least one filter"),
    ("cancel_where", {"status": "failed"}, "only active tasks"),
    ("cancel_where", {"status": ["pending", "done"]}, "'done'"),
    ("cancel_where", {"task_type": 5}, "task_type= takes a string"),
    ("cancel_where", {"group": {"g1": 1}}, "group= takes a string"),
    ("cancel_where", {"label": ["L1", None]}, "label= holds None"),
    ("cancel_where", {"dedup_keys": ["k1", 2]}, "dedup_keys= holds 2"),
    ("cancel_where", {"dedup_keys": b"k1"}, "dedup_keys= takes a string"),
    ("cancel_where", {"task_type": "a", "status": "completed"}, "only active tasks"),
    ("retry_failed", {"since": "yesterday"}, "since= takes a datetime or a timedelta"),
    ("retry_failed", {"since": dt.timedelta(hours=-1)}, "negative"),
    ("retry_failed", {"task_type": [1]}, "task_type= holds 1"),
    ("retry_failed", {"group": 3}, "group= takes a string"),
]


@pytest.mark.parametrize(("method", "kwargs", "message"), BAD_CALLS)
def test_bad_arguments_are_clear_errors_and_change_nothing(
    store: tm.TaskStore, method: str, kwargs: dict[str, Any], message: str
) -> None:
    mixed(store)
    fail_now(store, tm.TaskSubmission("f", dedup_key="x"))
    before = snapshot(store)
    with pytest.raises(tm.SchedulerError, match=message.replace("(", r"\(")) as err:
        getattr(store, method)(**kwargs)
    assert err.value.kind == "invalid_argument"
    assert_unchanged(store, before)


# ---------------------------------------------------------------- command line


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(cli, [*args], catch_exceptions=False)
    return result


def test_cli_cancel_by_filters_and_keys_files(location: str | Path, tmp_path: Path) -> None:
    db = str(location)
    with tm.TaskStore.open(location) as store:
        owner = mixed(store)
    got = invoke("cancel", "--db", db, "--type", "a", "--group", "g2")
    assert got.exit_code == 0, got.output
    assert got.output == f"cancelled 2 tasks in {db}\n"

    text = tmp_path / "keys.txt"
    text.write_text("k3\r\nabsent\n\nk4\n", encoding="utf-8")
    got = invoke("cancel", "--db", db, "--keys-file", str(text), "--json")
    assert json.loads(got.output) == {"db": db, "cancelled": 2}

    parquet = tmp_path / "keys.parquet"
    pl.DataFrame({"dedup_key": ["k1", None], "other": [1, 2]}).write_parquet(parquet)
    got = invoke("cancel", "--db", db, "--keys-file", str(parquet), "--status", "pending")
    assert got.output == f"cancelled 2 tasks in {db}\n"  # a:k1 and b:k1

    csv = tmp_path / "keys.csv"
    pl.DataFrame({"dedup_key": ["k6", "k5"]}).write_csv(csv)
    got = invoke("cancel", "--db", db, "--keys-file", str(csv), "--label", "L2")
    assert got.output == f"cancelled 1 task in {db}\n"  # k5 (k6 has no label)

    with tm.TaskStore.open(location) as store:
        assert store.history().select("dedup_key", "status").sort("dedup_key").rows() == [
            (None, "cancelled"),
            ("k1", "cancelled"),
            ("k1", "cancelled"),
            ("k2", "cancelled"),
            ("k3", "cancelled"),
            ("k4", "cancelled"),
            ("k5", "cancelled"),
        ]
        assert store.tasks()["dedup_key"].to_list() == ["k6"]
        store.release_owner(owner)


def test_cli_cancel_refuses_no_filter_and_bad_keys_files(
    location: str | Path, tmp_path: Path
) -> None:
    db = str(location)
    with tm.TaskStore.open(location) as store:
        store.submit(tm.TaskSubmission("t", dedup_key="k"))
        before = snapshot(store)
    got = CliRunner().invoke(cli, ["cancel", "--db", db])
    assert got.exit_code == 2 and "at least one of --type" in got.output
    wrong = tmp_path / "wrong.csv"
    pl.DataFrame({"key": ["k"]}).write_csv(wrong)
    got = CliRunner().invoke(cli, ["cancel", "--db", db, "--keys-file", str(wrong)])
    assert got.exit_code == 2 and "no dedup_key column" in got.output
    got = CliRunner().invoke(cli, ["cancel", "--db", db, "--status", "failed"])
    assert got.exit_code == 2 and "'failed' is not one of" in got.output
    with tm.TaskStore.open(location) as store:
        assert_unchanged(store, before)


def test_cli_retry_failed(location: str | Path) -> None:
    db = str(location)
    with tm.TaskStore.open(location) as store:
        fail_now(
            store,
            tm.TaskSubmission("sync.upload", dedup_key="a", group="g1"),
            tm.TaskSubmission("sync.upload", dedup_key="b", group="g2"),
            tm.TaskSubmission("sync.delete", dedup_key="c", group="g1"),
        )
    got = invoke("retry-failed", "--db", db, "--type", "sync.upload", "--since", "2h", "--json")
    assert got.exit_code == 0, got.output
    summary = json.loads(got.output)
    assert summary["counts"] == {
        "submitted": 2,
        "deduplicated": 0,
        "superseded": 0,
        "upgraded": 0,
        "failed": 0,
    }
    got = invoke("retry-failed", "--db", db, "--group", "g1")
    assert got.exit_code == 0, got.output
    assert got.output.startswith(f"retried 2 failed tasks in {db}: 1 submitted, 1 deduplicated")
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    got = invoke("retry-failed", "--db", db, "--since", future)
    assert got.output.startswith(f"retried 0 failed tasks in {db}")
    got = CliRunner().invoke(cli, ["retry-failed", "--db", db, "--since", "soon"])
    assert got.exit_code == 2 and "neither a duration (30m, 2h, 1d) nor an ISO time" in got.output
    with tm.TaskStore.open(location) as store:
        assert sorted(store.tasks()["dedup_key"].to_list()) == ["a", "b", "c"]


@pytest.mark.sqlite_only("one real subprocess is enough; in-process runs cover PostgreSQL")
def test_cli_cancel_and_retry_as_subprocesses(db_path: Path) -> None:
    import subprocess

    with tm.TaskStore.open(db_path) as store:
        fail_now(store, tm.TaskSubmission("t", dedup_key="x"))
        store.submit(tm.TaskSubmission("t", dedup_key="y", group="g"))

    def run(*args: str) -> str:
        done = subprocess.run(
            [PYTHON, "-m", "taskmill", *args, "--db", str(db_path)],
            env=ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert run("retry-failed").startswith("retried 1 failed task in ")
    assert run("cancel", "--type", "t") == f"cancelled 2 tasks in {db_path}\n"
