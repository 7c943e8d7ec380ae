"""The batch path of the PostgreSQL store, as a :class:`~taskmill.backends.base.BatchBackend`.

Each transaction's rows are bulk-copied by DuckDB's postgres extension (binary ``COPY``)
into a private ``UNLOGGED`` staging table ``taskmill.stage_…`` — DuckDB and psycopg are
different connections, so a temporary table would not be shared.  Then one PostgreSQL
transaction (psycopg) holding :data:`SUBMIT_LOCK` merges it: the staged rows are matched
to the active tasks by key hash (locked ``FOR UPDATE``), :func:`~taskmill.backends.staging.decide`
says what each row does, superseded tasks move to history, pending duplicates are
upgraded and the new tasks are inserted with ids reserved as one contiguous block of the
id sequence.  PostgreSQL's unique index on ``key_hash`` enforces one active task per key
throughout.  The staging table is dropped afterwards, whatever happened.

A staging table is named ``stage_<host tag>_<pid>_b<backend>_<random>``: the host and pid
of the process, and the server process (``pg_backend_pid()``) of the session that made
it — the store's write connection, which the batch uses until it drops the table.  A
process that dies mid-batch leaves its table behind; :func:`sweep`, run whenever a store
is opened, drops the tables whose session the server no longer has, whichever machine
made them.  A live batch whose session was lost finds its table swept and stages again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import polars as pl
from psycopg import errors as pg_errors
from psycopg import sql

from ...model import SchedulerError, StoreError
from .. import staging
from ..calls import BatchTag
from ..depends import drop_unmerged, lookup_dependencies, store_dependencies
from ..family import parent_gone
from ..location import scrub
from ..staging import INSERTING, decide, hash_part, retried_failures, staging_frame
from ..tags import new_tags
from .queries import SUBMIT_LOCK, Connection, PostgresDeps, finish, q, scalar

__all__ = ["BatchStore", "PostgresBatch", "StagedPart", "stage_name", "stage_prefix", "sweep"]

log = logging.getLogger("taskmill")

T = TypeVar("T")


class BatchStore(Protocol):
    """What the batch path uses of its store, a :class:`~.driver.PostgresDriver` (which
    imports this module: the store is named here by what it does, not imported)."""

    _url: str
    #: The database, for messages (no password).
    where: str
    last_batch_merge_seconds: list[float]

    def now(self) -> float: ...

    def _autocommit(self, action: str, body: Callable[[Connection], T]) -> T: ...

    def _read(self, body: Callable[[Connection], T]) -> T: ...

    def write(
        self, action: str, body: Callable[[Connection], T], *, retry_unique: bool = False
    ) -> T: ...

    def _expire_due(self, conn: Connection, now: float) -> int: ...


def stage_prefix(pid: int | None = None) -> str:
    """The name prefix of this process's staging tables (a tag of the host, the pid)."""
    host = uuid.uuid5(uuid.NAMESPACE_DNS, socket.gethostname()).hex[:8]
    return f"stage_{host}_{os.getpid() if pid is None else pid}_"


def stage_name(backend: int) -> str:
    """A new staging table's name, for a table made by the session of server process
    ``backend``: ``stage_<host tag>_<pid>_b<backend>_<random>``."""
    return f"{stage_prefix()}b{backend}_{uuid.uuid4().hex[:12]}"


def _parse(table: str) -> tuple[str, int, int | None] | None:
    """``(host tag, pid, backend)`` of a staging table's name (``backend`` is ``None`` in
    the older names, ``stage_<host tag>_<pid>_<random>``); ``None``: not such a name."""
    parts = table.split("_")
    if len(parts) not in (4, 5) or parts[0] != "stage" or not parts[2].isdigit():
        return None
    if len(parts) == 4:
        return parts[1], int(parts[2]), None
    backend = parts[3]
    if not (backend.startswith("b") and backend[1:].isdigit()):
        return None
    return parts[1], int(parts[2]), int(backend[1:])


def _table_gone(exc: StoreError, table: str) -> bool:
    """Whether ``exc`` says that staging table ``table`` does not exist (any more)."""
    cause = exc.__cause__
    return isinstance(cause, pg_errors.UndefinedTable) and f'"taskmill.{table}"' in str(cause)


