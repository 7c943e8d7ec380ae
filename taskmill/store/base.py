"""What the store's callers and engines share below the face: :class:`ClaimedTask`, a task a
claim started, and :data:`CommitHook`, what a batch calls after each commit.

(``StoreProtocol``, every call the scheduler made on a store, was here; the scheduler's
store is now a :class:`~taskmill.store.store.TaskStore`, whose methods say the same, and
``taskmill.store.StoreProtocol`` is that class under its old name.)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ClaimedTask", "CommitHook"]

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
