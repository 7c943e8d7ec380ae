"""``taskmill bench --db …``: the PostgreSQL cases of :mod:`taskmill.bench`.

Every run works in a database of its own, created for it on the server and dropped after
it (``taskmill_bench_<pid>_<n>``): no other data on the server is read or changed.
``--db postgres`` starts a throwaway, durable server (fsync on: a benchmark must not
measure ``fsync=off``) for the whole bench and removes it afterwards.

Cases:

- ``polars``        ``PostgresStore.submit_batch`` of the plan as a polars DataFrame;
- ``parquet``       ``submit_batch`` of the plan's Parquet file;
- ``ceiling``       PostgreSQL alone: ``INSERT … SELECT … ON CONFLICT DO NOTHING`` of the
                    same rows (already in a table on the server, key hashes included)
                    into a fresh taskmill schema;
- ``pgqueuer``      pgqueuer's list ``Queries.enqueue`` of the same rows with dedupe keys
                    (``on_conflict="skip"``: a key already queued is left alone), into its
                    default (``durable``: logged) tables;
- ``procrastinate`` procrastinate's ``batch_defer_async`` of the same rows (its batch takes
                    one ``queueing_lock`` for all jobs, so the keys travel as task
                    arguments and nothing is deduplicated: a lower bound on its work);
- ``dispatch``      no-op tasks run to completion by 1, 2, 4 … worker processes on one
                    queue, each a ``Scheduler`` on the database's URL (tasks/s per count),
                    on an empty database only, from a sample of at most
                    ``bench.DISPATCH_SAMPLE`` tasks (extrapolated).

After each loader the rows it left are counted (one per distinct key; every row for
procrastinate): a case that silently loaded nothing would fail, not look fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, LiteralString

from .cases import (
    _keyed_plan,
    _noop_plan,
    _plan,
    _plan_file,
    control_settings,
    prepare_control,
    timed_batch,
    with_dependencies,
)

#: The cases ``--db`` runs, in their report order.
PG_CASES = (
    "polars",
    "depends",
    "parquet",
    "ceiling",
    "pgqueuer",
    "procrastinate",
    "dispatch",
    "dispatch_groups",
    "dispatch_budgets",
    "dispatch_rates",
    "dispatch_preempt",
    "dispatch_aging",
    "dispatch_schedules",
)
#: The other queues measured next to taskmill (PostgreSQL only).
PEERS = ("pgqueuer", "procrastinate")
#: Worker process counts of ``dispatch`` unless told.
DISPATCH_WORKERS = (1, 2, 4)
#: Scheduler concurrency of each dispatch worker (as the SQLite case's).
DISPATCH_CONCURRENCY = 16
#: What ``--db`` takes for a throwaway server.
THROWAWAY = ("postgres", "postgresql", "throwaway")

_counter = itertools.count()


def is_url(db: str) -> bool:
    """Whether ``db`` is a PostgreSQL URL (not a request for a throwaway server)."""
    return db.startswith(("postgresql://", "postgres://"))


@contextlib.contextmanager
def server(db: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """The admin URL to create run databases through, and what to report about it.

    ``db`` is a ``postgresql://`` URL, or one of :data:`THROWAWAY` for a throwaway durable
    server started here and removed on exit."""
    if is_url(db):
        yield db, {"throwaway": False}
        return
    if db.lower() not in THROWAWAY:
        raise ValueError(f"--db takes a postgresql:// URL or 'postgres', not {db!r}")
    from ..testing.pgserver import ThrowawayPostgres

    with ThrowawayPostgres(durable=True) as pg:
        assert pg.folder is not None
        yield pg.url(), {"throwaway": True, "folder": str(pg.folder), "url": pg.url()}


def _with_database(url: str, name: str) -> str:
    """``url`` naming database ``name`` instead (query string kept)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


@contextlib.contextmanager
def fresh_database(admin_url: str) -> Iterator[str]:
    """A new empty database on the server of ``admin_url``; dropped (connections and all)
    on exit.  Yields its URL."""
    import psycopg
    from psycopg import sql

    name = f"taskmill_bench_{os.getpid()}_{next(_counter)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield _with_database(admin_url, name)
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


def server_version(admin_url: str) -> str:
    """The server's ``server_version``."""
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "?"


# --------------------------------------------------------------------------- worker side


def _rows(df: Any) -> list[tuple[Any, ...]]:
    """The plan's rows: task_type, dedup_key, group, priority, payload bytes, net tx."""
    return [(t, k, g, p, pl_.encode(), b) for t, k, g, p, pl_, b in df.iter_rows()]


