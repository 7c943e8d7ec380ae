"""A task never runs twice at the same time (issue 21, defects 1-5), with real worker
processes: leases a busy worker keeps (renewed on a thread and a connection of their
own), identities that survive PID namespaces, one clock (the store's) for leases and rate
buckets, and fencing — a worker that cannot renew tells its attempts to stop before
anyone may take them over.

Every worker here records each attempt it runs (task, worker, start and end on the
machine's monotonic clock, which a patched wall clock does not move); two attempts of
one task whose intervals overlap are the defect."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import taskmill as tm
from taskmill.pgserver import ThrowawayPostgres

from conftest import ENV, IN_CI, is_postgres

pytestmark = pytest.mark.backends("sqlite", "postgres")

#: One worker process.  Its only argument is a JSON object: ``url``, ``record`` (the
#: attempts file), ``name``, ``lease``, ``mode`` ("async": an ``asyncio.sleep``;
#: "to_thread": ``await asyncio.to_thread(io)``, the io polling ``ctx.cancelled``;
#: "thread": a plain function polling ``ctx.cancelled``), ``seconds`` (each task's length,
#: ``fast_seconds`` once the file ``fast_after`` exists), ``concurrency``,
#: ``clock_offset`` (seconds added to this process's ``time.time``), ``rate`` (a rate
#: limit on group "g": ``[per_second, burst]``), ``batch_rows`` (a batch submitted once
#: every slot runs), ``run_for`` (close after that many seconds; default: when idle).
WORKER = r"""
import asyncio, json, os, sys, time
cfg = json.loads(sys.argv[1])
offset = float(cfg.get("clock_offset", 0))
if offset:  # this process's wall clock only
    _real_time, _real_ns = time.time, time.time_ns
    time.time = lambda: _real_time() + offset
    time.time_ns = lambda: _real_ns() + int(offset * 1e9)
import polars as pl
import taskmill as tm

record = cfg["record"]

def note(path, row):
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")

def seconds():
    fast = cfg.get("fast_after")
    if fast and os.path.exists(fast):
        return float(cfg.get("fast_seconds", 0.1))
    return float(cfg.get("seconds", 0.1))

def io(ctx, start):
    end_at = time.monotonic() + seconds()
    while time.monotonic() < end_at and not ctx.cancelled:
        time.sleep(0.02)
    note(record, [ctx.task_id, cfg["name"], start, time.monotonic(), ctx.cancelled])

async def job(ctx):
    start = time.monotonic()
    note(record + ".started", [ctx.task_id, cfg["name"], start])
    if cfg["mode"] == "to_thread":
        await asyncio.to_thread(io, ctx, start)
        return
    try:
        await asyncio.sleep(seconds())
    finally:
        note(record, [ctx.task_id, cfg["name"], start, time.monotonic(), ctx.cancelled])

def plain(ctx):
    start = time.monotonic()
    note(record + ".started", [ctx.task_id, cfg["name"], start])
    io(ctx, start)

async def main():
    rates = {}
    if cfg.get("rate"):
        rates = {"group:g": tm.RateLimit(cfg["rate"][0], burst=cfg["rate"][1])}
    executor = plain if cfg["mode"] == "thread" else job
    async with tm.Scheduler(
        cfg["url"], executors={"job": executor}, max_concurrency=cfg.get("concurrency", 4),
        lease_timeout=float(cfg["lease"]), poll_interval=0.1, rate_limits=rates,
        close_timeout=0.5,
    ) as sched:
        print("ready", flush=True)
        if cfg.get("ready_flag"):
            open(cfg["ready_flag"], "w").close()
        if cfg.get("batch_rows"):
            while not os.path.exists(cfg["wait_for"]):  # the other worker watches
                await asyncio.sleep(0.02)
            n = int(cfg["batch_rows"])
            keys = [str(i) for i in range(n)]
            rows = pl.DataFrame({"task_type": ["filler"] * n, "dedup_key": keys})
            batch = tm.BatchSubmission().tasks(rows).transaction_limit(n).chunk_size(n)
            began = time.monotonic()
            await sched.submit_batch(batch)
            merged = max(sched.store.last_batch_merge_seconds or [0.0])
            print("batch", time.monotonic() - began, merged, flush=True)
        if cfg.get("run_for"):
            await asyncio.sleep(float(cfg["run_for"]))
        else:
            await sched.wait_idle()

