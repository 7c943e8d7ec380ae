"""Preemption on both backends: with ``Scheduler(preempt_priority=P)``, a task at P or more
urgent that waits while every slot is taken pauses the least urgent running attempt
(``ctx.cancelled``); once its code returns its task is ``paused`` (``preempted_at`` set,
the attempt no try), and pending again in its queue place once no urgent task waits."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import taskmill as tm
from taskmill.cli import cli
from taskmill.scheduler.attempts import TaskContext

pytestmark = pytest.mark.backends("sqlite", "postgres")


async def until(check: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        await asyncio.sleep(0.02)


async def test_an_urgent_task_pauses_the_least_urgent_running_one(store: tm.TaskStore) -> None:
    log: list[str] = []
    started = {key: threading.Event() for key in ("low", "lower")}
    urgent_done = threading.Event()

    def work(ctx: TaskContext) -> None:
        key = ctx.dedup_key or ""
        log.append(f"start {key} (attempt {ctx.attempt})")
        if key in started:
            started[key].set()
        if key == "urgent":
            urgent_done.set()
            return
        while not ctx.cancelled and not urgent_done.is_set():
            time.sleep(0.01)  # busy until told to stop, or until the urgent task ran
        log.append(f"{'told' if ctx.cancelled else 'end'} {key}")

    store.submit(tm.TaskSubmission("t", dedup_key="low", priority=100))
    lower = store.submit(tm.TaskSubmission("t", dedup_key="lower", priority=200)).task_id
    async with tm.Scheduler(
        store, executors={"t": work}, max_concurrency=2, preempt_priority=10, poll_interval=0.05
    ) as sched:
        await asyncio.to_thread(started["low"].wait, 30)
        await asyncio.to_thread(started["lower"].wait, 30)
        urgent = store.submit(tm.TaskSubmission("t", dedup_key="urgent", priority=0)).task_id
        sched._poke()
        # the least urgent one (priority 200) makes room; the urgent task runs
        await until(lambda: store.task(urgent) is not None and not store.task(urgent)["active"])
        await until(lambda: store.task(lower)["status"] in ("pending", "running", "completed"))
        await sched.wait_idle()
        await until(lambda: store.tasks().height == 0)
    assert log.index("told lower") < log.index("start urgent (attempt 1)")
    assert "told low" not in log  # priority 100: not the least urgent
    # paused, then resumed in its place: the preempted attempt was no try
    assert store.attempts(lower).select("attempt", "outcome").rows() == [
        (1, "released"),
        (1, "completed"),
    ]
    assert [r for r in log if r.startswith("start lower")] == [
        "start lower (attempt 1)",
        "start lower (attempt 1)",
    ]


def test_a_preempted_task_waits_paused_until_no_urgent_task_waits(
    store: tm.TaskStore, location: str | Path
) -> None:
    low = store.submit(tm.TaskSubmission("t", dedup_key="low", priority=200)).task_id
    owner = store.new_owner()
    [claimed] = store.claim(1, task_types=["t"], owner=owner)
    urgent = store.submit(tm.TaskSubmission("t", dedup_key="urgent", priority=5)).task_id
    assert store.urgent_waiting(10, ["t"]) == 1
    assert store.urgent_waiting(4, ["t"]) == 0  # priority 5 is not that urgent
    assert store.urgent_waiting(10, ["other"]) == 0
    assert store.preempt([low], owner=owner, attempts=[claimed.attempt]) == 1
    row = store.tasks(ids=low).row(0, named=True)
    assert row["status"] == "paused" and row["preempted_at"] is not None
    assert row["attempts"] == 0  # the preempted attempt was no try
    listed = CliRunner().invoke(cli, ["tasks", "--db", str(location)])
    assert listed.exit_code == 0 and "paused (preempted)" in listed.stdout, listed.output
    # an urgent task still waits: it stays paused
    assert store.resume_preempted(10, ["t"]) == 0
    [got] = store.claim(5, task_types=["t"], owner=owner)
    assert got.id == urgent
    assert store.resume_preempted(10, ["t"]) == 1
    row = store.tasks(ids=low).row(0, named=True)
    assert row["status"] == "pending" and row["preempted_at"] is None
    # a task paused by hand is not resumed by that
    assert store.pause(low)
    assert store.resume_preempted(10, ["t"]) == 0
    assert store.tasks(ids=low)["status"].to_list() == ["paused"]
    # resuming a preempted task by hand clears its mark
    assert store.resume(low)
    [again] = store.claim(1, task_types=["t"], owner=owner)
    store.preempt([again.id], owner=owner)
    assert store.resume(low) and store.tasks(ids=low)["preempted_at"].to_list() == [None]


def test_preempt_priority_is_checked() -> None:
    for bad in (-1, 256, "high", True, 1.5):
        with pytest.raises(tm.SchedulerError) as err:
            tm.Scheduler("unused.db", preempt_priority=bad)  # type: ignore[arg-type]
        assert err.value.kind == "invalid_argument" and "preempt_priority" in str(err.value)