def _prefill(case: str, url: str, existing: int, key_bytes: int) -> None:
    """``existing`` tasks already queued (untimed), half the batch's keys among them."""
    if not existing:
        return
    df = _keyed_plan(existing, 0, key_bytes)
    if case == "pgqueuer":
        asyncio.run(_pgqueuer(url, _rows(df), install=False))
    elif case == "procrastinate":
        asyncio.run(_procrastinate(url, _rows(df)))
    else:
        from ..store import TaskStore

        with TaskStore.open(url) as store:
            store.submit_batch(df)


def _warm_up() -> None:
    """Steady state, as on SQLite: DuckDB's start and the load of its PostgreSQL extension
    (once per process) are not timed."""
    from ..store import batch

    batch.warm_up()
    with batch._DUCK_LOCK:
        batch.duckdb_with_postgres()


def run_case(
    case: str, rows: int, existing: int, folder: Path, url: str, key_bytes: int
) -> tuple[float, bool]:
    """One timed run of ``case`` in the fresh database at ``url``; (seconds, extrapolated)."""
    from ..store import TaskStore

    if case in ("polars", "depends", "parquet"):
        _warm_up()
    if case == "pgqueuer":
        asyncio.run(_pgqueuer_install(url))
    _prefill(case, url, existing, key_bytes)
    if case == "parquet":
        plan = _plan_file(folder, rows, existing, key_bytes)
        with TaskStore.open(url) as store:
            took = timed_batch(store, plan)
        _check_loaded(case, url, _plan(rows, existing, key_bytes), existing, key_bytes)
        return took, False
    if case in ("polars", "depends"):  # read as a user's frame is, not built here
        import polars as pl

        df = pl.read_parquet(_plan_file(folder, rows, existing, key_bytes))
        if case == "depends":  # half the rows wait for the other half
            df = with_dependencies(df)
        with TaskStore.open(url) as store:
            took = timed_batch(store, df)
        _check_loaded(case, url, df, existing, key_bytes)
        return took, False
    df = _plan(rows, existing, key_bytes)
    if case == "ceiling":
        took = _ceiling(url, _rows(df))
    elif case == "pgqueuer":
        took = asyncio.run(_pgqueuer(url, _rows(df), install=False))
    elif case == "procrastinate":
        took = asyncio.run(_procrastinate(url, _rows(df)))
    else:
        raise SystemExit(f"unknown PostgreSQL case {case!r}")
    _check_loaded(case, url, df, existing, key_bytes)
    return took, False


#: The table each case loads into.
_TABLES: dict[str, LiteralString] = {"pgqueuer": "pgqueuer", "procrastinate": "procrastinate_jobs"}


def _check_loaded(case: str, url: str, df: Any, existing: int, key_bytes: int) -> None:
    """Raise unless the case left the rows it should have: one per distinct key (the
    batch's and the prefilled ones), or every row for procrastinate, which does not
    deduplicate a batch."""
    import psycopg

    if case == "procrastinate":
        expected = existing + df.height
    else:
        keys = set(df["dedup_key"].to_list())
        if existing:
            keys |= set(_keyed_plan(existing, 0, key_bytes)["dedup_key"].to_list())
        expected = len(keys)
    table = _TABLES.get(case, "taskmill.tasks")
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    found = int(row[0]) if row else 0
    if found != expected:
        raise RuntimeError(f"{case}: {found} rows in {table}, expected {expected}")


_CEILING = (
    "INSERT INTO taskmill.tasks (id, task_type, dedup_key, group_name, priority, queue_pos, "
    "payload, expected_net_tx_bytes, created_at, key_hash, batch_id) "
    "SELECT id, task_type, dedup_key, group_name, priority, id, payload, "
    "expected_net_tx_bytes, %(now)s, key_hash, 1 "
    "FROM (SELECT nextval('taskmill.task_ids') AS id, s.* FROM public.bench_source s "
    "ORDER BY s.ord) n "
    "ON CONFLICT (key_hash) WHERE key_hash IS NOT NULL DO NOTHING"
)


def _ceiling(url: str, rows: list[tuple[Any, ...]]) -> float:
    """PostgreSQL's own limit: the rows, key hashes computed, already in a table on the
    server; one ``INSERT … SELECT`` into the store's schema (made by ``ensure_schema``)."""
    import psycopg

    from ..store.keys import POSTGRES_KEY_HASH
    from ..store.postgres.migrate import ensure_schema

    with psycopg.connect(url, autocommit=True) as conn:
        ensure_schema(conn)
        conn.execute(
            "CREATE TABLE public.bench_source (ord bigint, task_type text, dedup_key text, "
            "group_name text, priority smallint, payload bytea, "
            "expected_net_tx_bytes bigint, key_hash bigint)"
        )
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY public.bench_source (ord, task_type, dedup_key, group_name, priority, "
                "payload, expected_net_tx_bytes) FROM STDIN"
            ) as copy,
        ):
            for i, row in enumerate(rows):
                copy.write_row((i, *row))
        conn.execute(f"UPDATE public.bench_source SET key_hash = {POSTGRES_KEY_HASH}")
        conn.execute("VACUUM ANALYZE public.bench_source")
        conn.execute("SELECT count(*) FROM public.bench_source").fetchone()  # cached
        t0 = time.perf_counter()
        with conn.transaction():
            conn.execute(_CEILING, {"now": time.time()})
        return time.perf_counter() - t0


