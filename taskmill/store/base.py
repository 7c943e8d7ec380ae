"""The store protocol: every call the scheduler makes on a store, and nothing else.

:class:`~taskmill.store.store.TaskStore` (every engine) implements it: the scheduler's
store is a ``TaskStore``, and this protocol names the part of it the scheduler calls.  A
test can wrap a real store in an object that forwards these calls and fails some of them
(declared a ``TaskStore`` with ``abc.ABCMeta.register``), to check that the scheduler
records every result whatever the store does.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol, runtime_checkable

import polars as pl

from ..model import SubmitOutcome, TaskSubmission
from ..outcome import BatchOutcome

__all__ = ["ClaimedTask", "CommitHook", "StoreProtocol"]

#: Called after each committed batch transaction that inserted tasks, with the
#: inserted ids and the ``(new_id, replaced_id)`` pairs of superseded tasks.
CommitHook = Callable[[list[int], list[tuple[int, int]]], None]


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A task a worker has just marked running."""

    id: int
    task_type: str
    dedup_key: str | None
    group: str | None
    priority: int
    payload: bytes | None
    label: str | None
    attempt: int
    max_retries: int | None


@runtime_checkable
class StoreProtocol(Protocol):
    """What a scheduler needs of a task store.  Every method is synchronous and
    thread-safe; the scheduler calls them off its event loop.  A method that cannot
    reach the store raises :class:`~taskmill.SchedulerError`; the scheduler retries
    the calls that record a result."""

    # -- workers and leases
    def new_owner(self, *, lease_timeout: float = ...) -> str:
        """Register a fresh worker identity holding a lease of ``lease_timeout`` s."""
        ...

    def register(self, owner: str, *, lease_timeout: float) -> None:
        """Register ``owner`` again with a fresh lease (after :meth:`renew` said False)."""
        ...

    def renew(self, owner: str) -> bool:
        """Extend ``owner``'s lease; ``False`` when it had been taken away already."""
        ...

    def recover(self) -> int:
        """Put back to pending the running tasks of workers that are gone."""
        ...

    def release_owner(self, owner: str) -> int:
        """Give back every task ``owner`` runs (not counted as tries); forget it."""
        ...

    def owned_tasks(self, owner: str) -> list[int]:
        """Ids of the tasks the store has running for ``owner``."""
        ...

    # -- dispatch
    def claim(
        self,
        limit: int,
        *,
        task_types: Iterable[str],
        owner: str,
        group_limits: Mapping[str, int] | None = None,
        default_group_limit: int | None = None,
        byte_budgets: Mapping[str, int] | None = None,
        rate_limits: Mapping[str, Any] | None = None,
    ) -> list[ClaimedTask]:
        """Mark up to ``limit`` dispatchable tasks running for ``owner``, in order;
        group limits and byte budgets count every running task of the store, rate
        limits take tokens from buckets in the store.  The result may carry ``wait``
        (seconds until a rate limit lets one more through) and ``held`` (the groups
        held back, and by what), as :class:`~taskmill.store.picking.Claimed` does."""
        ...

    def complete_many(
        self, task_ids: Sequence[int], *, owner: str, attempts: Sequence[int] | None = None
    ) -> set[int]:
        """Record successful attempts; returns the ids that were still ``owner``'s (as
        those attempts: a retried call whose first try landed changes nothing)."""
        ...

    def fail(
        self,
        task_id: int,
        *,
        owner: str,
        error: str,
        retry_at: float | None,
        attempt: int | None = None,
        traceback: str | None = None,
    ) -> str | None:
        """Record a failed attempt (``traceback``: the last frames of the error's, kept
        with the attempt): ``"retry"``, ``"failed"``, or ``None`` when not owned."""
        ...

    def release(
        self, task_ids: Sequence[int], *, owner: str, attempts: Sequence[int] | None = None
    ) -> int:
        """Give running attempts back to pending, not counted as tries."""
        ...

    def lost_tasks(
        self, task_ids: Sequence[int], *, owner: str, attempts: Sequence[int] | None = None
    ) -> dict[int, tuple[str, int | None]]:
        """Of tasks ``owner`` believes it runs, the ones it no longer owns, with their
        status now and ``replaced_by``."""
        ...

    def has_work(self, task_types: Iterable[str]) -> bool:
        """Whether any task of these types is pending or running."""
        ...

    def next_retry_at(self) -> float | None:
        """The earliest time a task waiting for a start time or a retry, or a paused
        group, becomes due."""
        ...

    def expire_due(self, *, now: float | None = None) -> int:
        """Move the tasks not started by their ``expires_at`` to history as expired;
        returns how many."""
        ...

    # -- submitting and control
    def submit(self, submission: TaskSubmission) -> SubmitOutcome: ...

    def submit_batch(
        self,
        tasks: Any,
        *,
        on_commit: CommitHook | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> BatchOutcome: ...

    def plan_batch(
        self, tasks: Any, *, progress: Callable[[int, int], None] | None = None
    ) -> BatchOutcome: ...

    def cancel(self, task_id: int) -> str | None: ...

    def cancel_where(
        self,
        *,
        task_type: str | Sequence[str] | None = None,
        group: str | Sequence[str] | None = None,
        label: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        dedup_keys: Iterable[str] | None = None,
    ) -> int: ...

    def retry_failed(
        self,
        *,
        task_type: str | Sequence[str] | None = None,
        group: str | Sequence[str] | None = None,
        since: dt.datetime | dt.timedelta | None = None,
        on_commit: CommitHook | None = None,
    ) -> BatchOutcome: ...

    def pause(self, task_id: int) -> bool: ...

    def resume(self, task_id: int) -> bool: ...

    # -- retention
    def prune_history(
        self,
        *,
        older_than: timedelta | None = None,
        keep_last: int | None = None,
        export: str | os.PathLike[str] | None = None,
    ) -> int:
        """Remove finished tasks from history, in short transactions; returns how many."""
        ...

    # -- queries (the live widget)
    def counts(self) -> dict[str, int]: ...

    def stats(self, by: str = "group") -> pl.DataFrame: ...

    def close(self) -> None: ...
