"""``taskmill bench --pace``: dispatch as users run it, on SQLite and PostgreSQL side by
side in one run.

No-op tasks in big claims hide a fixed cost per statement (a 200 ms JIT compile per
PostgreSQL statement went unseen that way); tasks of real duration in small claims show
it.  Cases, each on both backends, each run a fresh process on a fresh store (a SQLite
file; a database of its own on the server):

- ``real``      :data:`REAL_TASKS` tasks sleeping :data:`REAL_SECONDS` each, one
                ``Scheduler`` with ``max_concurrency=`` :data:`REAL_CONCURRENCY`: seconds,
                as a ratio to the ideal (tasks × duration ÷ concurrency), with the latency
                of every ``claim`` and ``complete_many`` call it made (p50 and p99);
- ``noop``      no-op tasks run to completion by 1, 2 and 4 worker processes sharing the
                queue (``Scheduler`` with ``max_concurrency=16`` each): tasks/s;
- ``groups`` / ``budgets`` / ``rates`` / ``preempt`` / ``aging``  the one-worker no-op
                case with a control on but never binding (limits far above what runs, no
                task urgent enough to preempt, aging that changes no order): tasks/s, as
                a ratio to the plain rate;
- ``schedules`` the same with ten schedules firing a no-op task every second (what the
                store's schedules cost the dispatch rate).

Targets of the PostgreSQL store (issue 20): ``real`` within 1.3× SQLite's time; ≥ 5,000
no-op tasks/s with one worker, rising with workers; a counted control ≥ 0.8× the plain
rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

#: The real-duration case: tasks, seconds each, scheduler concurrency.
REAL_TASKS = 300
REAL_SECONDS = 0.02
REAL_CONCURRENCY = 4
#: No-op tasks per dispatch measurement.
NOOP_TASKS = 20_000
#: Worker process counts of the no-op case.
WORKERS = (1, 2, 4)
#: The control cases and the dispatch case of :mod:`taskmill.bench.runner` each one runs.
CONTROLS = {
    "groups": "dispatch_groups",
    "budgets": "dispatch_budgets",
    "rates": "dispatch_rates",
    "preempt": "dispatch_preempt",
    "aging": "dispatch_aging",
    "schedules": "dispatch_schedules",
}
BACKENDS = ("sqlite", "postgres")


@dataclass
class PaceResult:
    """One case on one backend: the median of its runs."""

    case: str  # real, noop, groups, budgets, rates
    backend: str  # sqlite or postgres
    tasks: int
    seconds: float  # median
    runs: list[float]
    workers: int = 1
    #: ``real``: claim and completion latency in ms (p50, p99) over every call of every run.
    latency: dict[str, float] = field(default_factory=dict)

    @property
    def tasks_per_s(self) -> float:
        return self.tasks / self.seconds if self.seconds else float("inf")


# --------------------------------------------------------------------------- worker side


def _timed(calls: list[float], method: Callable[..., Any]) -> Callable[..., Any]:
    """``method``, recording each call's duration in ms into ``calls``."""

    def call(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            calls.append((time.perf_counter() - t0) * 1000)

    return call


def real_worker(location: str, tasks: int, seconds: float, concurrency: int) -> dict[str, Any]:
    """Queue ``tasks`` tasks that each sleep ``seconds`` (untimed), then time one
    ``Scheduler`` running them all; returns the seconds and every claim's and
    completion's latency (ms)."""
    from ..model import TaskSubmission
    from ..scheduler import Scheduler
    from ..store import TaskStore

    with TaskStore.open(location) as store:
        store.submit_batch([TaskSubmission("pace", dedup_key=f"k{i}") for i in range(tasks)])

    async def sleep(ctx: Any) -> None:
        await asyncio.sleep(seconds)

    claims: list[float] = []
    completions: list[float] = []

    async def go(store: Any) -> float:
        # the store's own methods, timed where the scheduler calls them
        store.claim = _timed(claims, store.claim)
        store.complete_many = _timed(completions, store.complete_many)
        t0 = time.perf_counter()
        async with Scheduler(store, executors={"pace": sleep}, max_concurrency=concurrency) as s:
            await s.wait_idle()
        return time.perf_counter() - t0

    with TaskStore.open(location) as store:
        took = asyncio.run(go(store))
        done = store.counts().get("completed")
    if done != tasks:
        raise RuntimeError(f"real: {done} of {tasks} tasks completed")
    return {"seconds": took, "claim": claims, "complete": completions}


# --------------------------------------------------------------------------- driver side


@contextlib.contextmanager
def _fresh_location(backend: str, folder: Path, admin: str) -> Iterator[str]:
    """A new empty store's location on ``backend``."""
    if backend == "sqlite":
        path = Path(tempfile.mkdtemp(dir=folder)) / "pace.db"
        yield str(path)
        return
    from .postgres import fresh_database

    with fresh_database(admin) as url:
        yield url


def _percentiles(values: list[float]) -> tuple[float, float]:
    """p50 and p99 of ``values``."""
    if len(values) < 2:
        return (values[0], values[0]) if values else (0.0, 0.0)
    cuts = statistics.quantiles(values, n=100, method="inclusive")
    return cuts[49], cuts[98]


def measure_real(backend: str, folder: Path, admin: str, repeat: int, tasks: int) -> PaceResult:
    """The ``real`` case: ``repeat`` fresh processes, each on a fresh store."""
    runs: list[float] = []
    claims: list[float] = []
    completions: list[float] = []
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    for _ in range(repeat):
        with _fresh_location(backend, folder, admin) as location:
            argv = [location, str(tasks), str(REAL_SECONDS), str(REAL_CONCURRENCY)]
            proc = subprocess.run(
                [sys.executable, "-m", "taskmill.bench.pace", "real", *argv],
                capture_output=True,
                text=True,
                env=env,
                check=False,
                timeout=600,
            )
        if proc.returncode != 0:
            raise RuntimeError(f"pace worker (real, {backend}) failed:\n{proc.stderr}")
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        runs.append(data["seconds"])
        claims += data["claim"]
        completions += data["complete"]
    claim50, claim99 = _percentiles(claims)
    done50, done99 = _percentiles(completions)
    latency = {
        "claim_p50_ms": claim50,
        "claim_p99_ms": claim99,
        "complete_p50_ms": done50,
        "complete_p99_ms": done99,
        "claims": float(len(claims)),
        "completions": float(len(completions)),
    }
    return PaceResult("real", backend, tasks, statistics.median(runs), runs, 1, latency)


def measure_noop(
    backend: str, folder: Path, admin: str, repeat: int, tasks: int, workers: int, case: str
) -> PaceResult:
    """A no-op dispatch case (``noop`` or a control) by ``workers`` processes."""
    from .postgres import dispatch

    runs: list[float] = []
    for _ in range(repeat):
        with _fresh_location(backend, folder, admin) as location:
            took, _ = dispatch(location, tasks, workers, tasks, CONTROLS.get(case, "dispatch"))
        runs.append(took)
    return PaceResult(case, backend, tasks, statistics.median(runs), runs, workers)


def run(
    db: str = "postgres",
    *,
    repeat: int = 3,
    workers: tuple[int, ...] = WORKERS,
    real_tasks: int = REAL_TASKS,
    noop_tasks: int = NOOP_TASKS,
    echo: Callable[..., Any] = print,
    server_info: dict[str, Any] | None = None,
) -> list[PaceResult]:
    """Every pace case on SQLite and on PostgreSQL (``db``: a ``postgresql://`` admin URL
    to create databases through, or ``postgres`` for a throwaway durable server)."""
    from .postgres import server, server_version

    results: list[PaceResult] = []
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="taskmill-pace-")))
        admin, info = stack.enter_context(server(db))
        info["version"] = server_version(admin)
        if server_info is not None:
            server_info.update(info)
        for backend in BACKENDS:
            echo(f"  real {real_tasks} × {REAL_SECONDS * 1000:.0f} ms [{backend}] …", err=True)
            results.append(measure_real(backend, folder, admin, repeat, real_tasks))
            for n in workers:
                echo(f"  noop {noop_tasks:,}, {n} worker(s) [{backend}] …", err=True)
                results.append(measure_noop(backend, folder, admin, repeat, noop_tasks, n, "noop"))
            for case in CONTROLS:
                echo(f"  {case} {noop_tasks:,}, 1 worker [{backend}] …", err=True)
                results.append(measure_noop(backend, folder, admin, repeat, noop_tasks, 1, case))
    return results


