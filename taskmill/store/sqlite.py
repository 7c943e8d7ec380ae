"""The old path of the SQLite store: :class:`SqliteStore`, a :class:`TaskStore` over the
SQLite driver (:mod:`taskmill.backends.sqlite.driver`) made from a file path, kept for code
that imports it (``TaskStore`` is importable from here too, as before)."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from ..backends.base import ClaimedTask, CommitHook
from ..backends.location import parse_location, redact
from ..backends.sqlite.driver import SqliteDriver
from ..model import StoreError
from .store import TaskStore

__all__ = ["ClaimedTask", "CommitHook", "SqliteStore", "TaskStore"]


class SqliteStore(TaskStore):
    """A :class:`TaskStore` in one SQLite file: ``SqliteStore(path)`` is
    ``TaskStore.open(path)`` for a file path, under the class name it had before the
    engines became drivers."""

    _driver: SqliteDriver

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> None:
        super().__init__(SqliteDriver(path, busy_timeout=busy_timeout))

    @classmethod
    def open(cls, location: str | os.PathLike[str], *, busy_timeout: float = 10.0) -> SqliteStore:
        """Create or open the SQLite store at ``location``, a file path or ``sqlite:///…``
        (:meth:`TaskStore.open` takes a PostgreSQL URL too)."""
        where = parse_location(location)
        if where.path is None:
            raise StoreError(f"{redact(location)} is not a SQLite file: TaskStore.open() opens it")
        return cls(where.path, busy_timeout=busy_timeout)

    @property
    def path(self) -> Path:
        """The store's file."""
        return self._driver.path

    @property
    def conn(self) -> sqlite3.Connection:
        """The driver's connection of small writes (hold ``driver._lock`` while using it)."""
        return self._driver.conn
