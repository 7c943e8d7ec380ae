"""The old import path of :mod:`taskmill.bench.pace` (``taskmill bench --pace``): its names,
re-exported."""

from .bench.pace import (
    BACKENDS,
    CONTROLS,
    NOOP_TASKS,
    REAL_CONCURRENCY,
    REAL_SECONDS,
    REAL_TASKS,
    WORKERS,
    PaceResult,
    measure_noop,
    measure_real,
    real_worker,
    run,
    table,
    to_json,
)

__all__ = [
    "BACKENDS",
    "CONTROLS",
    "NOOP_TASKS",
    "REAL_CONCURRENCY",
    "REAL_SECONDS",
    "REAL_TASKS",
    "WORKERS",
    "PaceResult",
    "measure_noop",
    "measure_real",
    "real_worker",
    "run",
    "table",
    "to_json",
]
