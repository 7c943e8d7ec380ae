"""The named queries of ``queries.sql`` beside this file, and the advisory lock keys they
and their callers share: what both the store (``store.py``) and its batch path
(``batch.py``) run statements with."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from importlib import resources
from typing import Any, LiteralString, cast

import psycopg

from ..keys import POSTGRES_KEY_HASH
from ..sql import named_queries

__all__ = ["CLAIM_LOCK", "SUBMIT_LOCK", "Connection", "finish", "q", "queries", "scalar"]

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
) -> psycopg.Cursor[Any]:
    """Move active tasks to history with a final ``status`` (the one statement every way
    of finishing runs, ``finish``); the cursor holds ``(id, status it had)`` of each task
    moved, in no order (one that is gone already is not), and their count as ``rowcount``.  With
    ``owner``, only the attempts still running for it, at the numbers ``attempts`` gives
    (``None``: any); ``replaced_by``: the task that replaced each one (superseded);
    ``error``: the error recorded (else the task's last one)."""
    params = {
        "ids": list(ids),
        "attempts": None if attempts is None else list(attempts),
        "replaced_by": None if replaced_by is None else list(replaced_by),
        "owner": owner,
        "status": status,
        "error": error,
        "now": now,
    }
    return conn.execute(q("finish"), params)
