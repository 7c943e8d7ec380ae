"""Checks of one :class:`TaskSubmission`, shared by ``submit()`` and list batches.

The vectorised checks of table input (``taskmill.batch``) produce the same kinds
and messages, so a list and a table holding the same data fail the same rows
the same way.
"""

from __future__ import annotations

import contextlib
import math
import operator
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import Any

from ..columns import EXPECTED_FIELDS, MAX_INT64, MAX_TIME, column, int_limits
from ..model import (
    DuplicateStrategy,
    InvalidSubmission,
    Priority,
    SchedulerError,
    TaskSubmission,
    encode_payload,
)

#: The message of text holding a NUL character (``{}``: the field): PostgreSQL's text cannot
#: hold one, so no store takes it, and a row holding one fails the same on either engine.
#: A ``{}`` template for ``str.format`` and ``polars.format`` alike.
NUL_MESSAGE = "{} holds a NUL character (\\x00), which the store cannot keep in text"


@dataclass(frozen=True, slots=True)
class Defaults:
    """Batch-wide defaults for fields a submission leaves unset."""

    group: str | None = None
    priority: int = int(Priority.NORMAL)
    on_duplicate: DuplicateStrategy = DuplicateStrategy.SKIP
    run_after: float | None = None  # Unix seconds
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """A validated submission, defaults applied, payload encoded."""

    task_type: str
    dedup_key: str | None
    group: str | None
    priority: int
    payload: bytes | None
    label: str | None
    expected_read_bytes: int
    expected_write_bytes: int
    expected_net_rx_bytes: int
    expected_net_tx_bytes: int
    on_duplicate: DuplicateStrategy
    max_retries: int | None
    run_after: float | None = None  # Unix seconds
    expires_at: float | None = None


def is_not_a_time(value: Any) -> bool:
    """Whether ``value`` is pandas' missing time, ``pd.NaT`` (a ``datetime`` that equals
    nothing, not even itself), told apart without importing pandas."""
    return isinstance(value, datetime) and value != value  # NaT != NaT


def to_seconds(value: Any, field: str, now: float) -> float | None:
    """A time field as Unix seconds: a ``datetime`` (naive means UTC), a ``date``
    (midnight UTC, as a Date column of a table), a ``timedelta`` from ``now``, or Unix
    seconds; ``None`` and ``pd.NaT`` (a table's null time) are no time: ``None``."""
    if value is None or is_not_a_time(value):
        return None
    kind = f"invalid_{field}"
    if isinstance(value, datetime):
        at = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        seconds = at.timestamp()
    elif isinstance(value, date):
        seconds = datetime.combine(value, clock(), tzinfo=UTC).timestamp()
    elif isinstance(value, timedelta):
        seconds = now + value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise _invalid(
            field,
            kind,
            f"{field} must be a datetime, a date, a timedelta or Unix seconds, got "
            f"{type(value).__name__}",
        )
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_TIME:
        raise _invalid(field, kind, f"{field} must be a time between 1970 and 9999, got {value}")
    return seconds


def check_times(run_after: float | None, expires_at: float | None) -> None:
    """A task that could never start is refused: it would expire before its start time."""
    if run_after is not None and expires_at is not None and expires_at <= run_after:
        raise _invalid(
            "expires_at",
            "invalid_expires_at",
            "expires_at must be later than run_after (the task could never start)",
        )


def _invalid(field: str, kind: str, message: str) -> InvalidSubmission:
    return InvalidSubmission(message, kind=kind, field=field)