def _quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@dataclass
class StagedPart:
    """One transaction's rows staged in ``taskmill.<table>`` (``None``: nothing staged,
    the part has no winning rows)."""

    part: pl.DataFrame
    table: str | None
    collisions: list[tuple[int, int]]


class PostgresBatch:
    """The PostgreSQL store as a batch backend (see the module docstring)."""

    def __init__(self, store: BatchStore, retries: Sequence[int] | None = None) -> None:
        self.store = store
        self.retries = retries  # see Driver.batch_backend
        self.phases: dict[str, float] = dict.fromkeys(("staging", "write_lock"), 0.0)
        self.tag = BatchTag()

    # ------------------------------------------------------------------ helpers

    def _q(self, name: str, table: str) -> sql.Composed:
        """Named query ``name`` with its staging table filled in (an identifier)."""
        return sql.SQL(q(name)).format(stage=sql.Identifier(table))

    # ------------------------------------------------------------------ BatchBackend

    @contextlib.contextmanager
    def batch_session(self, *, chunked: bool, dry_run: bool) -> Iterator[None]:
        """Nothing to set up beyond DuckDB's warm-up (started before preparing)."""
        yield

    def stage(self, rows: pl.DataFrame) -> StagedPart:
        """Create a staging table and bulk-copy ``rows`` into it with DuckDB."""
        if rows.height == 0:
            return StagedPart(rows, None, [])
        began = time.perf_counter()
        try:
            return self._stage(rows)
        finally:
            self.phases["staging"] += time.perf_counter() - began

    def _stage(self, rows: pl.DataFrame) -> StagedPart:
        store = self.store
        table = store._autocommit("cannot stage a batch in", self._create)
        staged = StagedPart(rows, table, [])
        try:
            staged.collisions = self._fill(table, staging_frame(rows))
            store._autocommit(
                "cannot stage a batch in",
                lambda c: c.execute(self._q("batch_stage_analyze", table)),
            )
        except BaseException:
            self.discard(staged)
            raise
        return staged

    def _create(self, conn: Connection) -> str:
        """Create an empty staging table on ``conn`` (named after its session); returns
        its name."""
        table = stage_name(conn.info.backend_pid)
        conn.execute(self._q("batch_stage_create", table))
        return table

    def _fill(self, table: str, frame: pl.DataFrame) -> list[tuple[int, int]]:
        """Hash the keys and copy the rows (less in-part collisions) into ``table``."""
        with staging._DUCK_LOCK:
            con = staging.duckdb_with_postgres()
            frame, collisions = hash_part(con, frame)
            try:
                con.execute(f"ATTACH {_quote(self.store._url)} AS taskmill_pg (TYPE postgres)")
            except Exception as exc:  # DuckDB quotes the connection string: redacted
                raise StoreError(
                    f"cannot stage a batch in {self.store.where}: DuckDB cannot connect "
                    f"({scrub(str(exc), self.store._url)})"
                ) from exc
            try:
                con.register("taskmill_part", frame.to_arrow())
                try:
                    target = '"' + table.replace('"', '""') + '"'
                    con.execute(
                        f"INSERT INTO taskmill_pg.taskmill.{target} SELECT * FROM taskmill_part"
                    )
                except Exception as exc:
                    raise StoreError(
                        f"cannot stage a batch in {self.store.where}: "
                        f"{scrub(str(exc), self.store._url)}"
                    ) from exc
                finally:
                    con.unregister("taskmill_part")
            finally:
                con.execute("DETACH taskmill_pg")
        return collisions

    def ready(self, staged: StagedPart) -> None:
        """Staging is synchronous: a staged part is always ready."""

    def discard(self, staged: StagedPart) -> None:
        """Drop the staging table (idempotent; a failure is logged, not raised)."""
        table, staged.table = staged.table, None
        if table is None:
            return
        try:
            self.store._autocommit(
                "cannot drop a staging table in",
                lambda c: c.execute(self._q("batch_stage_drop", table)),
            )
        except SchedulerError as exc:
            log.warning("taskmill: staging table taskmill.%s was left behind: %s", table, exc)

    def read_error(self, exc: OSError) -> SchedulerError:
        return StoreError(f"cannot read the batch for {self.store.where}: {exc}")

    def dependency_lookup(self, keys: list[str], ids: list[int]) -> tuple[pl.DataFrame, set[int]]:
        return self.store._read(lambda conn: lookup_dependencies(PostgresDeps(), conn, keys, ids))

    def seal(self) -> None:
        """Seal the batch of :attr:`tag` (its submission ended before its last
        transaction, or that one inserted nothing)."""
        tag = self.tag
        if tag.id is None:
            return
        batch = tag.id
        forward = tag.dependencies is not None and tag.dependencies.forward

        def body(conn: Connection) -> None:
            conn.execute(q("batch_seal"), {"id": batch})
            if forward:  # rows never merged: what waited for them follows its policy
                drop_unmerged(PostgresDeps(), conn, batch, self.store.now())

        self.store.write("cannot seal a batch in", body)

    def merge(self, staged: StagedPart, *, dry_run: bool, base_offset: int) -> pl.DataFrame:
        """Merge (or plan) the staged part in one transaction, then drop its table.

        A table found gone was swept by another store: the session that made it was lost
        (the store then opens a new one) and counted as a dead batch's.  The part is then
        staged again, on the session in use now, and merged once more."""
        try:
            if staged.table is None:
                return decide(staged.part, [], 0)
            try:
                return self._merge_staged(staged, dry_run=dry_run, base_offset=base_offset)
            except StoreError as exc:
                if not _table_gone(exc, staged.table):
                    raise
            log.warning(
                "taskmill: staging table taskmill.%s was swept (the session that made it was "
                "lost); staging its rows again",
                staged.table,
            )
            staged.table = None
            again = self.stage(staged.part)
            staged.table, staged.collisions = again.table, again.collisions
            return self._merge_staged(staged, dry_run=dry_run, base_offset=base_offset)
        finally:
            self.discard(staged)

    def _merge_staged(self, staged: StagedPart, *, dry_run: bool, base_offset: int) -> pl.DataFrame:
        """Merge (or plan) the part staged in ``staged.table``."""
        table = staged.table
        assert table is not None
        if dry_run:
            now = self.store.now()  # read first: now() may read, and _read is not reentrant
            return self.store._read(lambda c: self._plan(c, staged, table, base_offset, now))
        started = time.perf_counter()
        result = self.store.write(
            "cannot submit a batch to",
            lambda c: self._merge(c, staged, table),
            retry_unique=True,
        )
        self.tag.commit()
        self.store.last_batch_merge_seconds.append(time.perf_counter() - started)
        self.phases["write_lock"] += self.store.last_batch_merge_seconds[-1]
        return result

    # ------------------------------------------------------------------ the merge

    def _plan(
        self, conn: Connection, staged: StagedPart, table: str, base_offset: int, now: float
    ) -> pl.DataFrame:
        matches = conn.execute(self._q("batch_match_plan", table), {"now": now}).fetchall()
        base = int(scalar(conn.execute(q("batch_last_id")))) + base_offset
        return decide(staged.part, matches, base, staged.collisions)

    def _merge(self, conn: Connection, staged: StagedPart, table: str) -> pl.DataFrame:
        now = self.store.now()  # the server's clock (expiry, created_at)
        part = staged.part
        tag = self.tag
        tag.begin()
        if (
            tag.parent is not None
            and conn.execute(q("family_running"), {"id": tag.parent}).fetchone() is None
        ):
            raise parent_gone(tag.parent)
        conn.execute(q("advisory_lock"), {"lock": SUBMIT_LOCK})
        self.store._expire_due(conn, now)  # expired tasks free their keys first
        matches = conn.execute(self._q("batch_match", table)).fetchall()
        if self.retries is not None:  # after batch_match, under the submit lock
            ords, failed = retried_failures(part, self.retries, (m[0] for m in matches))
            if ords:
                params = {"ords": ords, "failed": failed, "floor": min(failed)}
                matches += conn.execute(self._q("batch_match_retried", table), params).fetchall()
        result = decide(part, matches, 0, staged.collisions)
        n = result.filter(pl.col("action").is_in(INSERTING)).height
        drawn: list[int] = []  # the new tasks' ids, drawn when there are any
        if n:
            drawn = [int(r[0]) for r in conn.execute(q("batch_reserve_ids"), {"n": n})]
            result = decide(part, matches, drawn[0] - 1, staged.collisions)
            if drawn[-1] - drawn[0] != n - 1:  # a keyless submit drew ids in between
                result = _renumber(result, drawn)
        sup = result.filter(pl.col("action") == "superseded")
        adopted: list[tuple[int, int]] = []
        if sup.height:
            old_ids, new_ids = sup["replaced_task_id"].to_list(), sup["task_id"].to_list()
            gone = finish(conn, old_ids, "superseded", now, replaced_by=new_ids)
            moved = len(gone)
            successor = dict(zip(old_ids, new_ids, strict=True))
            adopted = [(successor[old], parent) for old, _, parent in gone if parent is not None]
            if moved != sup.height:
                raise StoreError(
                    f"batch merge superseded {moved} tasks where {sup.height} were planned"
                )
        up = result.filter(pl.col("action") == "upgraded").join(
            part.select("index", "priority"), on="index"
        )
        if up.height:
            conn.execute(
                q("batch_upgrade"),
                {"ids": up["task_id"].to_list(), "priorities": up["priority"].to_list()},
            )
        batch_id = tag.id_for(
            n, lambda: int(scalar(conn.execute(q("batch_open"), {"name": tag.name, "now": now})))
        )
        if n:
            blocked = (
                []
                if tag.dependencies is None
                else part.join(tag.dependencies.plan.waiting, on="index", how="semi")[
                    "index"
                ].to_list()
            )
            inserted = self._insert(
                conn, table, result, matches, drawn, now, (batch_id, tag.parent), blocked
            )
            if inserted != n:  # the SQL and the plan disagree: never commit that
                raise StoreError(f"batch merge inserted {inserted} rows where {n} were planned")
            if adopted:  # a successor of a child takes its parent on
                PostgresDeps().adopt(conn, adopted)
            tags = new_tags(part, result)
            if tags.height:  # one statement for the whole part
                conn.execute(
                    q("tags_insert"),
                    {
                        "ids": tags["task_id"].to_list(),
                        "keys": tags["key"].to_list(),
                        "values": tags["value"].to_list(),
                    },
                )
            conn.execute(self._q("notify_work", table))  # other machines' workers wake at commit
        if tag.dependencies is not None:
            store_dependencies(PostgresDeps(), conn, tag.dependencies, result, batch_id, now)
        if batch_id is not None:
            conn.execute(q("batch_grow"), {"id": batch_id, "n": n, "sealed": tag.last})
        return result

    def _insert(
        self,
        conn: Connection,
        table: str,
        result: pl.DataFrame,
        matches: list[tuple[Any, ...]],
        drawn: list[int],
        now: float,
        tags: tuple[int | None, int | None],
        blocked: list[int],
    ) -> int:
        """Insert the new tasks of ``result``, tagged with ``tags`` (their batch id and
        parent); returns how many rows were inserted."""
        batch_id, parent_id = tags
        # ord -> queue place of the pending task it matched (taken over when superseding)
        pending_pos = {int(m[0]): int(m[4]) for m in matches if m[2] == "pending"}
        actions = dict(zip(result["index"].to_list(), result["action"].to_list(), strict=True))
        if drawn[-1] - drawn[0] == len(drawn) - 1:  # one block: the ids follow from ord
            ords = [int(m[0]) for m in matches]
            keep = [actions[o] == "superseded" for o in ords]
            queue_pos = [pending_pos.get(o) if k else None for o, k in zip(ords, keep, strict=True)]
            params = {"ords": ords, "keep": keep, "queue_pos": queue_pos, "base": drawn[0] - 1}
            params |= {"now": now, "batch_id": batch_id, "blocked": blocked}
            params["parent_id"] = parent_id
            return conn.execute(self._q("batch_insert", table), params).rowcount
        new = result.filter(pl.col("action").is_in(INSERTING))
        ords = new["index"].to_list()
        ids = new["task_id"].to_list()
        queue_pos = [
            pending_pos.get(o, i) if a == "superseded" else i
            for o, i, a in zip(ords, ids, new["action"].to_list(), strict=True)
        ]
        params = {"ords": ords, "ids": ids, "queue_pos": queue_pos, "now": now}
        params["batch_id"] = batch_id
        params["blocked"] = blocked
        params["parent_id"] = parent_id
        return conn.execute(self._q("batch_insert_listed", table), params).rowcount


