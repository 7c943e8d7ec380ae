"""Workers on many machines sharing one PostgreSQL queue, as real processes: each task runs
once, group limits hold across every worker (peaks computed from recorded start and end
times), a worker killed mid-task has its tasks finished by another after its lease, and a
worker in a network namespace of its own reaches the server only over TCP, as a worker on
another machine does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import psycopg
import pytest

import taskmill as tm
from taskmill.pgserver import ThrowawayPostgres

from conftest import ENV, IN_CI

LIMITS = {"g1": 2, "g2": 3}
LIMITS_JSON = json.dumps(LIMITS)

#: A worker process: runs "job" tasks (each sleeping ``seconds`` from its payload) with
#: the group limits above, writing one JSON line per finished attempt, until the queue is
#: empty.  Argument: the store URL, the record file, the lease timeout.
WORKER = """
import asyncio, json, os, sys, time
import taskmill as tm

url, record, lease = sys.argv[1], sys.argv[2], float(sys.argv[3])
LIMITS = json.loads(sys.argv[4])

async def job(ctx):
    start = time.time()
    with open(record + ".started", "a") as f:
        f.write(json.dumps([ctx.task_id, os.getpid()]) + "\\n")
    await asyncio.sleep(float(ctx.payload or b"0.05"))
    with open(record, "a") as f:
        f.write(json.dumps([ctx.task_id, ctx.group, start, time.time(), os.getpid()]) + "\\n")

async def main():
    async with tm.Scheduler(
        url, executors={"job": job}, max_concurrency=4, group_concurrency=LIMITS,
        lease_timeout=lease, poll_interval=0.2,
    ) as sched:
        print("ready", flush=True)
        await sched.wait_idle()

asyncio.run(main())
"""


def _plan(n: int, seconds: float = 0.05) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "task_type": ["job"] * n,
            "dedup_key": [f"obj-{i}" for i in range(n)],
            "group": ["g1" if i % 2 else "g2" for i in range(n)],
            "payload": [str(seconds)] * n,
        }
    )


def _worker(url: str, record: Path, *, lease: float = 30.0, prefix: list[str] | None = None):
    return subprocess.Popen(
        [*(prefix or []), sys.executable, "-c", WORKER, url, str(record), str(lease), LIMITS_JSON],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _records(folder: Path) -> list[list]:
    rows = []
    for path in folder.glob("worker-*.jsonl"):
        rows += [json.loads(line) for line in path.read_text().splitlines()]
    return rows


def _peak(intervals: list[tuple[float, float]]) -> int:
    """Most intervals open at one moment (an end at the same instant as a start first)."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = peak = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    return peak


def _finish(procs: list[subprocess.Popen], timeout: float = 120) -> None:
    for p in procs:
        _, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, err[-3000:]


def test_three_workers_drain_one_queue_within_group_limits(pg_url: str, tmp_path: Path) -> None:
    with tm.TaskStore.open(pg_url) as store:
        assert store.submit_batch(_plan(120)).counts()["submitted"] == 120
    procs = [_worker(pg_url, tmp_path / f"worker-{i}.jsonl") for i in range(3)]
    _finish(procs)
    done = _records(tmp_path)
    ids = [r[0] for r in done]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 120  # each task exactly once
    assert len({r[4] for r in done}) >= 2  # the queue was shared (a late starter may miss it)
    for group, limit in LIMITS.items():
        spans = [(r[2], r[3]) for r in done if r[1] == group]
        assert 1 < _peak(spans) <= limit, group  # concurrent, never past the limit
    with tm.TaskStore.open(pg_url) as store:
        assert store.counts()["completed"] == 120 and store.counts()["pending"] == 0
        assert store.integrity_check() == "ok"


