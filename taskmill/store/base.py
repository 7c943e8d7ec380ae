"""The old path of what the store's callers and drivers share below the face
(:mod:`taskmill.backends.base`): :class:`ClaimedTask`, a task a claim started, and
:data:`CommitHook`, what a batch calls after each commit.

(``StoreProtocol``, every call the scheduler made on a store, was here; the scheduler's
store is now a :class:`~taskmill.store.store.TaskStore`, whose methods say the same, and
``taskmill.store.StoreProtocol`` is that class under its old name.)
"""

from ..backends.base import ClaimedTask, CommitHook

__all__ = ["ClaimedTask", "CommitHook"]
