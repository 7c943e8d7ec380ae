"""Priority aging on both backends: claims go by effective priority — a pending task's
priority improved by ``step`` per ``every`` waited, never past ``floor`` — then queue
order; stored priorities are unchanged and ``tasks()`` shows both."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

import taskmill as tm
from taskmill.cli import cli
from taskmill.scheduler.attempts import TaskContext

from conftest import is_postgres, run_sql

pytestmark = pytest.mark.backends("sqlite", "postgres")

AGING = tm.Aging(every=timedelta(seconds=100), step=20, floor=50)


def aged_plan(store: tm.TaskStore, location: str | Path, now: float) -> dict[str, int]:
    """Tasks submitted ``waited`` seconds before ``now`` (their creation time set so)."""
    spec = {  # key: (priority, seconds waited)
        "old-200": (200, 1_000),  # 200 - 20 * 10 = 0, never past 50: effective 50
        "new-100": (100, 10),  # not a step yet: 100
        "mid-150": (150, 250),  # two steps: 110
        "old-60": (60, 1_000),  # 50, after old-200 in the queue
        "urgent-30": (30, 0),  # already past the floor: 30
    }
    ids = {}
    for key, (priority, waited) in spec.items():
        ids[key] = store.submit(tm.TaskSubmission("t", dedup_key=key, priority=priority)).task_id
        mark = "%s" if is_postgres(location) else "?"
        table = "taskmill.tasks" if is_postgres(location) else "tasks"
        run_sql(
            location,
            f"UPDATE {table} SET created_at = {mark} WHERE id = {mark}",
            (now - waited, ids[key]),
        )
    return ids


def test_claims_go_by_effective_priority_then_queue_order(
    store: tm.TaskStore, location: str | Path
) -> None:
    now = store.now()
    ids = aged_plan(store, location, now)
    by_id = {v: k for k, v in ids.items()}
    owner = store.new_owner()
    plain = store.claim(5, task_types=["t"], owner=owner, now=now)
    assert [by_id[t.id] for t in plain] == ["urgent-30", "old-60", "new-100", "mid-150", "old-200"]
    store.release([t.id for t in plain], owner=owner)
    aged = store.claim(5, task_types=["t"], owner=owner, now=now, aging=AGING)
    assert [by_id[t.id] for t in aged] == ["urgent-30", "old-200", "old-60", "new-100", "mid-150"]
    assert [t.priority for t in aged] == [30, 200, 60, 100, 150]  # stored ones, unchanged
    store.release([t.id for t in aged], owner=owner)
    # a few at a time: the same order, each claim taking the next ones
    got = [by_id[t.id] for t in store.claim(2, task_types=["t"], owner=owner, aging=AGING)]
    got += [by_id[t.id] for t in store.claim(3, task_types=["t"], owner=owner, aging=AGING)]
    assert got == ["urgent-30", "old-200", "old-60", "new-100", "mid-150"]


def test_tasks_show_the_effective_priority_of_the_stores_policy(
    store: tm.TaskStore, location: str | Path
) -> None:
    ids = aged_plan(store, location, store.now())
    rows = store.tasks().select("dedup_key", "priority", "effective_priority").rows()
    assert all(p == e for _, p, e in rows)  # no policy: no aging
    assert store.aging() is None
    store.set_aging(AGING)
    assert store.aging() == AGING
    shown = {
        k: (p, e)
        for k, p, e in store.tasks().select("dedup_key", "priority", "effective_priority").rows()
    }
    assert shown == {
        "old-200": (200, 50),
        "new-100": (100, 100),
        "mid-150": (150, 110),
        "old-60": (60, 50),
        "urgent-30": (30, 30),
    }
    listed = CliRunner().invoke(cli, ["tasks", "--db", str(location)])
    assert listed.exit_code == 0 and "200→50" in listed.stdout, listed.output
    # only pending tasks age
    store.pause(ids["old-200"])
    assert store.tasks(ids=ids["old-200"])["effective_priority"].to_list() == [200]
    store.set_aging(None)
    assert store.aging() is None


async def test_a_scheduler_with_aging_runs_the_oldest_first(
    store: tm.TaskStore, location: str | Path
) -> None:
    ids = aged_plan(store, location, store.now())
    by_id = {v: k for k, v in ids.items()}
    ran: list[str] = []

    def work(ctx: TaskContext) -> None:
        ran.append(by_id[ctx.task_id])

    async with tm.Scheduler(
        store, executors={"t": work}, max_concurrency=1, aging=AGING, poll_interval=0.05
    ) as sched:
        await sched.wait_idle()
        await asyncio.sleep(0)
    assert ran == ["urgent-30", "old-200", "old-60", "new-100", "mid-150"]
    assert store.aging() == AGING  # kept by the scheduler for every process's tasks()


def test_bad_aging_is_refused() -> None:
    bad = [
        {"every": 10},
        {"every": timedelta(0)},
        {"every": timedelta(seconds=1), "step": 0},
        {"every": timedelta(seconds=1), "floor": 256},
        {"every": timedelta(seconds=1), "step": True},
    ]
    for kwargs in bad:
        with pytest.raises(tm.SchedulerError) as err:
            tm.Aging(**kwargs)  # type: ignore[arg-type]
        assert err.value.kind == "invalid_argument" and "Aging." in str(err.value)
    with pytest.raises(tm.SchedulerError, match=r"aging must be a taskmill\.Aging"):
        tm.Scheduler("unused.db", aging=timedelta(seconds=1))  # type: ignore[arg-type]
