"""The demo job: the sample sync plan submitted to a local store and run by demo executors."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from .scheduler import Scheduler, TaskContext
from .store.location import redact

#: The sample plan, shipped inside the package (so it is there in an installed wheel too).
SAMPLE_PLAN = Path(__file__).resolve().parent / "data" / "sample-plan.parquet"
#: How the sample plan is made (``taskmill gen-plan`` with these settings writes it again).
SAMPLE_SETTINGS: dict[str, Any] = {
    "rows": 3_000,
    "seed": 7,
    "duplicate_rate": 0.05,
    "invalid_rate": 0.004,
}


def sample_plan() -> pl.DataFrame:
    """The sample sync plan shipped with taskmill (made the same way if it is missing)."""
    if SAMPLE_PLAN.exists():
        return pl.read_parquet(SAMPLE_PLAN)
    from .testing.sample import make_plan

    settings = dict(SAMPLE_SETTINGS)
    return make_plan(settings.pop("rows"), **settings)


def _digest(ctx: TaskContext) -> int:
    return hashlib.blake2b((ctx.dedup_key or "").encode(), digest_size=2).digest()[0]


def _outcome(ctx: TaskContext) -> None:
    """About one object in eight fails its first attempt; one in a hundred always fails."""
    d = _digest(ctx)
    if d % 100 == 0:
        raise PermissionError(f"simulated 403 Forbidden from {ctx.group}")
    if ctx.attempt == 1 and d % 8 == 1:
        raise ConnectionError(f"simulated connection reset by {ctx.group}")


async def demo_transfer(ctx: TaskContext) -> None:
    """Pretends to move an object: sleeps in proportion to its size (an async executor)."""
    size = (ctx.payload_json() or {}).get("size", 0)
    await asyncio.sleep(0.001 + size / 20e9)
    _outcome(ctx)
    ctx.progress(1.0)


def demo_delete(ctx: TaskContext) -> None:
    """Pretends to delete an object (a plain function: it runs in a thread)."""
    time.sleep(0.0005)
    _outcome(ctx)


DEMO_EXECUTORS: dict[str, Callable[[TaskContext], Any]] = {
    "sync.upload": demo_transfer,
    "sync.copy": demo_transfer,
    "sync.delete": demo_delete,
}


def _list_hint(plan_path: Path | None) -> str:
    """How to list every failed row of the demo's plan, with a file the user can name."""
    if plan_path is not None:
        return f"`taskmill plan {plan_path} --outcome out.parquet` lists them all"
    return (
        "`taskmill gen-plan --sample --out sample.parquet` then "
        "`taskmill plan sample.parquet --outcome out.parquet` lists them all"
    )


async def run_demo(db: str, plan_path: Path | None = None, console: Any = None) -> dict[str, Any]:
    """Submit the sample plan into ``db`` and run it to the end with the demo executors.

    Objects already synced by an earlier run (finished in the store's history) are left
    out, as a fresh bucket diff would leave them out, and the rest is submitted with
    ``skip``: running the demo again changes nothing and says so.
    """
    from rich.console import Console

    from .views.terminal import outcome_table, tally

    console = console or Console(highlight=False, markup=False, emoji=False)
    plan = pl.read_parquet(plan_path) if plan_path else sample_plan()
    # the sample plan is named as such, never by its path inside the installed package
    source = str(plan_path) if plan_path else "the sample plan shipped with taskmill"
    console.print(f"sync plan: {plan.height:,} actions from {source}")
    async with Scheduler(
        db,
        executors=DEMO_EXECUTORS,
        max_concurrency=16,
        group_concurrency={"azure://westeurope": 2},
        max_retries=2,
        retry_delay=0.05,
        poll_interval=0.1,
    ) as sched:
        store = sched.store
        done = await asyncio.to_thread(
            store.history, status=["completed", "failed"], task_type=list(DEMO_EXECUTORS)
        )
        finished = done.select("task_type", "dedup_key").unique()
        numbered = plan.with_row_index("plan_row")  # rows keep their plan numbers on a rerun
        todo = numbered.join(finished, on=["task_type", "dedup_key"], how="anti", nulls_equal=False)
        plan_rows = todo["plan_row"].to_list()
        todo = todo.drop("plan_row")
        if todo.height < plan.height:
            console.print(
                f"{plan.height - todo.height:,} actions were already done by an "
                f"earlier run in {redact(db)}: left out"
            )
        events = sched.subscribe(maxsize=1_000_000)
        outcome = await sched.submit_batch(todo)
        counts = outcome.counts()
        console.print(outcome_table(outcome, f"submitted to {redact(db)}"))
        shown = 3
        for index, err in outcome.failed[:shown]:
            console.print(f"failed row {plan_rows[index]}: [{err.kind}] {err}")
        if counts["failed"] > shown:
            console.print(
                f"… {counts['failed'] - shown:,} more failed rows ({_list_hint(plan_path)})"
            )
        if counts["submitted"] + counts["superseded"] == 0:
            console.print(
                "nothing new to run: the plan is already queued or done (idempotent rerun)"
            )
        started = time.monotonic()
        with console.status("running the queue with the demo executors …"):
            await sched.wait_idle()
        took = time.monotonic() - started
        seen: Counter[str] = Counter()
        for event in events.drain():
            tally(seen, event)
        store_counts = await asyncio.to_thread(sched.store.counts)
    console.print(
        f"ran {seen['completed']:,} tasks in {took:.1f} s: {seen['retried']:,} "
        f"attempts failed and were retried, {seen['failed']:,} tasks failed for good"
    )
    console.print("store now: " + ", ".join(f"{k} {v:,}" for k, v in store_counts.items() if v))
    return {"outcome": counts, "ran": dict(seen), "store": store_counts}
