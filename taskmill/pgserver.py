"""The old import path of :mod:`taskmill.testing.pgserver` (the throwaway PostgreSQL server):
its names, re-exported."""

from .testing.pgserver import (
    ROLE,
    SYSTEM_USER,
    PostgresNotFound,
    PostgresUnreachable,
    ThrowawayPostgres,
    postgres_binaries,
    watch,
)

__all__ = [
    "ROLE",
    "SYSTEM_USER",
    "PostgresNotFound",
    "PostgresUnreachable",
    "ThrowawayPostgres",
    "postgres_binaries",
    "watch",
]
