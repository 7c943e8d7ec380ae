"""PostgresDriver: the :class:`~taskmill.backends.base.Driver` of a PostgreSQL database, with
the SQLite store's semantics, for workers on many machines sharing one queue.

Every statement is a named query of ``queries.sql`` beside this file, every value bound.
Up to three connections serve each store object, each held under a lock of its own (so
the object is thread-safe): one for writes (a transaction per call), one for reads (a
read-only, repeatable-read transaction per call: a call that reads twice sees one state,
and never waits for writers) and, opened by a worker's first claim, one for dispatch —
claims and the outcomes of attempts, mostly single statements committed on their own
(one round trip), planned once, and never queued behind a batch this process is
merging.  A broken connection is opened again on the next call.

Concurrency across processes and machines rests on PostgreSQL itself:

* **submits** take a store-wide, transaction-scoped advisory lock (:data:`SUBMIT_LOCK`) and
  lock the active task of their key (``FOR UPDATE``) before deciding, so two submits of a
  key never decide on the same state; the unique index on ``key_hash`` is the safety net
  (a submit that still meets it runs again and sees the task that won);
* **claims** are one statement (query ``claim``) that picks candidates ``FOR UPDATE SKIP
  LOCKED`` in ``priority, queue_pos, id`` order (a walk of the ``tasks_claim`` index,
  pinned whatever the statistics say) and marks them running, so a claim never waits for
  a submit deciding on a task, nor for another worker's claim.  A claim that counts
  limits (group limits, byte budgets, rate limits) first takes an advisory lock of its own
  (:data:`CLAIM_LOCK`) and counts the running tasks per group and the rate buckets under
  it, so every limit holds across every worker;
* **batches** (``postgres/staging.py``) are staged by
  DuckDB into a private unlogged table, then merged by one transaction per chunk holding
  :data:`SUBMIT_LOCK`, with the SQLite store's outcomes row for row;
* a task **finishes** in one statement that deletes it from ``tasks`` and records it in
  ``history``: of two calls finishing one task, the later finds it gone and records
  nothing;
* **recovery** deletes an expired worker's row before putting its tasks back, so a renewal
  either lands first (and keeps the tasks) or learns that the lease is gone.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, LiteralString, TypeVar, cast

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.pq import TransactionStatus

from ...model import (
    NotATaskStore,
    StoreClosed,
    StoreDamaged,
    StoreError,
    StoreLocked,
)
from ..base import CancelMatch, ClaimedTask, Driver, GroupQuery, shut
from ..calls import Browse, CancelSlice, Dead, Ending, Expired, NewTask, Owned, Selection
from ..family import park
from ..location import encode_userinfo, scrub
from ..schedules import ScheduleStatements
from ..sql import at_level
from ..staging import warm_up_in_background
from ..tags import tags_of_task
from ..workers import (
    RenewingConnection,
    StoreClock,
    pid_alive,
    worker_row,
)
from .migrate import ensure_schema
from .queries import CLAIM_LOCK, SUBMIT_LOCK, Connection, PostgresDeps, finish, q, queries, scalar
from .staging import PostgresBatch, sweep

__all__ = [
    "CLAIM_LOCK",
    "SUBMIT_LOCK",
    "PostgresDriver",
    "PostgresHeartbeat",
    "browse_params",
    "describe",
    "q",
    "queries",
    "tag_params",
]

log = logging.getLogger("taskmill")

#: The statements of schedules, over this engine's named queries.
_SCHEDULES = ScheduleStatements(q)

T = TypeVar("T")
#: Seconds the listening connection waits for a notification before it looks whether it
#: was told to stop (what closing a scheduler waits for, at most).
LISTEN_WAIT = 0.05
#: Advisory lock key a prune holds, on a session of its own, from before it selects its
#: rows until its export is published (see :mod:`taskmill.store.retention`).
PRUNE_LOCK = int.from_bytes(b"tm:prune", "big", signed=True)
#: How many times a transaction that met a deadlock or a serialization failure is run
#: again before the call fails with :class:`StoreLocked`.
TRANSACTION_TRIES = 5


def describe(url: str) -> str:
    """A readable name for the database at ``url``, without its password."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.Error:
        return "a PostgreSQL database (the connection string does not parse)"
    host = str(info.get("host") or info.get("hostaddr") or "localhost")
    port = str(info.get("port") or "5432")
    dbname = str(info.get("dbname") or info.get("user") or "")
    return f"PostgreSQL database {dbname!r} on {host}:{port}"


def browse_params(page: Browse) -> dict[str, Any]:
    """The parameters of query ``browse`` for ``page`` (a table the page rules out is not
    read: ``active`` / ``finished`` false)."""
    return {
        "active": page.active,
        "finished": page.finished,
        "before": page.before,
        "limit": page.limit,
        "status": page.status,
        "task_type": page.task_type,
        "group": page.group,
        "batch_ids": page.batch_ids,
        "key_prefix": page.key_prefix,
        "parent_id": page.parent_id,
        **tag_params(page.tags),
        "tags_common": page.tags_common,
    }


def tag_params(tags: list[tuple[str, str]] | None) -> dict[str, list[str] | None]:
    """A tag filter's pairs as the queries take them: ``tag_keys`` and ``tag_values``,
    two arrays side by side (``None``: no filter)."""
    return {
        "tag_keys": None if tags is None else [k for k, _ in tags],
        "tag_values": None if tags is None else [v for _, v in tags],
    }


