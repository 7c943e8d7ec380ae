"""What each ``taskmill bench`` case runs, whichever engine it runs on: the plans (keys like a
bucket diff's object paths), their files and the dispatch cases' controls.  Shared by
:mod:`taskmill.bench.runner` (SQLite, and the driver of every run) and
:mod:`taskmill.bench.postgres` (PostgreSQL, which ``runner`` imports: it must not import
``runner`` back)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from ..model import Aging, RateLimit

__all__ = ["CONTROLS", "SCHEDULES", "control_settings", "is_dispatch", "prepare_control"]

#: The dispatch case with a control on, counted on every claim but never binding (limits
#: far above what runs): what each control costs the dispatch rate; ``dispatch_schedules``:
#: :data:`SCHEDULES` schedules firing every second while the queue drains.
CONTROLS = (
    "dispatch_groups",
    "dispatch_budgets",
    "dispatch_rates",
    "dispatch_preempt",
    "dispatch_aging",
    "dispatch_schedules",
)
#: Schedules of ``dispatch_schedules``, each submitting a no-op task every second.
SCHEDULES = 10


def is_dispatch(case: str) -> bool:
    return case == "dispatch" or case in CONTROLS


def control_settings(case: str, groups: list[str]) -> dict[str, Any]:
    """The ``Scheduler`` settings of a dispatch case (``groups``: the plan's groups)."""
    if case == "dispatch_groups":
        return {"group_concurrency": dict.fromkeys(groups, 1_000)}
    if case == "dispatch_budgets":
        return {"byte_budgets": dict.fromkeys(groups, 1 << 62)}
    if case == "dispatch_rates":
        rate = RateLimit(1e9, burst=1e9)
        return {"rate_limits": {"type:noop": rate, **{f"group:{g}": rate for g in groups}}}
    if case == "dispatch_preempt":  # looked for on every full turn; no task is that urgent
        return {"preempt_priority": 0}
    if case == "dispatch_aging":  # every claim reads the pending levels one by one
        return {"aging": Aging(every=timedelta(hours=1), step=1, floor=0)}
    return {}


def prepare_control(store: Any, case: str) -> None:
    """What a dispatch case sets up in the store before the clock starts (the schedules of
    ``dispatch_schedules``; nothing for the others)."""
    if case != "dispatch_schedules":
        return
    from datetime import timedelta

    from ..model import TaskSubmission

    every = timedelta(seconds=1)
    for i in range(SCHEDULES):
        store.schedule(f"bench-{i}", TaskSubmission("noop", group="scheduled"), every=every)


def _plan(rows: int, existing: int, key_bytes: int = 0) -> Any:
    start = existing - rows // 2 if existing else 0  # half the batch overlaps the store
    return _keyed_plan(rows, start, key_bytes)


def _keyed_plan(rows: int, start: int, key_bytes: int) -> Any:
    """The bench's sync plan; with ``key_bytes`` every key is padded to that length (long
    object paths, to measure what memory per planned row a batch needs)."""
    import polars as pl

    from ..testing.sample import make_plan

    plan = make_plan(rows, seed=1, start=start, random_prefixes=True)
    if key_bytes:
        plan = plan.with_columns(pl.col("dedup_key").str.pad_end(key_bytes, "~"))
    return plan


def _noop_plan(rows: int, *, seed: int, start: int = 0) -> Any:
    """No-op tasks with the plan's random keys (completing one frees its key)."""
    import polars as pl

    from ..testing.sample import make_plan

    plan = make_plan(rows, seed=seed, start=start, random_prefixes=True)
    return plan.with_columns(pl.lit("noop").alias("task_type"))


def _plan_file(folder: Path, rows: int, existing: int, key_bytes: int = 0) -> Path:
    return folder / f"plan-{rows}-{existing}-{key_bytes}.parquet"


#: The phases of the last batch a case timed (``BatchOutcome.phases``), for its report.
LAST_PHASES: dict[str, float] = {}


def timed_batch(store: Any, source: Any) -> float:
    """``store.submit_batch(source)``, timed; its phases kept in :data:`LAST_PHASES`."""
    import time

    began = time.perf_counter()
    outcome = store.submit_batch(source)
    took = time.perf_counter() - began
    LAST_PHASES.clear()
    LAST_PHASES.update(outcome.phases)
    return took


def with_dependencies(plan: Any) -> Any:
    """``plan`` with every row of its second half depending on a row of its first half
    (by dedup key): the ``depends`` case, set beside ``polars`` on the same rows."""
    import polars as pl

    half = plan.height // 2
    keys = plan["dedup_key"]
    deps = [None] * half + [[k] for k in keys.head(plan.height - half).to_list()]
    return plan.with_columns(pl.Series("depends_on", deps, dtype=pl.List(pl.String)))
