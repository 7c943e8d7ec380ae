"""Schedules: a task submitted at each occurrence of an interval or of a five-field cron
expression in a time zone — the store's rules, written once for every engine.

- **Occurrences.** An interval schedule's occurrences are ``anchor + k × every`` (``k``
  ≥ 0; the anchor is ``start_at``, or the second the schedule was made); a cron
  schedule's are the matches of its expression, read in its time zone (``cronsim``, which
  follows Debian's cron through daylight-saving changes), from ``start_at`` (or the
  second it was made) on.  All times are the store's clock (:meth:`TaskStore.now`).
- **Firing.** A scheduler's poll reads the schedules due (``next_at`` ≤ now, through an
  index), and fires each in a write transaction of its own that claims the occurrence
  (the row only while ``next_at`` is still the one seen due: see
  :mod:`taskmill.backends.schedules`), submits its task — through the very decision a
  single :meth:`~TaskStore.submit` makes — and moves ``next_at`` on, all or nothing: so
  one occurrence is submitted once, however many schedulers run.  Its task's dedup key,
  when the submission has none, is ``f"{name}@{occurrence}"``, the occurrence as an ISO
  time in UTC (``nightly@2026-12-08T02:00:00+00:00``).
- **Missed occurrences are not replayed.** A schedule found late fires the latest of the
  occurrences that came due, once (the others are counted in ``missed``), and its next is
  the first one after now.
- **No pile-up.** While the task of the last occurrence submitted is still ``pending``
  or ``blocked``, an occurrence is skipped (counted in ``skipped``), not submitted.
- **Paused** schedules fire nothing; resumed, they go on from the first occurrence at or
  after the resume (what came due meanwhile is not submitted).

The statements are :class:`~taskmill.backends.schedules.ScheduleStatements`; the job of a
scheduler that fires them is :mod:`taskmill.scheduler.schedules`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import json
import logging
import math
import zoneinfo
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import polars as pl

from ..backends.base import Driver
from ..backends.schedules import ScheduleRow
from ..batch.validate import MAX_TIME, Defaults, Row, check_submission, clock_argument
from ..model import (
    DuplicateStrategy,
    DuplicateTask,
    InvalidSubmission,
    SchedulerError,
    SubmitOutcome,
    TaskSubmission,
)
from .common import submit_in

__all__ = [
    "DETAIL_COLUMNS",
    "MAX_NAME_LENGTH",
    "SCHEDULE_COLUMNS",
    "ScheduleMethods",
    "ScheduleRun",
    "Timing",
    "occurrence_key",
]

log = logging.getLogger("taskmill")

_UTC_TIME = pl.Datetime("us", "UTC")
#: The columns of :meth:`TaskStore.schedules`, with their polars types.
SCHEDULE_COLUMNS: dict[str, pl.DataType] = {
    "name": pl.String(),
    "task_type": pl.String(),
    "every": pl.Duration("us"),
    "cron": pl.String(),
    "next_at": _UTC_TIME,
    "last_at": _UTC_TIME,
    "paused": pl.Boolean(),
}
#: The columns ``schedules(details=True)`` adds.
DETAIL_COLUMNS: dict[str, pl.DataType] = {
    "timezone": pl.String(),
    "start_at": _UTC_TIME,
    "last_task_id": pl.Int64(),
    "skipped": pl.Int64(),
    "missed": pl.Int64(),
    "dedup_key": pl.String(),
    "group": pl.String(),
    "priority": pl.Int64(),
    "created_at": _UTC_TIME,
    "updated_at": _UTC_TIME,
}
#: The longest schedule name (its occurrences' dedup keys add ``@`` and an ISO time).
MAX_NAME_LENGTH = 1024
#: The shortest and the longest interval.
MIN_EVERY = timedelta(seconds=1)
MAX_EVERY = timedelta(days=100 * 366)
#: Schedules fired by one :meth:`ScheduleMethods.run_schedules` (the earliest due first).
DUE_PAGE = 100
#: Statuses of the last occurrence's task that make the next occurrence skip.
WAITING_STATUSES = ("pending", "blocked")
#: Matches a search of a cron expression steps over at most (a schedule further behind
#: than that — a minutely one left for months — fires its latest match before now, and
#: counts the occurrences missed up to the search's end).
_CRON_STEPS = 200_000
#: The submission fields a schedule keeps elsewhere than its JSON object, or refuses.
_NOT_IN_JSON = frozenset(
    {"task_type", "payload", "run_after", "expires_at", "depends_on", "on_dependency_failure"}
)
_US = 1_000_000
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _invalid(message: str) -> SchedulerError:
    return SchedulerError(message, kind="invalid_argument")


def _us(seconds: float) -> int:
    """``seconds`` as whole microseconds (the nearest)."""
    return round(seconds * _US)


def _iso(seconds: float) -> str:
    """Unix ``seconds`` as an ISO time in UTC, to the microsecond (none shown when 0)."""
    return (_EPOCH + timedelta(microseconds=_us(seconds))).isoformat()


def occurrence_key(name: str, at: float) -> str:
    """The dedup key of schedule ``name``'s occurrence at ``at`` (Unix seconds) when its
    submission has none: ``name@`` and the occurrence as an ISO time in UTC."""
    return f"{name}@{_iso(at)}"


@functools.cache
def _zone(key: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(key)


def _cron_sim(expr: str, at: dt.datetime, *, reverse: bool = False) -> Any:
    from cronsim import CronSim  # imported when a cron schedule is used

    return CronSim(expr, at, reverse=reverse)


def _cron_next(expr: str, zone: zoneinfo.ZoneInfo, t: float, *, inclusive: bool) -> float | None:
    """The first match of ``expr`` in ``zone`` after ``t`` (at or after it: ``inclusive``),
    Unix seconds; ``None`` when none comes in the next fifty years."""
    it = _cron_sim(expr, dt.datetime.fromtimestamp(t - 1 if inclusive else t, zone))
    for _ in range(_CRON_STEPS):
        try:
            at = next(it).timestamp()
        except StopIteration:
            return None
        # (a wall time repeated by a daylight-saving change may come back earlier)
        if at > t or (inclusive and at == t):
            return at
    return None


def _cron_before(expr: str, zone: zoneinfo.ZoneInfo, t: float) -> float | None:
    """A late match of ``expr`` at or before ``t`` (the latest, but for daylight-saving
    corner cases): where a search of a schedule far behind may start."""
    it = _cron_sim(expr, dt.datetime.fromtimestamp(math.floor(t) + 1, zone), reverse=True)
    try:
        at = next(it).timestamp()
    except StopIteration:
        return None
    return at if at <= t else None


@dataclass(frozen=True, slots=True)
class Timing:
    """When a schedule's occurrences come: every ``every_us`` microseconds from its
    anchor, or at each match of the five-field ``cron`` in ``timezone`` from its anchor
    on (exactly one of the two is set)."""

    every_us: int | None
    cron: str | None
    timezone: str

    @classmethod
    def of(cls, row: ScheduleRow) -> Timing:
        """The timing of a stored schedule."""
        return cls(row.every_us, row.cron, row.timezone)

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return _zone(self.timezone)

    def first(self, anchor: float, t: float) -> float | None:
        """The first occurrence at or after ``t`` (``None``: none will come)."""
        if self.every_us is not None:
            a, f, e = _us(anchor), math.ceil(t * _US), self.every_us
            return (a if f <= a else a + -((a - f) // e) * e) / _US
        assert self.cron is not None
        return _cron_next(self.cron, self.zone, max(anchor, t), inclusive=True)

    def due(self, anchor: float, seen: float, now: float) -> tuple[float, float | None, int]:
        """For a schedule whose next occurrence ``seen`` is due at ``now``: the latest
        occurrence at or before ``now`` (the one to fire), the first one after it (``None``:
        none will come) and how many came due before it since ``seen`` (missed: those are
        not replayed)."""
        if self.every_us is not None:
            a, e, s = _us(anchor), self.every_us, _us(seen)
            latest = max(a + (math.floor(now * _US) - a) // e * e, s)
            return latest / _US, (latest + e) / _US, (latest - s) // e
        assert self.cron is not None
        zone, occurrence, missed = self.zone, seen, 0
        it = _cron_sim(self.cron, dt.datetime.fromtimestamp(seen, zone))
        for _ in range(_CRON_STEPS):
            try:
                at = next(it).timestamp()
            except StopIteration:
                return occurrence, None, missed
            if at <= occurrence:  # a wall time repeated by a daylight-saving change
                continue
            if at > now:
                return occurrence, at, missed
            occurrence, missed = at, missed + 1
        back = _cron_before(self.cron, zone, now)
        if back is not None and back > occurrence:
            occurrence, missed = back, missed + 1
        return occurrence, _cron_next(self.cron, zone, occurrence, inclusive=False), missed


@dataclass(frozen=True, slots=True)
class ScheduleRun:
    """What firing one occurrence of a schedule did (:meth:`ScheduleMethods.run_schedules`).

    ``action``: what its submission did (``submitted``, ``deduplicated``, ``superseded``,
    ``upgraded``), ``skipped`` (the last occurrence's task, ``task_id``, is still pending
    or blocked) or ``rejected`` (its own dedup key is active and its strategy is
    ``reject``, or the key collides; ``error`` says which)."""

    name: str
    #: The occurrence, in Unix seconds (the store's clock).
    at: float
    action: str
    task_id: int | None
    #: The submission's outcome (``None`` when skipped or rejected).
    outcome: SubmitOutcome | None = None
    #: Occurrences due before this one since the last fired, not replayed.
    missed: int = 0
    error: str | None = None


# --------------------------------------------------------------------------- arguments


def _name_argument(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise _invalid(f"a schedule's name must be a non-empty string, not {name!r}")
    if "\x00" in name:
        raise _invalid("a schedule's name cannot hold a NUL character")
    if len(name) > MAX_NAME_LENGTH:
        raise _invalid(f"a schedule's name is longer than {MAX_NAME_LENGTH:,} characters")
    return name


def _timezone_argument(timezone: Any) -> str:
    key = getattr(timezone, "key", timezone)  # a ZoneInfo is taken by its key
    if not isinstance(key, str) or not key:
        raise _invalid(f"timezone must name a time zone (such as 'Europe/Paris'), not {timezone!r}")
    try:
        _zone(key)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise _invalid(
            f"timezone={key!r} is not a known time zone (an IANA name such as 'UTC', "
            "'Europe/Paris' or 'America/New_York')"
        ) from None
    return key


def _every_argument(every: Any) -> int:
    if not isinstance(every, timedelta):
        raise _invalid(
            f"every must be a datetime.timedelta (such as timedelta(minutes=15)), not "
            f"{type(every).__name__} {every!r}"
        )
    if not MIN_EVERY <= every <= MAX_EVERY:
        raise _invalid(f"every must be at least 1 second and at most 100 years, not {every}")
    return every // timedelta(microseconds=1)


def _cron_argument(cron: Any, zone: zoneinfo.ZoneInfo, now: float) -> str:
    if not isinstance(cron, str):
        raise _invalid(f"cron must be a five-field cron expression (a str), not {cron!r}")
    fields = cron.split()
    if len(fields) != 5:
        raise _invalid(
            f"cron={cron!r} is not a five-field cron expression (minute hour day-of-month "
            f"month day-of-week, such as '0 3 * * *'): it has {len(fields)} field(s)"
        )
    expr = " ".join(fields)
    from cronsim import CronSimError

    try:
        first = _cron_next(expr, zone, now, inclusive=True)
    except CronSimError as exc:
        raise _invalid(f"cron={cron!r} is not a valid cron expression: {exc}") from None
    if first is None:
        raise _invalid(f"cron={cron!r} never matches (not once in the next fifty years)")
    return expr


def _start_argument(start_at: Any, zone: zoneinfo.ZoneInfo) -> float | None:
    """``start_at`` as Unix seconds: a datetime (naive: a wall time in the schedule's time
    zone) or Unix seconds."""
    if start_at is None:
        return None
    if isinstance(start_at, dt.datetime):
        aware = start_at if start_at.tzinfo is not None else start_at.replace(tzinfo=zone)
        seconds = aware.timestamp()
    elif isinstance(start_at, int | float) and not isinstance(start_at, bool):
        seconds = float(start_at)
    else:
        raise _invalid(
            f"start_at must be a datetime (naive: in the schedule's time zone) or Unix "
            f"seconds, not {type(start_at).__name__} {start_at!r}"
        )
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_TIME:
        raise _invalid(f"start_at must be a time between 1970 and 9999, not {start_at!r}")
    return seconds


def _offset(submission: TaskSubmission, field: str) -> float | None:
    """A schedule's ``run_after`` or ``expires_at``: a timedelta counted from each
    occurrence, as seconds."""
    value = getattr(submission, field)
    if value is None:
        return None
    if not isinstance(value, timedelta) or value < timedelta(0):
        raise InvalidSubmission(
            f"a schedule's {field} must be a timedelta of 0 or more, counted from each "
            f"occurrence (each occurrence is a new task), not {value!r}",
            kind=f"invalid_{field}",
            field=field,
        )
    return value.total_seconds()


def _checked(submission: Any) -> tuple[Row, str]:
    """The checked submission of a schedule, and its fields but the task type and the
    payload as the JSON object stored with it (``run_after`` and ``expires_at`` as
    seconds after each occurrence).  Raises :class:`InvalidSubmission` naming the field."""
    if not isinstance(submission, TaskSubmission):
        raise InvalidSubmission(
            f"a schedule submits a TaskSubmission, not {type(submission).__name__}",
            kind="invalid_input",
        )
    if submission.depends_on is not None:
        raise InvalidSubmission(
            "a schedule's task cannot depend on other tasks (depends_on): each occurrence "
            "is submitted on its own",
            kind="invalid_depends_on",
            field="depends_on",
        )
    run_after, expires_at = _offset(submission, "run_after"), _offset(submission, "expires_at")
    if run_after is not None and expires_at is not None and expires_at <= run_after:
        raise InvalidSubmission(
            "expires_at must be later than run_after (the task could never start)",
            kind="invalid_expires_at",
            field="expires_at",
        )
    plain = dataclasses.replace(
        submission, run_after=None, expires_at=None, on_dependency_failure=None
    )
    row = check_submission(plain, Defaults())
    kept: dict[str, Any] = {
        f.name: getattr(row, f.name) for f in dataclasses.fields(row) if f.name not in _NOT_IN_JSON
    }
    kept["on_duplicate"] = row.on_duplicate.value
    kept["run_after"], kept["expires_at"] = run_after, expires_at
    return row, json.dumps(kept, sort_keys=True, separators=(",", ":"))


def _tuples(value: Any) -> Any:
    """A field read back from JSON as the row holds it: its lists as tuples (``tags``:
    ``(key, value)`` pairs)."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