def test_a_killed_workers_tasks_finish_on_another_after_its_lease(
    pg_url: str, tmp_path: Path
) -> None:
    with tm.TaskStore.open(pg_url) as store:
        store.submit_batch(_plan(4, seconds=60))  # long tasks: the first worker dies in them
    if os.geteuid() != 0:  # another hostname needs a UTS namespace
        if IN_CI:
            pytest.fail("CI must run the killed-worker test (needs root for unshare --uts)")
        pytest.skip("a worker with a hostname of its own needs root (unshare --uts)")
    victim_record = tmp_path / "worker-victim.jsonl"
    # the victim looks like a worker on another machine (its own hostname), so no one can
    # tell it died from its process id: only its lease running out frees its tasks
    elsewhere = ["unshare", "--uts", "sh", "-c", 'hostname tm-elsewhere && exec "$0" "$@"']
    victim = _worker(pg_url, victim_record, lease=2.0, prefix=elsewhere)
    started = Path(f"{victim_record}.started")
    deadline = time.monotonic() + 60
    while not (started.exists() and len(started.read_text().splitlines()) == 4):
        assert time.monotonic() < deadline, victim.stderr.read() if victim.poll() else ""
        time.sleep(0.1)
    os.kill(victim.pid, signal.SIGKILL)  # mid-task, no goodbye
    victim.communicate()  # reaped, its pipes closed
    killed_at = time.time()
    with tm.TaskStore.open(pg_url) as store:
        running = store.tasks(status="running")
        assert running.height == 4  # still the dead worker's until its lease runs out
    # the rescue need not take a minute a task: shorten them (the store's data, by SQL)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE taskmill.tasks SET payload = '0.05'::bytea")
    rescuer = _worker(pg_url, tmp_path / "worker-rescuer.jsonl", lease=2.0)
    _finish([rescuer])
    done = _records(tmp_path)
    assert sorted(r[0] for r in done) == sorted(running["id"].to_list())
    assert {r[4] for r in done} == {rescuer.pid}
    assert min(r[2] for r in done) >= killed_at + 1.0  # not before the 2 s lease ran out
    with tm.TaskStore.open(pg_url) as store:
        history = store.history()
        assert history["status"].to_list() == ["completed"] * 4
        assert history["attempts"].to_list() == [1] * 4  # the lost attempt is not a try
        assert store.integrity_check() == "ok"


# ---------------------------------------------------------------- another "machine"


def _can_make_namespaces() -> bool:
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["ip", "netns", "add", "tm-probe"], capture_output=True)
    if done.returncode != 0:
        return False
    subprocess.run(["ip", "netns", "del", "tm-probe"], capture_output=True)
    return True


@pytest.fixture
def namespace() -> Iterator[tuple[str, str]]:
    """A network namespace joined to this one by a veth pair: (its name, the address of
    this side, which is all a process inside can reach)."""
    if not _can_make_namespaces():
        if IN_CI:
            pytest.fail("CI must run the network-namespace test (needs root and ip netns)")
        pytest.skip("network namespaces need root and iproute2's ip netns")
    name, host, inner = f"tm-w{os.getpid() % 10000}", "tmh0", "tmn0"
    host_ip, inner_ip = "10.231.77.1", "10.231.77.2"
    steps = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", host, "type", "veth", "peer", "name", inner],
        ["ip", "link", "set", inner, "netns", name],
        ["ip", "addr", "add", f"{host_ip}/30", "dev", host],
        ["ip", "link", "set", host, "up"],
        ["ip", "netns", "exec", name, "ip", "addr", "add", f"{inner_ip}/30", "dev", inner],
        ["ip", "netns", "exec", name, "ip", "link", "set", inner, "up"],
        ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
    ]
    try:
        for step in steps:
            subprocess.run(step, check=True, capture_output=True)
        yield name, host_ip
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        subprocess.run(["ip", "link", "del", host], capture_output=True)


def test_a_worker_in_another_network_namespace_shares_the_queue_over_tcp(
    namespace: tuple[str, str], tmp_path: Path
) -> None:
    name, host_ip = namespace
    with ThrowawayPostgres(listen="*") as server:
        local = server.create_database("netns")
        remote = server.url("netns", host=host_ip)  # the only way in from the namespace
        probe = subprocess.run(
            [
                "ip",
                "netns",
                "exec",
                name,
                sys.executable,
                "-c",
                f"import socket; socket.create_connection(('127.0.0.1', {server.port}), 2)",
            ],
            capture_output=True,
            env=ENV,
        )
        assert probe.returncode != 0  # the server's loopback is not reachable from there
        with tm.TaskStore.open(local) as store:
            store.submit_batch(_plan(60))
        inside = _worker(
            remote, tmp_path / "worker-inside.jsonl", prefix=["ip", "netns", "exec", name]
        )
        here = _worker(local, tmp_path / "worker-here.jsonl")
        _finish([inside, here])
        done = _records(tmp_path)
        assert sorted(r[0] for r in done) == sorted(set(r[0] for r in done))
        assert len(done) == 60
        assert {r[4] for r in done} == {inside.pid, here.pid}  # both machines worked
        for group, limit in LIMITS.items():
            assert _peak([(r[2], r[3]) for r in done if r[1] == group]) <= limit
        with tm.TaskStore.open(local) as store:
            assert store.counts()["completed"] == 60
