"""The compact unique key of an active task: a 64-bit hash of ``(task_type, dedup_key)``.

The store enforces "one active task per ``(task_type, dedup_key)``" with a unique index on
this integer instead of on the two text columns: a fixed-width key keeps the index a
fraction of the size, so inserting into a store of millions of tasks touches few pages
(see docs/benchmarks.md).  The text stays the truth: a hash match whose text
differs is a *collision*, and the newcomer fails with kind ``key_collision`` instead of
being taken for a duplicate (odds: about ``n * m / 2**64`` for ``m`` new keys against ``n``
active ones — one in 200 million for a 100k batch into a 1M store).

Definition, identical in every place that computes it (Python here; DuckDB while staging a
batch; SQLite during the migration that introduced it; PostgreSQL with
:data:`POSTGRES_KEY_HASH`)::

    md5( <UTF-8 byte length of task_type> ":" task_type dedup_key )
    → its first 8 bytes, read as a big-endian signed 64-bit integer

The length prefix makes the pair unambiguous (``("ab", "c")`` and ``("a", "bc")`` differ).
A task without a dedup key has no key hash (``NULL``) and is never a duplicate.
"""

from __future__ import annotations

import hashlib
import sqlite3

__all__ = [
    "COLLISION",
    "DUCKDB_KEY_HASH",
    "POSTGRES_KEY_HASH",
    "SQLITE_FUNCTION",
    "key_hash",
    "register",
]

#: The error of a row whose key hash collides: task type, key and what it collides with
#: (``{}`` placeholders, for ``str.format`` and ``polars.format`` alike).
COLLISION = (
    "key hash collision: task_type '{}' with dedup_key '{}' has the same 64-bit key hash as "
    "{} although their keys differ (odds about 1 in 10^19 per pair of keys); it was not "
    "submitted — report it, with both keys"
)


def key_hash(task_type: str, dedup_key: str | None) -> int | None:
    """The 64-bit key hash of an active task's ``(task_type, dedup_key)`` (``None``
    without a key)."""
    if dedup_key is None:
        return None
    kind = task_type.encode()
    text = b"%d:%s%s" % (len(kind), kind, dedup_key.encode())
    digest = hashlib.md5(text, usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


_MD5 = "md5(strlen(task_type)::VARCHAR || ':' || task_type || dedup_key)"

#: The same hash as a DuckDB expression over the columns ``task_type`` and ``dedup_key``
#: (NULL when ``dedup_key`` is NULL).  ``md5`` gives 32 hex digits; the first 16 are the
#: first 8 bytes; a first digit of 8 or more means the signed value is negative.
DUCKDB_KEY_HASH = (
    f"CAST(CAST('0x' || {_MD5}[1:16] AS UBIGINT)::HUGEINT "
    f"- CASE WHEN {_MD5}[1:1] >= '8' THEN 18446744073709551616 ELSE 0 END AS BIGINT)"
)

#: The same hash as a PostgreSQL expression over ``task_type`` and ``dedup_key`` (NULL when
#: ``dedup_key`` is NULL; ``md5`` of text hashes its UTF-8 bytes in a UTF8 database).
POSTGRES_KEY_HASH = (
    "('x' || left(md5(octet_length(task_type)::text || ':' || task_type || dedup_key), 16))"
    "::bit(64)::bigint"
)

#: Name of the SQL function :func:`register` adds to a SQLite connection.
SQLITE_FUNCTION = "taskmill_key_hash"


def register(conn: sqlite3.Connection) -> None:
    """Make ``taskmill_key_hash(task_type, dedup_key)`` callable in SQL on ``conn``
    (used by the migration that fills the column of an older store)."""
    conn.create_function(SQLITE_FUNCTION, 2, key_hash, deterministic=True)
