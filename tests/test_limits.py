"""Byte budgets and rate limits, on both backends: exact claims against an explicit clock,
then real worker processes sharing one store, with the limits checked from the times the
store recorded (a claim reads its clock holding the claim lock, so a start is never
recorded before an end it counted)."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

import taskmill as tm

from conftest import ENV

pytestmark = pytest.mark.backends("sqlite", "postgres")

T = 2_000_000_000.0


def submit_sizes(store: tm.TaskStore, sizes: list[int], group: str = "g") -> None:
    for i, size in enumerate(sizes):
        store.submit(
            tm.TaskSubmission(
                "t",
                dedup_key=f"{group}{i}",
                group=group,
                expected_read_bytes=size // 2,
                expected_net_tx_bytes=size - size // 2,
            )
        )


def ids(claimed: list[tm.store.ClaimedTask]) -> list[int]:
    return [c.id for c in claimed]


# ---------------------------------------------------------------- byte budgets


def test_a_byte_budget_caps_the_expected_bytes_in_flight(store: tm.TaskStore) -> None:
    submit_sizes(store, [600, 300, 200, 900, 50])
    submit_sizes(store, [10_000], group="other")
    owner = store.new_owner()
    budgets = {"g": 1000}
    first = store.claim(10, task_types=["t"], owner=owner, byte_budgets=budgets, now=T)
    # 600 + 300 in flight; 200 more would be 1,100: g waits, in order (50 does not
    # overtake it), and the unbudgeted group goes on
    assert ids(first) == [1, 2, 6]
    assert first.held == {"g": "byte budget"}  # type: ignore[attr-defined]
    assert store.complete(1, owner=owner)
    assert ids(store.claim(10, task_types=["t"], owner=owner, byte_budgets=budgets)) == [3]
    assert store.complete(2, owner=owner) and store.complete(3, owner=owner)
    # 900 alone, then 50 fits beside it (950)
    assert ids(store.claim(10, task_types=["t"], owner=owner, byte_budgets=budgets)) == [4, 5]


def test_a_task_larger_than_its_budget_runs_alone(store: tm.TaskStore) -> None:
    submit_sizes(store, [10, 5000, 10])
    owner = store.new_owner()
    budgets = {"g": 1000}
    assert ids(store.claim(10, task_types=["t"], owner=owner, byte_budgets=budgets)) == [1]
    assert store.complete(1, owner=owner)
    assert ids(store.claim(10, task_types=["t"], owner=owner, byte_budgets=budgets)) == [2]
    assert store.claim(10, task_types=["t"], owner=owner, byte_budgets=budgets) == []
    assert store.complete(2, owner=owner)
    assert ids(store.claim(10, task_types=["t"], owner=owner, byte_budgets=budgets)) == [3]


# ---------------------------------------------------------------- rate limits


def test_a_rate_limit_is_a_token_bucket_kept_in_the_store(store: tm.TaskStore) -> None:
    for i in range(10):
        store.submit(tm.TaskSubmission("t", dedup_key=f"k{i}", group="g"))
    store.submit(tm.TaskSubmission("t", dedup_key="free", group="h"))
    limits = {"group:g": tm.RateLimit(per_second=2, burst=3)}

    def claim(now: float) -> tm.store.ClaimedTask:
        # a new worker identity each time: the bucket is in the store, not the worker
        owner = store.new_owner()
        return store.claim(10, task_types=["t"], owner=owner, rate_limits=limits, now=now)

    first = claim(T)
    assert ids(first) == [1, 2, 3, 11]  # a full bucket: the burst, and h is not held
    assert (first.wait, first.held) == (0.5, {"g": "rate limit"})  # type: ignore[attr-defined]
    assert ids(claim(T + 0.25)) == []  # half a token
    assert ids(claim(T + 0.5)) == [4]
    assert ids(claim(T + 10)) == [5, 6, 7]  # refilled to the burst, no further
    assert ids(claim(T + 10)) == []
    later = claim(T + 9)  # a worker whose clock is behind adds no tokens
    assert ids(later) == [] and later.wait == 0.5  # type: ignore[attr-defined]


def test_a_task_type_rate_limit_holds_that_type_only(store: tm.TaskStore) -> None:
    for i in range(4):
        store.submit(tm.TaskSubmission("t", dedup_key=f"t{i}", priority=0))
        store.submit(tm.TaskSubmission("u", dedup_key=f"u{i}", priority=1))
    limits = {"type:t": tm.RateLimit(per_second=1)}
    owner = store.new_owner()
    got = store.claim(10, task_types=["t", "u"], owner=owner, rate_limits=limits, now=T)
    assert [(c.task_type, c.dedup_key) for c in got] == [
        ("t", "t0"),
        ("u", "u0"),
        ("u", "u1"),
        ("u", "u2"),
        ("u", "u3"),
    ]
    assert got.held == {"type:t": "rate limit"}  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate_limits": {"s3": tm.RateLimit(1)}}, "use 'group:NAME' or 'type:TASK_TYPE'"),
        ({"rate_limits": {"group:g": 5}}, "must be a taskmill.RateLimit"),
        ({"byte_budgets": {"g": 0}}, "byte budget of group 'g' must be a whole number >= 1"),
        ({"group_concurrency": {"g": -1}}, "group 'g' must be a whole number >= 0"),
    ],
)
def test_limits_are_checked_when_the_scheduler_is_made(
    location: str | Path, kwargs: dict, message: str
) -> None:
    with pytest.raises(tm.SchedulerError, match=message) as err:
        tm.Scheduler(location, **kwargs)
    assert err.value.kind == "invalid_argument"


@pytest.mark.parametrize(("rate", "burst"), [(0, None), (-1, None), (1, 0.5), (True, None)])
def test_a_rate_limit_checks_its_numbers(rate: float, burst: float | None, location: str) -> None:
    with pytest.raises(tm.SchedulerError, match="RateLimit") as err:
        tm.RateLimit(rate, burst=burst)
    assert err.value.kind == "invalid_argument"


async def test_a_scheduler_wakes_when_its_bucket_refills(location: str | Path) -> None:
    async def job(ctx: tm.TaskContext) -> None:
        return None

    with tm.TaskStore.open(location) as store:
        for i in range(3):
            store.submit(tm.TaskSubmission("t", dedup_key=f"k{i}"))
    # the poll interval is far longer than the test: only the refill wakes it
    async with tm.Scheduler(
        location,
        executors={"t": job},
        rate_limits={"type:t": tm.RateLimit(per_second=5, burst=1)},
        poll_interval=60,
    ) as sched:
        await sched.wait_idle(timeout=20)
        started = sorted(sched.store.history()["started_at"].to_list())
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(started)]
    assert len(started) == 3 and all(g >= 0.2 - 1e-6 for g in gaps), gaps


# ---------------------------------------------------------------- across worker processes

#: A worker process: runs "job" tasks (each sleeping its payload's seconds) under the
#: limits given as JSON until the queue is empty.  Arguments: the store location, the
#: rate limit (per second, burst) of group "g", the byte budget of group "g".
WORKER = """
import asyncio, sys
import taskmill as tm

