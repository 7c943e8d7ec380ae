"""``python -m taskmill.bench.tagged``: what tags cost and what their filters take, on a
SQLite store of 1M tagged tasks (the long form: about a minute and a half).

Every task carries ``env`` (``prod`` or ``dev``, half each) and ``shard`` (10,000 values,
100 tasks each).  Prints how long ``tasks(tags=…)`` takes for one rare pair and for that
pair with a common one (the filter reads the rarest pair's tasks, then checks the other
pair task by task), and a 100k-row plan with three tags a row beside the same plan
untagged, each twice, on fresh stores.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import polars as pl

from ..store import TaskStore

__all__ = ["main"]

TASKS = 1_000_000
PLAN = 100_000


def _tagged_store(path: Path) -> float:
    """Fill ``path`` with :data:`TASKS` tagged tasks; the seconds it took."""
    started = time.perf_counter()
    with TaskStore.open(path) as store:
        for start in range(0, TASKS, 250_000):
            index = pl.int_range(start, start + 250_000, eager=True)
            plan = pl.DataFrame({"task_type": "t", "dedup_key": index.cast(pl.String)})
            env = pl.when(index % 2 == 0).then(pl.lit("prod")).otherwise(pl.lit("dev"))
            shard = (index % 10_000).cast(pl.String)
            store.submit_batch(plan.with_columns(tags=pl.struct(env=env, shard=shard)))
    return time.perf_counter() - started


def _plan_seconds(folder: Path, tagged: bool) -> float:
    """Seconds a :data:`PLAN`-row plan takes into a fresh store (three tags a row)."""
    index = pl.int_range(0, PLAN, eager=True)
    plan = pl.DataFrame({"task_type": "t", "dedup_key": index.cast(pl.String)})
    if tagged:
        shard = (index % 100).cast(pl.String)
        plan = plan.with_columns(
            tags=pl.struct(env=pl.lit("prod"), shard=shard, owner=pl.lit("me"))
        )
    with TaskStore.open(folder / f"plan-{tagged}-{time.monotonic_ns()}.db") as store:
        started = time.perf_counter()
        store.submit_batch(plan)
        return time.perf_counter() - started


def main() -> None:
    """Run the measurements and print one line each."""
    with tempfile.TemporaryDirectory(prefix="taskmill-tags-") as tmp:
        folder = Path(tmp)
        took = _tagged_store(folder / "big.db")
        print(f"loaded {TASKS:,} tagged tasks in {took:.1f} s", flush=True)
        with TaskStore.open(folder / "big.db") as store:
            for query in ({"shard": "42"}, {"shard": "42", "env": "prod"}):
                times: list[float] = []
                rows = 0
                for _ in range(5):
                    started = time.perf_counter()
                    rows = store.tasks(tags=query).height
                    times.append(time.perf_counter() - started)
                print(
                    f"tasks(tags={query}) -> {rows} rows: best {min(times) * 1000:.1f} ms, "
                    f"median {statistics.median(times) * 1000:.1f} ms",
                    flush=True,
                )
        for tagged in (False, True, False, True):
            seconds = _plan_seconds(folder, tagged)
            print(f"{PLAN:,}-row plan {'with 3 tags' if tagged else 'untagged'}: {seconds:.2f} s")


if __name__ == "__main__":
    main()
