"""``taskmill bench``: the ways of loading a sync plan, measured side by side in one run.

Every run of every measurement is a fresh worker process (so each has its own peak
memory) on a fresh temporary store; runs are repeated and the median time and the
highest peak are reported.  Cases:

- ``one_by_one``  ``TaskStore.submit()`` per task, extrapolated from a sample of calls;
- ``executemany`` a plain ``executemany`` loader of the same rows in one transaction;
- ``list``        ``submit_batch`` of prebuilt ``TaskSubmission`` objects;
- ``polars``      ``submit_batch`` of a polars DataFrame;
- ``parquet``     ``submit_batch`` of a Parquet file;
- ``reader``      ``submit_batch`` of a ``pyarrow.RecordBatchReader`` over the same file;
- ``lazy``        ``submit_batch`` of a polars ``LazyFrame`` scanning the same file;
- ``ceiling``     SQLite alone: ``INSERT … SELECT`` of the same rows (already in a SQLite
                  file, key hashes included) into a copy of the same store — the
                  engine's limit for this schema at that store size;
- ``ceiling_chunked`` the same in the transactions ``submit_batch`` commits such a plan in
                  by default (one up to 100,000 rows, else 10,000 rows each): the
                  engine's limit for that shape;
- ``dispatch``    a ``Scheduler`` running queued no-op tasks to completion
                  (``max_concurrency=16``), extrapolated from a sample; with ``existing``
                  the store also holds that many pending tasks of other types and as
                  many finished tasks in its history;
- ``stall``       a ``Scheduler`` completing no-op tasks while the same scheduler
                  submits the batch (polars): the longest gap between two completions
                  during the batch, next to the time its transactions held the store's
                  write lock (``merge_s``).  Target: the gap is no longer than the merge.

With ``db`` (``--db``: a ``postgresql://`` URL, or ``postgres`` for a throwaway server) the
cases run on PostgreSQL instead, each run in a database of its own: ``polars``, ``parquet``,
``ceiling`` (PostgreSQL's), the peers ``pgqueuer`` and ``procrastinate``, and ``dispatch``
by 1, 2 and 4 worker processes (on an empty database only; see :mod:`taskmill.bench.postgres`).

With ``existing`` the store first holds that many tasks, half of the batch's keys among them.
With ``key_bytes`` every key is padded to that many bytes (long object paths): the peak
memory per planned row of the streaming inputs shows there.
Keys are bucket-like object paths under random prefixes (``data/<hash>/…``), so a batch's
keys land all over the key index, as a real bucket diff's do.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import platform
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

from . import postgres
from .cases import CONTROLS as CONTROLS  # moved; bench.CONTROLS still works
from .cases import (
    LAST_PHASES,
    _keyed_plan,
    _noop_plan,
    _plan,
    _plan_file,
    control_settings,
    is_dispatch,
    prepare_control,
    timed_batch,
    with_dependencies,
)

CASES = (
    "one_by_one",
    "executemany",
    "list",
    "polars",
    "depends",
    "parquet",
    "reader",
    "lazy",
    "ceiling",
    "ceiling_chunked",
    "dispatch",
    "dispatch_groups",
    "dispatch_budgets",
    "dispatch_rates",
    "dispatch_preempt",
    "dispatch_aging",
    "dispatch_schedules",
    "stall",
    "pgqueuer",
    "procrastinate",
)
#: Cases measured on an empty store only.
EMPTY_ONLY = ("one_by_one", "stall")
ONE_BY_ONE_SAMPLE = 2_000
DISPATCH_SAMPLE = 20_000


@dataclass
class Result:
    case: str
    rows: int
    existing: int
    seconds: float  # median
    runs: list[float]
    peak_mb: float
    extrapolated: bool = False
    extra: dict[str, float] = field(default_factory=dict)
    key_bytes: int = 0  # keys padded to this length (0: the plan's own keys)
    backend: str = "sqlite"  # or "postgres"
    workers: int = 0  # dispatch on PostgreSQL: worker processes (0: one scheduler)

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds else float("inf")


# --------------------------------------------------------------------------- worker side


def _prefilled(path: Path, fill: Callable[[Any], None]) -> Path:
    """The store at ``path``, built by ``fill(store)`` the first time, then reused
    (each run works on a copy)."""
    if not path.exists():
        from ..store.sqlite import SqliteStore as TaskStore  # a file: its connection below

        with TaskStore.open(path) as store:
            fill(store)
            store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return path


def _template(folder: Path, existing: int, key_bytes: int = 0) -> Path | None:
    """A store holding ``existing`` tasks."""
    if not existing:
        return None

    def fill(store: Any) -> None:
        store.submit_batch(_keyed_plan(existing, 0, key_bytes))

    return _prefilled(folder / f"template-{existing}-{key_bytes}.db", fill)


_FINISH_FIRST = (
    "INSERT INTO history (id, task_type, dedup_key, group_name, priority, payload, "
    "expected_net_tx_bytes, status, attempts, created_at, started_at, finished_at) "
    "SELECT id, task_type, dedup_key, group_name, priority, payload, expected_net_tx_bytes, "
    "'completed', 1, created_at, created_at, created_at + 1 FROM tasks WHERE id <= ?"
)


def _dispatch_template(folder: Path, existing: int) -> Path | None:
    """``existing`` pending no-op tasks queued and ``existing`` finished ones."""
    if not existing:
        return None

    def fill(store: Any) -> None:
        store.submit_batch(_noop_plan(2 * existing, seed=2))
        conn = store.conn
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_FINISH_FIRST, (existing,))  # the first half finished, in id order
        conn.execute("DELETE FROM tasks WHERE id <= ?", (existing,))
        conn.execute("COMMIT")

    return _prefilled(folder / f"template-dispatch-{existing}.db", fill)


def _fresh_store(folder: Path, template: Path | None, run: int) -> Path:
    path = folder / f"run-{run}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    if template is not None:
        shutil.copy(template, path)
    return path


def _submissions(df: Any) -> list[Any]:
    """The plan as ``TaskSubmission`` objects (what a caller of the list API holds)."""
    from ..model import TaskSubmission

    return [
        TaskSubmission(
            t, dedup_key=k, group=g, priority=p, payload=pl_.encode(), expected_net_tx_bytes=b
        )
        for t, k, g, p, pl_, b in df.iter_rows()
    ]


def _timed_parquet(path: Path, plan: Path, form: str = "parquet") -> tuple[float, bool]:
    """The plan file submitted as a path, an Arrow stream over it, or a LazyFrame."""
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..store import TaskStore

    with TaskStore.open(path) as store:
        t0 = time.perf_counter()
        if form == "reader":
            # pyarrow's default pre-buffering keeps the whole compressed file in memory as
            # it is read (+233 MB on a 5M-row plan), which is the reader's memory, not the
            # batch's: docs/guide.md recommends pre_buffer=False for large plans
            handle = pq.ParquetFile(plan, pre_buffer=False)
            source: Any = pa.RecordBatchReader.from_batches(
                handle.schema_arrow, handle.iter_batches(batch_size=65_536)
            )
        elif form == "lazy":
            source = pl.scan_parquet(plan)
        else:
            source = plan
        timed_batch(store, source)  # its phases kept for the report
        return time.perf_counter() - t0, False  # opening the reader included


_INSERT = (
    "INSERT INTO tasks (id, task_type, dedup_key, group_name, priority, queue_pos, payload, "
    "expected_net_tx_bytes, created_at, key_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _stall(path: Path, df: Any) -> tuple[float, dict[str, float]]:
    """The longest gap between no-op completions while the scheduler takes the batch."""
    import asyncio

    import polars as pl

    from ..model import TaskCompleted
    from ..scheduler import Scheduler
    from ..store import TaskStore

    with TaskStore.open(path) as store:
        store.submit_batch(pl.DataFrame({"task_type": ["noop"] * 60_000}))

    async def noop(ctx: Any) -> None:
        return None

    async def go() -> tuple[float, dict[str, float]]:
        async with Scheduler(path, executors={"noop": noop}, max_concurrency=16) as sched:
            events = sched.subscribe(maxsize=200_000)
            await asyncio.sleep(0.5)  # dispatching at its steady rate
            t0 = time.time()
            await sched.submit_batch(df)
            t1 = time.time()
            await asyncio.sleep(0.2)
            done = sorted(e.at for e in events.drain() if isinstance(e, TaskCompleted))
            # the store this scheduler opened from a file path: a TaskStore
            merge = sum(cast(TaskStore, sched.store).last_batch_merge_seconds)
        window = [t for t in done if t0 <= t <= t1]
        before = [t for t in done if t < t0][-1:]
        after = [t for t in done if t > t1][:1]
        points = before + window + after
        gap = max((b - a for a, b in itertools.pairwise(points)), default=t1 - t0)
        return gap, {"merge_s": merge, "batch_s": t1 - t0, "completions": float(len(window))}

    return asyncio.run(go())


def _run_case(
    case: str, rows: int, existing: int, folder: Path, run: int, key_bytes: int = 0
) -> tuple[float, bool]:
    import polars as pl

    from ..store import TaskStore

    if case in ("list", "polars", "depends", "parquet", "reader", "lazy"):
        from ..store.batch import warm_up

        warm_up()  # steady state: DuckDB's one-time start (~0.15 s a process) is not timed
    if is_dispatch(case):
        template = _dispatch_template(folder, existing)
    else:
        template = _template(folder, existing, key_bytes)
    path = _fresh_store(folder, template, run)
    if case in ("parquet", "reader", "lazy"):
        return _timed_parquet(path, _plan_file(folder, rows, existing, key_bytes), case)
    if case in ("polars", "depends"):  # read as a user's frame is, not built here
        with TaskStore.open(path) as store:
            df = pl.read_parquet(_plan_file(folder, rows, existing, key_bytes))
            if case == "depends":  # half the rows wait for the other half
                df = with_dependencies(df)
            return timed_batch(store, df), False
    df = _plan(rows, existing, key_bytes)
    if case == "one_by_one":
        sample = min(rows, ONE_BY_ONE_SAMPLE)
        subs = _submissions(df.head(sample))
        with TaskStore.open(path) as store:
            t0 = time.perf_counter()
            for sub in subs:
                store.submit(sub)
            took = time.perf_counter() - t0
        return took * rows / sample, sample < rows
    if is_dispatch(case):
        import asyncio

        from ..model import TaskCompleted
        from ..scheduler import Scheduler

        sample = min(rows, DISPATCH_SAMPLE)
        noops = _noop_plan(sample, seed=3, start=10 * (existing + rows))
        settings = control_settings(case, noops["group"].unique().drop_nulls().to_list())
        with TaskStore.open(path) as store:
            store.submit_batch(noops)
            prepare_control(store, case)

        async def noop(ctx: Any) -> None:
            return None

        async def first_completions() -> float:
            """Until ``sample`` tasks completed (of the store's, whichever come first)."""
            async with Scheduler(
                path, executors={"noop": noop}, max_concurrency=16, **settings
            ) as sched:
                events = sched.subscribe(maxsize=4 * sample)
                t0 = time.perf_counter()
                done = 0
                async for event in events:
                    if isinstance(event, TaskCompleted):
                        done += 1
                        if done == sample:
                            return time.perf_counter() - t0
            raise RuntimeError("the scheduler stopped before the sample completed")

        took = asyncio.run(first_completions())
        return took * rows / sample, sample < rows
    if case == "list":
        subs = _submissions(df)
        with TaskStore.open(path) as store:
            t0 = time.perf_counter()
            store.submit_batch(subs)
            return time.perf_counter() - t0, False
    # the two SQLite-only loaders work on a store with the same schema and pragmas
    TaskStore.open(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA cache_size = -65536")
    base = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence").fetchone()[0]
    if case == "executemany":
        t0 = time.perf_counter()
        now = time.time()
        from ..store.keys import key_hash

        data = [
            (base + i + 1, t, k, g, p, base + i + 1, pl_.encode(), b, now, key_hash(t, k))
            for i, (t, k, g, p, pl_, b) in enumerate(df.iter_rows())
        ]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(_INSERT.replace("INSERT", "INSERT OR IGNORE"), data)
        conn.execute("COMMIT")
        took = time.perf_counter() - t0
    elif case in ("ceiling", "ceiling_chunked"):
        source = folder / f"source-{run}.db"
        source.unlink(missing_ok=True)
        src = sqlite3.connect(source)
        from ..store.keys import key_hash

        src.execute(
            "CREATE TABLE s (task_type TEXT, dedup_key TEXT, group_name TEXT, "
            "priority INTEGER, payload BLOB, expected_net_tx_bytes INTEGER, key_hash INTEGER)"
        )
        src.executemany(
            "INSERT INTO s VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                (*row, key_hash(row[0], row[1]))
                for row in df.with_columns(pl.col("payload").cast(pl.Binary)).iter_rows()
            ),
        )
        src.commit()
        src.close()
        conn.execute("ATTACH ? AS src", (str(source),))
        conn.execute("SELECT COUNT(*) FROM src.s").fetchone()  # warm the page cache
        # ceiling_chunked: in the transactions submit_batch commits a plan of this size in
        # by default (one up to 100,000 rows, else 10,000 rows each)
        step = rows if case == "ceiling" or rows <= 100_000 else 10_000
        t0 = time.perf_counter()
        for lo in range(0, rows, step):
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(
                # the rows as a batch writes them: its batch id too (schema 7)
                "INSERT OR IGNORE INTO tasks (id, task_type, dedup_key, group_name, priority, "
                "queue_pos, payload, expected_net_tx_bytes, created_at, key_hash, batch_id) "
                "SELECT :base + rowid, task_type, dedup_key, group_name, priority, "
                ":base + rowid, payload, expected_net_tx_bytes, :now, key_hash, 1 FROM src.s "
                "WHERE rowid > :lo AND rowid <= :hi",
                {"base": base, "now": time.time(), "lo": lo, "hi": lo + step},
            )
            conn.execute("COMMIT")
        took = time.perf_counter() - t0
        conn.execute("DETACH src")
        source.unlink()
    else:
        raise SystemExit(f"unknown case {case!r}")
    conn.close()
    return took, False


def worker_main(argv: list[str]) -> None:
    """``python -m taskmill.bench CASE ROWS EXISTING FOLDER RUN [KEY_BYTES [DB_URL
    [WORKERS]]]`` → one JSON line (with ``DB_URL``: the case on that PostgreSQL database)."""
    if argv[0] == "dispatch-worker":
        postgres.dispatch_worker(*argv[1:4])
        return
    case, rows, existing, folder, run = argv[:5]
    key_bytes = int(argv[5]) if len(argv) > 5 else 0
    url = argv[6] if len(argv) > 6 else ""
    extra: dict[str, float] = {}
    if case == "plan":  # written in a process of its own: see measure()
        _plan(int(rows), int(existing), key_bytes).write_parquet(
            _plan_file(Path(folder), int(rows), int(existing), key_bytes)
        )
        print(json.dumps({}))
        return
    if case == "template":  # built in a process of its own: not in any case's peak memory
        if is_dispatch(run):
            _dispatch_template(Path(folder), int(existing))
        else:
            _template(Path(folder), int(existing), key_bytes)
        print(json.dumps({}))
        return
    if url:
        if is_dispatch(case):
            took, extrapolated = postgres.dispatch(
                url, int(rows), int(argv[7]), DISPATCH_SAMPLE, case
            )
        else:
            took, extrapolated = postgres.run_case(
                case, int(rows), int(existing), Path(folder), url, key_bytes
            )
    elif case == "stall":
        from ..store.batch import warm_up

        warm_up()
        path = _fresh_store(Path(folder), None, int(run))
        took, extra = _stall(path, _plan(int(rows), int(existing), key_bytes))
        extrapolated = False
    else:
        took, extrapolated = _run_case(
            case, int(rows), int(existing), Path(folder), int(run), key_bytes
        )
    extra |= {f"phase_{name}": seconds for name, seconds in LAST_PHASES.items()}
    peak = peak_mb()
    print(
        json.dumps({"seconds": took, "peak_mb": peak, "extrapolated": extrapolated, "extra": extra})
    )


def peak_mb() -> float:
    """This process's own peak resident memory in MB.

    ``VmHWM`` of ``/proc/self/status`` where there is one (Linux): ``ru_maxrss`` is kept
    across ``fork`` and ``exec``, so a process started by a bigger one reports its
    parent's peak if that was higher (a bench started from a notebook would show the
    notebook's peak for every case)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- driver side


def measure(
    case: str,
    rows: int,
    existing: int,
    folder: Path,
    repeat: int,
    key_bytes: int = 0,
    db: str = "",
    workers: int = 0,
) -> Result:
    """``repeat`` runs of one case, each a fresh worker process on a fresh store (with
    ``db``, an admin URL of a PostgreSQL server: a fresh database on it per run)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    plan_file = _plan_file(folder, rows, existing, key_bytes)

    def helper(*args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "taskmill.bench", *args, str(key_bytes)],
            capture_output=True,
            env=env,
            check=True,
        )

    if case in ("polars", "depends", "parquet", "reader", "lazy") and not plan_file.exists():
        # written by a process of its own, never by this one: a child inherits its
        # parent's peak memory (Linux keeps ru_maxrss across fork and exec), so a plan
        # built here would show up as every later case's peak
        helper("plan", str(rows), str(existing), str(folder), "0")
    if existing and case not in EMPTY_ONLY and not db:
        kind = case if is_dispatch(case) else "load"
        helper("template", "0", str(existing), str(folder), kind)
    runs: list[float] = []
    extras: list[dict[str, float]] = []
    peak = 0.0
    extrapolated = False
    for run_no in range(repeat):  # one process per run: each run's own peak memory
        argv = [case, str(rows), str(existing), str(folder), str(run_no), str(key_bytes)]
        with contextlib.ExitStack() as stack:
            if db:
                argv += [stack.enter_context(postgres.fresh_database(db)), str(workers)]
            proc = subprocess.run(
                [sys.executable, "-m", "taskmill.bench", *argv],
                capture_output=True,
                text=True,
                env=env,
                check=False,
            )
        if proc.returncode != 0:
            raise RuntimeError(f"bench worker {case} {rows} failed:\n{proc.stderr}")
        data = json.loads(proc.stdout.strip().splitlines()[-1])
        runs.append(data["seconds"])
        extras.append(data.get("extra") or {})
        peak = max(peak, data["peak_mb"])
        extrapolated = data["extrapolated"]
    extra = {k: statistics.median(e[k] for e in extras) for k in extras[0]} if extras else {}
    return Result(
        case,
        rows,
        existing,
        statistics.median(runs),
        runs,
        peak,
        extrapolated,
        extra,
        key_bytes,
        "postgres" if db else "sqlite",
        workers,
    )


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import duckdb
    import polars

    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, Python {platform.python_version()}, "
        f"SQLite {sqlite3.sqlite_version}, duckdb {duckdb.__version__}, "
        f"polars {polars.__version__}"
    )


