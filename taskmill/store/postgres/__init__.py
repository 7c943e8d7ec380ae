"""The PostgreSQL backend: its schema, migrations and queries as SQL files, and the code
that talks to a PostgreSQL server (through psycopg).  :class:`PostgresStore` has the SQLite
store's API and semantics for single tasks, workers and queries; batches are not here yet."""

from .store import PostgresStore

__all__ = ["PostgresStore"]