def table(results: list[PaceResult]) -> str:
    """A Markdown table: each case a row, SQLite and PostgreSQL side by side, with the
    ratio of PostgreSQL's figure to SQLite's."""
    got = {(r.case, r.backend, r.workers): r for r in results}

    def pair(case: str, workers: int) -> tuple[PaceResult | None, PaceResult | None]:
        return got.get((case, "sqlite", workers)), got.get((case, "postgres", workers))

    lines = [
        "| dispatch case | SQLite | PostgreSQL | PostgreSQL ÷ SQLite |",
        "|---|---:|---:|---:|",
    ]
    lite, pg = pair("real", 1)
    if lite or pg:
        any_real = lite or pg
        assert any_real is not None
        ideal = any_real.tasks * REAL_SECONDS / REAL_CONCURRENCY

        def real_cell(r: PaceResult | None) -> str:
            return f"{r.seconds:.2f} s ({r.seconds / ideal:.2f}× ideal)" if r else "–"

        ratio = f"{pg.seconds / lite.seconds:.2f}× the time" if lite and pg else "–"
        lines.append(
            f"| {any_real.tasks} tasks × {REAL_SECONDS * 1000:.0f} ms, max_concurrency="
            f"{REAL_CONCURRENCY} (ideal {ideal:.2f} s) | {real_cell(lite)} | {real_cell(pg)} "
            f"| {ratio} |"
        )
        for what in ("claim", "complete"):

            def ms(r: PaceResult | None, what: str = what) -> str:
                if not r:
                    return "–"
                return f"{r.latency[f'{what}_p50_ms']:.2f} / {r.latency[f'{what}_p99_ms']:.2f} ms"

            ratio = (
                f"{pg.latency[f'{what}_p50_ms'] / lite.latency[f'{what}_p50_ms']:.2f}× (p50)"
                if lite and pg and lite.latency[f"{what}_p50_ms"]
                else "–"
            )
            name = "claim" if what == "claim" else "complete_many"
            lines.append(f"| {name} latency, p50 / p99 | {ms(lite)} | {ms(pg)} | {ratio} |")
    plain = pair("noop", 1)
    for n in sorted({r.workers for r in results if r.case == "noop"}):
        lite, pg = pair("noop", n)
        lines.append(
            _rate_row(f"no-op tasks/s, {n} worker process{'es' if n > 1 else ''}", lite, pg)
        )
    for case in CONTROLS:
        lite, pg = pair(case, 1)
        if not (lite or pg):
            continue

        def vs_plain(r: PaceResult | None, base: PaceResult | None) -> str:
            if not r:
                return "–"
            share = f" ({r.tasks_per_s / base.tasks_per_s:.2f}× plain)" if base else ""
            return f"{r.tasks_per_s:,.0f}{share}"

        ratio = f"{pg.tasks_per_s / lite.tasks_per_s:.2f}×" if lite and pg else "–"
        lines.append(
            f"| no-op tasks/s, 1 worker, {case} counted | {vs_plain(lite, plain[0])} "
            f"| {vs_plain(pg, plain[1])} | {ratio} |"
        )
    return "\n".join(lines)


def _rate_row(name: str, lite: PaceResult | None, pg: PaceResult | None) -> str:
    def cell(r: PaceResult | None) -> str:
        return f"{r.tasks_per_s:,.0f}" if r else "–"

    ratio = f"{pg.tasks_per_s / lite.tasks_per_s:.2f}×" if lite and pg else "–"
    return f"| {name} | {cell(lite)} | {cell(pg)} | {ratio} |"


def to_json(results: list[PaceResult], server: dict[str, Any] | None = None) -> str:
    """The results as JSON, with the machine and the server they ran on."""
    from .runner import report_json

    return report_json(
        "pace", [{**asdict(r), "tasks_per_s": r.tasks_per_s} for r in results], server
    )


if __name__ == "__main__":  # a worker: python -m taskmill.bench.pace real LOCATION N S C
    if sys.argv[1:2] == ["real"] and len(sys.argv) == 6:
        location, n, seconds, concurrency = sys.argv[2:]
        print(json.dumps(real_worker(location, int(n), float(seconds), int(concurrency))))
    else:
        sys.exit("usage: python -m taskmill.bench.pace real LOCATION TASKS SECONDS CONCURRENCY")
