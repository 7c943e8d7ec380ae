"""The drivers: the only code that talks to a database.

``base.py`` declares the :class:`~taskmill.backends.base.Driver`, the data-level operations
the store's face (:class:`~taskmill.store.TaskStore`) runs its logic over; ``sql.py`` loads
named queries; ``sqlite/`` and ``postgres/`` are the two drivers, each with its schema,
its named queries and its migrations as SQL files (PostgreSQL's, and psycopg, imported
only when a PostgreSQL store is opened)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .location import Location, parse_location

if TYPE_CHECKING:
    from .base import Driver

__all__ = ["DRIVERS", "open_driver"]


def _sqlite(where: Location, busy_timeout: float) -> Driver[Any]:
    from .sqlite.driver import SqliteDriver

    assert where.path is not None
    return SqliteDriver(where.path, busy_timeout=busy_timeout)


def _postgres(where: Location, busy_timeout: float) -> Driver[Any]:
    from .postgres.driver import PostgresDriver  # psycopg: only for a PostgreSQL URL

    assert where.url is not None
    return PostgresDriver(where.url, busy_timeout=busy_timeout)


#: How each engine's driver is opened, by the kind of its location (each imports its
#: driver only when a store of its kind is opened).
DRIVERS: dict[str, Callable[[Location, float], Driver[Any]]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
}


def open_driver(location: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> Driver[Any]:
    """The driver of the store at ``location`` (a SQLite file path or ``sqlite:///…``, a
    ``postgresql://`` URL), connected, its schema created or upgraded.  Raises
    ``SchedulerError(kind="store")`` when the store cannot be reached or is not one."""
    where = parse_location(location)
    return DRIVERS[where.kind](where, busy_timeout)
