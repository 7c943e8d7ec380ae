"""On PostgreSQL, work committed by another connection, process or machine wakes every
worker at once (``LISTEN/NOTIFY``); polling stays as the fallback.  Each scheduler here
polls only every 60 s, so a task done within 15 s was dispatched because of a
notification."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import psycopg

import taskmill as tm

from conftest import ENV

POLL = 60.0
WITHIN = 15.0


async def _scheduler_waiting(url: str, done: asyncio.Queue[str]) -> tm.Scheduler:
    async def noop(ctx: tm.TaskContext) -> None:
        await done.put(ctx.dedup_key or "")

    sched = tm.Scheduler(url, executors={"noop": noop}, poll_interval=POLL)
    await sched.__aenter__()
    await asyncio.sleep(0.5)  # past its first look at the queue: now it waits
    return sched


async def test_a_submit_from_another_connection_wakes_the_scheduler(pg_url: str) -> None:
    done: asyncio.Queue[str] = asyncio.Queue()
    sched = await _scheduler_waiting(pg_url, done)
    try:
        with tm.TaskStore.open(pg_url) as other:  # its own connections
            other.submit(tm.TaskSubmission("noop", dedup_key="single"))
        assert await asyncio.wait_for(done.get(), WITHIN) == "single"
    finally:
        await sched.close()


async def test_a_batch_from_another_process_wakes_the_scheduler(pg_url: str) -> None:
    done: asyncio.Queue[str] = asyncio.Queue()
    sched = await _scheduler_waiting(pg_url, done)
    code = (
        "import sys, polars as pl, taskmill as tm\n"
        "with tm.TaskStore.open(sys.argv[1]) as s:\n"
        "    s.submit_batch(pl.DataFrame({'task_type': ['noop'] * 3, "
        "'dedup_key': ['b0', 'b1', 'b2']}))\n"
    )
    try:
        proc = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", code, pg_url], env=ENV, timeout=120
        )
        assert proc.returncode == 0
        got = {await asyncio.wait_for(done.get(), WITHIN) for _ in range(3)}
        assert got == {"b0", "b1", "b2"}
    finally:
        await sched.close()


async def test_the_watch_survives_a_lost_connection(pg_url: str) -> None:
    done: asyncio.Queue[str] = asyncio.Queue()
    sched = await _scheduler_waiting(pg_url, done)
    try:
        with psycopg.connect(pg_url, autocommit=True) as admin:
            cut = admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            ).fetchall()
        assert cut == [(True,)]  # the scheduler's listening connection, gone
        await asyncio.sleep(1.0)  # it connects again (and looks at the queue once)
        with tm.TaskStore.open(pg_url) as other:
            other.submit(tm.TaskSubmission("noop", dedup_key="after"))
        assert await asyncio.wait_for(done.get(), WITHIN) == "after"
    finally:
        await sched.close()
