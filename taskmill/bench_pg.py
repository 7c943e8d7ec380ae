"""The old import path of :mod:`taskmill.bench.postgres` (the PostgreSQL cases of ``taskmill
bench``): its names, re-exported."""

from .bench.postgres import (
    DISPATCH_CONCURRENCY,
    DISPATCH_WORKERS,
    PEERS,
    PG_CASES,
    THROWAWAY,
    dispatch,
    dispatch_worker,
    fresh_database,
    is_url,
    run_case,
    server,
    server_version,
)

__all__ = [
    "DISPATCH_CONCURRENCY",
    "DISPATCH_WORKERS",
    "PEERS",
    "PG_CASES",
    "THROWAWAY",
    "dispatch",
    "dispatch_worker",
    "fresh_database",
    "is_url",
    "run_case",
    "server",
    "server_version",
]
