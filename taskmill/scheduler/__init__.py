"""The scheduler: dispatch over a store, split by job (see :mod:`.scheduler`).

``from taskmill.scheduler import Scheduler`` and the other names the single module
``taskmill/scheduler.py`` offered keep working from here.
"""

from .attempts import TRACEBACK_FRAMES, Executor, TaskContext, last_frames
from .dispatch import MAX_UNEXPECTED_ERRORS
from .events import Subscription
from .retention import RETENTION_FIRST_DELAY, RETENTION_INTERVAL
from .scheduler import Scheduler
from .settle import MAX_STORE_BACKOFF

__all__ = [
    "MAX_STORE_BACKOFF",
    "MAX_UNEXPECTED_ERRORS",
    "RETENTION_FIRST_DELAY",
    "RETENTION_INTERVAL",
    "TRACEBACK_FRAMES",
    "Executor",
    "Scheduler",
    "Subscription",
    "TaskContext",
    "last_frames",
]
