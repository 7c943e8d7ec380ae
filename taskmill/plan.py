"""Moved to :mod:`taskmill.batch` (issue 23): this old path re-exports its names."""

from .batch.dedup import _fingerprint, _repeated
from .batch.inputs import ColumnStream, NoTaskType, Spool, UnknownColumns, _to_polars
from .batch.prepare import IN_MEMORY_ROWS, KEY_COLUMNS, Prepared, prepare
from .batch.submission import DEFAULT_CHUNK_SIZE, DEFAULT_TRANSACTION_LIMIT, BatchSubmission
from .batch.validate import BAD_PAYLOAD, BAD_PRIORITY, BAD_TEXT, CANONICAL

__all__ = [
    "BAD_PAYLOAD",
    "BAD_PRIORITY",
    "BAD_TEXT",
    "CANONICAL",
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_TRANSACTION_LIMIT",
    "IN_MEMORY_ROWS",
    "KEY_COLUMNS",
    "BatchSubmission",
    "ColumnStream",
    "NoTaskType",
    "Prepared",
    "Spool",
    "UnknownColumns",
    "_fingerprint",
    "_repeated",
    "_to_polars",
    "prepare",
]
