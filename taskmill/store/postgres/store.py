"""The old path of the PostgreSQL store: :class:`PostgresStore`, a
:class:`~taskmill.store.TaskStore` over the PostgreSQL driver
(:mod:`taskmill.backends.postgres.driver`) made from a URL, and the names this module
had (the advisory lock keys, the named queries), kept for code that imports them."""

from __future__ import annotations

import os

from ...backends.postgres.driver import PostgresDriver, describe
from ...backends.postgres.queries import CLAIM_LOCK, SUBMIT_LOCK, q, queries
from ..store import TaskStore

__all__ = ["CLAIM_LOCK", "SUBMIT_LOCK", "PostgresStore", "describe", "q", "queries"]


class PostgresStore(TaskStore):
    """A :class:`~taskmill.store.TaskStore` in a PostgreSQL database:
    ``PostgresStore(url)`` is ``TaskStore.open(url)`` for a PostgreSQL URL, under the
    class name it had before the engines became drivers."""

    _driver: PostgresDriver

    def __init__(self, url: str, *, busy_timeout: float = 10.0) -> None:
        super().__init__(PostgresDriver(url, busy_timeout=busy_timeout))

    @classmethod
    def open(cls, location: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> PostgresStore:
        """Open the store in the database at ``location`` (a ``postgresql://`` URL or a
        libpq connection string), creating or upgrading its schema first."""
        return cls(os.fspath(location), busy_timeout=busy_timeout)

    @property
    def where(self) -> str:
        """The database, for messages (no password)."""
        return self._driver.where
