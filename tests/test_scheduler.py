"""The async scheduler against real stores, a SQLite file and a PostgreSQL database: order,
limits, retries, supersede, events."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import os
import signal
import subprocess
import textwrap
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import taskmill as tm

from conftest import PYTHON, ROOT

pytestmark = pytest.mark.backends("sqlite", "postgres")


def names(events: list[tm.Event]) -> list[str]:
    return [type(e).__name__ for e in events]


async def test_dispatch_order_priority_then_fifo(location: str | Path) -> None:
    ran: list[str] = []

    async def record(ctx: tm.TaskContext) -> None:
        ran.append(ctx.dedup_key or "")

    # submit everything before the scheduler starts, across several stores' submits
    with tm.TaskStore.open(location) as store:
        store.submit(tm.TaskSubmission("t", dedup_key="n1", priority=tm.Priority.NORMAL))
        store.submit(tm.TaskSubmission("t", dedup_key="i1", priority=tm.Priority.IDLE))
        store.submit(tm.TaskSubmission("t", dedup_key="h1", priority=tm.Priority.HIGH))
        store.submit(tm.TaskSubmission("t", dedup_key="n2", priority=128))
    with tm.TaskStore.open(location) as store:
        store.submit(tm.TaskSubmission("t", dedup_key="h2", priority=64))
        store.submit(tm.TaskSubmission("t", dedup_key="r1", priority=0))
        store.submit(tm.TaskSubmission("t", dedup_key="n3"))
    async with tm.Scheduler(location, executors={"t": record}, max_concurrency=1) as sched:
        await sched.wait_idle(timeout=10)
    assert ran == ["r1", "h1", "h2", "n1", "n2", "n3", "i1"]


async def test_group_limits_cap_concurrency_per_group(location: str | Path) -> None:
    active: Counter[str] = Counter()
    peak: dict[str, int] = defaultdict(int)
    total_peak = 0

    async def work(ctx: tm.TaskContext) -> None:
        nonlocal total_peak
        assert ctx.group is not None
        active[ctx.group] += 1
        peak[ctx.group] = max(peak[ctx.group], active[ctx.group])
        total_peak = max(total_peak, sum(active.values()))
        await asyncio.sleep(0.02)
        active[ctx.group] -= 1

    async with tm.Scheduler(
        location,
        executors={"t": work},
        max_concurrency=6,
        group_concurrency={"slow": 1, "wide": 4},
        default_group_concurrency=2,
        poll_interval=0.05,
    ) as sched:
        # 'slow' first and most urgent: it must not hold back the others
        for i in range(8):
            await sched.submit(tm.TaskSubmission("t", group="slow", priority=0, dedup_key=f"s{i}"))
        for group in ("wide", "other"):
            for i in range(8):
                await sched.submit(tm.TaskSubmission("t", group=group, dedup_key=f"{group}{i}"))
        await sched.wait_idle(timeout=20)
        assert sched.store.counts()["completed"] == 24
    assert dict(peak) == {"slow": 1, "wide": 4, "other": 2}
    assert total_peak <= 6


async def test_a_group_limit_of_zero_holds_the_group(location: str | Path) -> None:
    ran: list[str] = []

    async def record(ctx: tm.TaskContext) -> None:
        ran.append(ctx.dedup_key or "")

    with tm.TaskStore.open(location) as store:
        # the held group first and most urgent: it must not hold back the others
        store.submit(tm.TaskSubmission("t", group="held", dedup_key="h", priority=0))
        store.submit(tm.TaskSubmission("t", group="open", dedup_key="o"))
        store.submit(tm.TaskSubmission("t", dedup_key="none"))
    async with tm.Scheduler(
        location, executors={"t": record}, group_concurrency={"held": 0}, poll_interval=0.05
    ) as sched:
        for _ in range(200):
            if len(ran) == 2:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)  # a few more polls: the held task stays pending
        assert sorted(ran) == ["none", "o"]
        assert sched.store.tasks(status="pending")["dedup_key"].to_list() == ["h"]


@pytest.mark.parametrize(
    ("limits", "default", "message"),
    [
        ({"g": -1}, None, "group 'g' must be a whole number >= 0 (0 holds the group), not -1"),
        ({"g": 1.5}, None, "group 'g' must be a whole number >= 0 (0 holds the group), not 1.5"),
        ({}, -2, "default_group_concurrency must be a whole number >= 0"),
    ],
)
def test_group_limits_are_checked(
    location: str | Path, limits: dict, default: int | None, message: str
) -> None:
    with pytest.raises(
        tm.SchedulerError, match=message.replace("(", r"\(").replace(")", r"\)")
    ) as err:
        tm.Scheduler(location, group_concurrency=limits, default_group_concurrency=default)
    assert err.value.kind == "invalid_argument"


async def test_retries_with_backoff_then_final_failure(location: str | Path) -> None:
    attempts: list[tuple[int, float]] = []

    def flaky(ctx: tm.TaskContext) -> None:
        if ctx.dedup_key == "x":
            attempts.append((ctx.attempt, time.monotonic()))
        raise ValueError(f"attempt {ctx.attempt} broke")

    async with tm.Scheduler(
        location, executors={"t": flaky}, max_retries=2, retry_delay=0.05, poll_interval=1.0
    ) as sched:
        events = sched.subscribe()
        await sched.submit(tm.TaskSubmission("t", dedup_key="x"))
        await sched.submit(tm.TaskSubmission("t", dedup_key="once", max_retries=0))
        await sched.wait_idle(timeout=10)
        hist = sched.store.history().sort("id")
    assert hist.select("dedup_key", "status", "attempts", "last_error").rows() == [
        ("x", "failed", 3, "ValueError: attempt 3 broke"),
        ("once", "failed", 1, "ValueError: attempt 1 broke"),
    ]
    failed = [e for e in events.drain() if isinstance(e, tm.TaskFailed)]
    assert [(e.task_id, e.attempt, e.will_retry) for e in failed if e.task_id == 1] == [
        (1, 1, True),
        (1, 2, True),
        (1, 3, False),
    ]
    assert [(e.attempt, e.will_retry) for e in failed if e.task_id == 2] == [(1, False)]
    assert [a for a, _ in attempts] == [1, 2, 3]
    gaps = [b[1] - a[1] for a, b in itertools.pairwise(attempts)]
    assert gaps[0] >= 0.045 and gaps[1] >= 0.095  # exponential backoff: 0.05 s, then 0.1 s


async def test_retry_then_success(location: str | Path) -> None:
    async def once_broken(ctx: tm.TaskContext) -> None:
        if ctx.attempt == 1:
            raise ConnectionError("flaky")

    async with tm.Scheduler(location, executors={"t": once_broken}, retry_delay=0.01) as sched:
        await sched.submit(tm.TaskSubmission("t"))
        await sched.wait_idle(timeout=10)
        assert sched.store.history().select("status", "attempts", "last_error").rows() == [
            ("completed", 2, "ConnectionError: flaky")
        ]


async def test_events_of_one_task_in_order(location: str | Path) -> None:
    async def ok(ctx: tm.TaskContext) -> None:
        ctx.progress(0.5, "half")

    async with tm.Scheduler(location, executors={"t": ok}) as sched:
        events = sched.subscribe()
        res = await sched.submit(tm.TaskSubmission("t", dedup_key="k", group="g", priority=3))
        await sched.wait_idle(timeout=10)
        got = events.drain()
    assert names(got) == ["TaskSubmitted", "TaskDispatched", "TaskProgress", "TaskCompleted"]
    sub, disp, prog, done = got
    assert (sub.task_id, sub.task_type, sub.dedup_key, sub.group, sub.priority) == (
        res.task_id,
        "t",
        "k",
        "g",
        3,
    )
    assert (disp.task_id, disp.attempt) == (res.task_id, 1)
    assert (prog.fraction, prog.message) == (0.5, "half")
    assert done.task_id == res.task_id and done.duration >= 0


async def test_one_task_submitted_event_per_submit_and_none_for_skips(location: str | Path) -> None:
    async with tm.Scheduler(location, executors={}) as sched:
        events = sched.subscribe()
        await sched.submit(tm.TaskSubmission("t", dedup_key="k", priority=200))
        await sched.submit(tm.TaskSubmission("t", dedup_key="k", priority=200))
        await sched.submit(tm.TaskSubmission("t", dedup_key="k", priority=10))
        got = events.drain()
    assert names(got) == ["TaskSubmitted", "TaskUpgraded"]
    assert got[1].priority == 10


async def test_supersede_pending_emits_event_and_runs_replacement(location: str | Path) -> None:
    seen: list[bytes | None] = []

    async def work(ctx: tm.TaskContext) -> None:
        seen.append(ctx.payload)

    async with tm.Scheduler(location, executors={"t": work}) as sched:
        assert await sched.pause(0) is False  # no such task: nothing paused
        assert await sched.resume(0) is False
        events = sched.subscribe()
        # the old task waits an hour to start: it stays pending, whatever a claim in
        # flight does (emptying the executors did not stop a claim already under way)
        later = dt.timedelta(hours=1)
        a = await sched.submit(
            tm.TaskSubmission("t", dedup_key="k", payload="old", run_after=later)
        )
        b = await sched.submit(
            tm.TaskSubmission("t", dedup_key="k", payload="new", on_duplicate="supersede")
        )
        await sched.wait_idle(timeout=10)
        got = events.drain()
        hist = sched.store.history().sort("id")
    assert (b.action, b.replaced_task_id) == ("superseded", a.task_id)
    assert seen == [b'"new"']
    sup = [e for e in got if isinstance(e, tm.TaskSuperseded)]
    assert [(e.task_id, e.replaced_by, e.was_running) for e in sup] == [
        (a.task_id, b.task_id, False)
    ]
    assert hist.select("id", "status", "replaced_by").rows() == [
        (a.task_id, "superseded", b.task_id),
        (b.task_id, "completed", None),
    ]


async def test_supersede_running_cancels_the_attempt(location: str | Path) -> None:
    started = asyncio.Event()
    flags: list[bool] = []
    payloads: list[bytes | None] = []

    async def slow(ctx: tm.TaskContext) -> None:
        payloads.append(ctx.payload)
        if ctx.payload == b'"v1"':
            started.set()
            try:
                await asyncio.sleep(30)
            finally:
                flags.append(ctx.cancelled)

    async with tm.Scheduler(location, executors={"t": slow}) as sched:
        events = sched.subscribe()
        first = await sched.submit(tm.TaskSubmission("t", dedup_key="k", payload="v1"))
        await asyncio.wait_for(started.wait(), 10)
        second = await sched.submit(
            tm.TaskSubmission("t", dedup_key="k", payload="v2", on_duplicate="supersede")
        )
        await sched.wait_idle(timeout=10)
        got = events.drain()
        hist = sched.store.history().sort("id")
    assert flags == [True]
    assert payloads == [b'"v1"', b'"v2"']
    assert hist.select("id", "status", "replaced_by").rows() == [
        (first.task_id, "superseded", second.task_id),
        (second.task_id, "completed", None),
    ]
    sup = [e for e in got if isinstance(e, tm.TaskSuperseded)]
    assert [(e.task_id, e.replaced_by, e.was_running) for e in sup] == [
        (first.task_id, second.task_id, True)
    ]
    assert not [e for e in got if isinstance(e, tm.TaskCompleted) and e.task_id == first.task_id]


async def test_cancel_running_sync_executor_sees_flag(location: str | Path) -> None:
    started = threading.Event()
    saw_cancel = threading.Event()

    def cooperative(ctx: tm.TaskContext) -> None:
        started.set()
        deadline = time.monotonic() + 10
        while not ctx.cancelled and time.monotonic() < deadline:
            time.sleep(0.005)
        if ctx.cancelled:
            saw_cancel.set()

    async with tm.Scheduler(location, executors={"t": cooperative}) as sched:
        events = sched.subscribe()
        res = await sched.submit(tm.TaskSubmission("t"))
        await asyncio.to_thread(started.wait, 10)
        assert await sched.cancel(res.task_id) is True
        assert await sched.cancel(res.task_id) is False
        await sched.wait_idle(timeout=10)
        got = events.drain()
        assert sched.store.history().select("status").rows() == [("cancelled",)]
    assert saw_cancel.is_set()
    cancelled = [e for e in got if isinstance(e, tm.TaskCancelled)]
    assert [(e.task_id, e.was_running) for e in cancelled] == [(res.task_id, True)]
    assert not [e for e in got if isinstance(e, tm.TaskCompleted)]


async def test_cancel_pending(location: str | Path) -> None:
    async with tm.Scheduler(location, executors={}) as sched:
        events = sched.subscribe()
        res = await sched.submit(tm.TaskSubmission("t"))
        assert await sched.cancel(res.task_id)
        got = events.drain()
    assert [(type(e).__name__, getattr(e, "was_running", None)) for e in got] == [
        ("TaskSubmitted", None),
        ("TaskCancelled", False),
    ]


def start_ticker() -> tuple[asyncio.Task[None], list[int]]:
    """A task counting 10 ms ticks of the event loop: it only ticks if nothing blocks it."""
    ticks = [0]

    async def tick() -> None:
        while True:
            await asyncio.sleep(0.01)
            ticks[0] += 1

    return asyncio.create_task(tick()), ticks


async def test_sync_executors_run_off_the_event_loop(location: str | Path) -> None:
    threads: list[str] = []

    def blocking(ctx: tm.TaskContext) -> None:
        threads.append(threading.current_thread().name)
        time.sleep(0.3)

    async with tm.Scheduler(location, executors={"t": blocking}, max_concurrency=2) as sched:
        t, ticks = start_ticker()
        await sched.submit(tm.TaskSubmission("t"))
        await sched.submit(tm.TaskSubmission("t"))
        await sched.wait_idle(timeout=10)
        t.cancel()
    assert all(name.startswith("taskmill-exec") for name in threads) and len(threads) == 2
    assert ticks[0] >= 10  # the loop kept running while both executors slept


async def test_store_work_does_not_block_the_loop(location: str | Path) -> None:
    """A store call that has to wait (here: its lock held by another thread) runs off-loop."""
    async with tm.Scheduler(location, executors={}) as sched:
        t, ticks = start_ticker()
        release = threading.Event()

        def hold() -> None:
            with sched.store.driver._lock:
                release.wait(10)

        holder = threading.Thread(target=hold)
        holder.start()
        sub = asyncio.create_task(sched.submit(tm.TaskSubmission("t")))
        await asyncio.sleep(0.3)
        assert not sub.done()
        release.set()
        await sub
        holder.join()
        t.cancel()
    assert ticks[0] >= 15


async def test_type_without_executor_stays_pending(location: str | Path) -> None:
    async def ok(ctx: tm.TaskContext) -> None:
        return None

    async with tm.Scheduler(location, executors={"t": ok}) as sched:
        await sched.submit(tm.TaskSubmission("unknown"))
        await sched.submit(tm.TaskSubmission("t"))
        await sched.wait_idle(timeout=10)
        assert sched.store.tasks().select("task_type", "status").rows() == [("unknown", "pending")]


async def test_slow_subscriber_sees_that_it_lost_events(location: str | Path) -> None:
    async with tm.Scheduler(location, executors={}) as sched:
        small = sched.subscribe(maxsize=3)
        for _ in range(10):
            await sched.submit(tm.TaskSubmission("t"))
        got = small.drain()
    assert small.dropped == 7
    assert [e.task_id for e in got] == [8, 9, 10]  # type: ignore[attr-defined]


async def test_subscription_ends_when_scheduler_closes(location: str | Path) -> None:
    sched = tm.Scheduler(location, executors={})
    await sched.start()
    sub = sched.subscribe()
    await sched.submit(tm.TaskSubmission("t"))
    await sched.close()
    got = [e async for e in sub]
    assert names(got) == ["TaskSubmitted"]


async def test_graceful_close_returns_unfinished_attempts_to_pending(location: str | Path) -> None:
    started = asyncio.Event()

    async def forever(ctx: tm.TaskContext) -> None:
        started.set()
        await asyncio.sleep(60)

    async def quick(ctx: tm.TaskContext) -> None:
        await asyncio.sleep(0.05)

    sched = tm.Scheduler(location, executors={"slow": forever, "quick": quick}, close_timeout=0.3)
    await sched.start()
    await sched.submit(tm.TaskSubmission("slow"))
    await sched.submit(tm.TaskSubmission("quick"))
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.01)
    t0 = time.monotonic()
    await sched.close()
    assert time.monotonic() - t0 < 5
    with tm.TaskStore.open(location) as store:
        assert store.tasks().select("task_type", "status", "attempts").rows() == [
            ("slow", "pending", 0)
        ]
        assert store.history().select("task_type", "status").rows() == [("quick", "completed")]


def _run_py(code: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([PYTHON, "-c", textwrap.dedent(code)], env=env, **kw)


async def test_second_process_submits_while_scheduler_runs(location: str | Path) -> None:
    done: list[str] = []

    async def work(ctx: tm.TaskContext) -> None:
        done.append(ctx.dedup_key or "")

    async with tm.Scheduler(location, executors={"t": work}, poll_interval=0.1) as sched:
        proc = _run_py(f"""
            import taskmill as tm
            with tm.TaskStore.open({str(location)!r}) as store:
                for i in range(20):
                    store.submit(tm.TaskSubmission("t", dedup_key=f"other-{{i}}"))
        """)
        assert await asyncio.to_thread(proc.wait, 30) == 0
        t0 = time.monotonic()
        while len(done) < 20 and time.monotonic() - t0 < 10:
            await asyncio.sleep(0.02)
        await sched.wait_idle(timeout=10)
    assert sorted(done) == sorted(f"other-{i}" for i in range(20))


async def test_tasks_of_a_killed_worker_are_pending_again(
    location: str | Path, tmp_path: Path
) -> None:
    marker = tmp_path / "running"
    proc = _run_py(f"""
        import asyncio, pathlib, taskmill as tm
        async def hang(ctx):
            pathlib.Path({str(marker)!r}).write_text(str(ctx.task_id))
            await asyncio.sleep(600)
        async def main():
            async with tm.Scheduler({str(location)!r}, executors={{"t": hang}}) as s:
                await s.submit(tm.TaskSubmission("t", dedup_key="k", payload={{"n": 1}}))
                await asyncio.sleep(600)
        asyncio.run(main())
    """)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert marker.exists()
        with tm.TaskStore.open(location) as store:  # the worker is alive: not touched
            assert store.tasks()["status"].to_list() == ["running"]
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 30)
    finally:
        if proc.poll() is None:
            proc.kill()
    with tm.TaskStore.open(location) as store:
        assert store.tasks().select("dedup_key", "status", "attempts").rows() == [
            ("k", "pending", 0)
        ]
    ran: list[int] = []

    async def finish(ctx: tm.TaskContext) -> None:
        ran.append(ctx.attempt)

    async with tm.Scheduler(location, executors={"t": finish}) as sched:
        await sched.wait_idle(timeout=10)
        assert sched.store.history().select("status", "attempts").rows() == [("completed", 1)]
    assert ran == [1]


@pytest.mark.parametrize("n", [50])
async def test_many_tasks_all_complete_once(location: str | Path, n: int) -> None:
    counts: Counter[int] = Counter()

    async def work(ctx: tm.TaskContext) -> None:
        counts[ctx.task_id] += 1

    async with tm.Scheduler(location, executors={"t": work}, max_concurrency=8) as sched:
        for i in range(n):
            await sched.submit(tm.TaskSubmission("t", dedup_key=str(i), group=f"g{i % 3}"))
        await sched.wait_idle(timeout=20)
        assert sched.store.counts()["completed"] == n
    assert set(counts.values()) == {1} and len(counts) == n