asyncio.run(main())
"""

#: A hostname of its own and a PID namespace of its own, as a container started with
#: ``hostname:`` set gets (two of them share the host name).
TWIN = ["unshare", "--uts", "--pid", "--fork", "sh", "-c", 'hostname tm-twin && exec "$0" "$@"']


def _need_root() -> None:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI must run the lease tests that need namespaces (root, unshare)")
        pytest.skip("a worker with namespaces of its own needs root (unshare)")


def _worker(cfg: dict[str, Any], *, prefix: list[str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*(prefix or []), sys.executable, "-c", WORKER, json.dumps(cfg)],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


#: Each finished worker's stdout, by pid.
OUTPUT: dict[int, str] = {}


def _rows(path: Path) -> list[list[Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _wait_started(
    record: Path, count: int, procs: list[subprocess.Popen[str]], timeout: float = 60
) -> None:
    started = Path(f"{record}.started")
    deadline = time.monotonic() + timeout
    while len(_rows(started)) < count:
        for proc in procs:
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"a worker ended early ({proc.returncode}): {err[-3000:]}")
        assert time.monotonic() < deadline, "the workers did not start their tasks"
        time.sleep(0.05)


def _wait_workers(
    url: str, count: int, procs: list[subprocess.Popen[str]], timeout: float = 60
) -> None:
    """Wait until ``count`` workers are registered in the PostgreSQL store at ``url``."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT count(*) FROM taskmill.workers").fetchone()
        if row is not None and row[0] >= count:
            return
        for proc in procs:
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"a worker ended early ({proc.returncode}): {err[-3000:]}")
        assert time.monotonic() < deadline, f"fewer than {count} workers registered"
        time.sleep(0.05)


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 90) -> list[str]:
    """Wait for every worker; returns their stderr (their stdout in :data:`OUTPUT`)."""
    errs = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"a worker did not end: {err[-3000:]}")
        assert proc.returncode == 0, err[-3000:]
        OUTPUT[proc.pid] = out
        errs.append(err)
    return errs


def _overlaps(record: Path) -> list[tuple[int, list[Any], list[Any]]]:
    """Pairs of attempts of one task that ran at the same time."""
    by_task: dict[int, list[list[Any]]] = {}
    for row in _rows(record):
        by_task.setdefault(row[0], []).append(row)
    found = []
    for tid, attempts in by_task.items():
        attempts.sort(key=lambda r: r[2])
        for a, b in itertools.pairwise(attempts):
            if b[2] < a[3]:
                found.append((tid, a, b))
    return found


def _jobs(location: str | Path, n: int, *, group: str | None = None) -> None:
    with tm.TaskStore.open(location) as store:
        store.submit_batch(
            [tm.TaskSubmission("job", dedup_key=f"k{i}", group=group) for i in range(n)]
        )


def _completed_once(location: str | Path, n: int) -> None:
    with tm.TaskStore.open(location) as store:
        history = store.history().filter(pl.col("task_type") == "job")
        assert history.height == n
        assert set(history["status"].to_list()) == {"completed"}


# ---------------------------------------------------------------- 1. a busy worker


def test_executors_filling_the_default_pool_do_not_starve_the_lease(
    location: str | Path, tmp_path: Path
) -> None:
    """Async executors doing ``await asyncio.to_thread(io)`` fill the loop's default pool
    (6 threads on 2 cores): a renewal queued behind them let the lease run out, and a
    second worker started the tasks again while the first still ran them."""
    _jobs(location, 8)
    record = tmp_path / "attempts.jsonl"
    common = {"url": str(location), "record": str(record), "lease": 2.0}
    busy = _worker({**common, "name": "busy", "mode": "to_thread", "seconds": 6, "concurrency": 8})
    _wait_started(record, 8, [busy])
    other = _worker({**common, "name": "other", "mode": "async", "seconds": 0.1})
    _finish([busy, other])
    assert _overlaps(record) == []
    assert {r[1] for r in _rows(record)} == {"busy"}
    _completed_once(location, 8)


