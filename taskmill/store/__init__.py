"""The task store: :class:`TaskStore`, the public face on every engine, and the engines
behind it (``sqlite.py``; ``postgres/``, imported only for a PostgreSQL URL), which this
package registers for :meth:`TaskStore.open`."""

from .base import ClaimedTask, CommitHook
from .location import Location
from .sqlite import SqliteStore
from .store import ENGINES, TaskStore

#: The old name of what the scheduler calls on its store: all of it is TaskStore's now.
StoreProtocol = TaskStore

__all__ = ["ClaimedTask", "CommitHook", "StoreProtocol", "TaskStore"]


def _open_sqlite(where: Location, busy_timeout: float) -> TaskStore:
    assert where.path is not None
    return SqliteStore.open(where.path, busy_timeout=busy_timeout)


def _open_postgres(where: Location, busy_timeout: float) -> TaskStore:
    from .postgres import PostgresStore  # psycopg: only for a PostgreSQL URL

    assert where.url is not None
    return PostgresStore.open(where.url, busy_timeout=busy_timeout)


ENGINES.update(sqlite=_open_sqlite, postgres=_open_postgres)
