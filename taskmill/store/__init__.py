"""The task store: the only code that talks to SQLite."""

from .sqlite import ClaimedTask, TaskStore

__all__ = ["ClaimedTask", "TaskStore"]
