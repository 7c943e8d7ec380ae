"""Create or upgrade the taskmill schema in a PostgreSQL database.

The same scheme as the SQLite store (``store/sql.py``): ``schema.sql`` is the whole current
schema, given to a database that has none; ``migrations/NNN_what.sql`` brings an older one
from version ``NNN - 1`` to ``NNN``, every script above its version in one transaction.
PostgreSQL's schema starts at version 3 (the SQLite store's schema 3, which it mirrors),
so its first migration will be ``004``.  Every process opening the store runs this; a
transaction-scoped advisory lock makes concurrent first opens wait for one another
instead of racing to create the same tables.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from ...model import SchemaTooNew
from ..sql import load_migrations, with_includes

__all__ = ["ADVISORY_LOCK", "SCHEMA", "SCHEMA_VERSION", "ensure_schema", "migrations"]

#: The PostgreSQL schema (namespace) holding every taskmill table.
SCHEMA = "taskmill"
#: The advisory lock key of schema changes: the bytes of "taskmill" as a signed bigint.
ADVISORY_LOCK = int.from_bytes(b"taskmill", "big", signed=True)
#: The version ``schema.sql`` is (see the module docstring).
BASE_VERSION = 3


@cache
def migrations() -> dict[int, str]:
    """Every PostgreSQL migration script by the version it brings a store to."""
    package = resources.files("taskmill.backends.postgres")
    return load_migrations(package.joinpath("migrations"), first=BASE_VERSION + 1, parts=package)


#: The schema version this taskmill writes on PostgreSQL.
SCHEMA_VERSION = max(migrations(), default=BASE_VERSION)


@cache
def schema() -> str:
    """The whole current schema (``schema.sql``, its ``-- include:`` parts in place)."""
    package = resources.files("taskmill.backends.postgres")
    return with_includes(package.joinpath("schema.sql").read_text(encoding="utf-8"), package)


def ensure_schema(conn: Any, where: str = "the database") -> int:
    """Bring the taskmill schema on ``conn`` (a psycopg connection, not in a transaction)
    to :data:`SCHEMA_VERSION`; returns the version found (0: there was none).

    Raises :class:`SchemaTooNew` for a store written by a newer taskmill, unchanged."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK,))
        found = conn.execute("SELECT to_regclass('taskmill.meta')").fetchone()[0]
        if found is None:
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            conn.execute(schema())
            conn.execute(
                "INSERT INTO taskmill.meta (key, value) VALUES ('schema_version', %s)",
                (str(SCHEMA_VERSION),),
            )
            return 0
        row = conn.execute(
            "SELECT value FROM taskmill.meta WHERE key = 'schema_version'"
        ).fetchone()
        version = int(row[0]) if row else BASE_VERSION
        if version > SCHEMA_VERSION:
            raise SchemaTooNew(
                f"the taskmill store in {where} has schema version {version}, newer than "
                f"this taskmill understands ({SCHEMA_VERSION}); upgrade taskmill"
            )
        for target, script in migrations().items():
            if target > version:
                conn.execute(script)
        if version < SCHEMA_VERSION:
            conn.execute(
                "UPDATE taskmill.meta SET value = %s WHERE key = 'schema_version'",
                (str(SCHEMA_VERSION),),
            )
        return version
