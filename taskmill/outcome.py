"""Moved to :mod:`taskmill.batch.outcome` (issue 23): this old path re-exports its names."""

from .batch.outcome import (
    ACTIONS,
    OUTCOME_SCHEMA,
    VIEWS,
    BatchOutcome,
    OutcomeSource,
    build_outcome,
    compact,
    view_frame,
)

__all__ = [
    "ACTIONS",
    "OUTCOME_SCHEMA",
    "VIEWS",
    "BatchOutcome",
    "OutcomeSource",
    "build_outcome",
    "compact",
    "view_frame",
]
