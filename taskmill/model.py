"""Values shared by every layer: priorities, strategies, submissions, outcomes, errors, events."""

from __future__ import annotations

import enum
import json
import time
from dataclasses import KW_ONLY, dataclass, field
from datetime import timedelta
from typing import Any, ClassVar, Final, TypeVar, dataclass_transform

__all__ = [
    "MAX_GROUP_LENGTH",
    "MAX_KEY_LENGTH",
    "MAX_PAYLOAD_BYTES",
    "MAX_TAGS",
    "MAX_TAG_KEY_LENGTH",
    "MAX_TAG_VALUE_LENGTH",
    "Aging",
    "BatchInterrupted",
    "BatchSubmitted",
    "DuplicateStrategy",
    "DuplicateTask",
    "Event",
    "InvalidSubmission",
    "Priority",
    "RateLimit",
    "SchedulerError",
    "SubmitOutcome",
    "TaskCancelled",
    "TaskCompleted",
    "TaskDispatched",
    "TaskFailed",
    "TaskProgress",
    "TaskSubmission",
    "TaskSubmitted",
    "TaskSuperseded",
    "TaskUpgraded",
]

#: Largest payload accepted, in bytes (after JSON encoding).
MAX_PAYLOAD_BYTES: Final = 1 << 20
#: Longest task type / dedup key accepted, in characters.
MAX_KEY_LENGTH: Final = 4096
#: Longest group name or label accepted, in characters.
MAX_GROUP_LENGTH: Final = 1024
#: The most dependencies one task may name (``depends_on`` items).
MAX_DEPENDENCIES: Final = 1000
#: What a task does when one of its dependencies ends failed, cancelled or expired
#: (``on_dependency_failure``; the first is the default).
DEPENDENCY_POLICIES: Final = ("cancel", "fail", "ignore")
#: The most tags (``key: value`` pairs) one task may carry.
MAX_TAGS: Final = 32
#: Longest tag key accepted, in characters (a key is never empty).
MAX_TAG_KEY_LENGTH: Final = 256
#: Longest tag value accepted, in characters.
MAX_TAG_VALUE_LENGTH: Final = 1024


