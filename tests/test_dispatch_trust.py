"""Dispatch you can trust: no task runs twice at once, none is left stuck, limits hold
across workers, results are recorded whatever the store does meanwhile.

Every test here failed on 0.1 (commit 043ae3e), each for the defect it names.  They run
on both backends (a SQLite file, a PostgreSQL database); a fault is injected at the store's
interface (its public calls, a lock held by another connection) so that it is the same
fault on either.
"""

from __future__ import annotations

import abc
import asyncio
import logging
import os
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskmill as tm
from taskmill.store import StoreProtocol
from taskmill.store.batch import Stager
from taskmill.store.postgres.batch import PostgresBatch

from conftest import ENV, PYTHON, assert_store_consistent, is_postgres, run_py, run_sql, table

pytestmark = pytest.mark.backends("sqlite", "postgres")

# ---------------------------------------------------------------- helpers


class FaultyStore:
    """A real store behind the store protocol, failing the calls ``plan`` picks.

    ``plan(name)`` returns ``None`` (call through), ``"before"`` (raise without
    calling: the store never saw it) or ``"after"`` (call, then raise: the answer was
    lost on the way back).
    """

    def __init__(self, inner: tm.TaskStore, plan: Callable[[str], str | None]) -> None:
        self.inner = inner
        self.plan = plan
        self.failures: Counter[str] = Counter()
        self.lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target) or name.startswith("_"):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            with self.lock:
                when = self.plan(name)
            if when == "before":
                self.failures[name] += 1
                raise tm.SchedulerError(f"injected failure before {name}", kind="store")
            result = target(*args, **kwargs)
            if when == "after":
                self.failures[name] += 1
                raise tm.SchedulerError(f"injected failure after {name}", kind="store")
            return result

        return call


# it stands for a TaskStore, so a scheduler takes it (ABCMeta's register: TaskStore.register
# registers a worker)
abc.ABCMeta.register(tm.TaskStore, FaultyStore)


def _intervals_peak(intervals: list[tuple[float, float]]) -> int:
    """The most intervals open at one moment (an end before a start at a tie)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    peak = now = 0
    for _, step in points:
        now += step
        peak = max(peak, now)
    return peak


EXECUTOR_MODULE = """
import os, time

def work(ctx):
    start = time.time()
    time.sleep(float(os.environ.get("TM_TEST_SLEEP", "0.02")))
    end = time.time()
    with open(os.environ["TM_TEST_LOG"], "a") as fh:
        fh.write(f"{ctx.task_id} {ctx.group} {start!r} {end!r} {os.getpid()}\\n")

def hang(ctx):
    with open(os.environ["TM_TEST_LOG"], "a") as fh:
        fh.write(f"{ctx.task_id} {ctx.group} hang hang {os.getpid()}\\n")
    time.sleep(600)
"""


@pytest.fixture
def executors_module(tmp_path: Path) -> Path:
    folder = tmp_path / "mods"
    folder.mkdir()
    (folder / "tm_test_exec.py").write_text(EXECUTOR_MODULE)
    return folder


def _worker(
    db: str | Path, mods: Path, log: Path, *args: str, sleep: float = 0.02
) -> subprocess.Popen:
    env = {
        **ENV,
        "PYTHONPATH": f"{mods}{os.pathsep}{ENV['PYTHONPATH']}",
        "TM_TEST_LOG": str(log),
        "TM_TEST_SLEEP": str(sleep),
    }
    return subprocess.Popen(
        [PYTHON, "-m", "taskmill", "worker", "--db", str(db), "--poll-interval", "0.05", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_log(log: Path) -> list[tuple[int, str, float, float, int]]:
    rows = []
    for line in log.read_text().splitlines():
        tid, group, start, end, pid = line.split()
        rows.append((int(tid), group, float(start), float(end), int(pid)))
    return rows


# ---------------------------------------------------------------- 1. results always recorded


HOLD_LOCK = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
time.sleep(float(sys.argv[2]))
conn.execute("COMMIT")
"""

#: The same on PostgreSQL: another connection holds the store's tables against every
#: writer (readers go on, as beside a SQLite write lock).
HOLD_LOCK_PG = """
import psycopg, sys, time
with psycopg.connect(sys.argv[1]) as conn:
    conn.execute("LOCK TABLE taskmill.tasks, taskmill.history IN EXCLUSIVE MODE")
    print("locked", flush=True)
    time.sleep(float(sys.argv[2]))
    conn.commit()
"""


