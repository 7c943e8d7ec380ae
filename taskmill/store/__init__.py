"""The task store: the only code that talks to SQLite."""

from .base import ClaimedTask, CommitHook, StoreProtocol
from .sqlite import TaskStore

__all__ = ["ClaimedTask", "CommitHook", "StoreProtocol", "TaskStore"]
