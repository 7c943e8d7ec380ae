"""The PostgreSQL engine: its schema, migrations and queries as SQL files, and the code
that talks to a PostgreSQL server (through psycopg).  :class:`PostgresStore` is the
:class:`~taskmill.store.store.TaskStore` that ``TaskStore.open()`` returns for a
``postgresql://`` URL, with the SQLite store's semantics."""

from .store import PostgresStore

__all__ = ["PostgresStore"]
