"""SqliteDriver: the :class:`~taskmill.backends.base.Driver` of a SQLite file, the only
code that talks to SQLite."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import polars as pl

from ...columns import BROWSED, frame_schema
from ...columns import column as declared
from ...model import (
    NotATaskStore,
    SchedulerError,
    SchemaTooNew,
    StoreClosed,
    StoreDamaged,
    StoreError,
    StoreLocked,
)
from ..base import CancelMatch, ClaimedTask, Driver, GroupQuery, shut
from ..calls import (
    BatchTag,
    Browse,
    CancelSlice,
    Dead,
    Ended,
    Ending,
    Expired,
    NewTask,
    Owned,
    Selection,
)
from ..depends import drop_unmerged, lookup_dependencies, settle, store_dependencies
from ..family import parent_gone, park
from ..keys import register as register_key_hash
from ..schedules import ScheduleStatements
from ..sql import APPLICATION_ID, SCHEMA_VERSION, at_level, migrations, q, schema, statements
from ..staging import (
    INSERTING,
    Stager,
    StagingPipeline,
    decide,
    retried_failures,
    split_parts,
    warm_up_in_background,
)
from ..tags import new_tags, tags_of_task
from ..workers import (
    RenewingConnection,
    StoreClock,
    live_owners,
    note_renewed,
    pid_alive,
    worker_row,
)
from .checkpoint import Checkpointer

__all__ = ["SqliteDriver", "SqliteHeartbeat", "browse_statement"]

log = logging.getLogger("taskmill")

#: The statements of schedules, over this engine's named queries.
_SCHEDULES = ScheduleStatements(q)

T = TypeVar("T")


_SQLITE_HEADER = b"SQLite format 3\x00"
_DAMAGED_HINT = (
    "the file is damaged; check it with `sqlite3 {path} 'PRAGMA integrity_check'` and "
    "restore it from a backup (do not delete its -wal file while a process has it open)"
)


def _is_damage(exc: BaseException) -> bool:
    text = str(exc).lower()
    return "malformed" in text or "corrupt" in text


def _store_error(action: str, path: Path, exc: BaseException) -> SchedulerError:
    if _is_damage(exc):
        return StoreDamaged(f"{action} {path}: {exc}; " + _DAMAGED_HINT.format(path=path))
    text = str(exc).lower()
    if "locked" in text or "busy" in text:
        return StoreLocked(f"{action} {path}: {exc}")
    return StoreError(f"{action} {path}: {exc}")


def _looks_like_sqlite(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(16) == _SQLITE_HEADER
    except OSError:
        return False


@dataclass
class _Staged:
    """One transaction's rows on their way into staging files."""

    part: pl.DataFrame
    pieces: list[pl.DataFrame]
    paths: list[Path]
    pipeline: StagingPipeline

    def wait_first(self, store_path: Path) -> None:
        """Block until the first staging file is filled (the others are filled while
        the merge runs); raise if staging failed."""
        if self.pieces:
            self.pipeline.wait(0, store_path)

    def discard(self, stager: Stager) -> None:
        """Stop the filling thread and delete the files (idempotent)."""
        self.pipeline.stop()
        for path in self.paths:
            stager.discard(path)


def _select_list(table: Literal["tasks", "history"]) -> str:
    """The select list of ``table``'s frame columns in order: each by its stored name
    (``group_name AS "group"``)."""
    return ", ".join(
        c if (name := declared(c).stored) == c else f'{name} AS "{c}"' for c in frame_schema(table)
    )


#: What tasks() and history() read: the frame's columns, in order (constants: never data).
_SELECT = {table: f"SELECT {_select_list(table)} FROM {table}" for table in ("tasks", "history")}
_ORDER = {"tasks": "priority, queue_pos", "history": "id"}


def _browse_list(table: Literal["tasks", "history"]) -> str:
    """The select list of a page of ``browse()`` from ``table``: the fields of
    :data:`~taskmill.columns.BROWSED` in order (``NULL`` for one the table lacks), then
    ``active``."""
    names = [
        (name if (stored := declared(name).stored) == name else f'{stored} AS "{name}"')
        if table in declared(name).tables
        else f'NULL AS "{name}"'
        for name in BROWSED
    ]
    return ", ".join([*names, f"{int(table == 'tasks')} AS active"])


#: What each branch of a page of browse() reads (constants: never data).
_BROWSE = {
    table: f"SELECT {_browse_list(table)} FROM {table} AS t" for table in ("tasks", "history")
}


def _filtered(
    filters: tuple[tuple[str, Sequence[Any] | None], ...], tags: list[tuple[str, str]] | None
) -> tuple[list[str], dict[str, Any]]:
    """The conditions of a read's filters (``column`` among the JSON array of its values;
    ``None``: no filter), the tag filter last, and their parameters.  A column named
    ``+name`` is compared as an expression (SQLite then uses no index for it)."""
    where: list[str] = []
    params: dict[str, Any] = {}
    for column, values in filters:
        if values is None:
            continue
        param = column.lstrip("+")
        where.append(f"{column} IN (SELECT value FROM json_each(:{param}))")
        params[param] = json.dumps(list(values))
    if tags is not None:  # (the named fragment: static text, never data)
        where.append("id IN " + q("fragment_tagged"))
        params["tags"] = json.dumps(tags)
    return where, params


def _json_list(values: list[str] | None) -> str | None:
    """A filter's values as the JSON array a query reads with ``json_each`` (``None``:
    no filter)."""
    return None if values is None else json.dumps(values)


def browse_statement(page: Browse) -> tuple[str, dict[str, Any]] | None:
    """The one statement of a page of ``browse`` and its parameters (``None``: the page
    reads no table).  Each table's branch walks its rowid backwards from ``before``
    (``+column``: a filter never sends it through another index, whose order would need a
    sort), reading its first ``limit`` matches; the branches are merged by id.  One batch
    is walked through its index instead (``batch_id = ?``: its entries are in rowid order),
    however far down the store it lies; so are one parent's children."""
    batches = page.batch_ids
    one_batch = batches is not None and len(batches) == 1
    where, params = _filtered(
        (
            ("+status", page.status),
            ("+task_type", page.task_type),
            ("+group_name", page.group),
            ("+batch_id", None if one_batch else batches),
        ),
        None if page.tags_common else page.tags,
    )
    if one_batch and batches is not None:
        where.append("batch_id = :batch")
        params["batch"] = batches[0]
    if page.parent_id is not None:  # its index, in rowid order; children are newer
        where.append("parent_id = :parent AND id > :parent")
        params["parent"] = page.parent_id
    if page.tags_common and page.tags is not None:  # checked row by row
        where.append(q("fragment_tags_carried"))
        params["tags"] = json.dumps(page.tags)
    if page.key_prefix is not None:
        where.append("substr(dedup_key, 1, length(:prefix)) = :prefix")
        params["prefix"] = page.key_prefix
    params |= {"before": page.before, "limit": page.limit}
    branches = [
        f"SELECT * FROM ({_BROWSE[table]} WHERE {' AND '.join(['id < :before', *where])} "
        "ORDER BY id DESC LIMIT :limit)"
        for table, read in (("tasks", page.active), ("history", page.finished))
        if read
    ]
    if not branches:
        return None
    return " UNION ALL ".join(branches) + " ORDER BY id DESC LIMIT :limit", params


