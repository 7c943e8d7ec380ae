"""The task store: :class:`TaskStore`, the public face on every engine, holding the domain
logic once over a driver of ``taskmill/backends/`` (SQLite's; PostgreSQL's, imported only
for a PostgreSQL URL)."""

from ..backends.base import ClaimedTask, CommitHook
from ..backends.location import Location
from .store import ENGINES, TaskStore

#: The old name of what the scheduler calls on its store: all of it is TaskStore's now.
StoreProtocol = TaskStore

__all__ = ["ENGINES", "ClaimedTask", "CommitHook", "Location", "StoreProtocol", "TaskStore"]