def _renumber(result: pl.DataFrame, drawn: list[int]) -> pl.DataFrame:
    """``result`` (new ids numbered from ``drawn[0]``) with the n-th new id replaced by
    ``drawn[n]``: the ids drawn when another session drew some in between."""
    first = drawn[0]
    ids = [
        drawn[t - first] if a in INSERTING else t
        for a, t in zip(result["action"].to_list(), result["task_id"].to_list(), strict=True)
    ]
    return result.with_columns(pl.Series("task_id", ids, dtype=pl.Int64))


#: Seconds a sweep waits for the session of a staging table whose process, on this host,
#: is gone (see :func:`sweep`).
DYING_WAIT = 2.0


def sweep(store: BatchStore, alive: Callable[[int], bool]) -> int:
    """Drop the staging tables of batches that died mid-way; returns how many.

    A table is left over when the session that made it (the backend in its name) is gone
    from the server — ``pg_stat_activity`` lists every live session, whichever machine
    it serves.  A batch keeps that session until it drops its table, so a live batch's
    table is not taken, on this host or another — unless that session is lost mid-batch
    (the server ended it, the network cut it): the batch then finds its table gone and
    stages the part again (:meth:`PostgresBatch.merge`).  (A dead process's session ends when
    the server sees its connection close: at once when the process is killed, after TCP
    keepalive gives up when its machine vanished; the table goes at the first opening
    after that.  A backend pid the server has reused since only delays the sweep.)

    The session of a process of this host that is gone (``alive(pid)`` false) is waited
    for, up to :data:`DYING_WAIT` seconds: killed, the process left it to the server to
    notice, which it does at once unless the session is busy (a statement running, a
    lock awaited).  It is not ended here: another machine may have this one's host name.

    Tables named the older way (no backend) are left over when their process was on
    this host and is gone (``alive(pid)`` says whether a process of this host lives);
    another host's are kept: nothing says whether they are in use.

    The tables are listed before the live sessions are: a table listed was made before,
    so its session, if it lives, is among those listed next."""
    here = stage_prefix(0)[len("stage_") : -len("_0_")]
    found = store._autocommit(
        "cannot list staging tables in",
        lambda c: [r[0] for r in c.execute(q("batch_stage_leftovers"), {"prefix": "stage_"})],
    )
    named = {table: _parse(table) for table in found}
    backends = {p[2] for p in named.values() if p is not None and p[2] is not None}
    live = _live_sessions(store, backends)
    # a process of this host that is gone, its session not yet: the server is ending it
    dying = {
        p[2]
        for p in named.values()
        if p is not None and p[2] in live and p[0] == here and not alive(p[1])
    }
    end = time.monotonic() + DYING_WAIT
    while dying & live and time.monotonic() < end:
        time.sleep(0.05)
        live -= dying - _live_sessions(store, dying & live)
    batch = PostgresBatch(store)
    removed = 0
    for table, parsed in named.items():
        if parsed is not None and _left_over(*parsed, live=live, here=here, alive=alive):
            batch.discard(StagedPart(pl.DataFrame(), table, []))
            removed += 1
    return removed


def _live_sessions(store: BatchStore, backends: set[int]) -> set[int]:
    """Which of the server processes ``backends`` serve a live session."""
    if not backends:
        return set()
    pids = sorted(backends)
    return store._autocommit(
        "cannot list the sessions of",
        lambda c: {int(r[0]) for r in c.execute(q("batch_live_sessions"), {"pids": pids})},
    )


def _left_over(
    host: str,
    pid: int,
    backend: int | None,
    *,
    live: set[int],
    here: str,
    alive: Callable[[int], bool],
) -> bool:
    """Whether the staging table of process ``pid`` on host ``host``, made by the session
    of server process ``backend``, is left over (see :func:`sweep`)."""
    if backend is not None:
        return backend not in live
    return host == here and not alive(pid)
