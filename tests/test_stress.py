"""Threads submit batches and single tasks into one store file while a scheduler
dispatches from it, and a second process submits batches through its own TaskStore, with a
SKIP-heavy and a SUPERSEDE-heavy mix; afterwards nothing is lost, doubled or corrupt.

The short form runs in CI; the long form (``pytest -m slow``) runs a minute per mix.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

import taskmill as tm

from conftest import ENV, ROOT

KEYS = [f"obj-{i}" for i in range(400)]


PROCESS_SUBMITTER = """
import json, random, sys, time
import polars as pl
import taskmill as tm
db, seed, seconds, supersede = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
rng = random.Random(seed)
keys = [f"obj-{i}" for i in range(400)]
ids = []
deadline = time.monotonic() + seconds
with tm.TaskStore.open(db) as store:
    while time.monotonic() < deadline:
        n = rng.randrange(1, 300)
        strategy = "supersede" if supersede == "1" and rng.random() < 0.7 else "skip"
        out = store.submit_batch(pl.DataFrame({
            "task_type": ["t"] * n, "dedup_key": [rng.choice(keys) for _ in range(n)],
            "on_duplicate": [strategy] * n}))
        ids += out.submitted + [new for new, _ in out.superseded]
print(json.dumps(ids))
"""


def submitter(
    db_path: Path,
    seed: int,
    seconds: float,
    shared: tm.TaskStore | None,
    ids: list[int],
    errors: list[BaseException],
    supersede_heavy: bool = False,
) -> None:
    rng = random.Random(seed)
    store = shared or tm.TaskStore.open(db_path)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            choices = (
                ["supersede"] * 3 + ["skip", "reject"]
                if supersede_heavy
                else ["skip", "skip", "supersede", "reject"]
            )
            strategy = rng.choice(choices)
            if rng.random() < 0.3:
                try:
                    res = store.submit(
                        tm.TaskSubmission(
                            "t",
                            dedup_key=rng.choice(KEYS),
                            priority=rng.randrange(256),
                            on_duplicate=strategy,
                        )
                    )
                except tm.DuplicateTask:
                    continue
                if res.action in ("submitted", "superseded"):
                    ids.append(res.task_id)
                continue
            n = rng.randrange(1, 400)
            frame = pl.DataFrame(
                {
                    "task_type": ["t"] * n,
                    "dedup_key": [
                        rng.choice(KEYS) if rng.random() < 0.9 else None for _ in range(n)
                    ],
                    "priority": [rng.randrange(256) for _ in range(n)],
                    "on_duplicate": [strategy] * n,
                }
            )
            batch = tm.BatchSubmission().tasks(frame)
            if rng.random() < 0.3:
                batch = batch.transaction_limit(50).chunk_size(50)
            out = store.submit_batch(batch)
            assert len(out) == n
            ids.extend(out.submitted)
            ids.extend(new for new, _ in out.superseded)
    except BaseException as exc:
        errors.append(exc)
    finally:
        if shared is None:
            store.close()


async def run_stress(db_path: Path, seconds: float, supersede_heavy: bool = False) -> dict:
    completed: Counter[int] = Counter()

    async def work(ctx: tm.TaskContext) -> None:
        if ctx.task_id % 7 == 0 and ctx.attempt == 1:
            raise RuntimeError("transient")
        await asyncio.sleep(0)
        completed[ctx.task_id] += 1

    def sync_work(ctx: tm.TaskContext) -> None:
        completed[ctx.task_id] += 1

    ids: list[int] = []
    errors: list[BaseException] = []
    async with tm.Scheduler(
        db_path,
        executors={"t": work, "s": sync_work},
        max_concurrency=8,
        retry_delay=0.01,
        poll_interval=0.05,
        default_group_concurrency=4,
    ) as sched:
        events = sched.subscribe(maxsize=1_000_000)
        mix = supersede_heavy
        threads = [
            threading.Thread(target=submitter, args=(db_path, 1, seconds, None, ids, errors, mix)),
            threading.Thread(target=submitter, args=(db_path, 2, seconds, None, ids, errors, mix)),
            threading.Thread(
                target=submitter, args=(db_path, 3, seconds, sched.store, ids, errors, mix)
            ),
        ]
        # and a second process, through its own TaskStore
        other = subprocess.Popen(
            [
                sys.executable,
                "-c",
                PROCESS_SUBMITTER,
                str(db_path),
                "5",
                str(seconds),
                "1" if supersede_heavy else "0",
            ],
            env=ENV,
            stdout=subprocess.PIPE,
            text=True,
        )
        for t in threads:
            t.start()
        # the scheduler's own API, and cancellations, meanwhile
        rng = random.Random(4)
        deadline = time.monotonic() + seconds
        cancelled = 0
        cancelled_ids: set[int] = set()
        while time.monotonic() < deadline:
            out = await sched.submit_batch(
                [tm.TaskSubmission("s", dedup_key=rng.choice(KEYS)) for _ in range(20)]
            )
            ids.extend(out.submitted)
            if ids and rng.random() < 0.5:
                # half the time a task just queued (most likely still active: some cancel
                # must succeed in a short run), else any task so far (finished ones too)
                fresh = out.submitted and rng.random() < 0.5
                victim = rng.choice(out.submitted if fresh else ids)
                if await sched.cancel(victim):
                    cancelled += 1
                    cancelled_ids.add(victim)
            await asyncio.sleep(0.01)
        for t in threads:
            await asyncio.to_thread(t.join, 60)
        out, _ = await asyncio.to_thread(other.communicate, timeout=120)
        assert other.returncode == 0
        ids.extend(json.loads(out))
        assert not errors, errors
        await sched.wait_idle(timeout=120)
        store = sched.store
        assert store.integrity_check() == "ok"
        active = store.tasks()
        history = store.history()
        got = events.drain()
    assert events.dropped == 0
    active_ids = set(active["id"].to_list())
    history_ids = history["id"].to_list()
    assert len(history_ids) == len(set(history_ids))  # each finished task once
    assert not active_ids & set(history_ids)  # never both active and finished
    assert set(ids) <= active_ids | set(history_ids)  # no returned id lost
    assert len(ids) == len(set(ids))  # ids never handed out twice
    assert (
        active.filter(pl.col("dedup_key").is_not_null())
        .select("task_type", "dedup_key")
        .is_duplicated()
        .sum()
        == 0
    )
    assert active.filter(pl.col("task_type").is_in(["t", "s"])).height == 0  # all done
    done = history.filter(pl.col("status") == "completed")["id"].to_list()
    ran = {tid for tid, n in completed.items() if n}
    assert set(done) <= ran  # every completed task ran to the end
    # an attempt that ran to the end without completing lost its task meanwhile
    lost = history.filter(pl.col("id").is_in(sorted(ran - set(done))))
    assert set(lost["status"].to_list()) <= {"superseded", "cancelled"}
    assert lost.height == len(ran - set(done))
    # events: one BatchSubmitted per commit, TaskCompleted per completion
    batch_ids = [i for e in got if isinstance(e, tm.BatchSubmitted) for i in e.task_ids]
    assert len(batch_ids) == len(set(batch_ids))
    assert sorted(e.task_id for e in got if isinstance(e, tm.TaskCompleted)) == sorted(done)
    # every successful cancel is in history as cancelled, and nothing else cancels
    assert cancelled > 0
    assert set(history.filter(pl.col("status") == "cancelled")["id"].to_list()) == cancelled_ids
    return {
        "seconds": seconds,
        "supersede_heavy": supersede_heavy,
        "task_ids": len(ids),
        "finished": len(history_ids),
        "completed": len(done),
        "cancels": cancelled,
        "events": len(got),
        "threads": 3,
        "processes": 2,
    }


@pytest.mark.parametrize("supersede_heavy", [False, True], ids=["skip-heavy", "supersede-heavy"])
async def test_stress_short(db_path: Path, supersede_heavy: bool) -> None:
    await run_stress(db_path, seconds=4, supersede_heavy=supersede_heavy)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("supersede_heavy", [False, True], ids=["skip-heavy", "supersede-heavy"])
async def test_stress_long(db_path: Path, supersede_heavy: bool) -> None:
    figures = await run_stress(db_path, seconds=60, supersede_heavy=supersede_heavy)
    out = ROOT / "test-output" / f"stress-{'supersede' if supersede_heavy else 'skip'}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures))