def _store_error(
    action: str, where: str, exc: BaseException, *, url: str | None = None
) -> StoreError:
    """The taskmill error of a psycopg error (``url``: the connection string it may
    quote, whose password is hidden)."""
    if url is not None:
        shown = scrub(str(exc), url)
        if shown != str(exc):
            return StoreError(f"{action} {where}: {shown}")
    if isinstance(exc, pg_errors.DataCorrupted | pg_errors.IndexCorrupted):
        return StoreDamaged(
            f"{action} {where}: {exc}; the server reports damaged data: check its log and "
            "restore the database from a backup"
        )
    if isinstance(
        exc,
        pg_errors.LockNotAvailable | pg_errors.SerializationFailure | pg_errors.DeadlockDetected,
    ):
        # worded as the SQLite store's StoreLocked: the store was locked, then the cause
        return StoreLocked(f"{action} {where}: the store is locked by another transaction: {exc}")
    if isinstance(exc, pg_errors.UndefinedTable | pg_errors.InvalidSchemaName):
        return StoreError(
            f"{action} {where}: {exc}; the taskmill schema is missing (was it dropped "
            "while the store was open?); open the store again to create it"
        )
    return StoreError(f"{action} {where}: {exc}")


def _notified(conn: Connection, pending_again: int) -> int:
    """Wake the listening workers when ``pending_again`` tasks are pending again."""
    if pending_again:
        conn.execute(q("notify_work"))
    return pending_again


