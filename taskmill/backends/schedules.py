"""The statements of schedules (schema 10), the same on every driver: each engine's
``queries.sql`` names them alike (``schedule_*``), so one class runs them on either
engine's connection, given that engine's named queries.

What an occurrence means, when it comes due and what firing it does are the store's rules
(:mod:`taskmill.store.schedules`); here rows are only read and written.  Exactly-once
rests on :meth:`ScheduleStatements.claim`: run in the write transaction that submits the
occurrence's task, it returns the row only while its ``next_at`` is still the occurrence
seen due — SQLite's write lock keeps every other writer out until the transaction ends;
PostgreSQL's ``FOR UPDATE`` makes a concurrent claim wait, then read the row as committed,
its ``next_at`` moved on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, LiteralString

__all__ = ["ScheduleRow", "ScheduleStatements"]


@dataclass(frozen=True, slots=True)
class ScheduleRow:
    """A schedule as stored: the columns of the ``schedules`` table, in their order (times
    in seconds since the epoch, by the store's clock)."""

    name: str
    task_type: str
    #: The submission's checked fields but its task type and payload, as a JSON object.
    submission: str
    payload: bytes | None
    every_us: int | None
    cron: str | None
    timezone: str
    start_at: float | None
    anchor: float
    next_at: float | None
    last_at: float | None
    last_task_id: int | None
    skipped: int
    #: Occurrences that came due while no scheduler fired them, not replayed.
    missed: int
    paused: bool
    created_at: float
    updated_at: float

    @classmethod
    def of(cls, row: tuple[Any, ...]) -> ScheduleRow:
        """The row a query returned (SQLite gives ``paused`` as 0/1, a payload as bytes;
        PostgreSQL ``paused`` as a bool)."""
        values = list(row)
        payload = values[3]
        values[3] = None if payload is None else bytes(payload)
        values[14] = bool(values[14])
        return cls(*values)

    def values(self) -> dict[str, Any]:
        """The row as the named parameters of ``schedule_put``."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


class ScheduleStatements:
    """Runs the named ``schedule_*`` queries of one engine on a connection of its driver.

    ``q`` returns an engine's named query; ``conn`` is the driver's connection, inside one
    of its transactions (:meth:`~taskmill.backends.base.Driver.write` or ``read``): both
    engines' connections take named parameters as a dict and answer with a cursor."""

    def __init__(self, q: Callable[[str], LiteralString]) -> None:
        self._q = q

    def get(self, conn: Any, name: str) -> ScheduleRow | None:
        """In a write: schedule ``name`` (``None``: none), held until the write ends."""
        found = conn.execute(self._q("schedule_get"), {"name": name}).fetchone()
        return None if found is None else ScheduleRow.of(found)

    def claim(self, conn: Any, name: str, seen: float) -> ScheduleRow | None:
        """In a write: schedule ``name``, held until the write ends, while its next
        occurrence is still ``seen`` and it is not paused; ``None`` otherwise (another
        transaction fired that occurrence first, or paused, replaced or removed it)."""
        found = conn.execute(self._q("schedule_claim"), {"name": name, "seen": seen}).fetchone()
        return None if found is None else ScheduleRow.of(found)

    def rows(self, conn: Any) -> list[ScheduleRow]:
        """In a read: every schedule, by name."""
        return [ScheduleRow.of(r) for r in conn.execute(self._q("schedule_rows")).fetchall()]

    def put(self, conn: Any, row: ScheduleRow) -> None:
        """In a write: create ``row``, or replace the schedule of its name with it."""
        conn.execute(self._q("schedule_put"), row.values())

    def fired(
        self,
        conn: Any,
        name: str,
        *,
        next_at: float | None,
        last_at: float | None,
        last_task_id: int | None,
        skipped: bool,
        missed: int,
        now: float,
    ) -> None:
        """In the write that claimed it: an occurrence of ``name`` was fired — its next
        occurrence is ``next_at``; ``last_at`` and ``last_task_id`` say the last one
        submitted and its task; ``skipped``: this one was skipped (counted); ``missed``:
        the occurrences before it, due while no scheduler fired them (counted)."""
        conn.execute(
            self._q("schedule_fired"),
            {
                "name": name,
                "next_at": next_at,
                "last_at": last_at,
                "last_task_id": last_task_id,
                "skipped": int(skipped),
                "missed": missed,
                "now": now,
            },
        )

    def set_paused(
        self, conn: Any, name: str, *, paused: bool, next_at: float | None, now: float
    ) -> None:
        """In a write: pause or resume schedule ``name``, its next occurrence ``next_at``."""
        params = {"name": name, "paused": paused, "next_at": next_at, "now": now}
        conn.execute(self._q("schedule_set_paused"), params)

    def delete(self, conn: Any, name: str) -> bool:
        """In a write: remove schedule ``name``; whether there was one."""
        return conn.execute(self._q("schedule_delete"), {"name": name}).rowcount > 0

    def due(self, conn: Any, now: float, limit: int) -> list[ScheduleRow]:
        """In a read: the schedules due at ``now`` (not paused), earliest first, at most
        ``limit``."""
        found = conn.execute(self._q("schedules_due"), {"now": now, "limit": limit}).fetchall()
        return [ScheduleRow.of(r) for r in found]

    def next_due(self, conn: Any) -> float | None:
        """In a read: when the next occurrence of any schedule not paused comes due."""
        found = conn.execute(self._q("schedules_next")).fetchone()
        return None if found is None else float(found[0])

    def task_status(self, conn: Any, task_id: int) -> str | None:
        """In a write: the status of active task ``task_id`` (``None``: not active)."""
        found = conn.execute(self._q("schedule_task_status"), {"id": task_id}).fetchone()
        return None if found is None else str(found[0])