# --------------------------------------------------------------------------- rate limits


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket: ``per_second`` tasks a second on average, up to ``burst`` at once
    after a quiet spell (default: one second's worth, at least 1).

    ``Scheduler(…, rate_limits={"group:s3://eu": RateLimit(50, burst=100),
    "type:sync.delete": RateLimit(10)})``: the buckets live in the store, so the limit
    holds across every scheduler on it.  Each task started takes one token from the
    bucket of its group and one from that of its type.
    """

    per_second: float
    burst: float | None = None

    def __post_init__(self) -> None:
        rate = self.per_second
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
            raise SchedulerError(
                f"RateLimit.per_second must be a number > 0, not {rate!r}",
                kind="invalid_argument",
            )
        if rate == float("inf"):
            raise SchedulerError("RateLimit.per_second must be finite", kind="invalid_argument")
        burst = self.burst
        if burst is not None and (
            isinstance(burst, bool)
            or not isinstance(burst, int | float)
            or not 1 <= burst < float("inf")
        ):
            raise SchedulerError(
                f"RateLimit.burst must be a number >= 1, not {burst!r}", kind="invalid_argument"
            )

    @property
    def capacity(self) -> float:
        """The most tokens the bucket holds."""
        return float(self.burst) if self.burst is not None else max(1.0, float(self.per_second))


@dataclass(frozen=True, slots=True)
class Aging:
    """Priority aging: a pending task's effective priority improves (its number goes
    down) by ``step`` for every ``every`` it has waited since it was submitted, never
    past ``floor`` (a task already that urgent or more is left as it is).

    ``Scheduler(…, aging=Aging(every=timedelta(minutes=10), step=16, floor=64))``: claims
    go by effective priority, then queue order; the stored priorities are unchanged, and
    ``tasks()`` shows both (``priority``, ``effective_priority``).
    """

    every: timedelta
    step: int = 1
    floor: int = 0

    def __post_init__(self) -> None:
        every = self.every
        if not isinstance(every, timedelta) or every <= timedelta(0):
            raise SchedulerError(
                f"Aging.every must be a datetime.timedelta of more than 0, not {every!r}",
                kind="invalid_argument",
            )
        for name, low, high in (("step", 1, 255), ("floor", 0, 255)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise SchedulerError(
                    f"Aging.{name} must be an integer from {low} to {high}, not {value!r}",
                    kind="invalid_argument",
                )

    def effective(self, priority: int, waited: float) -> int:
        """The effective priority of a task of ``priority`` that waited ``waited`` s."""
        if priority <= self.floor or waited <= 0:
            return priority
        steps = int(waited // self.every.total_seconds())
        return max(self.floor, priority - self.step * steps)

    def to_json(self) -> str:
        """The policy as the store keeps it."""
        seconds = self.every.total_seconds()
        return json.dumps({"every": seconds, "step": self.step, "floor": self.floor})

    @classmethod
    def from_json(cls, text: str) -> Aging:
        """A policy the store kept (:meth:`to_json`)."""
        value = json.loads(text)
        return cls(timedelta(seconds=value["every"]), int(value["step"]), int(value["floor"]))


# --------------------------------------------------------------------------- priorities


class Priority(int):
    """A task priority, 0..255; **0 is the most urgent**.

    ``Priority`` is an ``int``: every API that takes a priority also takes a plain
    int.  The named tiers are ``REALTIME`` (0), ``HIGH`` (64), ``NORMAL`` (128),
    ``BACKGROUND`` (192) and ``IDLE`` (255).
    """

    REALTIME: ClassVar[Priority]
    HIGH: ClassVar[Priority]
    NORMAL: ClassVar[Priority]
    BACKGROUND: ClassVar[Priority]
    IDLE: ClassVar[Priority]

    _NAMES: ClassVar[dict[int, str]] = {}

    def __new__(cls, value: int = 128) -> Priority:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidSubmission(
                f"priority must be an int 0..255, got {value!r}",
                kind="invalid_priority",
                field="priority",
            )
        if not 0 <= value <= 255:
            raise InvalidSubmission(
                f"priority must be within 0..255, got {value}",
                kind="invalid_priority",
                field="priority",
            )
        return super().__new__(cls, value)

    @classmethod
    def parse(cls, value: Any) -> Priority:
        """A priority from an int 0..255 or a tier name (any case: ``"high"``)."""
        if isinstance(value, str):
            tier = PRIORITY_TIERS.get(value.strip().upper())
            if tier is None:
                raise InvalidSubmission(
                    f"priority must be within 0..255 or a tier name "
                    f"({', '.join(t.lower() for t in PRIORITY_TIERS)}), got {value!r}",
                    kind="invalid_priority",
                    field="priority",
                )
            return cls(tier)
        return cls(value)

    def __repr__(self) -> str:
        name = self._NAMES.get(int(self))
        return f"Priority.{name}" if name else f"Priority({int(self)})"

    __str__ = __repr__


#: The named priority tiers, by name (upper case).
PRIORITY_TIERS: Final = {"REALTIME": 0, "HIGH": 64, "NORMAL": 128, "BACKGROUND": 192, "IDLE": 255}

for _name, _value in PRIORITY_TIERS.items():
    setattr(Priority, _name, Priority(_value))
    Priority._NAMES[_value] = _name


class DuplicateStrategy(enum.StrEnum):
    """What a submission does when an active task already has its ``(task_type, dedup_key)``."""

    SKIP = "skip"
    """Keep the existing task (raising a pending task's priority if the new one is more urgent)."""
    SUPERSEDE = "supersede"
    """Replace the existing task; a running one is cancelled."""
    REJECT = "reject"
    """Fail the new submission with :class:`DuplicateTask`."""

    @classmethod
    def parse(cls, value: DuplicateStrategy | str) -> DuplicateStrategy:
        """Accept a member or its name/value in any case (``"skip"``, ``"SUPERSEDE"``)."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower())
            except ValueError:
                pass
        raise InvalidSubmission(
            f"on_duplicate must be one of skip, supersede, reject; got {value!r}",
            kind="invalid_strategy",
            field="on_duplicate",
        )


class TaskStatus(enum.StrEnum):
    """Status of a task. The first five are active, the rest are final (history)."""

    PENDING = "pending"
    RUNNING = "running"
    PAUSED = "paused"
    BLOCKED = "blocked"  # waits for its dependencies: never dispatched meanwhile
    WAITING = "waiting"  # a parent whose code returned, waiting for its children to end
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"


ACTIVE_STATUSES: Final = ("pending", "running", "paused", "blocked", "waiting")
FINAL_STATUSES: Final = ("completed", "failed", "cancelled", "superseded", "expired")


# --------------------------------------------------------------------------- errors


class SchedulerError(Exception):
    """Base of every error taskmill raises or reports.

    ``kind`` is a short machine-readable string (``"invalid_priority"``,
    ``"payload_too_large"``, ``"duplicate"``, ``"store"`` …); ``str(err)`` is the
    readable message.
    """

    kind: str = "error"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        if kind is not None:
            self.kind = kind

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kind={self.kind!r}, message={self.message!r})"

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and isinstance(other, SchedulerError)
            and other.kind == self.kind
            and other.message == self.message
        )

    def __hash__(self) -> int:
        return hash((type(self).__name__, self.kind, self.message))


class InvalidSubmission(SchedulerError):
    """A submission (or one row of a batch) failed validation.

    ``field`` names the offending field or column; ``index`` is the input row, for batches.
    """

    kind = "invalid"

    def __init__(
        self,
        message: str,
        *,
        kind: str | None = None,
        field: str | None = None,
        index: int | None = None,
    ) -> None:
        super().__init__(message, kind=kind)
        self.field = field
        self.index = index


class DuplicateTask(SchedulerError):
    """A ``REJECT`` submission met an active task with the same ``(task_type, dedup_key)``."""

    kind = "duplicate"

    def __init__(self, message: str, *, existing_task_id: int | None = None) -> None:
        super().__init__(message, kind="duplicate")
        self.existing_task_id = existing_task_id


class StoreError(SchedulerError):
    """The store cannot be opened, read or written (``kind="store"``)."""

    kind = "store"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message, kind=kind or "store")


class StoreLocked(StoreError):
    """Another writer held the store's write lock for longer than ``busy_timeout``."""


class StoreClosed(StoreError):
    """The store object was closed: nothing more is read or written through it."""


class NotATaskStore(StoreError):
    """The file is not a SQLite database, or a SQLite database that taskmill did not make."""


class SchemaTooNew(StoreError):
    """The store was written by a newer taskmill; upgrade taskmill to open it."""


class StoreDamaged(StoreError):
    """The store file is damaged (a corrupt page, a lost write-ahead log)."""


class BatchInterrupted(SchedulerError):
    """A chunk of a large batch could not commit; ``outcome`` covers the committed rows."""

    kind = "store"

    def __init__(self, message: str, *, outcome: Any) -> None:
        super().__init__(message, kind="store")
        self.outcome = outcome


# --------------------------------------------------------------------------- submissions


@dataclass(frozen=True, slots=True)
class TaskSubmission:
    """One task to submit.

    Construction never raises for a bad value: every check happens at submission,
    where a bad task is *failed* (a batch goes on with the rest).  ``None`` for
    ``group``, ``priority`` and ``on_duplicate`` means "use the batch default"
    (otherwise no group, ``Priority.NORMAL``, ``DuplicateStrategy.SKIP``).

    ``payload``: ``bytes`` are stored as they are; anything else is stored as its
    UTF-8 JSON encoding.

    ``run_after``: not dispatched before this time; ``expires_at``: not started by this
    time, the task ends as ``expired`` in history and frees its key.  Each is a
    ``datetime`` (naive means UTC), a ``timedelta`` (from the moment of submission) or
    Unix seconds.

    ``depends_on``: what the task waits for — a list of task ids (``int``) and dedup keys
    (``str``: every task with that key among its batch's rows and the store's active
    tasks, any task type).  Until each has completed the task is ``blocked``.
    ``on_dependency_failure``: what it does when one ends failed, cancelled or expired —
    ``"cancel"`` (the default; its own dependents follow), ``"fail"`` or ``"ignore"``.

    ``tags``: labels to find the task by — a ``dict`` of string keys to string values, at
    most :data:`MAX_TAGS` pairs (a ``None`` value: no such tag).  ``tasks(tags=…)``,
    ``history(tags=…)`` and ``cancel_where(tags=…)`` select the tasks carrying every
    given pair; a finished task keeps its tags in history.
    """

    task_type: Any
    _: KW_ONLY
    dedup_key: Any = None
    group: Any = None
    priority: Any = None
    payload: Any = None
    label: Any = None
    expected_read_bytes: Any = 0
    expected_write_bytes: Any = 0
    expected_net_rx_bytes: Any = 0
    expected_net_tx_bytes: Any = 0
    on_duplicate: Any = None
    max_retries: Any = None
    run_after: Any = None
    expires_at: Any = None
    depends_on: Any = None
    on_dependency_failure: Any = None
    tags: Any = None


#: The message of a payload holding NaN or an infinite number, whatever the input form.
NON_FINITE_PAYLOAD = "payload cannot be encoded as JSON: it holds NaN or an infinite number"


def _safe_text(text: str) -> str:
    """``text`` with anything that is not valid Unicode (lone surrogates) escaped."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def encode_payload(payload: Any) -> bytes | None:
    """The bytes stored for a ``TaskSubmission.payload``; raises ``InvalidSubmission``."""
    if payload is None:
        return None
    if isinstance(payload, bytes | bytearray | memoryview):
        data = bytes(payload)
    else:
        try:
            data = json.dumps(
                payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False
            ).encode("utf-8")
        except ValueError as exc:
            message = (
                NON_FINITE_PAYLOAD
                if "Out of range float" in str(exc)
                else f"payload cannot be encoded as JSON: {exc}"
            )
            raise InvalidSubmission(message, kind="invalid_payload", field="payload") from None
        except (TypeError, UnicodeEncodeError, RecursionError) as exc:
            raise InvalidSubmission(
                f"payload cannot be encoded as JSON: {_safe_text(str(exc))}",
                kind="invalid_payload",
                field="payload",
            ) from None
    if len(data) > MAX_PAYLOAD_BYTES:
        raise InvalidSubmission(
            f"payload is {len(data):,} bytes, over the {MAX_PAYLOAD_BYTES:,}-byte limit",
            kind="payload_too_large",
            field="payload",
        )
    return data


@dataclass(frozen=True, slots=True)
class SubmitOutcome:
    """What a single :meth:`TaskStore.submit` did.

    ``action`` is ``"submitted"``, ``"deduplicated"``, ``"superseded"`` or
    ``"upgraded"``.  ``task_id`` is the new task, or the existing task that caused a
    skip or was upgraded; ``replaced_task_id`` is the superseded task.
    """

    action: str
    task_id: int
    replaced_task_id: int | None = None
    # what was submitted (defaults applied), for events and display
    task_type: str = field(default="", compare=False)
    dedup_key: str | None = field(default=None, compare=False)
    group: str | None = field(default=None, compare=False)
    priority: int = field(default=128, compare=False)


# --------------------------------------------------------------------------- events


def _now() -> float:
    return time.time()


_C = TypeVar("_C")


@dataclass_transform(frozen_default=True, kw_only_default=True, field_specifiers=(field,))
def _event(cls: type[_C]) -> type[_C]:
    """Declare an event: a frozen dataclass with slots whose fields are keyword-only."""
    return dataclass(frozen=True, slots=True, kw_only=True)(cls)


@_event
class Event:
    """Base of all scheduler events; ``at`` is a Unix timestamp."""

    at: float = field(default_factory=_now)


@_event
class TaskSubmitted(Event):
    """One task was submitted by a single ``submit()``."""

    task_id: int
    task_type: str
    dedup_key: str | None
    group: str | None
    priority: int


@_event
class BatchSubmitted(Event):
    """One committed batch transaction inserted ``count`` tasks (superseding ones included)."""

    count: int
    task_ids: tuple[int, ...]


@_event
class BatchFinished(Event):
    """The last active task of batch ``batch_id`` ended: the batch is done.  ``counts``:
    its tasks by how they ended (the statuses of ``store.batch(id).counts``).  Emitted once
    per batch by one of the schedulers on the store — the first that finds it done."""

    batch_id: int
    counts: dict[str, int]


@_event
class TaskUpgraded(Event):
    """A pending task's priority was raised by a more urgent duplicate submission."""

    task_id: int
    priority: int


@_event
class TaskDispatched(Event):
    """An attempt of a task started on an executor."""

    task_id: int
    task_type: str
    group: str | None
    attempt: int


@_event
class TaskProgress(Event):
    """An executor reported progress through ``ctx.progress()``."""

    task_id: int
    fraction: float
    message: str | None


@_event
class TaskCompleted(Event):
    """A task finished successfully."""

    task_id: int
    task_type: str
    group: str | None
    attempt: int
    duration: float


@_event
class TaskFailed(Event):
    """An attempt raised. ``will_retry`` tells whether the task goes back to the queue."""

    task_id: int
    task_type: str
    group: str | None
    attempt: int
    error: str
    will_retry: bool
    retry_at: float | None = None


@_event
class TaskCancelled(Event):
    """A task was cancelled (``was_running`` tells whether an attempt was under way)."""

    task_id: int
    was_running: bool


@_event
class TaskSuperseded(Event):
    """An active task was replaced by ``replaced_by`` (a SUPERSEDE submission)."""

    task_id: int
    replaced_by: int
    was_running: bool


@_event
class StoreUnavailable(Event):
    """A call that records a result could not reach the store; it is retried in
    ``retry_in`` seconds (``tries`` so far).  Nothing is lost meanwhile."""

    operation: str
    error: str
    tries: int
    retry_in: float


@_event
class StoreRecovered(Event):
    """A call that had failed reached the store again after ``tries`` failed tries."""

    operation: str
    tries: int


@_event
class TasksRecovered(Event):
    """``count`` running tasks of stopped workers (their lease ran out, or their
    process died) were put back to pending by this scheduler."""

    count: int


@_event
class TasksExpired(Event):
    """``count`` tasks not started by their ``expires_at`` moved to history as
    ``expired`` (their keys are free again), found by this scheduler's sweep."""

    count: int
