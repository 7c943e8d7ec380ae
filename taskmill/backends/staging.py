"""The batch path of the store: DuckDB bulk-copies a prepared part into a staging SQLite
file; the store's own ``sqlite3`` connection attaches it and merges it set-based.

Why a separate staging file: DuckDB's SQLite extension carries its own copy of SQLite,
and two copies in one process do not see each other's locks (closing one copy's file
descriptor can even drop the other's locks).  So DuckDB never opens the live store:
it writes a private file, detaches it, and only then does ``sqlite3`` read it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import polars as pl

from ..columns import STAGED
from ..model import SchedulerError
from .keys import COLLISION, DUCKDB_KEY_HASH
from .sql import q

__all__ = [
    "INSERTING",
    "Stager",
    "decide",
    "duckdb_with_postgres",
    "retried_failures",
    "staging_frame",
    "warm_up",
    "warm_up_in_background",
]

#: The actions of rows that insert a new task (and take a new id).
INSERTING = ("submitted", "superseded")

#: The staging tables' columns, in their order: the row's index and position, then the
#: canonical columns by their stored names (the key hash follows, from DuckDB).
_STAGE_COLUMNS = [
    pl.col("index").alias("ord"),
    pl.int_range(1, pl.len() + 1, dtype=pl.Int64).alias("pos"),
    *(pl.col(c.name).alias(c.stored) for c in STAGED),
]


def staging_frame(part: pl.DataFrame) -> pl.DataFrame:
    """The columns of the staging table, in its order."""
    return part.select(_STAGE_COLUMNS)


def retried_failures(
    part: pl.DataFrame, retries: Sequence[int], matched: Iterable[int] = ()
) -> tuple[list[int], list[int]]:
    """For a batch of :meth:`~taskmill.store.TaskStore.retry_failed`: the rows
    of ``part`` that have a dedup key and no active match (their ``index``, leaving out
    ``matched``), and the history id of the failure each one retries
    (``retries[index]``).  Inside the merge, such a row whose key has a history record
    newer than its failure is passed over (query ``batch_match_retried``)."""
    seen = set(matched)
    keyed = part.filter(pl.col("dedup_key").is_not_null())["index"].to_list()
    ords = [i for i in keyed if i not in seen]
    return ords, [retries[i] for i in ords]


def extension_path(name: str = "sqlite") -> Path:
    """The binary of DuckDB's ``name`` extension (``sqlite`` or ``postgres``) shipped by the
    package ``duckdb-extension-<name>-scanner`` (DuckDB cannot download it at run time)."""
    import duckdb

    package = f"duckdb-extension-{name}-scanner"
    title = {"sqlite": "SQLite", "postgres": "PostgreSQL"}.get(name, name)
    spec = importlib.util.find_spec(package.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise SchedulerError(
            f"the package {package} is not installed (pip install {package}=={duckdb.__version__})",
            kind="store",
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    path = folder / "extensions" / f"v{duckdb.__version__}" / f"{name}_scanner.duckdb_extension"
    if not path.is_file():
        found = sorted(p.name for p in (folder / "extensions").glob("v*"))
        raise SchedulerError(
            f"no {title} extension for duckdb {duckdb.__version__} in {folder} (found: "
            f"{', '.join(found) or 'none'}); install {package} with the same version as duckdb",
            kind="store",
        )
    return path


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


_DUCK: Any = None
_DUCK_LOCK = threading.Lock()


def _duckdb() -> Any:
    """The process's one in-memory DuckDB connection, with the SQLite extension loaded.

    Shared by every store of the process (its first use warms DuckDB up once)."""
    global _DUCK
    if _DUCK is None:
        import duckdb

        con = duckdb.connect(":memory:")
        con.execute(f"LOAD {_quote(str(extension_path()))}")
        con.execute("SET threads = 1")  # staging is one sequential copy; leave cores to SQLite
        _DUCK = con
    return _DUCK


_POSTGRES_LOADED = False


def duckdb_with_postgres() -> Any:
    """:func:`_duckdb` with DuckDB's PostgreSQL extension loaded too (hold
    ``_DUCK_LOCK``)."""
    global _POSTGRES_LOADED
    con = _duckdb()
    if not _POSTGRES_LOADED:
        con.execute(f"LOAD {_quote(str(extension_path('postgres')))}")
        _POSTGRES_LOADED = True
    return con


def warm_up() -> None:
    """Start DuckDB and load its SQLite extension now (about 0.15 s, once per process),
    so that the first batch does not pay for it.  Idempotent and thread-safe."""
    import pyarrow as pa

    with _DUCK_LOCK:
        con = _duckdb()
        con.register("taskmill_warm_up", pa.table({"x": [1]}))
        try:
            con.execute("SELECT x FROM taskmill_warm_up").fetchall()
        finally:
            con.unregister("taskmill_warm_up")


_WARMING: threading.Thread | None = None


def warm_up_in_background() -> None:
    """:func:`warm_up` on a background thread, started once per process."""
    global _WARMING
    with _DUCK_LOCK:
        if _DUCK is not None or _WARMING is not None:
            return
        # not a daemon: exiting while DuckDB starts up aborts the process, so the
        # interpreter waits for it (0.15 s at most) instead
        _WARMING = threading.Thread(target=_quiet_warm_up, name="taskmill-warm-up")
        _WARMING.start()


def _quiet_warm_up() -> None:
    with contextlib.suppress(Exception):  # a real batch reports any problem itself
        warm_up()


def hash_part(con: Any, frame: pl.DataFrame) -> tuple[pl.DataFrame, list[tuple[int, int]]]:
    """``frame`` (staging columns) with each row's key hash (computed by DuckDB on ``con``,
    hold ``_DUCK_LOCK``), less the rows whose hash collides with an earlier row's.

    Returns the frame and those collisions as ``(ord, earlier_ord)`` pairs: rows whose
    hash equals an earlier row's though their keys differ (in-batch duplicates of the
    same key were removed before).  Those rows are not staged; the earlier row goes on.
    Practically always empty."""
    con.register("taskmill_part", frame.select("task_type", "dedup_key").to_arrow())
    try:
        hashed = con.execute(f"SELECT {DUCKDB_KEY_HASH} AS key_hash FROM taskmill_part")
        hashes = pl.from_arrow(hashed.to_arrow_table())
    finally:
        con.unregister("taskmill_part")
    assert isinstance(hashes, pl.DataFrame)
    frame = frame.with_columns(hashes["key_hash"])
    collisions: list[tuple[int, int]] = []
    repeated = frame["key_hash"].is_duplicated() & frame["key_hash"].is_not_null()
    if repeated.any():
        earlier = frame.filter(repeated).select(
            "ord", pl.col("ord").min().over("key_hash").alias("first")
        )
        later = earlier.filter(pl.col("ord") != pl.col("first"))
        collisions = list(later.iter_rows())
        frame = frame.filter(~pl.col("ord").is_in(later["ord"].implode()))
    return frame, collisions


def key_hashes(pairs: pl.DataFrame) -> pl.Series:
    """The key hash of each ``(task_type, dedup_key)`` row of ``pairs``, computed by DuckDB
    (the same as :func:`~taskmill.backends.keys.key_hash`, vectorised)."""
    with _DUCK_LOCK:
        con = _duckdb()
        con.register("taskmill_keys", pairs.select("task_type", "dedup_key").to_arrow())
        try:
            hashed = con.execute(f"SELECT {DUCKDB_KEY_HASH} AS key_hash FROM taskmill_keys")
            table = hashed.to_arrow_table()
        finally:
            con.unregister("taskmill_keys")
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame["key_hash"]


class Stager:
    """Writes batch parts into private staging SQLite files through DuckDB."""

    def __init__(self, store_path: Path) -> None:
        self.store_path = store_path

    def new_path(self) -> Path:
        """A fresh staging file name beside the store (removed by :meth:`discard`)."""
        name = f".{self.store_path.name}.stage-{os.getpid()}-{uuid.uuid4().hex[:10]}.sqlite"
        return self.store_path.parent / name

    @staticmethod
    def create(path: Path) -> None:
        """An empty staging file (just the staging table)."""
        conn = sqlite3.connect(path)
        try:
            conn.execute(q("staging_schema"))
            conn.commit()
        finally:
            conn.close()

    @staticmethod
    def fill(path: Path, frame: pl.DataFrame) -> list[tuple[int, int]]:
        """Bulk-copy ``frame`` (staging columns) into the staging file at ``path``, with
        each row's key hash.

        Returns the key-hash collisions inside the frame as ``(ord, earlier_ord)`` pairs:
        rows whose hash equals an earlier row's though their keys differ (in-batch
        duplicates of the same key were removed before).  Those rows are not staged;
        the earlier row goes on.  Practically always empty."""
        with _DUCK_LOCK:
            con = _duckdb()
            frame, collisions = hash_part(con, frame)
            con.execute(f"ATTACH {_quote(str(path))} AS taskmill_stage (TYPE sqlite)")
            try:
                con.register("taskmill_part", frame.to_arrow())
                try:
                    con.execute("INSERT INTO taskmill_stage.s SELECT * FROM taskmill_part")
                finally:
                    con.unregister("taskmill_part")
            finally:
                con.execute("DETACH taskmill_stage")
            return collisions

    def sweep(self, alive: Callable[[int], bool]) -> int:
        """Delete staging files left beside the store by processes that died mid-batch."""
        removed = 0
        pattern = f".{self.store_path.name}.stage-*.sqlite"
        for path in self.store_path.parent.glob(pattern):
            pid = path.name[len(f".{self.store_path.name}.stage-") :].split("-", 1)[0]
            if pid.isdigit() and not alive(int(pid)):
                self.discard(path)
                removed += 1
        return removed

    @staticmethod
    def discard(path: Path) -> None:
        for suffix in ("", "-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{path}{suffix}")


#: Rows per staging file, and how many files one transaction may use at most.
PART_ROWS = 12_500
MAX_PARTS = 8
#: Rows of a transaction's first staging file: the merge starts as soon as it is filled,
#: while DuckDB fills the others, so a small first file starts the merge early.
FIRST_PART_ROWS = 2_500


def split_parts(rows: pl.DataFrame) -> list[pl.DataFrame]:
    """Split one transaction's rows into staging parts (at most ``MAX_PARTS``): a small
    first part (:data:`FIRST_PART_ROWS`), then the rest in parts of equal size."""
    n = rows.height
    if n <= PART_ROWS:
        return [rows]
    rest = n - FIRST_PART_ROWS
    count = max(1, min(MAX_PARTS - 1, -(-rest // PART_ROWS)))
    size = -(-rest // count)
    first = [rows.slice(0, FIRST_PART_ROWS)]
    return first + [rows.slice(lo, size) for lo in range(FIRST_PART_ROWS, n, size)]


class StagingPipeline:
    """Fills staging files in a background thread, in order, one event per file.

    The first file is filled at once; the others only after :meth:`attached` (the
    store's connection has attached every file of the transaction): DuckDB never writes
    a file while ``sqlite3`` attaches it, and ``sqlite3`` never reads file ``j`` before
    ``ready[j]`` — so the two copies of SQLite never hold one file at the same time,
    and the merge of file ``j`` runs while DuckDB fills file ``j + 1``.
    """

    def __init__(self, stager: Stager, paths: list[Path], parts: list[pl.DataFrame]) -> None:
        self.stager = stager
        self.paths = paths
        self.parts = parts
        self.ready = [threading.Event() for _ in parts]
        self.errors: list[BaseException | None] = [None] * len(parts)
        #: per part: the rows left out for a key-hash collision, as (ord, earlier ord)
        self.collisions: list[list[tuple[int, int]]] = [[] for _ in parts]
        #: seconds DuckDB spent filling each file
        self.seconds: list[float] = [0.0] * len(parts)
        self.filled = [False] * len(parts)
        self.waited = 0.0  # seconds callers of wait() spent blocked
        self._stop = threading.Event()
        self._go = threading.Event()  # every file attached: fill the rest
        self._thread: threading.Thread | None = None

    def create_files(self) -> None:
        for path in self.paths:
            self.stager.create(path)

    def _run(self) -> None:
        for j, part in enumerate(self.parts):
            if j == 1:
                self._go.wait()
            if self._stop.is_set():
                break
            started = time.perf_counter()
            try:
                self.collisions[j] = self.stager.fill(self.paths[j], staging_frame(part))
            except BaseException as exc:
                self.errors[j] = exc
                self.ready[j].set()
                break
            self.seconds[j] = time.perf_counter() - started
            self.filled[j] = True
            self.ready[j].set()
        for event in self.ready:  # nobody waits forever, whatever happened
            event.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="taskmill-stage", daemon=True)
        self._thread.start()

    def attached(self) -> None:
        """Every file is attached to the store's connection: fill the others now."""
        self._go.set()

    def wait(self, j: int, store_path: Path) -> None:
        """Block until staging file ``j`` is filled; raise if staging failed."""
        if not self.ready[j].is_set():
            began = time.perf_counter()
            self.ready[j].wait()
            self.waited += time.perf_counter() - began
        for exc in self.errors[: j + 1]:
            if exc is not None:
                raise SchedulerError(
                    f"cannot stage a batch beside {store_path}: {exc}", kind="store"
                ) from exc
        if not self.filled[j]:
            raise SchedulerError("batch staging was stopped", kind="store")

    def stop(self) -> None:
        """Stop after the file being filled, and wait for the thread."""
        self._stop.set()
        self._go.set()
        if self._thread is not None:
            self._thread.join()


_MATCH_SCHEMA = {
    "index": pl.Int64,
    "old_id": pl.Int64,
    "old_status": pl.String,
    "old_priority": pl.Int64,
    "old_pos": pl.Int64,
    "same": pl.Int64,
}


def _collision_error(other: pl.Expr) -> pl.Expr:
    return pl.format(COLLISION, pl.col("task_type"), pl.col("dedup_key"), other)


def decide(
    part: pl.DataFrame,
    matches: list[tuple[Any, ...]],
    base: int,
    collisions: list[tuple[int, int]] | None = None,
) -> pl.DataFrame:
    """What each staged row does, given its active match (if any), the rows left out of
    staging for a key-hash collision with an earlier row, and the next id base.

    Mirrors the SQL of ``batch_insert`` / ``batch_upgrade``: inserted rows get ids
    ``base + 1, base + 2, …`` in input order; a match whose key text differs (``same``
    is 0) is a key-hash collision, and that row fails.
    """
    if not matches and not collisions:  # the common case: every row is new
        return part.sort("index").select(
            "index",
            pl.lit("submitted").alias("action"),
            pl.lit(None, dtype=pl.String).alias("reason"),
            (pl.int_range(1, pl.len() + 1, dtype=pl.Int64) + base).alias("task_id"),
            pl.lit(None, dtype=pl.Int64).alias("replaced_task_id"),
            pl.lit(None, dtype=pl.String).alias("error"),
        )
    m = pl.DataFrame(matches, schema=_MATCH_SCHEMA, orient="row")
    left_out = pl.DataFrame(
        collisions or [], schema={"index": pl.Int64, "earlier": pl.Int64}, orient="row"
    )
    j = (
        part.select("index", "task_type", "dedup_key", "priority", "on_duplicate")
        .join(m, on="index", how="left")
        .join(left_out, on="index", how="left")
    )
    has = pl.col("old_id").is_not_null()
    collided = (has & (pl.col("same") == 0)) | pl.col("earlier").is_not_null()
    strategy = pl.col("on_duplicate")
    action = (
        pl.when(collided)
        .then(pl.lit("failed"))
        .when(~has)
        .then(pl.lit("submitted"))
        .when(
            (strategy == "skip")
            & (pl.col("old_status") == "pending")
            & (pl.col("priority") < pl.col("old_priority"))
        )
        .then(pl.lit("upgraded"))
        .when(strategy == "skip")
        .then(pl.lit("deduplicated"))
        .when(strategy == "supersede")
        .then(pl.lit("superseded"))
        .otherwise(pl.lit("failed"))
    )
    j = j.sort("index").with_columns(action.alias("action"))
    inserted = pl.col("action").is_in(["submitted", "superseded"])
    new_id = pl.lit(base, dtype=pl.Int64) + inserted.cast(pl.Int64).cum_sum()
    return j.select(
        "index",
        "action",
        pl.when(pl.col("action") == "deduplicated")
        .then(pl.lit("existing"))
        .when(collided)
        .then(pl.lit("key_collision"))
        .when(pl.col("action") == "failed")
        .then(pl.lit("duplicate"))
        .alias("reason"),
        pl.when(inserted).then(new_id).when(~collided).then(pl.col("old_id")).alias("task_id"),
        pl.when(pl.col("action") == "superseded").then(pl.col("old_id")).alias("replaced_task_id"),
        pl.when(pl.col("earlier").is_not_null())
        .then(_collision_error(pl.format("row {}", pl.col("earlier"))))
        .when(collided)
        .then(_collision_error(pl.format("active task {}", pl.col("old_id"))))
        .when(pl.col("action") == "failed")
        .then(
            pl.format(
                "an active task (id {}, {}) already has task_type '{}' and dedup_key '{}'",
                pl.col("old_id"),
                pl.col("old_status"),
                pl.col("task_type"),
                pl.col("dedup_key"),
            )
        )
        .alias("error"),
    )