def encodes(text: str) -> bool:
    """Whether ``text`` can be stored as UTF-8 (no lone surrogates, as ``os.listdir``
    returns for a file name that is not UTF-8)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: Any, field: str, kind: str) -> str | None:
    """A text field within its column's limits (``taskmill/columns.py``): ``None`` where
    the column takes NULL, or a string of at most ``max_length`` characters."""
    col = column(field)
    if value is None:
        if not col.nullable:
            raise _invalid(field, kind, f"{field} is missing")
        return None
    if not isinstance(value, str):
        raise _invalid(field, kind, f"{field} must be a string, got {type(value).__name__}")
    if not encodes(value):
        raise _invalid(field, "invalid_encoding", f"{field} is not valid UTF-8")
    if "\x00" in value:
        raise _invalid(field, "invalid_encoding", NUL_MESSAGE.format(field))
    if value == "" and not col.empty:
        raise _invalid(field, kind, f"{field} is an empty string")
    limit = col.max_length
    if limit is not None and len(value) > limit:
        raise _invalid(field, kind, f"{field} is longer than {limit:,} characters")
    return value


def check_int(value: Any, field: str, kind: str) -> int:
    """An integer field within its column's ``low..high`` (bools are refused)."""
    low, high = int_limits(field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(field, kind, f"{field} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise _invalid(field, kind, f"{field} must be within {low}..{high}, got {value}")
    return int(value)


def check_submission(sub: TaskSubmission, defaults: Defaults = Defaults()) -> Row:
    """Validate one submission; raise :class:`InvalidSubmission` naming the field."""
    if not isinstance(sub, TaskSubmission):
        raise InvalidSubmission(
            f"expected a TaskSubmission, got {type(sub).__name__}",
            kind="invalid_input",
        )
    task_type = check_text(sub.task_type, "task_type", "invalid_task_type")
    assert task_type is not None
    dedup_key = check_text(sub.dedup_key, "dedup_key", "invalid_dedup_key")
    group = check_text(sub.group, "group", "invalid_group")
    if group is None:
        group = defaults.group
    label = check_text(sub.label, "label", "invalid_label")
    if sub.priority is None:
        priority = defaults.priority
    elif isinstance(sub.priority, str):  # a tier name: "high", "IDLE" …
        priority = int(Priority.parse(sub.priority))
    else:
        priority = check_int(sub.priority, "priority", "invalid_priority")
    expected = [
        check_int(getattr(sub, f), f, "invalid_expected_bytes")
        if getattr(sub, f) is not None
        else 0
        for f in EXPECTED_FIELDS
    ]
    strategy = (
        defaults.on_duplicate
        if sub.on_duplicate is None
        else DuplicateStrategy.parse(sub.on_duplicate)
    )
    max_retries = (
        None
        if sub.max_retries is None
        else check_int(sub.max_retries, "max_retries", "invalid_max_retries")
    )
    now = time.time()
    run_after = to_seconds(sub.run_after, "run_after", now)
    if run_after is None:
        run_after = defaults.run_after
    expires_at = to_seconds(sub.expires_at, "expires_at", now)
    if expires_at is None:
        expires_at = defaults.expires_at
    check_times(run_after, expires_at)
    payload = encode_payload(sub.payload)
    read_bytes, write_bytes, net_rx_bytes, net_tx_bytes = expected  # EXPECTED_FIELDS' order
    return Row(
        task_type,
        dedup_key,
        group,
        priority,
        payload,
        label,
        read_bytes,
        write_bytes,
        net_rx_bytes,
        net_tx_bytes,
        strategy,
        max_retries,
        run_after,
        expires_at,
    )


# --------------------------------------------------------------------------- arguments
# The arguments of the stores' public methods: a bad one raises
# ``SchedulerError(kind="invalid_argument")`` whose message begins with its name.


def _bad_argument(message: str) -> SchedulerError:
    return SchedulerError(message, kind="invalid_argument")


def whole_number(value: Any, name: str, *, low: int, high: int = MAX_INT64) -> int:
    """``value`` as an ``int`` within ``low..high`` (what a 64-bit column holds, by
    default): a Python or numpy integer, never a bool."""
    number: int | None = None
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        with contextlib.suppress(TypeError):
            number = operator.index(value)
    if number is None:
        raise _bad_argument(f"{name} must be a whole number, not {type(value).__name__} {value!r}")
    if number < low:
        raise _bad_argument(f"{name} must be a whole number >= {low}, not {number}")
    if number > high:
        raise _bad_argument(f"{name} must be a whole number <= {high:,}, not {number:,}")
    return number


def task_id_argument(value: Any, name: str = "task_id") -> int:
    """A task id: a whole number a store's id column can hold (an id that names no task
    is not an error: the method says it found none)."""
    return whole_number(value, name, low=-MAX_INT64 - 1)


def text_argument(value: Any, name: str) -> str:
    """A non-empty string naming something in the store (a group, an owner)."""
    if not isinstance(value, str) or not value:
        raise _bad_argument(f"{name} must be a non-empty string, not {value!r}")
    if "\x00" in value:
        raise _bad_argument(NUL_MESSAGE.format(name))
    return value


def clock_argument(value: Any, name: str = "now") -> float:
    """A time given to a store method, as Unix seconds (``None``: the clock now)."""
    if value is None:
        return time.time()
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= MAX_TIME
    ):
        raise _bad_argument(
            f"{name} must be Unix seconds (a finite number, 1970 to 9999), not {value!r}"
        )
    return float(value)