#: Frames (4 KiB pages) the write-ahead log may reach during a batch before the next
#: transaction waits for the background checkpoint, so that it restarts the log.
_WAL_FRAMES = 8192

#: The prune lock where ``fcntl.flock`` is missing (this process's prunes only).
_PRUNE_LOCK = threading.Lock()


class _SqliteBatch:
    """The SQLite store as a :class:`~taskmill.store.batchrun.BatchBackend`: staging files
    filled by DuckDB in the background, merged by the batch connection."""

    def __init__(self, store: SqliteDriver, retries: Sequence[int] | None = None) -> None:
        self.store = store
        self.retries = retries
        self.phases: dict[str, float] = dict.fromkeys(("staging", "write_lock", "stage_wait"), 0.0)
        self.tag = BatchTag()

    def batch_session(
        self, *, chunked: bool, dry_run: bool
    ) -> contextlib.AbstractContextManager[None]:
        # the WAL is checkpointed in the background after each commit (Checkpointer)
        return contextlib.nullcontext()

    def stage(self, rows: pl.DataFrame) -> _Staged:
        return self.store._stage(rows)

    def ready(self, staged: _Staged) -> None:
        staged.wait_first(self.store.path)

    def merge(self, staged: _Staged, *, dry_run: bool, base_offset: int) -> pl.DataFrame:
        locks = len(self.store.last_batch_merge_seconds)
        waited = staged.pipeline.waited  # the wait in ready(), counted by the caller
        try:
            return self.store._merge_staged_part(
                staged,
                dry_run=dry_run,
                base_offset=base_offset,
                retries=self.retries,
                tag=None if dry_run else self.tag,
            )
        finally:
            self.phases["staging"] += sum(staged.pipeline.seconds)
            self.phases["stage_wait"] += staged.pipeline.waited - waited
            self.phases["write_lock"] += sum(self.store.last_batch_merge_seconds[locks:])

    def discard(self, staged: _Staged) -> None:
        staged.discard(self.store._stager)

    def read_error(self, exc: OSError) -> SchedulerError:
        return _store_error("cannot read the batch for", self.store.path, exc)

    def dependency_lookup(self, keys: list[str], ids: list[int]) -> tuple[pl.DataFrame, set[int]]:
        ops = _SqliteDeps(self.store)
        return self.store.read(lambda conn: lookup_dependencies(ops, conn, keys, ids))

    def seal(self) -> None:
        if self.tag.id is not None:
            ops = _SqliteDeps(self.store)
            self.store.write(
                "cannot seal a batch in", lambda c: _seal(c, self.tag, ops), single=True
            )


def _open_batch(conn: sqlite3.Connection, tag: BatchTag, now: float) -> int:
    """Record the batch of ``tag`` in the transaction of ``conn``; its id."""
    return int(conn.execute(q("batch_open"), {"name": tag.name, "now": now}).fetchone()[0])


#: The rows of a merge's result that inserted a task.
_INSERTED = pl.col("action").is_in(INSERTING)


def _seal(conn: sqlite3.Connection, tag: BatchTag, ops: _SqliteDeps) -> None:
    conn.execute(q("batch_seal"), {"id": tag.id})
    if tag.id is not None and tag.dependencies is not None and tag.dependencies.forward:
        drop_unmerged(ops, conn, tag.id, SqliteDriver._clock_now(conn))


def _blocked(part: pl.DataFrame, tag: BatchTag | None) -> str:
    """The rows of ``part`` inserted blocked (they name dependencies), as a JSON array."""
    if tag is None or tag.dependencies is None:
        return "[]"
    waiting = part.join(tag.dependencies.plan.waiting, on="index", how="semi")
    return json.dumps(waiting["index"].to_list())


class _SqliteDeps:
    """The statements of :func:`~taskmill.backends.depends.settle` on a SQLite store (one
    writer at a time: nothing to lock)."""

    def __init__(self, driver: SqliteDriver) -> None:
        self.driver = driver

    def lock_dependents(
        self, conn: sqlite3.Connection, ids: list[int]
    ) -> list[tuple[int, int, str | None]]:
        if not ids:
            return []
        return conn.execute(q("deps_dependents"), {"ids": json.dumps(ids)}).fetchall()

    def drop_edges(self, conn: sqlite3.Connection, pairs: list[tuple[int, int]]) -> None:
        conn.execute(q("deps_drop"), {"pairs": json.dumps(pairs)})

    def forget_edges(self, conn: sqlite3.Connection, task_ids: list[int]) -> None:
        conn.execute(q("deps_forget"), {"ids": json.dumps(task_ids)})

    def retarget_edges(self, conn: sqlite3.Connection, pairs: list[tuple[int, int]]) -> None:
        conn.execute(q("deps_retarget"), {"pairs": json.dumps(pairs)})

    def release_blocked(self, conn: sqlite3.Connection, task_ids: list[int]) -> None:
        if task_ids:
            conn.execute(q("deps_release"), {"ids": json.dumps(task_ids)})

    def end_tasks(self, conn: sqlite3.Connection, ids: list[int], ending: Ending) -> list[Ended]:
        return self.driver._finish_raw(conn, ids, ending)

    # child tasks (taskmill/backends/family.py)

    def active_children(
        self, conn: sqlite3.Connection, parents: list[int]
    ) -> list[tuple[int, int]]:
        return conn.execute(q("family_children"), {"ids": json.dumps(parents)}).fetchall()

    def adopt(self, conn: sqlite3.Connection, pairs: list[tuple[int, int]]) -> None:
        conn.execute(q("family_adopt"), {"pairs": json.dumps(pairs)})

    def lock_parents(
        self, conn: sqlite3.Connection, ids: list[int]
    ) -> list[tuple[int, str, str | None]]:
        return conn.execute(q("family_parents"), {"ids": json.dumps(ids)}).fetchall()

    def busy_parents(self, conn: sqlite3.Connection, ids: list[int]) -> set[int]:
        return {r[0] for r in conn.execute(q("family_busy"), {"ids": json.dumps(ids)})}

    def child_tallies(self, conn: sqlite3.Connection, ids: list[int]) -> list[tuple[int, str, int]]:
        return conn.execute(q("family_tallies"), {"ids": json.dumps(ids)}).fetchall()

    def make_due(self, conn: sqlite3.Connection, ids: list[int]) -> None:
        conn.execute(q("family_due"), {"ids": json.dumps(ids)})

    def wait_for_children(
        self, conn: sqlite3.Connection, task_id: int, finalizer: str | None
    ) -> None:
        conn.execute(q("family_wait"), {"id": task_id, "finalizer": finalizer})

    def active_types(self, conn: sqlite3.Connection) -> list[str]:
        return [r[0] for r in conn.execute(q("active_task_types"))]

    def by_keys(
        self, conn: sqlite3.Connection, triples: list[tuple[int, str, str]]
    ) -> list[tuple[int, str]]:
        return conn.execute(q("deps_by_key"), {"triples": json.dumps(triples)}).fetchall()

    def states(
        self, conn: sqlite3.Connection, ids: list[int]
    ) -> list[tuple[int, str | None, int | None]]:
        return conn.execute(q("deps_task_states"), {"ids": json.dumps(ids)}).fetchall()

    def insert_edges(
        self,
        conn: sqlite3.Connection,
        edges: list[tuple[int, int | None, int | None]],
        batch_id: int | None,
    ) -> None:
        conn.execute(q("deps_insert"), {"edges": json.dumps(edges), "batch_id": batch_id})

    def unmerged(self, conn: sqlite3.Connection, batch_id: int) -> list[tuple[int, str | None]]:
        params = {"batch_id": batch_id}
        rows = conn.execute(q("deps_unmerged"), params).fetchall()
        conn.execute(q("deps_unmerged_drop"), params)
        return sorted(set(rows))

    def resolve_rows(
        self, conn: sqlite3.Connection, pairs: list[tuple[int, int]], batch_id: int
    ) -> None:
        conn.execute(q("deps_rows_create"))
        conn.execute(q("deps_rows_clear"))
        conn.execute(q("deps_rows_fill"), {"pairs": json.dumps(pairs)})
        conn.execute(q("deps_resolve_rows"), {"batch_id": batch_id})