@pytest.mark.backends("postgres")
def test_a_long_batch_on_the_write_connection_does_not_starve_the_lease(
    location: str | Path, tmp_path: Path
) -> None:
    """A big ``sched.submit_batch`` held the store's one write connection for longer
    than the lease: the renewal waited behind it and another worker took the tasks."""
    if not is_postgres(location):
        pytest.skip("the PostgreSQL store's write connection")
    _jobs(location, 4)
    record = tmp_path / "attempts.jsonl"
    common = {"url": str(location), "record": str(record), "lease": 2.0}
    flag = tmp_path / "other-ready"
    busy = _worker(
        {
            **common,
            "name": "busy",
            "mode": "async",
            "seconds": 5,
            "batch_rows": 450_000,  # a merge of about 3 s here: well past the 2 s lease
            "wait_for": str(flag),
        }
    )
    _wait_started(record, 4, [busy])
    other = _worker(
        {**common, "name": "other", "mode": "async", "seconds": 0.1, "ready_flag": str(flag)}
    )
    _finish([busy, other])
    held = float(OUTPUT[busy.pid].split("batch", 1)[1].split()[1])
    assert held > 2.0  # the merge held the write connection for longer than the lease
    assert _overlaps(record) == []
    assert {r[1] for r in _rows(record)} == {"busy"}
    _completed_once(location, 4)


# ---------------------------------------------------------------- 2. PID namespaces


def test_workers_in_pid_namespaces_of_one_host_name_keep_their_tasks(
    location: str | Path, tmp_path: Path
) -> None:
    """Two containers with the same host name, each its own PID namespace (both are
    pid 1): each judged the other a dead process of its host and released its tasks."""
    _need_root()
    _jobs(location, 4)
    record = tmp_path / "attempts.jsonl"
    common = {"url": str(location), "record": str(record), "lease": 30.0}
    first = _worker({**common, "name": "first", "mode": "async", "seconds": 4}, prefix=TWIN)
    _wait_started(record, 4, [first])
    second = _worker({**common, "name": "second", "mode": "async", "seconds": 0.1}, prefix=TWIN)
    _finish([first, second])
    assert _overlaps(record) == []
    assert {r[1] for r in _rows(record)} == {"first"}
    _completed_once(location, 4)


# ---------------------------------------------------------------- 3. a server outage


@pytest.mark.backends("postgres")
def test_an_outage_longer_than_the_lease_fences_the_attempts_first(
    location: str | Path, tmp_path: Path
) -> None:
    """The server was away longer than the lease: on its return another worker took the
    tasks while the first still ran them.  Now the first, unable to renew for half its
    lease, tells its attempts to stop (``ctx.cancelled``; async ones are cancelled) before
    anyone may take them over."""
    if not is_postgres(location):
        pytest.skip("a PostgreSQL server outage")
    server = ThrowawayPostgres().start()
    try:
        url = server.url()
        _jobs(url, 4)
        record = tmp_path / "attempts.jsonl"
        fast = tmp_path / "after-outage"
        common = {
            "url": url,
            "record": str(record),
            "lease": 3.0,
            "fast_after": str(fast),
            "seconds": 30,
        }
        first = _worker({**common, "name": "first", "mode": "async", "concurrency": 2})
        thread = _worker({**common, "name": "thread", "mode": "thread", "concurrency": 2})
        _wait_started(record, 4, [first, thread])
        # another worker, already waiting (a short lease: it looks for stopped workers'
        # tasks often, so it is first to act when the server returns)
        rescuer = _worker({**common, "name": "rescuer", "mode": "async", "lease": 0.3})
        # the outage begins once the rescuer is in (its worker row written): a rescuer
        # still starting up (a loaded machine) would find the server gone and fail
        _wait_workers(url, 3, [first, thread, rescuer])
        time.sleep(1.0)
        server.halt()
        outage = time.monotonic()
        time.sleep(6.0)  # twice the lease
        fast.touch()
        server.resume()
        _finish([first, thread, rescuer])
        rows = _rows(record)
        assert _overlaps(record) == []
        told = [r for r in rows if r[2] < outage]
        assert len(told) == 4 and all(r[4] for r in told)  # told to stop...
        assert all(r[3] < outage + 3.0 for r in told)  # ...and stopped within the lease
        _completed_once(url, 4)
    finally:
        server.stop()


# ---------------------------------------------------------------- 4. and 5. one clock


def test_a_worker_whose_clock_is_behind_keeps_its_lease(
    location: str | Path, tmp_path: Path
) -> None:
    """A worker 20 s behind wrote heartbeats 20 s old: another judged its 4 s lease out at
    once and started its tasks again.  Leases are judged by the store's clock."""
    _jobs(location, 4)
    record = tmp_path / "attempts.jsonl"
    common = {"url": str(location), "record": str(record), "lease": 4.0}
    behind = _worker(
        {**common, "name": "behind", "mode": "async", "seconds": 5, "clock_offset": -20}
    )
    _wait_started(record, 4, [behind])
    other = _worker({**common, "name": "other", "mode": "async", "seconds": 0.1})
    errs = _finish([behind, other])
    assert _overlaps(record) == []
    assert {r[1] for r in _rows(record)} == {"behind"}
    assert "clock" in errs[0] and "differs from the store's" in errs[0]  # said loudly
    _completed_once(location, 4)