def occurrence_row(schedule: ScheduleRow, at: float) -> Row:
    """The task submitted for ``schedule``'s occurrence at ``at``."""
    kept = {name: _tuples(value) for name, value in json.loads(schedule.submission).items()}
    run_after, expires_at = kept.pop("run_after"), kept.pop("expires_at")
    key = kept.pop("dedup_key") or occurrence_key(schedule.name, at)
    strategy = DuplicateStrategy(kept.pop("on_duplicate"))
    return Row(
        task_type=schedule.task_type,
        payload=schedule.payload,
        dedup_key=key,
        on_duplicate=strategy,
        run_after=None if run_after is None else at + run_after,
        expires_at=None if expires_at is None else at + expires_at,
        **kept,
    )


# --------------------------------------------------------------------------- frames


def _frame(rows: list[ScheduleRow], details: bool) -> pl.DataFrame:
    """``rows`` as :meth:`ScheduleMethods.schedules` shows them."""
    kept = [json.loads(r.submission) for r in rows]
    data: dict[str, list[Any]] = {
        "name": [r.name for r in rows],
        "task_type": [r.task_type for r in rows],
        "every": [r.every_us for r in rows],
        "cron": [r.cron for r in rows],
        "next_at": [r.next_at for r in rows],
        "last_at": [r.last_at for r in rows],
        "paused": [r.paused for r in rows],
    }
    if details:
        data |= {
            "timezone": [r.timezone for r in rows],
            "start_at": [r.start_at for r in rows],
            "last_task_id": [r.last_task_id for r in rows],
            "skipped": [r.skipped for r in rows],
            "missed": [r.missed for r in rows],
            "dedup_key": [k["dedup_key"] for k in kept],
            "group": [k["group"] for k in kept],
            "priority": [k["priority"] for k in kept],
            "created_at": [r.created_at for r in rows],
            "updated_at": [r.updated_at for r in rows],
        }
    columns = SCHEDULE_COLUMNS | (DETAIL_COLUMNS if details else {})
    raw = {
        name: (pl.Float64 if dtype == _UTC_TIME else pl.Int64 if name == "every" else dtype)
        for name, dtype in columns.items()
    }
    frame = pl.DataFrame(data, schema=raw)
    return frame.with_columns(
        [
            (pl.col(name) * _US).round().cast(pl.Int64).cast(_UTC_TIME)
            for name, dtype in columns.items()
            if dtype == _UTC_TIME
        ]
        + [pl.col("every").cast(pl.Duration("us"))]
    )


