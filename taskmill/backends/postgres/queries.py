"""The named queries of ``queries.sql`` beside this file, and the advisory lock keys they
and their callers share: what both the store (``store.py``) and its batch path
(``batch.py``) run statements with."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any, LiteralString, cast

import psycopg
from psycopg.pq import TransactionStatus

from ..calls import Ended, Ending
from ..depends import settle
from ..keys import POSTGRES_KEY_HASH
from ..sql import named_queries

__all__ = [
    "CLAIM_LOCK",
    "SUBMIT_LOCK",
    "Connection",
    "PostgresDeps",
    "finish",
    "q",
    "queries",
    "scalar",
]

Connection = psycopg.Connection[Any]

#: Advisory lock key every submit of a keyed task holds for its transaction (anything
#: else that inserts keyed tasks, such as a batch, must hold it too).
SUBMIT_LOCK = int.from_bytes(b"tm:submt", "big", signed=True)
#: Advisory lock key a claim that counts limits holds for its transaction.
CLAIM_LOCK = int.from_bytes(b"tm:claim", "big", signed=True)


@cache
def queries() -> dict[str, str]:
    """Every named query of ``postgres/queries.sql`` (the key-hash expression filled in)."""
    text = (
        resources.files("taskmill.backends.postgres")
        .joinpath("queries.sql")
        .read_text(encoding="utf-8")
    )
    text = text.replace("{KEY_HASH}", POSTGRES_KEY_HASH).replace("{CLAIM_LOCK}", str(CLAIM_LOCK))
    return named_queries(text, "postgres/queries.sql")


def q(name: str) -> LiteralString:
    """One named PostgreSQL query: static text of ``queries.sql`` (psycopg takes it as a
    query only as a ``LiteralString``, never text built from data)."""
    return cast(LiteralString, queries()[name])


def scalar(cursor: psycopg.Cursor[Any]) -> Any:
    """The first value of the row a query always returns (an aggregate, a function call)."""
    row = cursor.fetchone()
    assert row is not None, "the query returned no row"
    return row[0]


def finish(
    conn: Connection,
    ids: Sequence[int],
    status: str,
    now: float,
    *,
    owner: str | None = None,
    attempts: Sequence[int | None] | None = None,
    replaced_by: Sequence[int] | None = None,
    error: str | None = None,
    settle_dependents: bool = True,
) -> list[tuple[int, str, int | None]]:
    """Move active tasks to history with a final ``status`` (the one statement every way
    of finishing runs, ``finish``); returns ``(id, status it had, parent)`` of each task
    moved, in no order (one that is gone already is not).  With
    ``owner``, only the attempts still running for it, at the numbers ``attempts`` gives
    (``None``: any); ``replaced_by``: the task that replaced each one (superseded);
    ``error``: the error recorded (else the task's last one).  The tasks waiting for
    them are settled in the same transaction (:mod:`taskmill.backends.depends`) unless
    ``settle_dependents`` is false."""
    params = {
        "ids": list(ids),
        "attempts": None if attempts is None else list(attempts),
        "replaced_by": None if replaced_by is None else list(replaced_by),
        "owner": owner,
        "status": status,
        "error": error,
        "now": now,
    }
    if settle_dependents and conn.info.transaction_status == TransactionStatus.IDLE:
        # a write of single statements (a completion on the dispatch connection): the end
        # and the settling of its dependents are one transaction all the same
        with conn.transaction():
            return _finish(conn, params, ids, replaced_by, settle_dependents)
    return _finish(conn, params, ids, replaced_by, settle_dependents)


def _finish(
    conn: Connection,
    params: dict[str, Any],
    ids: Sequence[int],
    replaced_by: Sequence[int] | None,
    settle_dependents: bool,
) -> list[tuple[int, str, int | None]]:
    moved = [(int(r[0]), str(r[1]), r[2]) for r in conn.execute(q("finish"), params)]
    if settle_dependents and moved:
        ended = _ended(moved, params["status"], ids, replaced_by)
        # with an owner, attempts: no edge of their own to forget
        settle(PostgresDeps(), conn, ended, params["now"], ran=params["owner"] is not None)
    return moved


def _ended(
    moved: list[tuple[int, str, int | None]],
    status: str,
    ids: Sequence[int],
    replaced_by: Sequence[int] | None,
) -> list[Ended]:
    """The tasks ``moved`` as :class:`Ended` records (``replaced_by``: beside ``ids``)."""
    by = dict(zip(ids, replaced_by, strict=True)) if replaced_by is not None else {}
    return [Ended(i, status, by.get(i), parent) for i, _, parent in moved]


class PostgresDeps:
    """The statements of :func:`~taskmill.backends.depends.settle` on PostgreSQL."""

    def lock_dependents(
        self, conn: Connection, ids: list[int]
    ) -> list[tuple[int, int, str | None]]:
        if not ids:
            return []
        return conn.execute(q("deps_dependents"), {"ids": ids}).fetchall()

    def drop_edges(self, conn: Connection, pairs: list[tuple[int, int]]) -> None:
        tasks, deps = [t for t, _ in pairs], [d for _, d in pairs]
        conn.execute(q("deps_drop"), {"tasks": tasks, "deps": deps})

    def forget_edges(self, conn: Connection, task_ids: list[int]) -> None:
        conn.execute(q("deps_forget"), {"ids": task_ids})

    def retarget_edges(self, conn: Connection, pairs: list[tuple[int, int]]) -> None:
        conn.execute(
            q("deps_retarget"), {"old": [o for o, _ in pairs], "new": [n for _, n in pairs]}
        )

    def release_blocked(self, conn: Connection, task_ids: list[int]) -> None:
        if task_ids:
            conn.execute(q("deps_release"), {"ids": task_ids})
            conn.execute(q("notify_work"))  # released tasks are work for every worker

    def active_types(self, conn: Connection) -> list[str]:
        return [r[0] for r in conn.execute(q("active_task_types"))]

    def by_keys(
        self, conn: Connection, triples: list[tuple[int, str, str]]
    ) -> list[tuple[int, str]]:
        hashes, types, keys = ([t[i] for t in triples] for i in range(3))
        params = {"key_hashes": hashes, "task_types": types, "dedup_keys": keys}
        return conn.execute(q("deps_by_key"), params).fetchall()

    def states(self, conn: Connection, ids: list[int]) -> list[tuple[int, str | None, int | None]]:
        # the active ones first held against their end (which waits for this transaction:
        # its settling then sees this one's edges) — an end under way is waited for, and
        # the second statement, a new snapshot, finds the task in history
        if not conn.read_only:  # (a read, looking up a plan's dependencies, holds nothing)
            conn.execute(q("deps_hold"), {"ids": ids})
        return conn.execute(q("deps_task_states"), {"ids": ids}).fetchall()

    def insert_edges(
        self,
        conn: Connection,
        edges: list[tuple[int, int | None, int | None]],
        batch_id: int | None,
    ) -> None:
        tasks, deps, rows = ([e[i] for e in edges] for i in range(3))
        params = {"tasks": tasks, "deps": deps, "rows": rows, "batch_id": batch_id}
        conn.execute(q("deps_insert"), params)

    def unmerged(self, conn: Connection, batch_id: int) -> list[tuple[int, str | None]]:
        return conn.execute(q("deps_unmerged"), {"batch_id": batch_id}).fetchall()

    def resolve_rows(self, conn: Connection, pairs: list[tuple[int, int]], batch_id: int) -> None:
        rows, ids = [r for r, _ in pairs], [t for _, t in pairs]
        conn.execute(q("deps_resolve_rows"), {"rows": rows, "ids": ids, "batch_id": batch_id})

    def end_tasks(self, conn: Connection, ids: list[int], ending: Ending) -> list[Ended]:
        moved = finish(
            conn, ids, ending.status, ending.now, error=ending.error, settle_dependents=False
        )
        return _ended(moved, ending.status, ids, None)

    # child tasks (taskmill/backends/family.py)

    def active_children(self, conn: Connection, parents: list[int]) -> list[tuple[int, int]]:
        return conn.execute(q("family_children"), {"ids": parents}).fetchall()

    def adopt(self, conn: Connection, pairs: list[tuple[int, int]]) -> None:
        params = {"tasks": [t for t, _ in pairs], "parents": [p for _, p in pairs]}
        conn.execute(q("family_adopt"), params)

    def lock_parents(self, conn: Connection, ids: list[int]) -> list[tuple[int, str, str | None]]:
        return conn.execute(q("family_parents"), {"ids": ids}).fetchall()

    def busy_parents(self, conn: Connection, ids: list[int]) -> set[int]:
        return {int(r[0]) for r in conn.execute(q("family_busy"), {"ids": ids})}

    def child_tallies(self, conn: Connection, ids: list[int]) -> list[tuple[int, str, int]]:
        return conn.execute(q("family_tallies"), {"ids": ids}).fetchall()

    def make_due(self, conn: Connection, ids: list[int]) -> None:
        conn.execute(q("family_due"), {"ids": ids})
        conn.execute(q("notify_work"))  # a finalizer to run: work for every worker

    def wait_for_children(self, conn: Connection, task_id: int, finalizer: str | None) -> None:
        conn.execute(q("family_wait"), {"id": task_id, "finalizer": finalizer})
