"""The demo job: a small sync plan submitted to a local store and run by demo executors."""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from .model import Priority, TaskCompleted, TaskFailed, TaskSubmission
from .scheduler import Scheduler, TaskContext

ENDPOINTS = ("s3://us-east-1", "s3://eu-west-1", "gcs://europe-west4")


def sample_plan(n: int = 60, seed: int = 7) -> list[TaskSubmission]:
    """A small sync plan: uploads, copies and deletes across three endpoints."""
    rng = random.Random(seed)
    plan = []
    for i in range(n):
        action = rng.choices(["sync.upload", "sync.copy", "sync.delete"], [6, 2, 2])[0]
        endpoint = rng.choice(ENDPOINTS)
        key = f"{endpoint}/data/part-{i:05d}.parquet"
        size = rng.randint(1_000, 50_000_000)
        priority = Priority.HIGH if action == "sync.delete" else Priority.NORMAL
        plan.append(
            TaskSubmission(
                action,
                dedup_key=key,
                group=endpoint,
                priority=priority,
                payload={"key": key, "size": size},
                expected_net_tx_bytes=size,
            )
        )
    return plan


def _flaky(ctx: TaskContext) -> bool:
    """About one task in eight fails its first attempt (deterministic per key)."""
    digest = hashlib.blake2b((ctx.dedup_key or "").encode(), digest_size=1).digest()[0]
    return ctx.attempt == 1 and digest % 8 == 0


async def demo_transfer(ctx: TaskContext) -> None:
    """Pretends to move an object: sleeps in proportion to its size."""
    size = (ctx.payload_json() or {}).get("size", 0)
    await asyncio.sleep(0.002 + size / 5e9)
    if _flaky(ctx):
        raise ConnectionError(f"simulated network error on {ctx.group}")
    ctx.progress(1.0)


def demo_delete(ctx: TaskContext) -> None:
    """Pretends to delete an object (a plain function: runs in a thread)."""
    if _flaky(ctx):
        raise PermissionError("simulated 403 from the endpoint")


DEMO_EXECUTORS: dict[str, Callable[[TaskContext], object]] = {
    "sync.upload": demo_transfer,
    "sync.copy": demo_transfer,
    "sync.delete": demo_delete,
}


@dataclass
class DemoReport:
    submitted: int
    deduplicated: int
    completed: int
    retried: int
    failed: int
    counts: dict[str, int]


async def run_demo(db: str, n: int = 60, echo: Callable[[str], None] = print) -> DemoReport:
    """Submit the sample plan into ``db`` and run it to completion with demo executors."""
    plan = sample_plan(n)
    async with Scheduler(
        db,
        executors=DEMO_EXECUTORS,
        max_concurrency=8,
        group_concurrency={"gcs://europe-west4": 2},
        retry_delay=0.05,
        max_retries=2,
    ) as sched:
        events = sched.subscribe()
        actions: Counter[str] = Counter()
        for sub in plan:
            actions[(await sched.submit(sub)).action] += 1
        echo(
            f"submitted {actions['submitted']} tasks to {db} "
            f"({actions['deduplicated']} already queued)"
        )
        await sched.wait_idle()
        seen: Counter[str] = Counter()
        for event in events.drain():
            if isinstance(event, TaskCompleted):
                seen["completed"] += 1
            elif isinstance(event, TaskFailed):
                seen["retried" if event.will_retry else "failed"] += 1
        counts = sched.store.counts()
    echo(
        f"ran: {seen['completed']} completed, {seen['retried']} attempts retried, "
        f"{seen['failed']} failed for good"
    )
    echo("store now: " + ", ".join(f"{k}={v}" for k, v in counts.items() if v))
    return DemoReport(
        actions["submitted"],
        actions["deduplicated"],
        seen["completed"],
        seen["retried"],
        seen["failed"],
        counts,
    )
