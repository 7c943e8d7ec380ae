"""The public builder of a batch, :class:`BatchSubmission` (``tm.BatchSubmission``): the
batch-wide settings and the tasks, handed to :func:`taskmill.batch.prepare.prepare`."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..model import DuplicateStrategy, InvalidSubmission, Priority
from .validate import CANONICAL, Defaults, _bad_input, to_seconds

__all__ = ["DEFAULT_CHUNK_SIZE", "DEFAULT_TRANSACTION_LIMIT", "BatchSubmission"]


DEFAULT_CHUNK_SIZE = 10_000
DEFAULT_TRANSACTION_LIMIT = 100_000
#: The longest batch name, in characters.
MAX_BATCH_NAME = 200


@dataclass(frozen=True)
class BatchSubmission:
    """Batch-wide settings and the tasks, built fluently::

        tm.BatchSubmission().default_group("s3://eu").on_duplicate("supersede").tasks(df)

    Every method returns a new ``BatchSubmission``.
    """

    _tasks: Any = None
    _default_group: str | None = None
    _default_priority: int = int(Priority.NORMAL)
    _on_duplicate: DuplicateStrategy = DuplicateStrategy.SKIP
    _columns: Mapping[str, str] = field(default_factory=dict)
    _payload_columns: tuple[str, ...] = ()
    _chunk_size: int = DEFAULT_CHUNK_SIZE
    _transaction_limit: int = DEFAULT_TRANSACTION_LIMIT
    _run_after: float | None = None
    _expires_at: float | None = None
    _name: str | None = None

    def tasks(self, tasks: Any) -> BatchSubmission:
        """The tasks: submissions, a table, or a Parquet path (not another BatchSubmission)."""
        if isinstance(tasks, BatchSubmission):
            raise InvalidSubmission(
                "tasks() cannot take another BatchSubmission", kind="invalid_input"
            )
        return dataclasses.replace(self, _tasks=tasks)

    def default_group(self, group: str | None) -> BatchSubmission:
        """Group of every task that sets none."""
        if group is not None and not isinstance(group, str):
            raise InvalidSubmission(
                "default_group must be a string", kind="invalid_group", field="group"
            )
        return dataclasses.replace(self, _default_group=group)

    def default_priority(self, priority: int) -> BatchSubmission:
        """Priority of every task that sets none."""
        return dataclasses.replace(self, _default_priority=int(Priority(priority)))

    def on_duplicate(self, strategy: DuplicateStrategy | str) -> BatchSubmission:
        """Strategy of every task that sets none."""
        return dataclasses.replace(self, _on_duplicate=DuplicateStrategy.parse(strategy))

    def columns(
        self,
        mapping: Mapping[str, str] | None = None,
        /,
        **fields: str,
    ) -> BatchSubmission:
        """Map table columns to fields: ``.columns(task_type="action", dedup_key="key")``."""
        merged = {**(mapping or {}), **fields}
        for name in merged:
            if name not in CANONICAL:
                raise InvalidSubmission(
                    f"columns(): {name!r} is not a task field (fields: {', '.join(CANONICAL)})",
                    kind="invalid_input",
                    field=name,
                )
        return dataclasses.replace(self, _columns={**self._columns, **merged})

    def payload_columns(self, columns: Sequence[str]) -> BatchSubmission:
        """Pack these table columns into each task's payload, as a JSON object."""
        if isinstance(columns, str):
            columns = [columns]
        return dataclasses.replace(self, _payload_columns=tuple(columns))

    def run_after(self, when: Any) -> BatchSubmission:
        """Start time of the rows that set none: a ``datetime`` (naive means UTC), a
        ``timedelta`` from now (this call) or Unix seconds; ``None`` for none."""
        return dataclasses.replace(self, _run_after=_batch_time(when, "run_after"))

    def expires_at(self, when: Any) -> BatchSubmission:
        """Expiry time of the rows that set none (as :meth:`run_after`)."""
        return dataclasses.replace(self, _expires_at=_batch_time(when, "expires_at"))

    def name(self, name: str | None) -> BatchSubmission:
        """A label for the batch, recorded with it (``store.batch(id).name``, ``taskmill
        batches``); at most 200 characters.  ``None``: no name."""
        if name is not None and not isinstance(name, str):
            raise InvalidSubmission(
                f"a batch name must be a string, got {type(name).__name__}",
                kind="invalid_input",
                field="name",
            )
        if name is not None and len(name) > MAX_BATCH_NAME:
            raise InvalidSubmission(
                f"a batch name has at most {MAX_BATCH_NAME} characters, got {len(name):,}",
                kind="invalid_input",
                field="name",
            )
        return dataclasses.replace(self, _name=name)

    def chunk_size(self, n: int) -> BatchSubmission:
        """Rows per transaction for batches larger than the transaction limit."""
        if n < 1:
            raise _bad_input(f"chunk_size must be at least 1, got {n}")
        return dataclasses.replace(self, _chunk_size=int(n))

    def transaction_limit(self, n: int) -> BatchSubmission:
        """Largest batch committed in one transaction; larger ones commit in chunks."""
        if n < 1:
            raise _bad_input(f"transaction_limit must be at least 1, got {n}")
        return dataclasses.replace(self, _transaction_limit=int(n))

    @property
    def defaults(self) -> Defaults:
        return Defaults(
            self._default_group,
            self._default_priority,
            self._on_duplicate,
            self._run_after,
            self._expires_at,
        )


def _batch_time(when: Any, field: str) -> float | None:
    """A batch-wide time as Unix seconds (a bad one raises, naming the field)."""
    return to_seconds(when, field, time.time())
