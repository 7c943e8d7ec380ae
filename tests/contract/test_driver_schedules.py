"""The driver conformance suite for schedules (schema 13): the ``schedule_*`` statements of
:class:`taskmill.backends.schedules.ScheduleStatements` run directly on every driver, the
same assertions on each — a row written and read back whole, a replace, the claim that
holds only while ``next_at`` is the one seen due, the due look, pause and delete.  What
the rows mean is the store's business (``tests/test_schedules.py``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from taskmill.backends import open_driver
from taskmill.backends.base import Driver
from taskmill.backends.schedules import ScheduleRow

pytestmark = pytest.mark.backends("sqlite", "postgres")

NOW = 1_800_000_000.0


@pytest.fixture
def driver(location: str | Path) -> Iterator[Driver[Any]]:
    d = open_driver(location)
    try:
        yield d
    finally:
        d.close()


def schedule(name: str, next_at: float | None, **changes: Any) -> ScheduleRow:
    base = ScheduleRow(
        name=name,
        task_type="t",
        submission='{"dedup_key":null}',
        payload=b"\x00\xffbytes",
        every_us=60_000_000,
        cron=None,
        timezone="UTC",
        start_at=None,
        anchor=NOW,
        next_at=next_at,
        last_at=None,
        last_task_id=None,
        skipped=0,
        missed=0,
        paused=False,
        created_at=NOW,
        updated_at=NOW,
    )
    return dataclasses.replace(base, **changes)


def test_a_schedule_is_written_read_and_replaced_whole(driver: Driver[Any]) -> None:
    ops = driver.schedules
    first = schedule("a", NOW + 60, start_at=NOW - 5.5, last_task_id=7, skipped=2, missed=3)
    cron = schedule("b", None, every_us=None, cron="0 3 * * *", timezone="Europe/Paris")
    driver.write("test", lambda c: (ops.put(c, first), ops.put(c, cron)))
    assert driver.read(ops.rows) == [first, cron]
    changed = dataclasses.replace(first, task_type="u", payload=None, paused=True, created_at=1.0)
    driver.write("test", lambda c: ops.put(c, changed))
    # a replace keeps the row's creation time, whatever the new row says
    assert driver.read(ops.rows)[0] == dataclasses.replace(changed, created_at=NOW)
    assert driver.write("test", lambda c: ops.get(c, "a")) == dataclasses.replace(
        changed, created_at=NOW
    )
    assert driver.write("test", lambda c: ops.get(c, "nope")) is None


def test_a_claim_holds_only_while_next_at_is_the_one_seen_due(driver: Driver[Any]) -> None:
    ops = driver.schedules
    driver.write("test", lambda c: ops.put(c, schedule("a", NOW)))
    claimed = driver.write("test", lambda c: ops.claim(c, "a", NOW))
    assert claimed is not None and claimed.next_at == NOW

    def fire(conn: Any, at: float, skipped: bool, missed: int) -> None:
        ops.fired(
            conn,
            "a",
            next_at=at + 60,
            last_at=NOW,
            last_task_id=5,
            skipped=skipped,
            missed=missed,
            now=at,
        )

    driver.write("test", lambda c: fire(c, NOW, False, 2))
    assert driver.write("test", lambda c: ops.claim(c, "a", NOW)) is None  # moved on
    [row] = driver.read(ops.rows)
    assert (row.next_at, row.last_at, row.last_task_id) == (NOW + 60, NOW, 5)
    assert (row.skipped, row.missed) == (0, 2)
    driver.write("test", lambda c: fire(c, NOW + 60, True, 1))  # added to
    [row] = driver.read(ops.rows)
    assert (row.next_at, row.skipped, row.missed, row.updated_at) == (NOW + 120, 1, 3, NOW + 60)
    # a paused schedule is never claimed, whatever its next_at
    driver.write("test", lambda c: ops.set_paused(c, "a", paused=True, next_at=NOW + 120, now=NOW))
    assert driver.write("test", lambda c: ops.claim(c, "a", NOW + 120)) is None


def test_the_due_look_and_the_next_one(driver: Driver[Any]) -> None:
    ops = driver.schedules
    rows = [
        schedule("late", NOW - 10),
        schedule("now", NOW),
        schedule("soon", NOW + 5),
        schedule("held", NOW - 20, paused=True),
        schedule("never", None),
    ]
    driver.write("test", lambda c: [ops.put(c, r) for r in rows])
    assert driver.read(lambda c: ops.due(c, NOW, 10)) == [rows[0], rows[1]]
    assert driver.read(lambda c: ops.due(c, NOW, 1)) == [rows[0]]
    assert driver.read(ops.next_due) == NOW - 10
    driver.write("test", lambda c: ops.set_paused(c, "late", paused=True, next_at=None, now=NOW))
    driver.write("test", lambda c: ops.set_paused(c, "now", paused=True, next_at=NOW, now=NOW))
    assert driver.read(ops.next_due) == NOW + 5
    driver.write("test", lambda c: ops.set_paused(c, "held", paused=False, next_at=NOW, now=NOW))
    assert [r.name for r in driver.read(lambda c: ops.due(c, NOW, 10))] == ["held"]
    assert driver.write("test", lambda c: ops.delete(c, "held")) is True
    assert driver.write("test", lambda c: ops.delete(c, "held")) is False
    assert [r.name for r in driver.read(ops.rows)] == ["late", "never", "now", "soon"]