def _has_table(url: str, name: str) -> bool:
    """Whether the database at ``url`` has table ``name`` (in its search path)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass(%s)", (name,)).fetchone()
    return row is not None and row[0] is not None


async def _pgqueuer_install(url: str) -> None:
    """pgqueuer's own schema in the database (untimed)."""
    import psycopg
    from pgqueuer.db import PsycopgDriver
    from pgqueuer.queries import Queries

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await Queries(PsycopgDriver(conn)).install()


async def _pgqueuer(url: str, rows: list[tuple[Any, ...]], *, install: bool) -> float:
    """pgqueuer's list enqueue of ``rows``, keys as dedupe keys; seconds it took."""
    import psycopg
    from pgqueuer.db import PsycopgDriver
    from pgqueuer.queries import Queries

    if install:
        await _pgqueuer_install(url)
    entrypoints = [r[0] for r in rows]
    keys = [r[1] for r in rows]
    priorities = [int(r[3]) for r in rows]
    payloads = [r[4] for r in rows]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        queries = Queries(PsycopgDriver(conn))
        t0 = time.perf_counter()
        await queries.enqueue(
            entrypoints, payloads, priorities, dedupe_key=keys, on_conflict="skip"
        )
        return time.perf_counter() - t0


async def _procrastinate(url: str, rows: list[tuple[Any, ...]]) -> float:
    """procrastinate's ``batch_defer_async`` of ``rows`` (schema applied first, untimed);
    seconds it took."""
    import procrastinate

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="sync.upload")
    def upload(**kwargs: Any) -> None:  # pragma: no cover - never run
        return None

    kwargs = [
        {"key": k, "group": g, "priority": p, "payload": payload.decode(), "bytes": b}
        for _, k, g, p, payload, b in rows
    ]
    async with app.open_async():
        if not _has_table(url, "procrastinate_jobs"):  # a prefilled database has it
            await app.schema_manager.apply_schema_async()
        t0 = time.perf_counter()
        await upload.batch_defer_async(*kwargs)
        return time.perf_counter() - t0


# --------------------------------------------------------------------------- dispatch


def dispatch(
    url: str, rows: int, workers: int, sample: int, case: str = "dispatch"
) -> tuple[float, bool]:
    """Seconds ``workers`` processes take to run ``min(rows, sample)`` queued no-op tasks
    to completion, extrapolated to ``rows``.

    Each worker starts (imports, connects) first; the clock starts when all are ready and
    told to go, and stops when the last one saw the queue empty."""
    from ..store import TaskStore

    n = min(rows, sample)
    noops = _noop_plan(n, seed=3)
    with TaskStore.open(url) as store:
        store.submit_batch(noops)
        prepare_control(store, case)
    groups = json.dumps(noops["group"].unique().drop_nulls().to_list())
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "taskmill.bench", "dispatch-worker", url, case, groups],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(workers)
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"dispatch worker failed to start:\n{proc.communicate()[1]}")
        t0 = time.time()
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        ends = []
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"dispatch worker failed:\n{err}")
            ends.append(json.loads(out.strip().splitlines()[-1])["end"])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    with TaskStore.open(url) as store:
        counts = store.counts()
    if counts["completed"] < n:  # (and the tasks of the schedules case's occurrences)
        raise RuntimeError(f"dispatch: {counts['completed']} of {n} tasks completed")
    took = max(ends) - t0
    return took * rows / n, n < rows


def dispatch_worker(url: str, case: str = "dispatch", groups: str = "[]") -> None:
    """One dispatch worker: a ``Scheduler`` on ``url`` once told to go, until no no-op
    task is pending or running; prints the time it saw that (a JSON line)."""
    from ..scheduler import Scheduler
    from ..store import TaskStore

    async def noop(ctx: Any) -> None:
        return None

    async def go() -> float:
        settings = control_settings(case, json.loads(groups))
        async with Scheduler(
            url, executors={"noop": noop}, max_concurrency=DISPATCH_CONCURRENCY, **settings
        ) as sched:
            while sched.store.has_work(["noop"]):
                await asyncio.sleep(0.02)
            return time.time()  # the queue drained: closing the scheduler is not dispatch

    with TaskStore.open(url):  # connected and migrated before the clock starts
        pass
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        raise SystemExit("dispatch worker: no go")
    print(json.dumps({"end": asyncio.run(go())}), flush=True)