# --------------------------------------------------------------------------- the methods


class ScheduleMethods:
    """The schedule methods of :class:`~taskmill.store.TaskStore` (see the module's
    docstring for what a schedule does)."""

    _driver: Driver[Any]

    def schedule(
        self,
        name: str,
        submission: TaskSubmission,
        *,
        every: timedelta | None = None,
        cron: str | None = None,
        start_at: dt.datetime | float | None = None,
        timezone: str = "UTC",
        now: float | None = None,
    ) -> dict[str, Any]:
        """Create schedule ``name``, or replace it: each of its occurrences submits
        ``submission`` once, however many schedulers run on the store.

        Exactly one of ``every`` — a ``timedelta`` of at least 1 second: occurrences at
        ``start_at``, then every that long — and ``cron`` — a five-field cron expression
        (``minute hour day-of-month month day-of-week``, such as ``"0 3 * * MON-FRI"``)
        read as wall times in ``timezone`` (an IANA name; daylight-saving changes as
        Debian's cron does them): occurrences at its matches from ``start_at`` on.
        ``start_at``: a datetime (naive: a wall time in ``timezone``) or Unix seconds;
        ``None``: now — so an interval schedule's first occurrence is due at once.  A
        ``start_at`` in the past anchors an interval: its first occurrence is the next
        one of that grid.

        Each occurrence's task is ``submission`` with ``dedup_key`` set to
        ``f"{name}@{occurrence}"`` (the occurrence as an ISO time in UTC) when the
        submission has none; its ``run_after`` and ``expires_at``, when given, must be
        timedeltas, counted from each occurrence; it cannot have ``depends_on``.  An
        occurrence is skipped while the task of the schedule's last one is still
        pending or blocked; occurrences missed while no scheduler ran are not replayed
        (the latest due one is submitted, once).

        Replacing a schedule with the same timing (``every`` or ``cron``, ``start_at``
        and ``timezone``) keeps its next occurrence; otherwise it is computed again from
        now.  Either way the schedule keeps its pause and its last occurrence.  Returns
        the schedule as a row of ``schedules(details=True)``.  Bad arguments raise
        ``SchedulerError(kind="invalid_argument")`` (a bad submission
        :class:`~taskmill.InvalidSubmission`) naming the argument, having written
        nothing.  ``now``: another time than the store's clock (tests).
        """
        name = _name_argument(name)
        if (every is None) == (cron is None):
            raise _invalid(
                "give exactly one of every= (a timedelta) and cron= (a five-field cron "
                f"expression) for schedule {name!r}"
            )
        zone_key = _timezone_argument(timezone)
        zone = _zone(zone_key)
        begin = _start_argument(start_at, zone)
        row, kept = _checked(submission)
        given_now = None if now is None else clock_argument(now)
        check_at = self._driver.now() if given_now is None else given_now
        every_us = None if every is None else _every_argument(every)
        expr = None if cron is None else _cron_argument(cron, zone, max(begin or 0.0, check_at))
        timing = Timing(every_us, expr, zone_key)
        statements = self._driver.schedules

        def body(conn: Any) -> ScheduleRow:
            at = self._driver.clock_in(conn) if given_now is None else given_now
            old = statements.get(conn, name)
            same = old is not None and (Timing.of(old), old.start_at) == (timing, begin)
            if old is not None and same:
                anchor, next_at = old.anchor, old.next_at
            else:
                anchor = math.floor(at) if begin is None else begin
                next_at = timing.first(anchor, math.floor(at))
            new = ScheduleRow(
                name=name,
                task_type=row.task_type,
                submission=kept,
                payload=row.payload,
                every_us=every_us,
                cron=expr,
                timezone=zone_key,
                start_at=begin,
                anchor=anchor,
                next_at=next_at,
                last_at=None if old is None else old.last_at,
                last_task_id=None if old is None else old.last_task_id,
                skipped=0 if old is None else old.skipped,
                missed=0 if old is None else old.missed,
                paused=False if old is None else old.paused,
                created_at=at if old is None else old.created_at,
                updated_at=at,
            )
            statements.put(conn, new)
            return new

        stored = self._driver.write("cannot save a schedule in", body)
        return _frame([stored], details=True).row(0, named=True)

    def schedules(self, *, details: bool = False) -> pl.DataFrame:
        """Every schedule, by name, as a polars DataFrame: ``name``, ``task_type``,
        ``every`` (a duration; null for a cron schedule), ``cron`` (null for an interval),
        ``next_at`` (its next occurrence, UTC; null: none will come), ``last_at`` (the
        last occurrence submitted) and ``paused``.  ``details`` adds ``timezone``,
        ``start_at``, ``last_task_id`` (the last occurrence's task), ``skipped``
        (occurrences skipped while that task waited), the submission's ``dedup_key``,
        ``group`` and ``priority``, ``created_at`` and ``updated_at``."""
        statements = self._driver.schedules
        return _frame(self._driver.read(statements.rows), details=bool(details))

    def pause_schedule(self, name: str) -> bool:
        """Fire none of schedule ``name``'s occurrences until :meth:`resume_schedule`
        (on every scheduler of the store); whether it was running (``False``: paused
        already).  ``SchedulerError(kind="unknown_schedule")`` when there is none."""
        name = _name_argument(name)
        statements = self._driver.schedules

        def body(conn: Any) -> bool:
            old = self._known(conn, name)
            if old.paused:
                return False
            at = self._driver.clock_in(conn)
            statements.set_paused(conn, name, paused=True, next_at=old.next_at, now=at)
            return True

        return self._driver.write("cannot pause a schedule in", body)

    def resume_schedule(self, name: str, *, now: float | None = None) -> bool:
        """Fire schedule ``name``'s occurrences again, from the first one at or after now
        (those that came due while it was paused are not submitted); whether it was
        paused.  ``SchedulerError(kind="unknown_schedule")`` when there is none."""
        name = _name_argument(name)
        given_now = None if now is None else clock_argument(now)
        statements = self._driver.schedules

        def body(conn: Any) -> bool:
            old = self._known(conn, name)
            if not old.paused:
                return False
            at = self._driver.clock_in(conn) if given_now is None else given_now
            next_at = Timing.of(old).first(old.anchor, math.floor(at))
            statements.set_paused(conn, name, paused=False, next_at=next_at, now=at)
            return True

        return self._driver.write("cannot resume a schedule in", body)

    def unschedule(self, name: str) -> bool:
        """Remove schedule ``name``; whether there was one.  The tasks it submitted stay
        as they are."""
        name = _name_argument(name)
        statements = self._driver.schedules
        return self._driver.write(
            "cannot remove a schedule from", lambda conn: statements.delete(conn, name)
        )

    def run_schedules(self, *, now: float | None = None) -> list[ScheduleRun]:
        """Fire the due occurrence of every schedule that has one (what the schedulers of
        the store call as they poll), the earliest due first, at most
        :data:`DUE_PAGE`; what each did.  One transaction per schedule claims its
        occurrence, submits its task and moves it on to its next occurrence: an
        occurrence another call fired first is passed over, so however many processes
        call this at once, each occurrence is fired once.  ``now``: another time than
        the store's clock (tests)."""
        given_now = None if now is None else clock_argument(now)
        at = self._driver.now() if given_now is None else given_now
        statements = self._driver.schedules
        due = self._driver.read(lambda conn: statements.due(conn, at, DUE_PAGE))
        runs: list[ScheduleRun] = []
        for seen in due:
            # which occurrence to fire, worked out before the write (a cron schedule long
            # behind steps over many matches): the write checks the schedule is unchanged
            assert seen.next_at is not None  # it is due
            plan = Timing.of(seen).due(seen.anchor, seen.next_at, at)
            run = self._driver.write(
                "cannot submit a schedule's task to",
                lambda conn, seen=seen, plan=plan: self._fire(conn, seen, plan, given_now),
                retry_unique=True,
            )
            if run is not None:
                runs.append(run)
        return runs

    def next_schedule_at(self) -> float | None:
        """When the next occurrence of any schedule not paused comes due, in Unix seconds
        by the store's clock (``None``: no schedule has one)."""
        statements = self._driver.schedules
        return self._driver.read(statements.next_due)

    # ------------------------------------------------------------------ inside a write

    def _known(self, conn: Any, name: str) -> ScheduleRow:
        """Schedule ``name``, held until the write ends; raises when there is none."""
        found = self._driver.schedules.get(conn, name)
        if found is None:
            raise SchedulerError(f"no schedule named {name!r}", kind="unknown_schedule")
        return found

    def _fire(
        self,
        conn: Any,
        seen: ScheduleRow,
        plan: tuple[float, float | None, int],
        now: float | None,
    ) -> ScheduleRun | None:
        """In a write: fire the occurrence of schedule ``seen`` that ``plan`` names
        (:meth:`Timing.due`, worked out from ``seen``; again here if the schedule's timing
        changed meanwhile), unless another transaction fired it first (``None``)."""
        statements = self._driver.schedules
        name = seen.name
        at = self._driver.clock_in(conn) if now is None else now
        assert seen.next_at is not None
        found = statements.claim(conn, name, seen.next_at)
        if found is None or found.next_at is None or found.next_at > at:
            return None
        if (Timing.of(found), found.anchor) != (Timing.of(seen), seen.anchor):
            plan = Timing.of(found).due(found.anchor, found.next_at, at)
        occurrence, next_at, missed = plan
        last = found.last_task_id

        def moved_on(last_at: float | None, task_id: int | None, skipped: bool) -> None:
            statements.fired(
                conn,
                name,
                next_at=next_at,
                last_at=last_at,
                last_task_id=task_id,
                skipped=skipped,
                missed=missed,
                now=at,
            )

        if last is not None and statements.task_status(conn, last) in WAITING_STATUSES:
            moved_on(found.last_at, last, skipped=True)
            return ScheduleRun(name, occurrence, "skipped", last, missed=missed)
        task = occurrence_row(found, occurrence)
        try:
            outcome = submit_in(self._driver, conn, task, at)
        except (DuplicateTask, InvalidSubmission) as exc:  # decided before any write
            log.warning("taskmill: schedule %s did not submit its task: %s", name, exc)
            moved_on(found.last_at, last, skipped=True)
            existing = exc.existing_task_id if isinstance(exc, DuplicateTask) else None
            return ScheduleRun(
                name, occurrence, "rejected", existing, missed=missed, error=str(exc)
            )
        moved_on(occurrence, outcome.task_id, skipped=False)
        return ScheduleRun(name, occurrence, outcome.action, outcome.task_id, outcome, missed)


def every_text(every: dt.timedelta) -> str:
    """An interval as ``taskmill schedule --every`` writes it (``1d12h``, ``15m``,
    ``90s`` …): how the command line and the dashboard show a schedule's."""
    seconds = every.total_seconds()
    if seconds != int(seconds):
        return f"{seconds:g}s"
    left, parts = int(seconds), []
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts)