class PostgresDriver(Driver[Connection]):
    """A task store in a PostgreSQL database (schema ``taskmill``, created or upgraded when
    opened), under the :class:`~taskmill.store.TaskStore` that ``TaskStore.open`` makes
    for a PostgreSQL URL.  Every method is thread-safe, and any number of processes on any
    number of machines may open the same database.  A statement waits up to
    ``busy_timeout`` seconds for a lock, then the call raises :class:`StoreLocked`
    (``kind="store"``); any other failure to reach the server raises :class:`StoreError`.
    """

    def __init__(self, url: str, *, busy_timeout: float = 10.0) -> None:
        self._url = encode_userinfo(url)
        #: The database, for messages (no password).
        self.where = describe(self._url)
        self.busy_timeout = busy_timeout
        self._lock = threading.RLock()  # the write connection
        self._read_lock = threading.Lock()  # the read connection
        self._dispatch_lock = threading.Lock()  # the dispatch connection
        self._conn: Connection | None = None
        self._reader: Connection | None = None
        self._dispatcher: Connection | None = None
        self._closed = False
        #: The server's clock as last read here (by :meth:`now` or a heartbeat).
        self.clock = StoreClock()
        #: Seconds each transaction of the last batch held the submit lock.
        self.last_batch_merge_seconds: list[float] = []
        self._connect()

    def _connect(self) -> None:
        conn = self._new_connection()
        try:
            ensure_schema(conn, self.where)
        except (pg_errors.DuplicateTable, pg_errors.DuplicateObject) as exc:
            conn.close()
            raise NotATaskStore(
                f"{self.where} has a schema 'taskmill' that taskmill did not make ({exc}); "
                "it was left as it was: use another database, or rename that schema"
            ) from exc
        except psycopg.Error as exc:
            conn.close()
            raise _store_error("cannot create the taskmill schema in", self.where, exc) from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        try:
            # staging tables of batches that died mid-way, on this host or another
            sweep(self, lambda pid: pid == os.getpid() or pid_alive(pid))
        except BaseException:
            self.close()
            raise

    def _new_connection(self, *, reader: bool = False, dispatch: bool = False) -> Connection:
        """A connection with the store's settings: autocommit (each call opens its own
        transaction), lock waits bounded by ``busy_timeout``, no JIT (query
        ``session_settings``); a reader's transactions are read-only and repeatable-read;
        the dispatch connection's plans are pinned (query ``dispatch_settings``)."""
        try:
            conn = psycopg.connect(
                self._url,
                autocommit=True,
                connect_timeout=max(2, round(self.busy_timeout)),
                application_name="taskmill",
            )
        except psycopg.Error as exc:
            raise _store_error(
                "cannot connect to task store", self.where, exc, url=self._url
            ) from exc
        try:
            conn.execute(q("session_settings"), {"ms": str(max(1, int(self.busy_timeout * 1000)))})
            if reader:
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
            if dispatch:
                conn.execute(q("dispatch_settings"))
        except psycopg.Error as exc:
            conn.close()
            raise _store_error("cannot set up a connection to", self.where, exc) from exc
        return conn

    def watch(self, wake: Callable[[], None]) -> Callable[[], None]:
        """Call ``wake()`` (from a thread of its own) whenever another connection commits
        tasks that became pending — a submit, a batch, a release — so a scheduler
        dispatches them at once instead of at its next poll (``LISTEN/NOTIFY``).  A lost
        connection is opened again with backoff, waking once when it is back (anything
        sent meanwhile was missed).  Returns the function that stops watching."""
        stop = threading.Event()

        def tell() -> None:
            try:
                wake()
            except Exception:  # a scheduler's hook must never end the watch
                log.exception("taskmill: waking a worker of %s failed", self.where)

        def listen() -> None:
            backoff = 0.1
            while not stop.is_set():
                try:
                    with psycopg.connect(self._url, autocommit=True) as conn:
                        conn.execute(q("listen_work"))
                        tell()  # a (re)connect may have missed notifications
                        backoff = 0.1
                        while not stop.is_set():
                            # a short wait: unwatch() (a scheduler closing) waits for it
                            for _ in conn.notifies(timeout=LISTEN_WAIT, stop_after=1):
                                tell()
                except psycopg.Error as exc:
                    shown = scrub(str(exc), self._url)
                    log.debug("taskmill: listening on %s failed (%s); again", self.where, shown)
                    stop.wait(backoff)
                    backoff = min(backoff * 2, 5.0)

        thread = threading.Thread(target=listen, name="taskmill-listen", daemon=True)
        thread.start()

        def unwatch() -> None:
            stop.set()
            thread.join(timeout=5.0)

        return unwatch

    def close(self) -> None:
        self._closed = True
        with self._lock:
            self._conn = shut(self._conn)
        with self._read_lock:
            self._reader = shut(self._reader)
        with self._dispatch_lock:
            self._dispatcher = shut(self._dispatcher)

    def __repr__(self) -> str:
        state = "closed" if self._closed else "open"
        return f"<PostgresStore {self.where} ({state})>"

    # ------------------------------------------------------------------ transactions

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosed(f"task store {self.where} is closed")

    def _usable(
        self, conn: Connection | None, *, reader: bool = False, dispatch: bool = False
    ) -> Connection:
        """``conn`` while it is open and whole; else (``conn`` closed, if there is one) a
        new connection of its kind.  Raises once the store is closed."""
        self._check_open()
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        shut(conn)
        return self._new_connection(reader=reader, dispatch=dispatch)

    def _writer(self) -> Connection:
        """The write connection (hold ``_lock``), opened again if it broke."""
        self._conn = self._usable(self._conn)
        return self._conn

    def _dispatch_connection(self) -> Connection:
        """The dispatch connection (hold ``_dispatch_lock``), opened on first use or if
        it broke."""
        self._dispatcher = self._usable(self._dispatcher, dispatch=True)
        return self._dispatcher

    def _read_connection(self) -> Connection:
        """The read connection (hold ``_read_lock``), opened on first use or if it broke."""
        self._reader = self._usable(self._reader, reader=True)
        return self._reader

    def write(
        self,
        action: str,
        body: Callable[[Connection], T],
        *,
        dispatch: bool = False,
        single: bool = False,
        claim_lock: bool = False,
        retry_unique: bool = False,
    ) -> T:
        """(``dispatch``: on the dispatch connection instead of the write connection.
        ``single``: ``body`` runs one statement, committed on its own (no ``BEGIN`` and
        ``COMMIT`` round trips).  ``claim_lock``: the query ``begin_claim`` opens the
        transaction instead of a plain ``BEGIN`` (``BEGIN`` and taking the claim lock, in
        one round trip).  A connection found lost at ``BEGIN`` is opened again
        (nothing was written yet).  A deadlock or serialization failure runs the
        transaction again (up to :data:`TRANSACTION_TRIES` times), as does — with
        ``retry_unique`` — a clash on the active-key index.)"""
        begin = q("begin_claim") if claim_lock else None
        lock = self._dispatch_lock if dispatch else self._lock
        connect = self._dispatch_connection if dispatch else self._writer
        with lock:
            for attempt in itertools.count(1):
                conn = connect()
                begun = single  # a lost single statement may have committed
                try:
                    if single:
                        return body(conn)
                    if begin is not None:  # opened by ``begin``; closed here
                        try:
                            conn.execute(begin)
                            begun = True
                            result = body(conn)
                        except BaseException:
                            idle = conn.info.transaction_status == TransactionStatus.IDLE
                            if not conn.broken and not idle:
                                with contextlib.suppress(psycopg.Error):
                                    conn.execute("ROLLBACK")
                            raise
                        conn.execute("COMMIT")
                        return result
                    with conn.transaction():
                        begun = True
                        return body(conn)
                except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as exc:
                    if attempt < TRANSACTION_TRIES:
                        continue
                    raise _store_error(action, self.where, exc) from exc
                except psycopg.OperationalError as exc:
                    # the connection was lost before the transaction began (the server
                    # restarted, an idle connection was cut): nothing was written, so a
                    # new connection may try; once begun, the outcome is unknown
                    if not begun and conn.broken and attempt == 1:
                        continue
                    raise _store_error(action, self.where, exc) from exc
                except pg_errors.UniqueViolation as exc:
                    clash = exc.diag.constraint_name == "tasks_active_key"
                    if retry_unique and clash and attempt < TRANSACTION_TRIES:
                        continue
                    raise _store_error(action, self.where, exc) from exc
                except psycopg.Error as exc:
                    raise _store_error(action, self.where, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, body: Callable[[Connection], T]) -> T:
        return self._read(body)

    def clock_in(self, conn: Connection) -> float:
        """The server's clock carried forward (:meth:`now`), read on ``conn`` when the
        last reading is over a minute old."""
        at = self.clock.now()
        if at is not None and self.clock.age() < 60.0:
            return at
        sent = time.monotonic()
        at = self._server_now(conn)
        self.clock.set(at, sent, time.monotonic())
        return at

    def _autocommit(self, action: str, body: Callable[[Connection], T]) -> T:
        """Run ``body`` on the write connection outside a transaction (each statement
        commits on its own: creating and dropping batch staging tables)."""
        with self._lock:
            conn = self._writer()
            try:
                return body(conn)
            except psycopg.Error as exc:
                raise _store_error(action, self.where, exc) from exc

    def _read(self, body: Callable[[Connection], T]) -> T:
        """Run ``body`` in one read-only transaction (one snapshot).  A connection that
        broke since the last call is opened again and the read tried once more."""
        with self._read_lock:
            for attempt in (1, 2):
                conn = self._read_connection()
                try:
                    with conn.transaction():
                        return body(conn)
                except psycopg.OperationalError as exc:
                    if attempt == 1 and conn.broken:
                        continue
                    raise _store_error("task store read failed on", self.where, exc) from exc
                except psycopg.Error as exc:
                    raise _store_error("task store read failed on", self.where, exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    # ------------------------------------------------------------------ submitting

    def find_active(self, conn: Connection, hashed: int) -> tuple[Any, ...] | None:
        """Takes :data:`SUBMIT_LOCK` first, then locks the key's active task."""
        conn.execute(q("advisory_lock"), {"lock": SUBMIT_LOCK})
        return conn.execute(q("find_active"), {"key_hash": hashed}).fetchone()

    def new_task_id(self, conn: Connection) -> int:
        return self._next_id(conn)

    def upgrade_priority(self, conn: Connection, task_id: int, priority: int) -> None:
        conn.execute(q("upgrade_priority"), {"priority": priority, "id": task_id})

    def finish(self, conn: Connection, ids: Sequence[int], ending: Ending) -> None:
        self._finish(conn, ids, ending)

    # ------------------------------------------------------------------ batches

    def batch_backend(self, retries: Sequence[int] | None) -> PostgresBatch:
        self._check_open()
        self.last_batch_merge_seconds = []
        warm_up_in_background()  # DuckDB starts while the batch is prepared
        return PostgresBatch(self, retries)

    @staticmethod
    def _next_id(conn: Connection) -> int:
        return int(scalar(conn.execute(q("next_id"))))

    def insert(self, conn: Connection, task: NewTask) -> None:
        row = task.row
        conn.execute(
            q("insert_task"),
            {
                "id": task.id,
                "task_type": row.task_type,
                "dedup_key": row.dedup_key,
                "group": row.group,
                "priority": row.priority,
                "queue_pos": task.queue_pos,
                "payload": row.payload,
                "label": row.label,
                "expected_read_bytes": row.expected_read_bytes,
                "expected_write_bytes": row.expected_write_bytes,
                "expected_net_rx_bytes": row.expected_net_rx_bytes,
                "expected_net_tx_bytes": row.expected_net_tx_bytes,
                "max_retries": row.max_retries,
                "now": task.now,
                "key_hash": task.hashed,
                "run_after": row.run_after,
                "expires_at": row.expires_at,
                "on_dependency_failure": row.on_dependency_failure,
                "parent_id": task.parent,
            },
        )
        if row.tags:
            ids, keys, values = (list(c) for c in zip(*tags_of_task(task), strict=True))
            conn.execute(q("tags_insert"), {"ids": ids, "keys": keys, "values": values})
        conn.execute(q("notify_work"))  # workers on other machines wake at commit

    @staticmethod
    def _finish(
        conn: Connection, ids: Sequence[int], ending: Ending
    ) -> list[tuple[int, str, int | None]]:
        """Move active tasks to history as ``ending`` says; returns ``(id, status it
        had)`` of each task moved (one that is gone already is not)."""
        by = None if ending.replaced_by is None else [ending.replaced_by] * len(ids)
        return finish(conn, ids, ending.status, ending.now, replaced_by=by, error=ending.error)

    def finish_owned(self, conn: Connection, owned: Owned, ending: Ending) -> set[int]:
        moved = finish(
            conn,
            owned.ids,
            ending.status,
            ending.now,
            owner=owned.owner,
            attempts=owned.tries,
            error=ending.error,
        )
        return {int(r[0]) for r in moved}

    # ------------------------------------------------------------------ tags

    def tag_pair_count(self, key: str, value: str, cap: int) -> int:
        params = {"key": key, "value": value, "cap": cap}
        return int(self._read(lambda conn: scalar(conn.execute(q("tag_pair_count"), params))))

    def tags_of(self, task_ids: list[int]) -> list[tuple[int, str, str]]:
        return self._read(lambda conn: conn.execute(q("tags_of"), {"ids": task_ids}).fetchall())

    # ------------------------------------------------------------------ dependencies

    def awaited(self, task_ids: list[int]) -> list[tuple[int, int]]:
        return self._read(
            lambda conn: conn.execute(q("deps_awaited"), {"ids": task_ids}).fetchall()
        )

    # ------------------------------------------------------------------ child tasks

    def park(
        self, conn: Connection, owned: Owned, finalizer: str | None
    ) -> dict[str, int] | bool | None:
        [task_id], [attempt] = owned.ids, owned.tries
        params = {"id": task_id, "owner": owned.owner, "attempt": attempt}
        if conn.execute(q("family_owned"), params).fetchone() is None:
            return False
        return park(PostgresDeps(), conn, task_id, finalizer)

    def family_counts(self, parent_ids: list[int]) -> list[tuple[int, str, int]]:
        return self._read(
            lambda conn: conn.execute(q("family_counts"), {"ids": parent_ids}).fetchall()
        )

    # ------------------------------------------------------------------ schedules

    @property
    def schedules(self) -> ScheduleStatements:
        return _SCHEDULES

    # ------------------------------------------------------------------ batches

    def batch_rows(
        self, conn: Connection, batch_id: int | None, limit: int | None
    ) -> list[tuple[Any, ...]]:
        if batch_id is not None:
            return conn.execute(q("batch_row"), {"id": batch_id}).fetchall()
        return conn.execute(q("batch_rows"), {"limit": limit}).fetchall()

    def batch_tallies(self, conn: Connection, ids: list[int]) -> list[tuple[Any, ...]]:
        return conn.execute(q("batch_tallies"), {"ids": ids}).fetchall()

    def batches_done(self, conn: Connection) -> list[int]:
        return [int(r[0]) for r in conn.execute(q("batches_done"))]

    def batch_finish(self, conn: Connection, batch_id: int, values: dict[str, Any]) -> bool:
        return conn.execute(q("batch_finish"), {**values, "id": batch_id}).rowcount == 1

    # ------------------------------------------------------------------ task control

    def cancel(self, task_id: int) -> str | None:
        def body(conn: Connection) -> str | None:
            moved = self._finish(conn, [task_id], Ending("cancelled", self.now()))
            return moved[0][1] if moved else None

        return self.write("cannot cancel a task in", body)

    @staticmethod
    def _expire_due(conn: Connection, now: float) -> int:
        """Move the tasks not started by their expiry time to history (in ``conn``'s
        transaction); returns how many.  A task a submit is deciding on is left for
        the next sweep."""
        ids = [int(r[0]) for r in conn.execute(q("expired_ids"), {"now": now})]
        if ids:
            PostgresDriver._finish(conn, ids, Ending("expired", now))
        return len(ids)

    def any_expired(self, now: float) -> bool:
        return bool(self._read(lambda conn: scalar(conn.execute(q("any_expired"), {"now": now}))))

    def expire(self, now: float) -> int:
        return self.write("cannot expire tasks in", lambda conn: self._expire_due(conn, now))

    def pause_group(self, group: str, until: float | None, now: float) -> None:
        params = {"group": group, "until": until, "now": now}
        self.write("cannot pause a group in", lambda conn: conn.execute(q("pause_group"), params))

    def resume_group(self, group: str) -> bool:
        def body(conn: Connection) -> bool:
            resumed = conn.execute(q("resume_group"), {"group": group}).rowcount > 0
            return _notified(conn, int(resumed)) > 0  # workers elsewhere wake at commit

        return self.write("cannot resume a group in", body)

    def per_group(self, query: GroupQuery, now: float) -> list[tuple[Any, Any]]:
        return self._read(lambda conn: conn.execute(q(query), {"now": now}).fetchall())

    def last_task_id(self) -> int:
        return int(self._read(lambda conn: scalar(conn.execute(q("batch_last_id")))))

    def active_task_types(self) -> list[str]:
        return self._read(
            lambda conn: [r[0] for r in conn.execute(q("active_task_types")).fetchall()]
        )

    def cancel_batch(self, where: CancelMatch, part: CancelSlice) -> tuple[int, int | None]:
        """One transaction of :meth:`cancel_where`: lock the tasks (``FOR UPDATE``), then
        move them; returns how many moved and the last id picked.

        No submit lock is taken: a cancel inserts nothing, and a submit deciding on a
        key locks that key's active task first — the later of the two waits for the
        other, then sees the task as it was left (cancelled: gone, so the submit inserts;
        superseded or finished meanwhile: no longer picked here)."""
        params: dict[str, Any] = {
            "status": where.status,
            "group": where.group,
            "label": where.label,
            "tag_keys": None if where.tags is None else [k for k, _ in where.tags],
            "tag_values": None if where.tags is None else [v for _, v in where.tags],
            "last": part.last,
        }
        if part.keyed is None:
            query = q("cancel_pick")
            params |= {"task_type": where.task_type, "after": part.after, "limit": part.limit}
        else:
            query = q("cancel_pick_by_key")
            params |= dict(zip(("key_hashes", "task_types", "dedup_keys"), part.keyed, strict=True))

        def body(conn: Connection) -> tuple[int, int | None]:
            ids = [int(r[0]) for r in conn.execute(query, params).fetchall()]
            moved = self._finish(conn, ids, Ending("cancelled", self.now())) if ids else []
            return len(moved), (ids[-1] if ids else None)

        return self.write("cannot cancel tasks in", body)

    def failed_rows(
        self,
        task_type: list[str] | None,
        group: list[str] | None,
        since: float | None,
        ids: list[int] | None = None,
    ) -> list[tuple[Any, ...]]:
        params = {"task_type": task_type, "group": group, "since": since, "ids": ids}
        return self._read(lambda conn: conn.execute(q("failed_to_retry"), params).fetchall())

    def set_status(self, task_id: int, old: str, new: str) -> bool:
        params = {"id": task_id, "from": old, "to": new}
        return self.write(
            "cannot change a task in",
            lambda conn: conn.execute(q("set_status"), params).rowcount == 1,
        )

    # ------------------------------------------------------------------ workers

    def register(self, owner: str, *, lease_timeout: float) -> None:
        params = worker_row(owner, lease_timeout)
        self.write(
            "cannot register a worker in",
            lambda conn: conn.execute(q("register_worker"), params).fetchall(),
        )

    def renew(self, owner: str) -> bool:
        params = {"owner": owner, "now": None, "held": None}
        return self.write(
            "cannot renew a lease in",
            lambda conn: bool(conn.execute(q("renew_worker"), params).fetchall()),
        )

    def heartbeat(self, *, timeout: float) -> PostgresHeartbeat:
        """A connection of its own for renewing leases, each statement bounded by
        ``timeout`` seconds: never queued behind this store's batches, claims or reads."""
        return PostgresHeartbeat(self, timeout)

    @staticmethod
    def _server_now(conn: Connection) -> float:
        return float(scalar(conn.execute(q("store_clock"))))

    def now(self) -> float:
        """The server's clock, in seconds since the epoch: what leases, rate limits, start
        and expiry times are judged by.  Carried forward from the last reading (a
        heartbeat's, every few seconds), read again when that is over a minute old."""
        at = self.clock.now()
        if at is not None and self.clock.age() < 60.0:
            return at
        sent = time.monotonic()
        at = self._read(self._server_now)
        self.clock.set(at, sent, time.monotonic())
        return at

    def release_owner(self, owner: str) -> int:
        def body(conn: Connection) -> int:
            count = conn.execute(q("release_owner"), {"owner": owner}).rowcount
            conn.execute(q("forget_worker"), {"owner": owner})
            return _notified(conn, count)

        return self.write("cannot release a worker's tasks in", body)

    def owned_tasks(self, owner: str) -> list[int]:
        return self._read(
            lambda conn: [int(r[0]) for r in conn.execute(q("owned_by"), {"owner": owner})]
        )

    def owner_leases(self, now: float | None) -> tuple[list[Any], list[str]]:
        def look(conn: Connection) -> tuple[list[Any], list[str]]:
            running = conn.execute(q("running_owner_leases"), {"now": now}).fetchall()
            stale = conn.execute(q("expired_workers"), {"now": now}).fetchall()
            return running, [r[0] for r in stale]

        return self._read(look)

    def held_rows(self, now: float | None) -> list[str]:
        return self._read(
            lambda conn: [r[0] for r in conn.execute(q("workers_held"), {"now": now}).fetchall()]
        )

    def give_back(self, dead: Dead, expired: Expired, now: float | None) -> int:
        def body(conn: Connection) -> int:
            count = 0
            mark = scalar(conn.execute(q("attempts_mark")))
            for owner, why in dead:
                count += conn.execute(q("release_owner"), {"owner": owner}).rowcount
                if owner is not None:
                    conn.execute(q("forget_worker"), {"owner": owner})
                conn.execute(q("attempts_lost"), {"mark": mark, "owner": owner, "why": why})
            for owner, why in expired:
                # the worker row first: a renewal in flight lands before (and keeps the
                # tasks) or after (and learns the lease is gone), never in between
                params = {"owner": owner, "now": now}
                conn.execute(q("forget_expired_worker"), params)
                count += conn.execute(q("release_expired_owner"), params).rowcount
                conn.execute(q("attempts_lost"), {"mark": mark, "owner": owner, "why": why})
            return _notified(conn, count)

        return self.write("cannot recover tasks in", body)

    # ------------------------------------------------------------------ dispatch

    claims_at_once = True

    def claim_at_once(
        self, conn: Connection, types: list[str], now: float, owner: str, limit: int
    ) -> list[ClaimedTask]:
        """Query ``claim``: the first ``limit`` candidates, marked, in one statement."""
        params = {"types": types, "now": now, "owner": owner, "limit": limit}
        rows = conn.execute(q("claim"), params).fetchall()
        rows.sort(key=lambda r: (r[4], r[9], r[0]))  # priority, queue order, id
        return [ClaimedTask(*r[:9], finalizing=r[10] == "due") for r in rows]

    def claim_counts(
        self, conn: Connection, counted: bool, keys: list[str]
    ) -> tuple[dict[str, tuple[int, int]], dict[str, tuple[float, float]]]:
        """Query ``claim_counts`` (the caller holds :data:`CLAIM_LOCK` since ``BEGIN``)."""
        running: dict[str, tuple[int, int]] = {}
        buckets: dict[str, tuple[float, float]] = {}
        params = {"counted": counted, "keys": keys}
        for kind, name, a, b, size in conn.execute(q("claim_counts"), params):
            if kind == "group":
                running[name] = (int(a), int(size))  # an exact numeric sum
            else:
                buckets[name] = (a, b)
        return running, buckets

    def claim_candidates(
        self,
        conn: Connection,
        types: list[str],
        now: float,
        held: list[str],
        limit: int,
        priority: int | None = None,
    ) -> list[tuple[ClaimedTask, int]]:
        params = {"types": types, "now": now, "held": held, "limit": limit}
        if priority is None:
            rows = conn.execute(q("claim_candidates"), params).fetchall()
        else:
            query = cast(LiteralString, at_level(q("claim_candidates"), "%(level)s"))
            rows = conn.execute(query, params | {"level": priority}).fetchall()
        return [(ClaimedTask.candidate(r[:12]), int(r[12])) for r in rows]

    def pending_levels(self, conn: Connection) -> list[int]:
        return [int(r[0]) for r in conn.execute(q("pending_levels"))]

    def mark_running(
        self,
        conn: Connection,
        ids: list[int],
        now: float,
        owner: str,
        buckets: list[tuple[str, float, float]],
    ) -> None:
        """Marked, and the buckets stored, in one statement."""
        conn.execute(
            q("mark_running"),
            {
                "ids": ids,
                "now": now,
                "owner": owner,
                "keys": [k for k, _, _ in buckets],
                "tokens": [t for _, t, _ in buckets],
                "at": [u for _, _, u in buckets],
            },
        )

    def store_progress(
        self, conn: Connection, owner: str, rows: list[tuple[int, int, float, str | None]]
    ) -> int:
        ids, attempts, fractions, messages = (list(c) for c in zip(*rows, strict=True))
        params = {
            "ids": ids,
            "attempts": attempts,
            "fractions": fractions,
            "messages": messages,
            "owner": owner,
        }
        return conn.execute(q("store_progress"), params).rowcount

    def retry_later(self, conn: Connection, owned: Owned, error: str, run_after: float) -> bool:
        [task_id], [attempt] = owned.ids, owned.tries
        params = {
            "id": task_id,
            "owner": owned.owner,
            "attempt": attempt,
            "error": error,
            "run_after": run_after,
        }
        return conn.execute(q("retry_later"), params).rowcount > 0

    def attempt_traceback(self, conn: Connection, task_id: int, traceback: str) -> None:
        conn.execute(q("attempt_traceback"), {"id": task_id, "traceback": traceback})

    def preempt_running(self, conn: Connection, owned: Owned, now: float) -> int:
        params = {"ids": owned.ids, "attempts": owned.tries, "owner": owned.owner, "now": now}
        return conn.execute(q("preempt_running"), params).rowcount

    def urgent_waiting(self, priority: int, types: list[str], now: float, limit: int) -> int:
        params = {"priority": priority, "types": types, "now": now, "limit": limit}
        return int(self._read(lambda conn: scalar(conn.execute(q("urgent_waiting"), params))))

    def resume_preempted(self, priority: int, types: list[str], now: float) -> int:
        if not self._read(lambda conn: scalar(conn.execute(q("any_preempted")))):
            return 0
        params = {"priority": priority, "types": types, "now": now}

        def body(conn: Connection) -> int:
            return _notified(conn, conn.execute(q("resume_preempted"), params).rowcount)

        return self.write("cannot resume preempted tasks in", body)

    def release_running(self, conn: Connection, owned: Owned) -> int:
        params = {"ids": owned.ids, "attempts": owned.tries, "owner": owned.owner}
        return _notified(conn, conn.execute(q("release_running"), params).rowcount)

    def ownership(
        self, ids: list[int], tries: list[int | None], owner: str
    ) -> tuple[set[int], dict[int, tuple[str, int | None]]]:
        def body(conn: Connection) -> tuple[set[int], dict[int, tuple[str, int | None]]]:
            params = {"ids": ids, "attempts": tries, "owner": owner}
            still = {int(r[0]) for r in conn.execute(q("owned_running"), params)}
            lost = [t for t in ids if t not in still]
            found: dict[int, tuple[str, int | None]] = {
                int(r[0]): (str(r[1]), r[2])
                for r in conn.execute(q("history_status"), {"ids": lost})
            }
            for tid, status in conn.execute(q("active_status"), {"ids": lost}):
                found.setdefault(int(tid), (str(status), None))
            return still, found

        return self._read(body)

    def has_work(self, conn: Connection, types: list[str]) -> bool:
        return bool(scalar(conn.execute(q("has_work_for_types"), {"types": types})))

    def next_run_after(self, conn: Connection, now: float) -> float | None:
        return scalar(conn.execute(q("next_run_after"), {"now": now}))

    # ------------------------------------------------------------------ queries

    def status_counts(self) -> list[tuple[str, int]]:
        return self._read(lambda conn: conn.execute(q("counts")).fetchall())

    def active_group_counts(self) -> list[tuple[str | None, str, int]]:
        return self._read(lambda conn: conn.execute(q("active_group_counts")).fetchall())

    def select(self, selection: Selection) -> list[tuple[Any, ...]]:
        """(Query ``select_tasks`` or ``select_history``: their columns are the frames'.)"""
        limit = selection.limit
        params = {
            "ids": selection.ids,
            "status": selection.status,
            "task_type": selection.task_type,
            "group": selection.group,
            "batch_ids": selection.batch_ids,
            **tag_params(selection.tags),
            # as in SQLite, a negative limit is no limit (PostgreSQL would refuse it)
            "limit": None if limit is None or limit < 0 else int(limit),
        }
        query = q(f"select_{selection.table}")
        return self._read(lambda conn: conn.execute(query, params).fetchall())

    def browse(self, page: Browse) -> list[tuple[Any, ...]]:
        """(Query ``browse``, with :func:`browse_params`, planned as ``browse_settings``
        says.)"""
        if not (page.active or page.finished):
            return []
        params = browse_params(page)

        def body(conn: Connection) -> list[tuple[Any, ...]]:
            conn.execute(q("browse_settings"))
            return conn.execute(q("browse"), params).fetchall()

        return self._read(body)

    def throughput_rows(self, start: float, end: float) -> list[tuple[int, str, int]]:
        params = {"start": start, "end": end}
        return self._read(lambda conn: conn.execute(q("throughput"), params).fetchall())

    def recent_counts(self, since: float) -> list[tuple[str | None, str, str, int]]:
        params = {"since": since}
        return self._read(lambda conn: conn.execute(q("recent_counts"), params).fetchall())

    def worker_rows(self) -> list[tuple[Any, ...]]:
        return self._read(lambda conn: conn.execute(q("worker_list")).fetchall())

    def attempt_rows(
        self, task_ids: list[int] | None, outcomes: list[str] | None, limit: int | None
    ) -> list[tuple[Any, ...]]:
        params = {"ids": task_ids, "outcomes": outcomes, "limit": limit}
        query = q("select_attempts" if task_ids is None else "select_attempts_of")
        return self._read(lambda conn: conn.execute(query, params).fetchall())

    def stats_rows(self, by: str) -> list[tuple[Any, ...]]:
        query = q(f"stats_by_{by}")
        return self._read(lambda conn: conn.execute(query).fetchall())

    # ------------------------------------------------------------------ retention

    def describe(self) -> str:
        return f"task store {self.where}"

    def prune_select(self, cutoff: float, keep_last: int | None) -> list[int]:
        params = {"cutoff": cutoff, "keep_last": keep_last}
        return self._read(lambda conn: [int(r[0]) for r in conn.execute(q("prune_select"), params)])

    def prune_rows(self, ids: list[int]) -> list[tuple[Any, ...]]:
        params = {"ids": ids}
        return self._read(lambda conn: conn.execute(q("prune_rows"), params).fetchall())

    def prune_delete(self, ids: list[int]) -> int:
        params = {"ids": ids}
        return self.write(
            "cannot prune the history of",
            lambda conn: conn.execute(q("prune_delete"), params).rowcount,
            single=True,
        )

    @contextlib.contextmanager
    def prune_lock(self) -> Iterator[None]:
        """The session advisory lock :data:`PRUNE_LOCK`, on a connection of its own
        opened for the prune and closed after it (the server releases the lock with the
        session, also when this process dies).  It waits for the prune under way however
        long it takes (no ``lock_timeout``)."""
        conn = self._new_connection()
        try:
            try:
                conn.execute(q("no_lock_timeout"))
                conn.execute(q("prune_lock"), {"lock": PRUNE_LOCK})
            except psycopg.Error as exc:
                raise _store_error("cannot take the prune lock of", self.where, exc) from exc
            yield
        finally:
            conn.close()

    def meta_get(self, key: str) -> str | None:
        rows = self._read(lambda conn: conn.execute(q("meta_get"), {"key": key}).fetchall())
        return None if not rows else str(rows[0][0])

    def meta_set(self, key: str, value: str | None) -> None:
        params = {"key": key, "value": value}
        query = q("meta_delete" if value is None else "meta_set")
        self.write(
            "cannot record the prune under way in",
            lambda conn: conn.execute(query, params),
            single=True,
        )

    def integrity_check(self) -> str:
        """``"ok"`` when the store's invariants hold; otherwise one line per kind of breach
        with how many rows break it.  The invariants: each active task's key hash is the
        hash of its key, no key is held by two active tasks, no id is both active and
        finished, exactly the running tasks have an owner, exactly the superseded tasks
        have ``replaced_by``, and no id is above what the id sequence handed out.
        (PostgreSQL checks its own pages and indexes; this checks taskmill's rules.)"""
        problems = self._read(lambda conn: conn.execute(q("integrity_problems")).fetchall())
        if not problems:
            return "ok"
        return "\n".join(f"{problem}: {n}" for problem, n in problems)


class PostgresHeartbeat(RenewingConnection):
    """Lease renewals on a psycopg connection of their own (autocommit, every wait
    bounded by ``timeout``): a renewal never queues behind the store's write, read or
    dispatch connections.  A lost connection is opened again at the next renewal."""

    def __init__(self, store: PostgresDriver, timeout: float) -> None:
        self.store = store
        self.clock = store.clock
        self._ms = str(max(1, int(timeout * 1000)))
        self._timeout = timeout
        self._conn: Connection | None = None

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = None
            conn = psycopg.connect(
                self.store._url,
                autocommit=True,
                connect_timeout=max(2, round(self._timeout)),
                application_name="taskmill-heartbeat",
            )
            try:
                conn.execute(q("session_settings"), {"ms": self._ms})
                conn.execute(
                    sql.SQL("SET statement_timeout = {}").format(sql.Literal(int(self._ms)))
                )
            except BaseException:
                conn.close()
                raise
            self._conn = conn
        return self._conn

    def _renew_rows(self, owner: str, held: str | None) -> list[Any]:
        try:
            params = {"owner": owner, "now": None, "held": held}
            return self._connection().execute(q("renew_worker"), params).fetchall()
        except psycopg.Error as exc:
            raise _store_error("cannot renew a lease in", self.store.where, exc) from exc