def run(
    sizes: list[int],
    existing: list[int],
    cases: list[str],
    repeat: int,
    echo: Any = print,
    key_bytes: int = 0,
    db: str = "",
    workers: tuple[int, ...] = (1, 2, 4),
    server_info: dict[str, Any] | None = None,
) -> list[Result]:
    """Every case at every batch and store size.  ``db``: run on PostgreSQL instead (a
    ``postgresql://`` URL, or ``postgres`` for a throwaway durable server, see
    :func:`taskmill.bench.postgres.server`); ``workers``: the worker counts of its
    ``dispatch``; ``server_info`` is filled with what the run used of the server."""
    results: list[Result] = []
    with contextlib.ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="taskmill-bench-")))
        admin = ""
        if db:
            wrong = sorted(set(cases) - set(postgres.PG_CASES))
            if wrong:
                raise ValueError(f"not a PostgreSQL case: {', '.join(wrong)}")
            admin, info = stack.enter_context(postgres.server(db))
            info["version"] = postgres.server_version(admin)
            if server_info is not None:
                server_info.update(info)
        elif set(cases) & {"pgqueuer", "procrastinate"}:
            raise ValueError("pgqueuer and procrastinate run on PostgreSQL only (--db)")
        for ex in existing:
            for rows in sizes:
                for case in cases:
                    if (case in EMPTY_ONLY or (db and is_dispatch(case))) and ex:
                        continue  # measured once, on an empty store
                    # dispatch with 1, 2, 4 … workers; a control's cost with one
                    counts = (
                        workers
                        if db and case == "dispatch"
                        else (1,)
                        if db and is_dispatch(case)
                        else (0,)
                    )
                    for n in counts:
                        on = f" [postgres{f', {n} workers' if n else ''}]" if db else ""
                        echo(f"  {case:<13} {rows:>9,} rows into {ex:>9,}{on} …", err=True)
                        results.append(measure(case, rows, ex, folder, repeat, key_bytes, admin, n))
    return results


