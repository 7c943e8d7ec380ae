"""``python -m taskmill.bench.browse [--db URL|postgres] [--tasks N] [--repeat R]``: what
the dashboard's reads cost on a large store — :meth:`~taskmill.TaskStore.browse` (the
first page, a page deep in the store, the filters, common and rare),
:meth:`~taskmill.TaskStore.throughput` and :meth:`~taskmill.TaskStore.workers`.

The store (SQLite in a temporary folder; with ``--db`` a database of its own on that
PostgreSQL server, ``--db postgres`` a throwaway server started for the run) holds
``--tasks`` tasks (1M by default) loaded by ``submit_batch`` in plans of 250k: keys
``user/00000042`` (one common prefix), eight groups, tags ``env`` (``prod``/``dev``, half
each) and ``shard`` (1,000 values).  Then, as a store that has run for two days would
look, every task but one in 20 (ids 1, 21, 41 …) is moved to history in one statement
(finish times spread evenly over the last two days: the last 30 minutes hold about 1%; one
in 1,000 ``failed``, one in 50 ``cancelled``, the rest ``completed``), PostgreSQL's tables
are analysed as autovacuum would, and eight workers claim 100 tasks each.  Each read is
timed ``--repeat`` times (5); the median and the best are printed, with the rows it
returned.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl

from ..store import TaskStore
from .postgres import fresh_database, is_url, server

__all__ = ["load", "main", "measure", "run"]

#: Tasks a plan of the load holds.
PLAN_ROWS = 250_000
#: How many workers claim tasks, and how many each.
WORKERS, CLAIMED = 8, 100
#: The span the finish times of history are spread over (seconds).
SPAN = 2 * 24 * 3600.0

#: Every task but one in 20 moves to history (``{t}``: the schema's prefix of the
#: tables): created, started and finished in id order over :data:`SPAN`.
_FINISH = """
INSERT INTO {t}history (id, task_type, dedup_key, group_name, priority, payload, label,
    expected_read_bytes, expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes,
    max_retries, status, attempts, last_error, created_at, started_at, finished_at,
    batch_id, parent_id)
SELECT id, task_type, dedup_key, group_name, priority, payload, label,
    expected_read_bytes, expected_write_bytes, expected_net_rx_bytes, expected_net_tx_bytes,
    max_retries,
    CASE WHEN id % 1000 = 7 THEN 'failed' WHEN id % 50 = 3 THEN 'cancelled'
         ELSE 'completed' END,
    1, CASE WHEN id % 1000 = 7 THEN 'boom' END,
    {start} + id * {step}, {start} + id * {step}, {start} + id * {step} + 1,
    batch_id, parent_id