def test_a_worker_whose_clock_is_ahead_does_not_freeze_a_rate_limit(
    location: str | Path, tmp_path: Path
) -> None:
    """A worker an hour ahead wrote the rate bucket's time an hour ahead: a correct
    worker then started nothing of the group."""
    _jobs(location, 300, group="g")
    record = tmp_path / "attempts.jsonl"
    common = {
        "url": str(location),
        "record": str(record),
        "lease": 5.0,
        "mode": "async",
        "seconds": 0,
        "rate": [10, 2],
    }
    ahead = _worker({**common, "name": "ahead", "clock_offset": 3600, "run_for": 1.0})
    _finish([ahead])
    assert len(_rows(record)) >= 2  # it took tokens (and wrote the bucket)
    right = _worker({**common, "name": "right", "run_for": 3.0})
    _finish([right])
    started = [r for r in _rows(record) if r[1] == "right"]
    assert 15 <= len(started) <= 40  # about 10 a second (plus the burst), not 0


# ---------------------------------------------------------------- fencing on SQLite


@pytest.fixture
def sqlite_lock_holder(tmp_path: Path) -> Iterator[Any]:
    """Start a process holding the SQLite store's write lock for ``seconds``."""
    procs: list[subprocess.Popen[str]] = []

    def hold(path: Path, seconds: float) -> subprocess.Popen[str]:
        code = (
            "import sqlite3, sys, time\n"
            f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
            "c.execute('BEGIN IMMEDIATE')\n"
            "print('held', flush=True)\n"
            f"time.sleep({seconds})\n"
            "c.execute('COMMIT')\n"
        )
        proc = subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        procs.append(proc)
        return proc

    yield hold
    for proc in procs:
        proc.communicate(timeout=30)  # its pipe closed


@pytest.mark.sqlite_only(reason="SQLite's file lock, held by another process")
def test_a_worker_that_cannot_renew_on_a_locked_file_stops_before_takeover(
    location: str | Path, tmp_path: Path, sqlite_lock_holder: Any
) -> None:
    """Another process holds the file's write lock for longer than the lease: the worker
    cannot renew, tells its attempts to stop at half its lease, and another worker only
    takes the tasks once they stopped."""
    _jobs(location, 2)
    record = tmp_path / "attempts.jsonl"
    fast = tmp_path / "after-lock"
    common = {
        "url": str(location),
        "record": str(record),
        "lease": 2.0,
        "fast_after": str(fast),
        "seconds": 30,
    }
    first = _worker({**common, "name": "first", "mode": "thread", "concurrency": 2})
    _wait_started(record, 2, [first])
    other = _worker({**common, "name": "other", "mode": "async", "seconds": 0.1})
    time.sleep(0.5)
    fast.touch()
    locked = time.monotonic()
    sqlite_lock_holder(Path(location), 3.0)
    _finish([first, other])
    told = [r for r in _rows(record) if r[2] < locked]
    assert len(told) == 2 and all(r[4] for r in told)
    assert _overlaps(record) == []
    _completed_once(location, 2)


def test_a_plan_reads_the_store_clock_when_its_reading_is_stale(location: str | Path) -> None:
    """``plan_batch`` (on PostgreSQL) reads the server's clock for a stale reading before
    its read transaction (reading it inside that transaction took the store's
    non-reentrant read lock twice: the call hung)."""
    from taskmill.store.workers import StoreClock

    with tm.TaskStore.open(location) as store:
        store.submit(tm.TaskSubmission("t", dedup_key="a"))
        if is_postgres(location):
            store.driver.clock = StoreClock()  # type: ignore[attr-defined]  # no reading yet
        done: list[object] = []
        worker = threading.Thread(
            target=lambda: done.append(
                store.plan_batch([tm.TaskSubmission("t", dedup_key=k) for k in ("a", "b")])
            ),
            daemon=True,
        )
        worker.start()
        worker.join(timeout=30)
        assert done, "plan_batch hung"
        plan = done[0]
        assert isinstance(plan, tm.BatchOutcome)
        assert plan.to_polars()["action"].to_list() == ["deduplicated", "submitted"]