async def test_results_are_recorded_after_the_store_was_locked_for_longer_than_busy_timeout(
    location: str | Path, caplog: pytest.LogCaptureFixture
) -> None:
    """0.1: complete_many raised inside the scheduler, the task stayed running under a
    live owner, wait_idle() never returned, and close() ran the task again."""
    runs: Counter[str] = Counter()
    release = asyncio.Event()

    async def work(ctx: tm.TaskContext) -> None:
        runs[ctx.dedup_key or ""] += 1
        await release.wait()

    store = tm.TaskStore.open(location, busy_timeout=0.2)
    sched = tm.Scheduler(store, executors={"t": work}, poll_interval=0.05)
    await sched.start()
    events = sched.subscribe()
    for key in ("a", "b", "c"):
        await sched.submit(tm.TaskSubmission("t", dedup_key=key))
    while len(sched.running) < 3:
        await asyncio.sleep(0.01)
    hold = HOLD_LOCK_PG if is_postgres(location) else HOLD_LOCK
    holder = subprocess.Popen(
        [PYTHON, "-c", hold, str(location), "1.5"], env=ENV, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert (await asyncio.to_thread(holder.stdout.readline)).strip() == "locked"
    with caplog.at_level(logging.WARNING, logger="taskmill"):
        release.set()  # the three attempts end while another process holds the lock
        await asyncio.sleep(0.6)
        assert sched.store_error is not None and "locked" in sched.store_error
        await sched.wait_idle(timeout=20)
        assert await asyncio.to_thread(holder.wait, 10) == 0
        holder.stdout.close()
    await sched.close()
    store.close()
    got = events.drain()
    assert any(isinstance(e, tm.StoreUnavailable) for e in got)
    assert any(isinstance(e, tm.StoreRecovered) for e in got)
    assert sched.store_error is None
    assert "could not record the completion" in caplog.text
    assert runs == {"a": 1, "b": 1, "c": 1}  # each ran once: nothing ran again on close
    with tm.TaskStore.open(location) as s:
        active, history = assert_store_consistent(s)
        assert active.height == 0
        assert sorted(history.select("dedup_key", "status", "attempts").rows()) == [
            ("a", "completed", 1),
            ("b", "completed", 1),
            ("c", "completed", 1),
        ]
    assert sorted(e.task_id for e in got if isinstance(e, tm.TaskCompleted)) == [1, 2, 3]


# ---------------------------------------------------------------- 2. close and threads


async def test_close_keeps_a_plain_function_attempt_owned_until_its_thread_returns(
    location: str | Path,
) -> None:
    """0.1: close() gave the task back after close_timeout while its thread still ran,
    and a scheduler opened right after ran the same task at the same time."""
    spans: list[tuple[str, float, float]] = []
    lock = threading.Lock()

    def stubborn(name: str) -> Callable[[tm.TaskContext], None]:
        def run(ctx: tm.TaskContext) -> None:  # ignores ctx.cancelled
            start = time.monotonic()
            time.sleep(1.0 if name == "first" else 0.01)
            with lock:
                spans.append((name, start, time.monotonic()))

        return run

    first = tm.Scheduler(location, executors={"t": stubborn("first")}, close_timeout=0.1)
    await first.start()
    await first.submit(tm.TaskSubmission("t", dedup_key="k"))
    while not first.running:
        await asyncio.sleep(0.01)
    t0 = time.monotonic()
    await first.close()
    assert time.monotonic() - t0 >= 0.8  # close waited for the thread
    with tm.TaskStore.open(location) as store:  # told to stop: back to the queue, no try
        assert store.tasks().select("dedup_key", "status", "attempts").rows() == [
            ("k", "pending", 0)
        ]
    async with tm.Scheduler(location, executors={"t": stubborn("second")}) as second:
        await second.wait_idle(timeout=10)
        history = second.store.history().select("dedup_key", "status", "attempts").rows()
    assert [name for name, _, _ in spans] == ["first", "second"]
    assert spans[0][2] <= spans[1][1]  # never at the same time
    assert history == [("k", "completed", 1)]


async def test_an_attempt_that_stops_when_told_goes_back_to_pending_then_runs_once_more(
    location: str | Path,
) -> None:
    spans: list[tuple[int, float, float]] = []

    def polite(ctx: tm.TaskContext) -> None:
        start = time.monotonic()
        while not ctx.cancelled and time.monotonic() - start < 0.3:
            time.sleep(0.01)
        if ctx.cancelled and ctx.attempt == 1:
            time.sleep(0.3)  # takes a while to stop: still ours until it returns
            spans.append((ctx.attempt, start, time.monotonic()))
            raise RuntimeError("stopped")
        spans.append((ctx.attempt, start, time.monotonic()))

    first = tm.Scheduler(location, executors={"t": polite}, close_timeout=0.05)
    await first.start()
    await first.submit(tm.TaskSubmission("t", dedup_key="k"))
    while not first.running:
        await asyncio.sleep(0.01)
    await first.close()
    with tm.TaskStore.open(location) as store:
        assert store.tasks().select("status", "attempts").rows() == [("pending", 0)]
    async with tm.Scheduler(location, executors={"t": polite}) as second:
        await second.wait_idle(timeout=10)
        assert second.store.history().select("status", "attempts").rows() == [("completed", 1)]
    assert len(spans) == 2 and spans[0][2] <= spans[1][1]  # one after the other


# ---------------------------------------------------------------- 3. group limits across workers


@pytest.mark.parametrize(("caps", "per_worker"), [((1, 1), 1), ((2, 1), 2)])
def test_group_limits_hold_across_worker_processes(
    location: str | Path,
    tmp_path: Path,
    executors_module: Path,
    caps: tuple[int, int],
    per_worker: int,
) -> None:
    """0.1: two workers with a group cap of 1 ran 2 of its tasks at once (caps 2 and 1:
    up to 4 and 2)."""
    db = location
    with tm.TaskStore.open(db) as store:
        store.submit_batch(
            pl.DataFrame(
                {
                    "task_type": ["t"] * 60,
                    "dedup_key": [f"k{i}" for i in range(60)],
                    "group": ["endpoint-a", "endpoint-b"] * 30,
                }
            )
        )
    log = tmp_path / "runs.log"
    workers = [
        _worker(
            db,
            executors_module,
            log,
            "--executor",
            "t=tm_test_exec:work",
            "--max-concurrency",
            str(per_worker),  # less than the groups allow: both workers must take part
            "--group-limit",
            f"endpoint-a={caps[0]}",
            "--group-limit",
            f"endpoint-b={caps[1]}",
            "--until-idle",
            sleep=0.1,
        )
        for _ in range(2)
    ]
    for proc in workers:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
    rows = _read_log(log)
    assert sorted(r[0] for r in rows) == list(range(1, 61))  # each task ran once
    assert len({r[4] for r in rows}) == 2  # both workers took part
    for group, cap in zip(("endpoint-a", "endpoint-b"), caps, strict=True):
        spans = [(r[2], r[3]) for r in rows if r[1] == group]
        assert _intervals_peak(spans) <= cap, group
    assert _intervals_peak([(r[2], r[3]) for r in rows if r[1] == "endpoint-a"]) == caps[0]


# ---------------------------------------------------------------- 4. a killed worker


def test_a_killed_workers_tasks_are_taken_over_by_a_running_worker(
    location: str | Path, tmp_path: Path, executors_module: Path
) -> None:
    """0.1: after SIGKILL of one of two workers its tasks stayed running, and the
    survivor's --until-idle never exited; only a fresh TaskStore.open freed them."""
    db = location
    with tm.TaskStore.open(db) as store:
        store.submit_batch(pl.DataFrame({"task_type": ["t"] * 4, "dedup_key": list("abcd")}))
    hang_log = tmp_path / "hang.log"
    doomed = _worker(db, executors_module, hang_log, "--executor", "t=tm_test_exec:hang")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if hang_log.exists() and len(hang_log.read_text().splitlines()) == 4:
            break
        time.sleep(0.05)
    with tm.TaskStore.open(db) as store:
        assert store.counts()["running"] == 4
    log = tmp_path / "runs.log"
    survivor = _worker(
        db, executors_module, log, "--executor", "t=tm_test_exec:work", "--until-idle"
    )
    time.sleep(0.5)  # the survivor is up and finds every task taken
    with tm.TaskStore.open(db) as store:
        assert store.counts()["running"] == 4
    doomed.send_signal(signal.SIGKILL)
    doomed.communicate(timeout=30)
    _, err = survivor.communicate(timeout=60)  # 0.1: never returned
    assert survivor.returncode == 0, err
    assert sorted(r[0] for r in _read_log(log)) == [1, 2, 3, 4]
    with tm.TaskStore.open(db) as store:
        assert store.history().select("dedup_key", "status", "attempts").rows() == [
            (k, "completed", 1) for k in "abcd"
        ]


def test_a_lease_that_ran_out_frees_its_tasks_and_its_owner_learns_it(
    store: tm.TaskStore,
) -> None:
    """A worker on another machine cannot be checked by pid: its lease decides."""
    for key in "ab":
        store.submit(tm.TaskSubmission("t", dedup_key=key))
    remote = "elsewhere:4242:0123456789ab"
    store.register(remote, lease_timeout=30.0)
    t0 = time.time()
    assert [c.id for c in store.claim(2, task_types=["t"], owner=remote)] == [1, 2]
    assert store.recover(now=t0 + 10) == 0  # still within its lease
    assert store.counts()["running"] == 2
    assert store.renew(remote)  # renewed at about t0
    assert store.recover(now=t0 + 29) == 0
    assert store.recover(now=time.time() + 31) == 2
    assert store.tasks().select("dedup_key", "status", "attempts").rows() == [
        ("a", "pending", 0),
        ("b", "pending", 0),
    ]
    assert not store.renew(remote)  # the owner is told its lease is gone
    assert store.complete_many([1, 2], owner=remote) == set()  # and records nothing
    assert store.lost_tasks([1, 2], owner=remote) == {1: ("pending", None), 2: ("pending", None)}


def test_a_running_task_of_a_01_worker_elsewhere_is_recovered(
    store: tm.TaskStore, location: str | Path
) -> None:
    """A task left running by a worker that holds no lease (0.1 wrote no worker rows)."""
    store.submit(tm.TaskSubmission("t", dedup_key="a"))
    run_sql(
        location,
        f"UPDATE {table(location, 'tasks')} "
        "SET status = 'running', owner = 'old:1:x', attempts = 1",
    )
    assert store.recover() == 1
    assert store.tasks().select("status", "attempts").rows() == [("pending", 0)]


async def test_a_scheduler_whose_lease_was_taken_stops_its_attempts(location: str | Path) -> None:
    stopped = asyncio.Event()

    async def work(ctx: tm.TaskContext) -> None:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            stopped.set()
            raise

    async with tm.Scheduler(
        location, executors={"t": work}, lease_timeout=0.3, close_timeout=0.1
    ) as sched:
        await sched.submit(tm.TaskSubmission("t", dedup_key="k"))
        while not sched.running:
            await asyncio.sleep(0.01)
        owner = sched.worker
        assert owner is not None
        # a worker in another process sees the lease run out: to its clock, 60 s have
        # passed (however often this scheduler renews meanwhile, its lease is over)
        other = run_py(
            f"""
            import time, taskmill as tm
            with tm.TaskStore.open({str(location)!r}) as other:
                print(other.recover(now=time.time() + 60))
            """,
            stdout=subprocess.PIPE,
            text=True,
        )
        out, _ = await asyncio.to_thread(other.communicate, timeout=60)
        assert out.strip() == "1"
        await asyncio.wait_for(stopped.wait(), 5)
        # the task was handed back: this scheduler runs it again, as a new attempt
        while sched.store.counts()["running"] != 1:
            await asyncio.sleep(0.01)
    with tm.TaskStore.open(location) as store:
        assert store.tasks().select("status", "attempts").rows() == [("pending", 0)]


# ---------------------------------------------------------------- 5. the dispatch loop


async def test_the_dispatch_loop_logs_unexpected_errors_and_goes_on(
    location: str | Path, caplog: pytest.LogCaptureFixture
) -> None:
    """0.1: any exception that was not a SchedulerError killed the loop silently."""
    done: list[str] = []

    async def work(ctx: tm.TaskContext) -> None:
        done.append(ctx.dedup_key or "")

    calls = Counter[str]()

    class Broken(FaultyStore):
        def __getattr__(self, name: str) -> Any:
            target = super().__getattr__(name)
            if name != "claim":
                return target

            def claim(*args: Any, **kwargs: Any) -> Any:
                calls["claim"] += 1
                if calls["claim"] <= 3:
                    raise KeyError("a bug, not a store error")
                return target(*args, **kwargs)

            return claim

    with tm.TaskStore.open(location) as inner:
        store = Broken(inner, lambda name: None)
        with caplog.at_level(logging.WARNING, logger="taskmill"):
            async with tm.Scheduler(store, executors={"t": work}, poll_interval=0.01) as sched:
                await sched.submit(tm.TaskSubmission("t", dedup_key="k"))
                await sched.wait_idle(timeout=20)
    assert done == ["k"]
    assert caplog.text.count("unexpected error") == 3
    assert "KeyError: 'a bug, not a store error'" in caplog.text  # with its traceback
    assert "Traceback" in caplog.text


async def test_a_dispatch_loop_that_cannot_go_on_makes_wait_idle_and_close_raise(
    location: str | Path,
) -> None:
    class AlwaysBroken(FaultyStore):
        def __getattr__(self, name: str) -> Any:
            if name == "claim":

                def claim(*args: Any, **kwargs: Any) -> Any:
                    raise ZeroDivisionError("always")

                return claim
            return super().__getattr__(name)

    async def work(ctx: tm.TaskContext) -> None:
        return None

    with tm.TaskStore.open(location) as inner:
        store = AlwaysBroken(inner, lambda name: None)
        sched = tm.Scheduler(store, executors={"t": work}, poll_interval=0.001)
        sched_logger = logging.getLogger("taskmill")
        sched_logger.disabled = True
        try:
            await sched.start()
            await sched.submit(tm.TaskSubmission("t"))
            with pytest.raises(tm.SchedulerError, match="dispatch loop failed") as err:
                await sched.wait_idle(timeout=60)
            assert err.value.kind == "scheduler"
            assert isinstance(err.value.__cause__, ZeroDivisionError)
            with pytest.raises(tm.SchedulerError, match="dispatch loop failed"):
                await sched.close()
        finally:
            sched_logger.disabled = False
        assert inner.counts()["pending"] == 1  # nothing lost


# ---------------------------------------------------------------- 6. no stall during a batch


def test_reads_writes_and_claims_go_on_while_a_batch_is_staged(
    store: tm.TaskStore, location: str | Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0.1: one lock serialised every store call for the whole batch, staging included:
    tasks(), counts(), submit() and completions all waited for DuckDB."""
    store.submit(tm.TaskSubmission("t", dedup_key="before"))
    gate = threading.Event()
    staging = threading.Event()
    # the batch stops inside its staging step (filling the staging file on SQLite, the
    # staging table on PostgreSQL) until the other calls are done
    if is_postgres(location):
        real_pg_fill = PostgresBatch._fill

        def gated_pg_fill(self: PostgresBatch, table: str, frame: pl.DataFrame) -> Any:
            staging.set()
            assert gate.wait(30)
            return real_pg_fill(self, table, frame)

        monkeypatch.setattr(PostgresBatch, "_fill", gated_pg_fill)
    else:
        real_fill = Stager.fill

        def gated_fill(path: Path, frame: pl.DataFrame) -> None:
            staging.set()
            assert gate.wait(30)
            real_fill(path, frame)

        monkeypatch.setattr(Stager, "fill", staticmethod(gated_fill))
    plan = pl.DataFrame({"task_type": ["t"] * 1000, "dedup_key": [f"b{i}" for i in range(1000)]})
    result: list[tm.BatchOutcome] = []
    batch = threading.Thread(target=lambda: result.append(store.submit_batch(plan)))
    batch.start()
    try:
        assert staging.wait(30)
        done = threading.Event()

        def meanwhile() -> None:
            assert store.counts()["pending"] == 1
            assert store.tasks()["dedup_key"].to_list() == ["before"]
            owner = store.new_owner()
            [task] = store.claim(1, task_types=["t"], owner=owner)
            assert store.complete(task.id, owner=owner)
            assert store.submit(tm.TaskSubmission("t", dedup_key="during")).action == "submitted"
            store.release_owner(owner)
            done.set()

        worker = threading.Thread(target=meanwhile)
        worker.start()
        assert done.wait(10), "a store call waited for the batch's staging"
        worker.join()
    finally:
        gate.set()
        batch.join(60)
    assert result[0].counts()["submitted"] == 1000
    active, history = assert_store_consistent(store)
    assert active.height == 1001 and history["dedup_key"].to_list() == ["before"]


# ---------------------------------------------------------------- the protocol, under faults


def test_task_store_implements_the_store_protocol(store: tm.TaskStore) -> None:
    assert isinstance(store, StoreProtocol)


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    rate=st.sampled_from([0.05, 0.1, 0.2]),
    failing=st.sets(st.sampled_from(["t", "u"]), max_size=2),
)
def test_random_store_failures_never_lose_or_double_a_task(
    empty_store: Callable[[str], tm.TaskStore], seed: int, rate: float, failing: set[str]
) -> None:
    """Fail random store calls (before the store saw them, or after, losing the answer):
    every task still ends exactly once in history, and a successful attempt runs once."""
    rng = random.Random(seed)
    guarded = {
        "claim",
        "complete_many",
        "fail",
        "release",
        "renew",
        "recover",
        "lost_tasks",
        "has_work",
        "next_retry_at",
        "owned_tasks",
        "release_owner",
    }

    def plan(name: str) -> str | None:
        if name not in guarded or rng.random() >= rate:
            return None
        return rng.choice(["before", "after"])

    successes: Counter[int] = Counter()
    attempts: Counter[int] = Counter()

    async def run_once(ctx: tm.TaskContext) -> None:
        attempts[ctx.task_id] += 1
        await asyncio.sleep(rng.random() * 0.005)
        if ctx.task_type in failing and ctx.attempt == 1:
            raise RuntimeError("first try fails")
        successes[ctx.task_id] += 1

    inner = empty_store("faults")

    async def main() -> None:
        inner.submit_batch(
            [tm.TaskSubmission(rng.choice("tu"), dedup_key=str(i)) for i in range(30)]
        )
        store = FaultyStore(inner, plan)
        logging.getLogger("taskmill").disabled = True
        try:
            async with tm.Scheduler(
                store,
                executors={"t": run_once, "u": run_once},
                max_concurrency=4,
                poll_interval=0.01,
                retry_delay=0.001,
                lease_timeout=5.0,
            ) as sched:
                await sched.wait_idle(timeout=60)
        finally:
            logging.getLogger("taskmill").disabled = False

    with inner:
        asyncio.run(main())
        active, history = assert_store_consistent(inner)
        assert active.height == 0
        assert sorted(history["id"].to_list()) == list(range(1, 31))  # each exactly once
        assert set(history["status"].to_list()) == {"completed"}
    assert sorted(successes) == list(range(1, 31))
    # a lost answer may cost a retry of the claim, never a second successful run
    assert set(successes.values()) == {1}


async def test_a_claim_under_way_when_close_begins_leaves_nothing_running(
    location: str | Path,
) -> None:
    """A claim whose thread was still running when close() cancelled the loop committed
    after the worker had been released: its tasks stayed running under nobody."""
    gate = threading.Event()
    claiming = threading.Event()
    claimed = threading.Event()

    class SlowClaims(FaultyStore):
        def __getattr__(self, name: str) -> Any:
            target = super().__getattr__(name)
            if name != "claim":
                return target

            def claim(*args: Any, **kwargs: Any) -> Any:
                claiming.set()
                assert gate.wait(30)
                try:
                    return target(*args, **kwargs)
                finally:
                    claimed.set()

            return claim

    async def work(ctx: tm.TaskContext) -> None:
        return None

    with tm.TaskStore.open(location) as inner:
        inner.submit(tm.TaskSubmission("t", dedup_key="k"))
        sched = tm.Scheduler(SlowClaims(inner, lambda name: None), executors={"t": work})
        await sched.start()
        assert await asyncio.to_thread(claiming.wait, 30)
        closing = asyncio.create_task(sched.close())
        await asyncio.sleep(0.3)
        gate.set()  # the claim commits while close() is under way
        await asyncio.wait_for(closing, 30)
        assert await asyncio.to_thread(claimed.wait, 30)
        assert inner.tasks().select("dedup_key", "status", "attempts").rows() == [
            ("k", "pending", 0)
        ]