location, rate, burst, budget = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4]

async def job(ctx):
    await asyncio.sleep(float(ctx.payload_json() or 0.02))

async def main():
    async with tm.Scheduler(
        location,
        executors={"job": job},
        max_concurrency=4,
        rate_limits={"group:g": tm.RateLimit(rate, burst=burst)} if rate else None,
        byte_budgets={"g": int(budget)} if budget != "0" else None,
        poll_interval=0.1,
    ) as sched:
        print("ready", flush=True)
        await sched.wait_idle()

asyncio.run(main())
"""


def run_workers(location: str | Path, n: int, *args: object) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(location), *map(str, args)],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(n)
    ]
    for proc in procs:
        _out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err


def test_a_rate_limit_holds_across_worker_processes(location: str | Path) -> None:
    rate, burst, n = 20.0, 2.0, 40
    with tm.TaskStore.open(location) as store:
        for i in range(n):
            store.submit(tm.TaskSubmission("job", dedup_key=f"k{i}", group="g", payload="0"))
    run_workers(location, 3, rate, burst, 0)
    with tm.TaskStore.open(location) as store:
        hist = store.history()
    assert hist["status"].to_list() == ["completed"] * n
    starts = sorted(t.timestamp() for t in hist["started_at"].to_list())
    # a token bucket lets at most burst + rate * (t2 - t1) starts into any [t1, t2]
    for i, t1 in enumerate(starts):
        for j in range(i, len(starts)):
            allowed = burst + rate * (starts[j] - t1)
            assert j - i + 1 <= allowed + 1e-6, (i, j, starts[j] - t1)
    # and the limit was the bottleneck: the 40 starts took about 2 s, not a blink
    assert starts[-1] - starts[0] >= (n - burst) / rate - 1e-6


def test_a_byte_budget_holds_across_worker_processes(location: str | Path) -> None:
    budget = 1000
    sizes = [400, 300, 200, 700, 100, 1500, 250, 250, 250, 600, 90, 900] * 2
    with tm.TaskStore.open(location) as store:
        for i, size in enumerate(sizes):
            store.submit(
                tm.TaskSubmission(
                    "job",
                    dedup_key=f"k{i}",
                    group="g",
                    payload="0.05",
                    expected_write_bytes=size,
                )
            )
    run_workers(location, 3, 0, 0, budget)
    with tm.TaskStore.open(location) as store:
        hist = store.history()
    assert hist["status"].to_list() == ["completed"] * len(sizes)
    events: list[tuple[float, int, int]] = []  # (time, 0 = an end, 1 = a start, bytes)
    for row in hist.iter_rows(named=True):
        size = row["expected_write_bytes"]
        events.append((row["started_at"].timestamp(), 1, size))
        events.append((row["finished_at"].timestamp(), 0, -size))
    in_flight = running = peak = 0
    for _, _, delta in sorted(events):  # at one instant, ends before starts
        in_flight += delta
        running += 1 if delta > 0 else -1
        # within the budget, or a task over the budget running alone
        assert in_flight <= budget or running == 1, (in_flight, running)
        peak = max(peak, in_flight if running > 1 else 0)
    assert 0 < peak <= budget  # tasks did share the budget