def table(results: list[Result]) -> str:
    """A Markdown table with ratios to the engine ceiling (its own backend's) and to
    one-by-one submit; PostgreSQL rows are named ``case [postgres]`` and, when pgqueuer
    was measured, compared with it too."""
    ceiling = {(r.backend, r.rows, r.existing): r.seconds for r in results if r.case == "ceiling"}
    chunked = {
        (r.backend, r.rows, r.existing): r.seconds for r in results if r.case == "ceiling_chunked"
    }
    single = {r.rows: r.seconds for r in results if r.case == "one_by_one"}
    empty = {(r.backend, r.case, r.workers, r.rows): r.seconds for r in results if not r.existing}
    pgqueuer = {(r.rows, r.existing): r.seconds for r in results if r.case == "pgqueuer"}
    peer = " × faster than pgqueuer |" if pgqueuer else ""
    lines = [
        "| case | rows | existing | median s | rows/s | × ceiling |"
        + (" × ceiling in chunks |" if chunked else "")
        + f" × empty store | × faster than one-by-one |{peer} peak MB |",
        "|---|---:|---:|---:|---:|---:|"
        + ("---:|" if chunked else "")
        + "---:|---:|"
        + ("---:|" if pgqueuer else "")
        + "---:|",
    ]
    for r in results:
        if r.case == "stall":
            continue
        c, s = ceiling.get((r.backend, r.rows, r.existing)), single.get(r.rows)
        e = empty.get((r.backend, r.case, r.workers, r.rows)) if r.existing else None
        name = f"{r.case} (extrapolated)" if r.extrapolated else r.case
        if r.key_bytes:
            name += f" ({r.key_bytes}-byte keys)"
        if r.backend != "sqlite":
            plural = "s" if r.workers > 1 else ""
            name += f" [{r.backend}" + (f", {r.workers} worker{plural}]" if r.workers else "]")
        vs_ceiling = f"{r.seconds / c:.2f}" if c and not is_dispatch(r.case) else "–"
        vs_empty = f"{r.seconds / e:.2f}" if e else "–"
        vs_single = f"{s / r.seconds:.1f}" if s and not is_dispatch(r.case) else "–"
        q = pgqueuer.get((r.rows, r.existing))
        loader = not is_dispatch(r.case) and r.case not in (
            "ceiling",
            "ceiling_chunked",
            "pgqueuer",
        )
        vs_peer = (f" {q / r.seconds:.1f} |" if q and loader else " – |") if pgqueuer else ""
        cc = chunked.get((r.backend, r.rows, r.existing))
        vs_chunked = (f" {r.seconds / cc:.2f} |" if cc and loader else " – |") if chunked else ""
        lines.append(
            f"| {name} | {r.rows:,} | {r.existing:,} | {r.seconds:.3f} | "
            f"{r.rows_per_s:,.0f} | {vs_ceiling} |{vs_chunked} {vs_empty} | {vs_single} |"
            f"{vs_peer} {r.peak_mb:.0f} |"
        )
    phased = [r for r in results if any(k.startswith("phase_") for k in r.extra)]
    if phased:
        lines += ["", *phase_table(phased, ceiling)]
    stalls = [r for r in results if r.case == "stall"]
    if stalls:
        lines += [
            "",
            "| no-op tasks completing during a batch | rows | longest gap s | merge s "
            "| gap ÷ merge | batch s | completions during it |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in stalls:
            merge = r.extra.get("merge_s", 0.0)
            ratio = f"{r.seconds / merge:.2f}" if merge else "–"
            lines.append(
                f"| stall | {r.rows:,} | {r.seconds:.3f} | {merge:.3f} | {ratio} | "
                f"{r.extra.get('batch_s', 0.0):.3f} | {r.extra.get('completions', 0):,.0f} |"
            )
    return "\n".join(lines)


#: The phases of a batch on the caller's thread (they add up to its time, less a few ms of
#: bookkeeping), then the backend's own figures: DuckDB's copy (overlapped with the merge
#: on SQLite) and the time the store's write lock was held.
PHASES = ("prepare", "stage", "merge", "outcome")
BACKEND_PHASES = ("staging", "write_lock")


def phase_table(results: list[Result], ceiling: dict[tuple[str, int, int], float]) -> list[str]:
    """Where each batch's time went (``BatchOutcome.phases``, medians over the runs), in
    seconds and in µs per row; ``merge`` is set beside the engine's ceiling."""
    lines = [
        "| where the time went | rows | µs/row | prepare s | stage s | merge s | outcome s "
        "| merge × ceiling | DuckDB copy s | write lock s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        got = {k.removeprefix("phase_"): v for k, v in r.extra.items() if k.startswith("phase_")}
        c = ceiling.get((r.backend, r.rows, r.existing))
        name = r.case + (f" ({r.key_bytes}-byte keys)" if r.key_bytes else "")
        name += f" [{r.backend}]" if r.backend != "sqlite" else ""
        name += f" into {r.existing:,}" if r.existing else ""
        cells = " | ".join(f"{got.get(k, 0.0):.3f}" for k in PHASES)
        own = " | ".join(f"{got.get(k, 0.0):.3f}" for k in BACKEND_PHASES)
        vs = f"{got.get('merge', 0.0) / c:.2f}" if c else "–"
        lines.append(
            f"| {name} | {r.rows:,} | {1e6 * r.seconds / max(r.rows, 1):.2f} | {cells} | {vs} "
            f"| {own} |"
        )
    return lines


def to_json(results: list[Result], server: dict[str, Any] | None = None) -> str:
    """The results as JSON, with the machine and (``--db``) the server they ran on."""
    return report_json(
        "results", [{**asdict(r), "rows_per_s": r.rows_per_s} for r in results], server
    )


def report_json(name: str, rows: list[dict[str, Any]], server: dict[str, Any] | None) -> str:
    """A benchmark's report as JSON: the machine, its ``rows`` under ``name``, and the
    PostgreSQL server they ran on (when one was used)."""
    report: dict[str, Any] = {"machine": machine(), name: rows}
    if server is not None:
        report["postgres"] = server
    return json.dumps(report, indent=2)
