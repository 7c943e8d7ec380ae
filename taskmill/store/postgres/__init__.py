"""The old path of the PostgreSQL store (its driver is :mod:`taskmill.backends.postgres`):
:class:`PostgresStore`, the :class:`~taskmill.store.TaskStore` of a ``postgresql://`` URL."""

from .store import PostgresStore

__all__ = ["PostgresStore"]