class SqliteDriver(Driver[sqlite3.Connection]):
    """A task store in one SQLite file (created, or upgraded to the current schema, when
    opened).  Every method is thread-safe and several processes may open the same file:
    writers wait for each other up to ``busy_timeout`` seconds, then raise
    ``SchedulerError(kind="store")``.

    Three kinds of connection keep the calls out of each other's way: small writes
    (submit, claim, complete, …) share one connection; a batch merges on a connection
    of its own, holding SQLite's write lock only while SQLite merges (preparing and
    staging happen before); reads use one connection per thread and, the store being
    in WAL mode, never wait for a writer.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._lock = threading.RLock()  # the write connection
        self._batch_lock = threading.Lock()  # the batch connection (one batch at a time)
        self._conn: sqlite3.Connection | None = None
        self._batch_conn: sqlite3.Connection | None = None
        self._local = threading.local()  # per-thread read connections
        self._readers: dict[int, sqlite3.Connection] = {}  # by thread ident
        self._readers_lock = threading.Lock()
        self._closed = False
        #: Seconds each transaction of the last batch held the store's write lock.
        self.last_batch_merge_seconds: list[float] = []
        self._stager = Stager(self.path)
        #: checkpoints the WAL after each batch commit, off the batch's path
        self.checkpointer = Checkpointer(lambda: self._new_connection(cache_kib=2048))
        self._connect()

    def _connect(self) -> None:
        path = self.path
        if not path.parent.exists():
            raise StoreError(f"cannot open task store {path}: folder {path.parent} does not exist")
        if path.is_dir():
            raise StoreError(f"cannot open task store {path}: it is a folder")
        try:
            conn = self._new_connection(cache_kib=65536)
        except sqlite3.OperationalError as exc:
            raise _store_error("cannot open task store", path, exc) from exc
        except sqlite3.DatabaseError as exc:
            if _looks_like_sqlite(path):
                raise _store_error("cannot open task store", path, exc) from exc
            raise NotATaskStore(
                f"cannot open task store {path}: not a SQLite database ({exc})"
            ) from exc
        try:
            self._init_waiting(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        with contextlib.suppress(OSError):  # a read-only folder simply keeps them
            self._stager.sweep(lambda pid: pid == os.getpid() or pid_alive(pid))

    def _init_waiting(self, conn: sqlite3.Connection) -> None:
        """:meth:`_check_and_init`, again after a short pause while another connection
        holds a lock it needs, up to ``busy_timeout``.  SQLite answers "database is
        locked" at once, without its busy handler, where waiting could deadlock — a new
        file switching to WAL while another opener creates the schema, say — so opening a
        store beside busy writers waits here instead of failing."""
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.005
        while True:
            try:
                self._check_and_init(conn)
                return
            except StoreLocked:
                if time.monotonic() + pause > deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.1)

    def _check_and_init(self, conn: sqlite3.Connection) -> None:
        path = self.path
        try:
            # one snapshot: read apart, a store created by another opener in between
            # would show its tables beside the version of the empty file before
            conn.execute("BEGIN")
            try:
                version = conn.execute("PRAGMA user_version").fetchone()[0]
                tables = {
                    r[0]
                    for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
                }
                app = (
                    conn.execute(
                        "SELECT value FROM taskmill_meta WHERE key = 'application'"
                    ).fetchone()
                    if "taskmill_meta" in tables
                    else None
                )
            finally:
                conn.execute("ROLLBACK")
        except sqlite3.DatabaseError as exc:
            if _looks_like_sqlite(path) or _is_damage(exc):
                raise StoreDamaged(
                    f"cannot open task store {path}: {exc}; " + _DAMAGED_HINT.format(path=path)
                ) from exc
            raise NotATaskStore(
                f"cannot open task store {path}: not a SQLite database ({exc})"
            ) from exc
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"task store {path} has schema version {version}, newer than this taskmill "
                f"understands ({SCHEMA_VERSION}); upgrade taskmill"
            )
        if tables and "taskmill_meta" not in tables:
            raise NotATaskStore(
                f"{path} is a SQLite database but not a taskmill store "
                f"(it has tables: {', '.join(sorted(tables)[:5])})"
            )
        if tables and (app is None or app[0] != APPLICATION_ID or version < 1):
            raise NotATaskStore(f"{path} is not a taskmill store")
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"cannot switch task store {path} to WAL (journal_mode={mode})")
            conn.execute("PRAGMA journal_size_limit = 67108864")  # a reset WAL shrinks to 64 MiB
            if tables and version < SCHEMA_VERSION:
                self._upgrade(conn)
            if not tables:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    # another process may have created it while we waited for the lock
                    if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                        for statement in statements(schema()):
                            conn.execute(statement)
                        conn.execute(
                            "INSERT INTO taskmill_meta VALUES ('application', ?)", (APPLICATION_ID,)
                        )
                        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
                if conn.in_transaction:
                    conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise _store_error("cannot initialise task store", path, exc) from exc

    def _new_connection(self, *, cache_kib: int) -> sqlite3.Connection:
        """A connection to the store with the store's settings (WAL is set once, by the
        first connection, and is a property of the file)."""
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(f"PRAGMA cache_size = -{int(cache_kib)}")
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute("PRAGMA foreign_keys = ON")
            register_key_hash(conn)  # for migrations that compute it in SQL
        except BaseException:
            conn.close()
            raise
        return conn

    def _upgrade(self, conn: sqlite3.Connection) -> None:
        """Bring a store of an older schema to :data:`SCHEMA_VERSION`: every migration
        above its version, in order, in one transaction (all of it or nothing)."""
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise StoreError(
                f"task store {self.path} has an older schema and must be upgraded, but it "
                f"cannot be written ({exc}); open it once where it is writable"
            ) from exc
        try:
            # another process may have upgraded it while we waited for the lock
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            for target, script in migrations().items():
                if target <= version:
                    continue
                for statement in statements(script):
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        log.info(
            "taskmill: upgraded store %s from schema %s to %s", self.path, version, SCHEMA_VERSION
        )

    def close(self) -> None:
        """Close every connection (idempotent)."""
        self._closed = True
        with self._lock:
            self._conn = shut(self._conn)
        with self._batch_lock:
            self._batch_conn = shut(self._batch_conn)
        self.checkpointer.close()
        with self._readers_lock:
            for reader in self._readers.values():
                reader.close()
            self._readers.clear()

    def __repr__(self) -> str:
        state = "open" if self._conn is not None else "closed"
        return f"<TaskStore {str(self.path)!r} ({state})>"

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection of small writes (hold ``_lock`` while using it)."""
        if self._conn is None:
            raise StoreClosed(f"task store {self.path} is closed")
        return self._conn

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection (opened on first use)."""
        if self._closed or self._conn is None:
            raise StoreClosed(f"task store {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                conn = self._new_connection(cache_kib=16384)
            except sqlite3.Error as exc:
                raise _store_error("cannot open task store", self.path, exc) from exc
            with self._readers_lock:
                if self._closed:
                    conn.close()
                    raise StoreClosed(f"task store {self.path} is closed")
                # the connections of threads that have ended are closed, not kept
                alive = {t.ident for t in threading.enumerate()}
                for ident in [i for i in self._readers if i not in alive]:
                    self._readers.pop(ident).close()
                self._readers[threading.get_ident()] = conn
            self._local.conn = conn
        return conn

    # ------------------------------------------------------------------ transactions

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read on this thread's own connection: it never waits for a writer."""
        conn = self._reader()
        try:
            yield conn
        except sqlite3.Error as exc:
            raise _store_error("task store read failed on", self.path, exc) from exc

    @contextlib.contextmanager
    def _write(
        self, *, deferred: bool = False, action: str = "task store write failed on"
    ) -> Iterator[sqlite3.Connection]:
        """One write transaction on the connection of small writes, all or nothing;
        ``action`` opens the message of an error in it."""
        with self._lock, self._transaction(self.conn, deferred=deferred, action=action) as conn:
            yield conn

    def write(
        self,
        action: str,
        body: Callable[[sqlite3.Connection], T],
        *,
        dispatch: bool = False,
        single: bool = False,
        claim_lock: bool = False,
        retry_unique: bool = False,
    ) -> T:
        """Every write of the store takes SQLite's one write lock (``BEGIN IMMEDIATE``) on
        the connection of small writes, so a claim's counts hold without a lock of their
        own; ``dispatch``, ``single`` and ``claim_lock`` change nothing here."""
        with self._write(action=action) as conn:
            return body(conn)

    def read(self, body: Callable[[sqlite3.Connection], T]) -> T:
        with self._read() as conn:
            return body(conn)

    def clock_in(self, conn: sqlite3.Connection) -> float:
        return self._clock_now(conn)

    @contextlib.contextmanager
    def _transaction(
        self,
        conn: sqlite3.Connection,
        *,
        deferred: bool = False,
        action: str = "task store write failed on",
    ) -> Iterator[sqlite3.Connection]:
        """One write transaction on ``conn`` (the caller holds its lock).

        ``BEGIN IMMEDIATE`` normally.  With attached staging files the transaction
        must not touch them at ``BEGIN`` (an immediate transaction locks every attached
        file), so ``deferred`` begins lazily and takes the store's write lock at once
        with a no-op write, retrying until ``busy_timeout``.
        """
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                if deferred:
                    conn.execute("BEGIN")
                    conn.execute(q("take_write_lock"))
                else:
                    conn.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                locked = "locked" in str(exc) or "busy" in str(exc)
                if deferred and locked and time.monotonic() < deadline:
                    time.sleep(0.01)
                    continue
                if not locked:
                    raise _store_error("cannot write to task store", self.path, exc) from exc
                raise StoreLocked(
                    f"task store {self.path} is locked by another writer "
                    f"(waited {self.busy_timeout:g} s): {exc}"
                ) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _store_error(action, self.path, exc) from exc
            raise

    # ------------------------------------------------------------------ submitting

    def find_active(self, conn: sqlite3.Connection, hashed: int) -> tuple[Any, ...] | None:
        """(SQLite's write lock, held by every write, keeps other submits out.)"""
        return conn.execute(q("find_active"), (hashed,)).fetchone()

    def new_task_id(self, conn: sqlite3.Connection) -> int:
        return conn.execute(q("next_id")).fetchone()[0] + 1

    def upgrade_priority(self, conn: sqlite3.Connection, task_id: int, priority: int) -> None:
        conn.execute(q("upgrade_priority"), (priority, task_id, priority))

    def finish(self, conn: sqlite3.Connection, ids: Sequence[int], ending: Ending) -> None:
        """(Every way of ending tasks comes here: their dependents are settled in the same
        transaction, see :mod:`taskmill.backends.depends`.)"""
        settle(_SqliteDeps(self), conn, self._finish_raw(conn, ids, ending), ending.now)

    def _finish_raw(
        self, conn: sqlite3.Connection, ids: Sequence[int], ending: Ending
    ) -> list[Ended]:
        """Move the active tasks ``ids`` to history, their dependents, children and
        parents left as they are; the tasks moved."""
        ids_json = json.dumps(list(ids))
        conn.execute(
            q("finish_to_history"),
            {
                "status": ending.status,
                "error": ending.error,
                "replaced_by": ending.replaced_by,
                "now": ending.now,
                "ids": ids_json,
            },
        )
        moved = conn.execute(q("delete_tasks"), (ids_json,)).fetchall()
        return [Ended(int(i), ending.status, ending.replaced_by, parent) for i, parent in moved]

    def insert(self, conn: sqlite3.Connection, task: NewTask) -> None:
        row = task.row
        conn.execute(
            q("insert_task"),
            (
                task.id,
                row.task_type,
                row.dedup_key,
                row.group,
                row.priority,
                task.queue_pos,
                row.payload,
                row.label,
                row.expected_read_bytes,
                row.expected_write_bytes,
                row.expected_net_rx_bytes,
                row.expected_net_tx_bytes,
                row.max_retries,
                task.now,
                task.hashed,
                row.run_after,
                row.expires_at,
                row.on_dependency_failure,
                task.parent,
            ),
        )
        if row.tags:
            conn.execute(q("tags_insert"), {"rows": json.dumps(tags_of_task(task))})

    # ------------------------------------------------------------------ batches

    def batch_backend(self, retries: Sequence[int] | None) -> _SqliteBatch:
        self.last_batch_merge_seconds = []
        warm_up_in_background()  # DuckDB starts while the batch is prepared
        return _SqliteBatch(self, retries)

    def _batch_connection(self) -> sqlite3.Connection:
        """The connection batches merge on (hold ``_batch_lock``); opened on first use."""
        if self._closed or self._conn is None:
            raise StoreClosed(f"task store {self.path} is closed")
        if self._batch_conn is None:
            try:
                self._batch_conn = self._new_connection(cache_kib=32768)
                self._batch_conn.execute("PRAGMA wal_autocheckpoint = 0")
            except sqlite3.Error as exc:
                raise _store_error("cannot open task store", self.path, exc) from exc
        return self._batch_conn

    def _stage(self, part: pl.DataFrame) -> _Staged:
        """Start filling the staging files of one transaction's rows (a background
        thread fills them; :meth:`_merge_staged_part` waits for them)."""
        pieces = split_parts(part) if part.height else []
        paths = [self._stager.new_path() for _ in pieces]
        staged = _Staged(part, pieces, paths, StagingPipeline(self._stager, paths, pieces))
        try:
            staged.pipeline.create_files()
        except OSError as exc:
            staged.discard(self._stager)
            raise _store_error("cannot stage a batch beside", self.path, exc) from exc
        staged.pipeline.start()
        return staged

    def _merge_staged_part(
        self,
        staged: _Staged,
        *,
        dry_run: bool,
        base_offset: int = 0,
        retries: Sequence[int] | None = None,
        tag: BatchTag | None = None,
    ) -> pl.DataFrame:
        """Merge (or plan) one transaction's staged rows.

        The rows are split into up to ``MAX_PARTS`` staging files.  DuckDB fills the
        first (a small one) holding no lock of the store; the batch connection then
        attaches every file (the others still empty), and merges file ``j`` while DuckDB
        fills file ``j + 1``.  DuckDB opens a file only before ``sqlite3`` first reads
        it, and never again after, and never while ``sqlite3`` attaches it: the two
        copies of SQLite never hold the same file at once (see
        :class:`~taskmill.backends.staging.StagingPipeline`).

        ``retries``: see :meth:`Driver.batch_backend`; ``tag``: the batch record the
        merge adds its tasks to (``None`` for a plan).
        """
        part, pieces, paths = staged.part, staged.pieces, staged.paths
        names = [f"taskmill_stage_{j}" for j in range(len(pieces))]
        try:
            if part.height == 0:
                return decide(part, [], 0)
            staged.wait_first(self.path)
            if not dry_run:
                self.checkpointer.settle(_WAL_FRAMES)
            with self._batch_lock:
                conn = self._batch_connection()
                attached: list[str] = []
                try:
                    try:
                        for name, path in zip(names, paths, strict=True):
                            conn.execute(f"ATTACH ? AS {name}", (str(path),))
                            attached.append(name)
                    except sqlite3.Error as exc:
                        raise _store_error(
                            "cannot attach the batch staging files to", self.path, exc
                        ) from exc
                    staged.pipeline.attached()
                    results: list[pl.DataFrame] = []
                    offset = base_offset
                    txn = (
                        self._plan_txn(conn) if dry_run else self._transaction(conn, deferred=True)
                    )
                    merge_started = time.perf_counter()
                    renewed: tuple[list[str], float] | None = None
                    with txn as c:
                        if tag is not None:
                            tag.begin()
                        if not dry_run:  # expired tasks free their keys first
                            self._expire_due(c, self._clock_now(c))
                        for j, piece in enumerate(pieces):
                            staged.pipeline.wait(j, self.path)
                            result = self._merge_staged(
                                c,
                                piece,
                                names[j],
                                staged.pipeline.collisions[j],
                                dry_run=dry_run,
                                base_offset=offset,
                                retries=retries,
                                tag=tag,
                                ops=_SqliteDeps(self),
                            )
                            results.append(result)
                            if dry_run:
                                offset += result.filter(
                                    pl.col("action").is_in(["submitted", "superseded"])
                                ).height
                        if tag is not None and tag.dependencies is not None:
                            store_dependencies(
                                _SqliteDeps(self),
                                c,
                                tag.dependencies,
                                pl.concat(results),
                                tag.current,
                                self._clock_now(c),
                            )
                        if tag is not None and tag.current is not None:
                            inserted = sum(r.filter(_INSERTED).height for r in results)
                            params = {"id": tag.current, "n": inserted, "sealed": int(tag.last)}
                            c.execute(q("batch_grow"), params)
                        if not dry_run:
                            renewed = self._renew_live(c)
                    if tag is not None:
                        tag.commit()
                    if renewed is not None:
                        note_renewed(*renewed)
                    if not dry_run:
                        self.checkpointer.poke()
                        self.last_batch_merge_seconds.append(time.perf_counter() - merge_started)
                    return pl.concat(results)
                finally:
                    for name in attached:
                        conn.execute(f"DETACH {name}")
        finally:
            staged.discard(self._stager)

    @contextlib.contextmanager
    def _plan_txn(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """A read transaction that is always rolled back (plans write nothing)."""
        try:
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise _store_error("task store read failed on", self.path, exc) from exc

    @staticmethod
    def _merge_staged(
        conn: sqlite3.Connection,
        part: pl.DataFrame,
        stage: str,
        collisions: list[tuple[int, int]],
        *,
        dry_run: bool,
        base_offset: int = 0,
        retries: Sequence[int] | None = None,
        tag: BatchTag | None = None,
        ops: _SqliteDeps | None = None,
    ) -> pl.DataFrame:
        def sql(name: str) -> str:  # the staging schema name is ours, never data
            return q(name).replace("taskmill_stage.", f"{stage}.")

        now = SqliteDriver._clock_now(conn)
        if tag is not None and tag.parent is not None and not dry_run:
            running = conn.execute(q("family_running"), {"id": tag.parent}).fetchone()
            if running is None:
                raise parent_gone(tag.parent)
        base = conn.execute(q("next_id")).fetchone()[0] + base_offset
        conn.execute(q("batch_match_create"))
        conn.execute(q("batch_match_clear"))
        # a plan leaves out tasks expired by now; a merge expired them at its start (under
        # the write lock) and must match whatever is left, so it leaves out nothing
        conn.execute(sql("batch_match_fill"), {"now": now if dry_run else -1.0})
        if retries is not None and not dry_run:  # decided under the write lock
            ords, failed = retried_failures(part, retries)
            if ords:
                pairs = json.dumps(list(zip(ords, failed, strict=True)))
                conn.execute(sql("batch_match_retried"), {"pairs": pairs, "floor": min(failed)})
        matches = conn.execute(q("batch_match_read")).fetchall()
        result = decide(part, matches, base, collisions)
        if dry_run:
            return result
        sup = result.filter(pl.col("action") == "superseded")
        adopted: list[tuple[int, int]] = []
        if sup.height:
            pairs = json.dumps(
                list(zip(sup["replaced_task_id"].to_list(), sup["task_id"].to_list(), strict=True))
            )
            conn.execute(q("batch_supersede_to_history"), {"pairs": pairs, "now": now})
            moved = conn.execute(q("batch_delete_superseded"), {"pairs": pairs}).fetchall()
            if ops is not None:  # what waited for a replaced task waits for its successor
                successor = dict(
                    zip(sup["replaced_task_id"].to_list(), sup["task_id"].to_list(), strict=True)
                )
                ended = [Ended(old, "superseded", successor[old], parent) for old, parent in moved]
                settle(ops, conn, ended, now)
                adopted = [(successor[old], parent) for old, parent in moved if parent is not None]
        if matches:
            conn.execute(q("batch_upgrade"))
        expected = result.filter(pl.col("action").is_in(["submitted", "superseded"])).height
        # (rows left out of staging for a key-hash collision also take the ranked form)
        insert = "batch_insert" if expected == part.height else "batch_insert_ranked"
        batch_id = None
        if tag is not None:
            batch_id = tag.id_for(expected, lambda: _open_batch(conn, tag, now))
        params = {
            "base": base,
            "now": now,
            "batch_id": batch_id,
            "blocked": _blocked(part, tag),
            "parent_id": None if tag is None else tag.parent,
        }
        inserted = conn.execute(sql(insert), params).rowcount
        if inserted != expected:  # the SQL and the plan disagree: never commit that
            raise StoreError(f"batch merge inserted {inserted} rows where {expected} were planned")
        if adopted and ops is not None:  # a successor of a child takes its parent on
            ops.adopt(conn, adopted)
        tags = new_tags(part, result)
        if tags.height:  # one statement for the whole piece
            conn.execute(q("tags_insert"), {"rows": json.dumps(tags.rows())})
        return result

    # ------------------------------------------------------------------ dependencies

    def awaited(self, task_ids: list[int]) -> list[tuple[int, int]]:
        with self._read() as conn:
            return conn.execute(q("deps_awaited"), {"ids": json.dumps(task_ids)}).fetchall()

    # ------------------------------------------------------------------ tags

    def tag_pair_count(self, key: str, value: str, cap: int) -> int:
        params = {"key": key, "value": value, "cap": cap}
        with self._read() as conn:
            return int(conn.execute(q("tag_pair_count"), params).fetchone()[0])

    def tags_of(self, task_ids: list[int]) -> list[tuple[int, str, str]]:
        with self._read() as conn:
            return conn.execute(q("tags_of"), {"ids": json.dumps(task_ids)}).fetchall()

    # ------------------------------------------------------------------ child tasks

    def family_counts(self, parent_ids: list[int]) -> list[tuple[int, str, int]]:
        with self._read() as conn:
            params = {"ids": json.dumps(parent_ids)}
            return conn.execute(q("family_counts"), params).fetchall()

    # ------------------------------------------------------------------ schedules

    @property
    def schedules(self) -> ScheduleStatements:
        return _SCHEDULES

    # ------------------------------------------------------------------ batches

    def batch_rows(
        self, conn: sqlite3.Connection, batch_id: int | None, limit: int | None
    ) -> list[tuple[Any, ...]]:
        if batch_id is not None:
            return conn.execute(q("batch_row"), {"id": batch_id}).fetchall()
        return conn.execute(q("batch_rows"), {"limit": limit}).fetchall()

    def batch_tallies(self, conn: sqlite3.Connection, ids: list[int]) -> list[tuple[Any, ...]]:
        return conn.execute(q("batch_tallies"), {"ids": json.dumps(ids)}).fetchall()

    def batches_done(self, conn: sqlite3.Connection) -> list[int]:
        return [int(r[0]) for r in conn.execute(q("batches_done"))]

    def batch_finish(self, conn: sqlite3.Connection, batch_id: int, values: dict[str, Any]) -> bool:
        return conn.execute(q("batch_finish"), {**values, "id": batch_id}).rowcount == 1

    # ------------------------------------------------------------------ task control

    def cancel(self, task_id: int) -> str | None:
        with self._write() as conn:
            row = conn.execute(q("get_active"), (task_id,)).fetchone()
            if row is None:
                return None
            self.finish(conn, [task_id], Ending("cancelled", self._clock_now(conn)))
            return str(row[1])

    def _expire_due(self, conn: sqlite3.Connection, now: float) -> int:
        """Move the tasks not started by their expiry time to history (in ``conn``'s
        write transaction); returns how many."""
        ids = [r[0] for r in conn.execute(q("expired_ids"), {"now": now})]
        if ids:
            self.finish(conn, ids, Ending("expired", now))
        return len(ids)

    @staticmethod
    def _clock_now(conn: sqlite3.Connection) -> float:
        """The store's clock (see query ``store_clock``), read on ``conn``."""
        return float(conn.execute(q("store_clock")).fetchone()[0])

    def now(self) -> float:
        """The store's clock, in seconds since the epoch: what leases, rate limits, start
        and expiry times are judged by (a SQLite store's host reads it)."""
        with self._read() as conn:
            return self._clock_now(conn)

    @staticmethod
    def _renew_live(conn: sqlite3.Connection) -> tuple[list[str], float] | None:
        """Renew, as the last statement of a long write transaction, the leases of the
        workers alive in this process: no other process could renew or recover anything
        while it held the write lock.  Returns what to pass to ``note_renewed`` once the
        transaction has committed."""
        owners = live_owners()
        if not owners:
            return None
        sent = time.monotonic()
        conn.execute(q("renew_workers"), {"owners": json.dumps(owners)})
        return owners, sent

    def any_expired(self, now: float) -> bool:
        with self._read() as conn:
            return conn.execute(q("expired_ids"), {"now": now}).fetchone() is not None

    def expire(self, now: float) -> int:
        with self._write() as conn:
            return self._expire_due(conn, now)

    def pause_group(self, group: str, until: float | None, now: float) -> None:
        with self._write() as conn:
            conn.execute(q("pause_group"), {"group": group, "until": until, "now": now})

    def resume_group(self, group: str) -> bool:
        with self._write() as conn:
            return conn.execute(q("resume_group"), {"group": group}).rowcount > 0

    def per_group(self, query: GroupQuery, now: float) -> list[tuple[Any, Any]]:
        with self._read() as conn:
            return conn.execute(q(query), {"now": now}).fetchall()

    def set_status(self, task_id: int, old: str, new: str) -> bool:
        with self._write() as conn:
            cur = conn.execute(q("set_status"), {"id": task_id, "from": old, "to": new})
            return cur.rowcount == 1

    def last_task_id(self) -> int:
        with self._read() as conn:
            return int(conn.execute(q("next_id")).fetchone()[0])

    def active_task_types(self) -> list[str]:
        with self._read() as conn:
            return [r[0] for r in conn.execute(q("active_task_types"))]

    def cancel_batch(self, where: CancelMatch, part: CancelSlice) -> tuple[int, int | None]:
        """One transaction of :meth:`cancel_where`: choose the tasks under the write
        lock and move them; returns how many and the last id moved."""
        params: dict[str, Any] = {
            "statuses": json.dumps(where.status),
            "groups": _json_list(where.group),
            "labels": _json_list(where.label),
            "tags": None if where.tags is None else json.dumps(where.tags),
            "last": part.last,
        }
        if part.keyed is None:
            query = q("cancel_candidates")
            params |= {
                "types": _json_list(where.task_type),
                "after": part.after,
                "limit": part.limit,
            }
        else:
            query = q("cancel_candidates_by_key")
            params["triples"] = json.dumps(list(zip(*part.keyed, strict=True)))
        with self._write() as conn:
            ids = sorted(r[0] for r in conn.execute(query, params))
            if ids:
                self.finish(conn, ids, Ending("cancelled", self._clock_now(conn)))
        return len(ids), (ids[-1] if ids else None)

    def failed_rows(
        self,
        task_type: list[str] | None,
        group: list[str] | None,
        since: float | None,
        ids: list[int] | None = None,
    ) -> list[tuple[Any, ...]]:
        params = {"types": _json_list(task_type), "groups": _json_list(group), "since": since}
        query = q("failed_to_retry")
        if ids is not None:  # those failures alone, each checked against its later ids
            query, params = q("failed_to_retry_ids"), params | {"ids": json.dumps(ids)}
        with self._read() as conn:
            return conn.execute(query, params).fetchall()

    # ------------------------------------------------------------------ workers

    def register(self, owner: str, *, lease_timeout: float) -> None:
        params = worker_row(owner, lease_timeout)
        with self._write() as conn:
            conn.execute(q("register_worker"), params).fetchall()

    def renew(self, owner: str) -> bool:
        with self._write() as conn:
            params = {"owner": owner, "held": None}
            return bool(conn.execute(q("renew_worker"), params).fetchall())

    def heartbeat(self, *, timeout: float) -> SqliteHeartbeat:
        """A connection of its own for renewing leases, waiting at most ``timeout``
        seconds for the write lock: never queued behind this store's other calls."""
        return SqliteHeartbeat(self, timeout)

    def release_owner(self, owner: str) -> int:
        with self._write() as conn:
            count = conn.execute(q("release_owner"), (owner,)).rowcount
            conn.execute(q("forget_worker"), (owner,))
            return count

    def owned_tasks(self, owner: str) -> list[int]:
        with self._read() as conn:
            return [r[0] for r in conn.execute(q("owned_by"), (owner,))]

    def owner_leases(self, now: float | None) -> tuple[list[Any], list[str]]:
        with self._read() as conn:
            running = conn.execute(q("running_owner_leases"), {"now": now}).fetchall()
            stale = conn.execute(q("expired_workers"), {"now": now}).fetchall()
        return running, [r[0] for r in stale]

    def held_rows(self, now: float | None) -> list[str]:
        with self._read() as conn:
            return [r[0] for r in conn.execute(q("workers_held"), {"now": now})]

    def give_back(self, dead: Dead, expired: Expired, now: float | None) -> int:
        count = 0
        with self._write() as conn:
            mark = conn.execute(q("attempts_mark")).fetchone()[0]
            for owner, why in dead:
                count += conn.execute(q("release_owner"), (owner,)).rowcount
                if owner is not None:
                    conn.execute(q("forget_worker"), (owner,))
                conn.execute(q("attempts_lost"), {"mark": mark, "owner": owner, "why": why})
            for owner, why in expired:  # unless it renewed since we looked
                params = {"owner": owner, "now": now}
                count += conn.execute(q("release_expired_owner"), params).rowcount
                conn.execute(q("forget_expired_worker"), params)
                conn.execute(q("attempts_lost"), {"mark": mark, "owner": owner, "why": why})
        return count

    def claim_counts(
        self, conn: sqlite3.Connection, counted: bool, keys: list[str]
    ) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[float, float]]]:
        running = (
            {g: (n, (hi << 32) + lo) for g, n, hi, lo in conn.execute(q("running_per_group"))}
            if counted
            else {}
        )
        buckets = (
            {k: (t, at) for k, t, at in conn.execute(q("rate_buckets"), {"keys": json.dumps(keys)})}
            if keys
            else {}
        )
        return running, buckets

    def claim_candidates(
        self,
        conn: sqlite3.Connection,
        types: list[str],
        now: float,
        held: list[str],
        limit: int,
        priority: int | None = None,
    ) -> list[tuple[ClaimedTask, int]]:
        params = {
            "types": json.dumps(types),
            "now": now,
            "full_groups": json.dumps(held),
            "limit": limit,
        }
        if priority is None:
            rows = conn.execute(q("claim_candidates"), params).fetchall()
        else:
            rows = conn.execute(at_level(q("claim_candidates")), params | {"level": priority})
        return [(ClaimedTask.candidate(r[:12]), sum(r[12:])) for r in rows]

    def pending_levels(self, conn: sqlite3.Connection) -> list[int]:
        return [int(r[0]) for r in conn.execute(q("pending_levels"))]

    def mark_running(
        self,
        conn: sqlite3.Connection,
        ids: list[int],
        now: float,
        owner: str,
        buckets: list[tuple[str, float, float]],
    ) -> None:
        conn.execute(q("mark_running"), {"ids": json.dumps(ids), "now": now, "owner": owner})
        for key, tokens, at in buckets:
            conn.execute(q("store_rate_bucket"), {"key": key, "tokens": tokens, "at": at})

    def finish_owned(self, conn: sqlite3.Connection, owned: Owned, ending: Ending) -> set[int]:
        running = self._running(conn, owned)
        if running:  # attempts: no edge of their own to forget
            ended = self._finish_raw(conn, running, ending)
            settle(_SqliteDeps(self), conn, ended, ending.now, ran=True)
        return set(running)

    def store_progress(
        self, conn: sqlite3.Connection, owner: str, rows: list[tuple[int, int, float, str | None]]
    ) -> int:
        params = {"rows": json.dumps(rows), "owner": owner}
        return conn.execute(q("store_progress"), params).rowcount

    def retry_later(
        self, conn: sqlite3.Connection, owned: Owned, error: str, run_after: float
    ) -> bool:
        if not self._running(conn, owned):
            return False
        [task_id] = owned.ids
        params = {"id": task_id, "owner": owned.owner, "error": error, "run_after": run_after}
        conn.execute(q("retry_later"), params)
        return True

    def park(
        self, conn: sqlite3.Connection, owned: Owned, finalizer: str | None
    ) -> dict[str, int] | bool | None:
        [task_id] = self._running(conn, owned) or [None]
        if task_id is None:
            return False
        return park(_SqliteDeps(self), conn, task_id, finalizer)

    def preempt_running(self, conn: sqlite3.Connection, owned: Owned, now: float) -> int:
        running = self._running(conn, owned)
        if not running:
            return 0
        params = {"ids": json.dumps(running), "owner": owned.owner, "now": now}
        return conn.execute(q("preempt_running"), params).rowcount

    def urgent_waiting(self, priority: int, types: list[str], now: float, limit: int) -> int:
        params = {"priority": priority, "types": json.dumps(types), "now": now, "limit": limit}
        with self._read() as conn:
            return int(conn.execute(q("urgent_waiting"), params).fetchone()[0])

    def resume_preempted(self, priority: int, types: list[str], now: float) -> int:
        with self._read() as conn:
            if not conn.execute(q("any_preempted")).fetchone()[0]:
                return 0
        params = {"priority": priority, "types": json.dumps(types), "now": now}
        return self.write(
            "cannot resume preempted tasks in",
            lambda conn: conn.execute(q("resume_preempted"), params).rowcount,
            single=True,
        )

    def attempt_traceback(self, conn: sqlite3.Connection, task_id: int, traceback: str) -> None:
        conn.execute(q("attempt_traceback"), {"id": task_id, "traceback": traceback})

    def release_running(self, conn: sqlite3.Connection, owned: Owned) -> int:
        running = self._running(conn, owned)
        if not running:
            return 0
        return conn.execute(
            q("release_running"), {"ids": json.dumps(running), "owner": owned.owner}
        ).rowcount

    @staticmethod
    def _running(conn: sqlite3.Connection, owned: Owned) -> list[int]:
        """The ids of the attempts of ``owned`` still running."""
        pairs = json.dumps([[t, a] for t, a in zip(owned.ids, owned.tries, strict=True)])
        params = {"pairs": pairs, "owner": owned.owner}
        return [r[0] for r in conn.execute(q("owned_running"), params)]

    def ownership(
        self, ids: list[int], tries: list[int | None], owner: str
    ) -> tuple[set[int], dict[int, tuple[str, int | None]]]:
        with self._read() as conn:
            still = set(self._running(conn, Owned(ids, tries, owner)))
            lost = json.dumps([t for t in ids if t not in still])
            found = {r[0]: (r[1], r[2]) for r in conn.execute(q("history_status"), (lost,))}
            for tid, status in conn.execute(q("active_status"), (lost,)):
                found.setdefault(tid, (status, None))
        return still, found

    def has_work(self, conn: sqlite3.Connection, types: list[str]) -> bool:
        params = {"types": json.dumps(types)}
        return bool(conn.execute(q("has_work_for_types"), params).fetchone()[0])

    def next_run_after(self, conn: sqlite3.Connection, now: float) -> float | None:
        return conn.execute(q("next_run_after"), {"now": now}).fetchone()[0]

    # ------------------------------------------------------------------ queries

    def status_counts(self) -> list[tuple[str, int]]:
        with self._read() as conn:
            return [
                *conn.execute(q("active_counts")).fetchall(),
                *conn.execute(q("history_counts")).fetchall(),
            ]

    def active_group_counts(self) -> list[tuple[str | None, str, int]]:
        with self._read() as conn:
            return conn.execute(q("active_group_counts")).fetchall()

    def select(self, selection: Selection) -> list[tuple[Any, ...]]:
        where, params = _filtered(
            (
                ("id", selection.ids),
                ("status", selection.status),
                ("task_type", selection.task_type),
                ("group_name", selection.group),
                ("batch_id", selection.batch_ids),
            ),
            selection.tags,
        )
        sql = _SELECT[selection.table]
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY {_ORDER[selection.table]}"
        if selection.limit is not None:
            sql += " LIMIT :limit"
            params["limit"] = int(selection.limit)
        with self._read() as conn:
            return conn.execute(sql, params).fetchall()

    def browse(self, page: Browse) -> list[tuple[Any, ...]]:
        """(The statement of :func:`browse_statement`.)"""
        statement = browse_statement(page)
        if statement is None:
            return []
        with self._read() as conn:
            return [(*r[:-1], bool(r[-1])) for r in conn.execute(*statement)]

    def throughput_rows(self, start: float, end: float) -> list[tuple[int, str, int]]:
        with self._read() as conn:
            return conn.execute(q("throughput"), {"start": start, "end": end}).fetchall()

    def recent_counts(self, since: float) -> list[tuple[str | None, str, str, int]]:
        with self._read() as conn:
            return conn.execute(q("recent_counts"), {"since": since}).fetchall()

    def worker_rows(self) -> list[tuple[Any, ...]]:
        with self._read() as conn:
            return conn.execute(q("worker_list")).fetchall()

    def attempt_rows(
        self, task_ids: list[int] | None, outcomes: list[str] | None, limit: int | None
    ) -> list[tuple[Any, ...]]:
        params = {
            "ids": None if task_ids is None else json.dumps(task_ids),
            "outcomes": None if outcomes is None else json.dumps(outcomes),
            "limit": -1 if limit is None else limit,
        }
        query = q("select_attempts" if task_ids is None else "select_attempts_of")
        with self._read() as conn:
            return conn.execute(query, params).fetchall()

    def stats_rows(self, by: str) -> list[tuple[Any, ...]]:
        column = {"group": "group_name", "priority": "priority", "task_type": "task_type"}[by]
        sql = (
            f"SELECT {column}, status, COUNT(*) FROM tasks GROUP BY 1, 2 "
            f"UNION ALL SELECT {column}, status, COUNT(*) FROM history GROUP BY 1, 2"
        )
        with self._read() as conn:
            return conn.execute(sql).fetchall()

    # ------------------------------------------------------------------ retention

    def describe(self) -> str:
        return f"task store {self.path}"

    def prune_select(self, cutoff: float, keep_last: int | None) -> list[int]:
        params = {"cutoff": cutoff, "keep_last": keep_last}
        with self._read() as conn:
            return [r[0] for r in conn.execute(q("prune_select"), params)]

    def prune_rows(self, ids: list[int]) -> list[tuple[Any, ...]]:
        with self._read() as conn:
            return conn.execute(q("prune_rows"), (json.dumps(ids),)).fetchall()

    def prune_delete(self, ids: list[int]) -> int:
        with self._write() as conn:
            return conn.execute(q("prune_delete"), (json.dumps(ids),)).rowcount

    @contextlib.contextmanager
    def prune_lock(self) -> Iterator[None]:
        """An exclusive ``flock`` on the file ``.<store name>.prune-lock`` beside the
        store, held for the whole prune (the kernel releases it if the process dies);
        where ``fcntl`` is missing, a lock of this process only."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            with _PRUNE_LOCK:
                yield
            return
        path = self.path.parent / f".{self.path.name}.prune-lock"
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise _store_error("cannot take the prune lock of", self.path, exc) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # waits for the prune under way
            yield
        finally:
            os.close(fd)  # releases the lock

    def meta_get(self, key: str) -> str | None:
        with self._read() as conn:
            row = conn.execute(q("meta_get"), (key,)).fetchone()
        return None if row is None else str(row[0])

    def meta_set(self, key: str, value: str | None) -> None:
        with self._write() as conn:
            if value is None:
                conn.execute(q("meta_delete"), (key,))
            else:
                conn.execute(q("meta_set"), (key, value))

    def integrity_check(self) -> str:
        """SQLite's ``PRAGMA integrity_check`` result (``"ok"`` when healthy)."""
        with self._read() as conn:
            return "\n".join(r[0] for r in conn.execute("PRAGMA integrity_check"))


class SqliteHeartbeat(RenewingConnection):
    """Lease renewals on a connection of their own to the store's file (WAL): a tiny
    write that waits at most ``timeout`` seconds for the write lock, so a renewal never
    queues behind the store's other connections, nor behind a thread pool."""

    def __init__(self, store: SqliteDriver, timeout: float) -> None:
        self.store = store
        self.clock = StoreClock()
        self._timeout = max(0.01, float(timeout))
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.store.path,
                timeout=self._timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {max(1, int(self._timeout * 1000))}")
            self._conn = conn
        return self._conn

    def _renew_rows(self, owner: str, held: str | None) -> list[Any]:
        try:
            params = {"owner": owner, "held": held}
            return self._connection().execute(q("renew_worker"), params).fetchall()
        except sqlite3.Error as exc:
            raise _store_error("cannot renew a lease in", self.store.path, exc) from exc