FROM {t}tasks WHERE id % 20 <> 1
"""
_FINISHED = "DELETE FROM {t}tasks WHERE id % 20 <> 1"


def _plan(start: int, rows: int) -> pl.DataFrame:
    """Tasks ``start .. start + rows``: keys with one prefix, eight groups, two tags."""
    index = pl.col("i")
    env = pl.when(index % 2 == 0).then(pl.lit("prod")).otherwise(pl.lit("dev"))
    return pl.select(i=pl.int_range(start, start + rows)).select(
        task_type=pl.lit("sync.upload"),
        dedup_key=pl.format("user/{}", index.cast(pl.String).str.zfill(8)),
        group=pl.format("g{}", index % 8),
        tags=pl.struct(env=env, shard=(index % 1_000).cast(pl.String)),
    )


def _finish_most(location: str | Path, now: float, tasks: int) -> None:
    """Move every task but one in 20 to history, as :data:`_FINISH` says, on the store's
    own engine (outside taskmill: the bench's load, not a way to use a store)."""
    step = SPAN / max(1, tasks)
    start = now - SPAN - 1
    if isinstance(location, str) and is_url(location):
        import psycopg
        from psycopg import sql

        prefix = sql.SQL("taskmill.")
        with psycopg.connect(location, autocommit=True) as conn:
            finish = sql.SQL(_FINISH).format(
                t=prefix, start=sql.Literal(start), step=sql.Literal(step)
            )
            with conn.transaction():
                conn.execute(finish)
                conn.execute(sql.SQL(_FINISHED).format(t=prefix))
            conn.execute("VACUUM ANALYZE taskmill.tasks")
            conn.execute("VACUUM ANALYZE taskmill.history")
            conn.execute("VACUUM ANALYZE taskmill.task_tags")
        return
    import sqlite3

    conn = sqlite3.connect(location, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(_FINISH.format(t="", start=repr(start), step=repr(step)))
        conn.execute(_FINISHED.format(t=""))
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def load(location: str | Path, tasks: int, echo: Callable[[str], None] = print) -> None:
    """Fill the empty store at ``location`` as the module's docstring says."""
    started = time.perf_counter()
    with TaskStore.open(location) as store:
        for first in range(0, tasks, PLAN_ROWS):
            store.submit_batch(_plan(first, min(PLAN_ROWS, tasks - first)))
        now = store.now()
    echo(f"loaded {tasks:,} tasks in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    _finish_most(location, now, tasks)
    with TaskStore.open(location) as store:
        for _ in range(WORKERS):
            store.claim(CLAIMED, task_types=["sync.upload"], owner=store.new_owner())
        counts = {k: v for k, v in store.counts().items() if v}
    echo(f"finished most of them in {time.perf_counter() - started:.1f} s: {counts}")


def cases(store: TaskStore) -> list[tuple[str, Callable[[], pl.DataFrame]]]:
    """The reads timed, by name, on the loaded ``store``."""
    last = int(store.browse(limit=1)["id"][0])
    middle = last // 2
    batch = store.batches()["batch_id"].to_list()[-1]  # newest first: the oldest
    return [
        ("browse() first page", lambda: store.browse()),
        (f"browse(before={middle:,}) deep page", lambda: store.browse(before=middle)),
        ("browse(limit=1000)", lambda: store.browse(limit=1000)),
        ("browse(status='completed') common", lambda: store.browse(status="completed")),
        ("browse(status='pending') active only", lambda: store.browse(status="pending")),
        ("browse(status='failed') 1 in 1,000", lambda: store.browse(status="failed")),
        ("browse(status='expired') none: all history", lambda: store.browse(status="expired")),
        (
            "browse(task_type=…, group='g3') common",
            lambda: store.browse(task_type="sync.upload", group="g3"),
        ),
        ("browse(key_prefix='user/') every key", lambda: store.browse(key_prefix="user/")),
        ("browse(key_prefix='user/0001') 1%, deep", lambda: store.browse(key_prefix="user/0001")),
        ("browse(tags={'env': 'prod'}) half", lambda: store.browse(tags={"env": "prod"})),
        ("browse(tags={'shard': '42'}) 1 in 1,000", lambda: store.browse(tags={"shard": "42"})),
        (
            "browse(tags=shard & env) two pairs",
            lambda: store.browse(tags={"shard": "42", "env": "prod"}),
        ),
        (f"browse(batch_id={batch}) the oldest batch", lambda: store.browse(batch_id=batch)),
        ("throughput(30)", lambda: store.throughput(30)),
        ("throughput(1440)", lambda: store.throughput(1440)),
        ("workers()", lambda: store.workers()),
    ]


def measure(
    location: str | Path, repeat: int = 5, echo: Callable[[str], None] = print
) -> dict[str, float]:
    """Time each read of :func:`cases` ``repeat`` times on the loaded store at
    ``location``; print a line each; the median seconds by name."""
    medians: dict[str, float] = {}
    with TaskStore.open(location) as store:
        for name, read in cases(store):
            times: list[float] = []
            rows = 0
            for _ in range(repeat):
                started = time.perf_counter()
                rows = read().height
                times.append(time.perf_counter() - started)
            medians[name] = statistics.median(times)
            echo(
                f"{name:<48} {rows:>5} rows  median {medians[name] * 1000:8.2f} ms"
                f"  best {min(times) * 1000:8.2f} ms"
            )
    return medians


@contextlib.contextmanager
def _location(db: str | None) -> Iterator[str | Path]:
    """The empty store to load: a SQLite file in a temporary folder, or a new database on
    the PostgreSQL server ``db`` names (dropped afterwards)."""
    if db is None:
        with tempfile.TemporaryDirectory(prefix="taskmill-browse-") as folder:
            yield Path(folder) / "browse.db"
        return
    with server(db) as (admin, _), fresh_database(admin) as url:
        yield url


def run(
    argv: list[str] | None,
    prog: str,
    timed: Callable[[str | Path, int, Callable[[str], None]], dict[str, float]],
) -> None:
    """The command line of this bench and of ``taskmill.bench.ui``: parse ``argv``, load a
    store, then print what ``timed(location, repeat, echo)`` measures on it."""
    parser = argparse.ArgumentParser(prog=prog)
    parser.add_argument(
        "--db",
        help="a postgresql:// URL to create the run's database through, or 'postgres' "
        "for a throwaway server (default: SQLite in a temporary folder)",
    )
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)

    def echo(line: str) -> None:
        print(line, flush=True)

    with _location(args.db) as location:
        engine = "SQLite" if args.db is None else "PostgreSQL"
        echo(f"{engine}, {args.tasks:,} tasks")
        load(location, args.tasks, echo=echo)
        timed(location, args.repeat, echo)


def main(argv: list[str] | None = None) -> None:
    """Load a store and time the reads (see the module's docstring)."""
    run(argv, "python -m taskmill.bench.browse", measure)


if __name__ == "__main__":
    main()
