"""taskmill: a persistent, priority-aware task scheduler on SQLite, with a data-oriented
batch planner for sync plans arriving as tables."""

from .model import (
    BatchInterrupted,
    BatchSubmitted,
    DuplicateStrategy,
    DuplicateTask,
    Event,
    InvalidSubmission,
    Priority,
    SchedulerError,
    StoreRecovered,
    StoreUnavailable,
    SubmitOutcome,
    TaskCancelled,
    TaskCompleted,
    TaskDispatched,
    TaskFailed,
    TaskProgress,
    TasksRecovered,
    TaskStatus,
    TaskSubmission,
    TaskSubmitted,
    TaskSuperseded,
    TaskUpgraded,
)
from .outcome import BatchOutcome
from .plan import BatchSubmission
from .scheduler import Scheduler, Subscription, TaskContext
from .store import TaskStore

__version__ = "0.1.0"

__all__ = [
    "BatchInterrupted",
    "BatchOutcome",
    "BatchSubmission",
    "BatchSubmitted",
    "DuplicateStrategy",
    "DuplicateTask",
    "Event",
    "InvalidSubmission",
    "Priority",
    "Scheduler",
    "SchedulerError",
    "StoreRecovered",
    "StoreUnavailable",
    "SubmitOutcome",
    "Subscription",
    "TaskCancelled",
    "TaskCompleted",
    "TaskContext",
    "TaskDispatched",
    "TaskFailed",
    "TaskProgress",
    "TaskStatus",
    "TaskStore",
    "TaskSubmission",
    "TaskSubmitted",
    "TaskSuperseded",
    "TaskUpgraded",
    "TasksRecovered",
    "__version__",
]
