"""The driver conformance suite: the data-level operations of
:class:`taskmill.backends.base.Driver` exercised directly, the same assertions on every
driver (SQLite and PostgreSQL).

The public-API suites check what users see through :class:`~taskmill.TaskStore`; this
one pins what the face may rely on of a driver, so that a driver can be changed (or a new
one written) against its contract alone.  Each test states the store's exact contents
after the operations, read back through the driver's own reads.  The batch path
(``batch_backend``: staging and the set-based merge) is exercised row for row by the
public suites (``tests/test_batch*.py``, ``tests/test_postgres_batch.py``) on both drivers.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

import pytest

from taskmill.backends import open_driver
from taskmill.backends.base import ClaimedTask, Driver
from taskmill.backends.calls import Browse, CancelSlice, Ending, NewTask, Owned, Selection
from taskmill.backends.keys import key_hash
from taskmill.backends.workers import held_text
from taskmill.batch.validate import Row
from taskmill.columns import BROWSED, MAX_INT64
from taskmill.model import DuplicateStrategy, StoreError
from taskmill.store.common import HISTORY_COLUMNS, TASK_COLUMNS

pytestmark = pytest.mark.backends("sqlite", "postgres")

T = TypeVar("T")

#: A fixed clock for the rows these tests write (every start time and expiry is judged
#: against the ``now`` a test passes, never the wall clock, unless a test says so).
NOW = 1_800_000_000.0
SHOWN = ["id", "task_type", "dedup_key", "group", "priority", "status", "attempts"]


@pytest.fixture
def driver(location: str | Path) -> Iterator[Driver[Any]]:
    d = open_driver(location)
    try:
        yield d
    finally:
        d.close()


def row(
    task_type: str = "copy",
    key: str | None = None,
    *,
    group: str | None = None,
    priority: int = 128,
    read_bytes: int = 0,
    run_after: float | None = None,
    expires_at: float | None = None,
) -> Row:
    return Row(
        task_type=task_type,
        dedup_key=key,
        group=group,
        priority=priority,
        payload=None,
        label=None,
        expected_read_bytes=read_bytes,
        expected_write_bytes=0,
        expected_net_rx_bytes=0,
        expected_net_tx_bytes=0,
        on_duplicate=DuplicateStrategy.SKIP,
        max_retries=None,
        run_after=run_after,
        expires_at=expires_at,
    )


def add(driver: Driver[Any], *rows: Row) -> list[int]:
    """Insert ``rows`` in one write, as the face's submit does; their ids."""

    def body(conn: Any) -> list[int]:
        ids = []
        for r in rows:
            tid = driver.new_task_id(conn)
            driver.insert(conn, NewTask(tid, tid, r, key_hash(r.task_type, r.dedup_key), NOW))
            ids.append(tid)
        return ids

    return driver.write("cannot submit to", body)


def rows_of(
    driver: Driver[Any], table: Literal["tasks", "history"], shown: list[str], **where: Any
) -> list[tuple[Any, ...]]:
    """The rows of ``table`` (every filter ``None`` unless given), as tuples of ``shown``."""
    columns = list(TASK_COLUMNS if table == "tasks" else HISTORY_COLUMNS)
    rows = driver.select(Selection(table, **where))
    return [tuple(r[columns.index(name)] for name in shown) for r in rows]


def tasks(driver: Driver[Any], shown: list[str] = SHOWN) -> list[tuple[Any, ...]]:
    return rows_of(driver, "tasks", shown)


def history(driver: Driver[Any], shown: list[str] = SHOWN) -> list[tuple[Any, ...]]:
    return rows_of(driver, "history", shown)


def in_claim(driver: Driver[Any], body: Callable[[Any], T]) -> T:
    return driver.write("cannot claim tasks from", body, dispatch=True, claim_lock=True)


def claim(
    driver: Driver[Any],
    owner: str,
    *,
    types: list[str] | None = None,
    now: float = NOW,
    held: list[str] | None = None,
    limit: int = 100,
) -> list[ClaimedTask]:
    """The face's claim loop, one round: candidates, then mark them running."""

    def body(conn: Any) -> list[ClaimedTask]:
        found = driver.claim_candidates(conn, types or ["copy"], now, held or [], limit)
        taken = [t for t, _ in found]
        if taken:
            driver.mark_running(conn, [t.id for t in taken], now, owner, [])
        return taken

    return in_claim(driver, body)


def attempts(driver: Driver[Any], ids: list[int] | None = None) -> list[tuple[Any, ...]]:
    """``(task_id, attempt, worker, outcome, error, traceback)`` of the recorded attempts."""
    rows = driver.attempt_rows(ids, None, None)
    return sorted((r[0], r[1], r[2], r[5], r[6], r[7]) for r in rows)


# ---------------------------------------------------------------------- transactions


def test_a_write_is_all_or_nothing(driver: Driver[Any]) -> None:
    def body(conn: Any) -> None:
        tid = driver.new_task_id(conn)
        driver.insert(conn, NewTask(tid, tid, row(key="a"), key_hash("copy", "a"), NOW))
        raise RuntimeError("the body gave up")

    with pytest.raises(RuntimeError, match="the body gave up"):
        driver.write("cannot submit to", body)
    assert tasks(driver) == []
    assert driver.write("cannot submit to", lambda conn: "result") == "result"


def test_ids_rise_and_rows_read_back_as_inserted(driver: Driver[Any]) -> None:
    assert driver.last_task_id() == 0
    a, b, c = add(driver, row(key="a"), row("delete", "b", group="g", priority=3), row())
    assert a < b < c
    assert driver.last_task_id() == c
    assert tasks(driver) == [
        (b, "delete", "b", "g", 3, "pending", 0),
        (a, "copy", "a", None, 128, "pending", 0),
        (c, "copy", None, None, 128, "pending", 0),
    ]
    assert sorted(driver.active_task_types()) == ["copy", "delete"]
    picked = rows_of(driver, "tasks", ["id"], status=["pending"], task_type=["copy"], limit=1)
    assert picked == [(a,)]
    assert rows_of(driver, "tasks", ["id"], ids=[c]) == [(c,)]
    assert rows_of(driver, "tasks", ["id"], group=["g"]) == [(b,)]


def test_a_broken_write_is_a_store_error_and_writes_nothing(driver: Driver[Any]) -> None:
    (a,) = add(driver, row(key="a"))

    def twice(conn: Any) -> None:
        tid = driver.new_task_id(conn)
        driver.insert(conn, NewTask(tid, tid, row(key="b"), key_hash("copy", "b"), NOW))
        driver.insert(conn, NewTask(a, a, row(key="c"), key_hash("copy", "c"), NOW))  # a's id again

    with pytest.raises(StoreError) as caught:
        driver.write("cannot submit to", twice)
    assert str(caught.value).startswith("cannot submit to")
    assert tasks(driver, ["id", "dedup_key"]) == [(a, "a")]


def test_a_closed_driver_raises_store_errors(location: str | Path) -> None:
    d = open_driver(location)
    d.close()
    d.close()  # idempotent
    with pytest.raises(StoreError):
        d.select(Selection("tasks"))


def test_the_clock_is_the_stores(driver: Driver[Any]) -> None:
    before = time.time()
    now = driver.now()
    inside = driver.write("cannot read the clock of", driver.clock_in)
    assert before - 5 < now < time.time() + 5
    assert now - 5 < inside < time.time() + 5
    assert driver.describe()


# ---------------------------------------------------------------------- submitting


def test_find_active_returns_the_task_holding_a_key(driver: Driver[Any]) -> None:
    (a,) = add(driver, row(key="a", priority=7, expires_at=NOW + 60))
    hashed = key_hash("copy", "a")
    assert hashed is not None
    found = driver.write("cannot submit to", lambda c: driver.find_active(c, hashed))
    assert found is not None
    assert tuple(found[:6]) == (a, "pending", 7, a, "copy", "a")
    assert found[6] == pytest.approx(NOW + 60)
    other = key_hash("copy", "b")
    assert other is not None
    assert driver.write("cannot submit to", lambda c: driver.find_active(c, other)) is None


def test_upgrade_only_raises_a_priority(driver: Driver[Any]) -> None:
    (a,) = add(driver, row(key="a", priority=50))
    driver.write("cannot submit to", lambda c: driver.upgrade_priority(c, a, 90))
    assert tasks(driver, ["priority"]) == [(50,)]
    driver.write("cannot submit to", lambda c: driver.upgrade_priority(c, a, 10))
    assert tasks(driver, ["priority"]) == [(10,)]


def test_finish_moves_active_tasks_to_history(driver: Driver[Any]) -> None:
    a, b = add(driver, row(key="a"), row(key="b"))
    driver.write(
        "cannot submit to",
        lambda c: driver.finish(c, [a], Ending("superseded", NOW, replaced_by=b)),
    )
    driver.write("cannot submit to", lambda c: driver.finish(c, [a, b], Ending("expired", NOW)))
    assert tasks(driver) == []
    assert history(driver, ["id", "status", "replaced_by", "finished_at"]) == [
        (a, "superseded", b, NOW),
        (b, "expired", None, NOW),
    ]


# ---------------------------------------------------------------------- claiming


def test_candidates_come_in_dispatch_order_within_the_filters(driver: Driver[Any]) -> None:
    ids = add(
        driver,
        row(priority=5, group="g", read_bytes=10),
        row(priority=1, group="h"),
        row(priority=5),
        row(priority=1, group="g", read_bytes=3),
        row(priority=0, run_after=NOW + 1),  # not yet
        row("delete", priority=0),  # another type
    )
    a, b, c, d, later, other = ids

    def found(held: list[str], limit: int) -> list[tuple[int, int, int, int]]:
        rows = in_claim(
            driver, lambda conn: driver.claim_candidates(conn, ["copy"], NOW, held, limit)
        )
        return [(t.id, t.priority, t.attempt, size) for t, size in rows]

    assert found([], 10) == [(b, 1, 1, 0), (d, 1, 1, 3), (a, 5, 1, 10), (c, 5, 1, 0)]
    assert found(["g"], 10) == [(b, 1, 1, 0), (c, 5, 1, 0)]
    assert found([], 2) == [(b, 1, 1, 0), (d, 1, 1, 3)]
    assert [
        t.id
        for t, _ in in_claim(
            driver, lambda conn: driver.claim_candidates(conn, ["copy"], NOW + 1, [], 1)
        )
    ] == [later]
    assert (other, "pending") in tasks(driver, ["id", "status"])


def test_marking_running_counts_groups_and_stores_buckets(driver: Driver[Any]) -> None:
    a, b, c = add(
        driver, row(group="g", read_bytes=7), row(group="g", read_bytes=5), row(group="h")
    )

    def body(conn: Any) -> None:
        driver.mark_running(conn, [a, b], NOW, "w1", [("rate:g", 2.5, NOW)])

    in_claim(driver, body)
    running, buckets = in_claim(
        driver, lambda conn: driver.claim_counts(conn, True, ["rate:g", "rate:none"])
    )
    assert running == {"g": (2, 12)}
    assert buckets == {"rate:g": (2.5, NOW)}
    uncounted, _ = in_claim(driver, lambda conn: driver.claim_counts(conn, False, []))
    assert uncounted == {}
    assert tasks(driver, ["id", "status", "attempts", "started_at"]) == [
        (a, "running", 1, NOW),
        (b, "running", 1, NOW),
        (c, "pending", 0, None),
    ]
    assert sorted(driver.owned_tasks("w1")) == [a, b]
    assert driver.ownership([a, b, c], [1, None, None], "w1") == ({a, b}, {c: ("pending", None)})
    assert driver.ownership([a], [2], "w1") == (set(), {a: ("running", None)})


def test_claim_at_once_is_the_candidates_marked_in_one_statement(driver: Driver[Any]) -> None:
    a, b, c = add(driver, row(priority=9), row(priority=2), row(priority=9))
    if not driver.claims_at_once:
        with pytest.raises(NotImplementedError):
            driver.claim_at_once(None, ["copy"], NOW, "w1", 2)
        return
    taken = driver.write(
        "cannot claim tasks from",
        lambda conn: driver.claim_at_once(conn, ["copy"], NOW, "w1", 2),
        dispatch=True,
        single=True,
    )
    assert [(t.id, t.attempt) for t in taken] == [(b, 1), (a, 1)]
    assert tasks(driver, ["id", "status"]) == [(b, "running"), (a, "running"), (c, "pending")]


# ---------------------------------------------------------------------- an attempt's end


def test_finish_owned_ends_only_the_owners_attempts(driver: Driver[Any]) -> None:
    a, b, c = add(driver, row(), row(), row())
    claim(driver, "w1", limit=2)

    def body(conn: Any) -> set[int]:
        return driver.finish_owned(
            conn, Owned([a, b, c], [1, 2, None], "w1"), Ending("completed", NOW + 1)
        )

    assert driver.write("cannot record completed tasks in", body, dispatch=True) == {a}
    assert (
        driver.write(
            "cannot record completed tasks in",
            lambda conn: driver.finish_owned(
                conn, Owned([b], [None], "w2"), Ending("completed", NOW + 1)
            ),
        )
        == set()
    )
    assert history(driver, ["id", "status", "attempts", "finished_at"]) == [
        (a, "completed", 1, NOW + 1)
    ]
    assert attempts(driver) == [(a, 1, "w1", "completed", None, None)]


def test_a_failure_retries_later_or_ends_with_its_traceback(driver: Driver[Any]) -> None:
    a, b = add(driver, row(), row())
    claim(driver, "w1")

    def fail_a(conn: Any) -> bool:
        moved = driver.retry_later(conn, Owned([a], [1], "w1"), "boom", NOW + 30)
        driver.attempt_traceback(conn, a, "Traceback: boom")
        return moved

    assert driver.write("cannot record a failed attempt in", fail_a, dispatch=True) is True
    assert (
        driver.write(
            "cannot record a failed attempt in",
            lambda conn: driver.retry_later(conn, Owned([b], [None], "w2"), "not mine", NOW),
        )
        is False
    )

    def fail_b(conn: Any) -> set[int]:
        return driver.finish_owned(conn, Owned([b], [1], "w1"), Ending("failed", NOW, error="gone"))

    assert driver.write("cannot record a failed attempt in", fail_b) == {b}
    assert tasks(driver, ["id", "status", "attempts", "last_error", "run_after"]) == [
        (a, "pending", 1, "boom", NOW + 30)
    ]
    assert history(driver, ["id", "status", "last_error"]) == [(b, "failed", "gone")]
    assert attempts(driver) == [
        (a, 1, "w1", "failed", "boom", "Traceback: boom"),
        (b, 1, "w1", "failed", "gone", None),
    ]
    failed = driver.failed_rows(None, None, None)
    assert [r[1:4] for r in failed] == [("copy", None, None)]
    assert driver.failed_rows(["delete"], None, None) == []
    assert [r[0] for r in driver.failed_rows(None, None, None, [b])] == [b]
    assert driver.failed_rows(None, None, None, [a]) == []  # a is not a failure
    assert driver.failed_rows(["delete"], None, None, [b]) == []


def test_a_keyed_failure_by_id_only_while_it_is_its_keys_latest_record(
    driver: Driver[Any],
) -> None:
    a, b = add(driver, row(key="k"), row(key="j"))
    claim(driver, "w1")
    for tid in (a, b):
        driver.write(
            "cannot record a failed attempt in",
            lambda conn, tid=tid: driver.finish_owned(
                conn, Owned([tid], [1], "w1"), Ending("failed", NOW, error="boom")
            ),
        )
    (c,) = add(driver, row(key="j"))
    claim(driver, "w1")
    driver.write(
        "cannot record completed tasks in",
        lambda conn: driver.finish_owned(conn, Owned([c], [1], "w1"), Ending("completed", NOW)),
    )
    # j failed (b), then completed (c): b is no longer j's latest record
    assert [r[:3] for r in driver.failed_rows(None, None, None, [a, b, c])] == [(a, "copy", "k")]
    assert [r[0] for r in driver.failed_rows(None, None, None)] == [a]


def test_a_release_is_not_counted_as_a_try(driver: Driver[Any]) -> None:
    a, b = add(driver, row(), row())
    claim(driver, "w1")
    released = driver.write(
        "cannot release tasks in",
        lambda conn: driver.release_running(conn, Owned([a, b], [1, 5], "w1")),
    )
    assert released == 1
    assert tasks(driver, ["id", "status", "attempts"]) == [(a, "pending", 0), (b, "running", 1)]
    assert attempts(driver) == [(a, 1, "w1", "released", None, None)]


def test_has_work_and_the_next_start(driver: Driver[Any]) -> None:
    assert driver.read(lambda conn: driver.has_work(conn, ["copy"])) is False
    assert driver.read(lambda conn: driver.next_run_after(conn, NOW)) is None
    add(driver, row(run_after=NOW + 40), row("delete", run_after=NOW + 20))
    assert driver.read(lambda conn: driver.has_work(conn, ["copy"])) is True
    assert driver.read(lambda conn: driver.has_work(conn, ["move"])) is False
    assert driver.read(lambda conn: driver.next_run_after(conn, NOW)) == NOW + 20


# ---------------------------------------------------------------------- task control


def test_cancel_and_status_changes_happen_once(driver: Driver[Any]) -> None:
    a, b = add(driver, row(), row())
    assert driver.cancel(a) == "pending"
    assert driver.cancel(a) is None
    assert driver.set_status(b, "pending", "paused") is True
    assert driver.set_status(b, "pending", "paused") is False
    assert tasks(driver, ["id", "status"]) == [(b, "paused")]
    assert history(driver, ["id", "status"]) == [(a, "cancelled")]
    assert sorted(driver.status_counts()) == [("cancelled", 1), ("paused", 1)]


def test_a_paused_group_is_held_back_until_resumed(driver: Driver[Any]) -> None:
    a, b = add(driver, row(group="g"), row(group="h"))
    driver.pause_group("g", NOW + 100, NOW)
    assert driver.per_group("paused_groups", NOW) == [("g", NOW + 100)]
    assert [t.id for t in claim(driver, "w1", limit=5)] == [b]
    assert driver.read(lambda conn: driver.next_run_after(conn, NOW)) == NOW + 100
    assert driver.resume_group("g") is True
    assert driver.resume_group("g") is False
    assert driver.per_group("paused_groups", NOW) == []
    assert [t.id for t in claim(driver, "w1", limit=5)] == [a]


def test_waiting_tasks_per_group(driver: Driver[Any]) -> None:
    add(driver, row(group="g", run_after=NOW + 5), row(group="g", run_after=NOW + 9), row())
    assert sorted(driver.per_group("waiting_for_start", NOW)) == [("g", 2)]
    assert driver.per_group("waiting_for_start", NOW + 9) == []


def test_active_tasks_per_group_and_status(driver: Driver[Any]) -> None:
    """Metrics read this at each scrape: active tasks only, history never counted."""
    a, _, _, d = add(driver, row(group="g"), row(group="g"), row(group="h"), row())
    assert [t.id for t in claim(driver, "w1", limit=1)] == [a]
    driver.write("cannot submit to", lambda c: driver.finish(c, [d], Ending("expired", NOW)))
    assert sorted(driver.active_group_counts(), key=str) == sorted(
        [("g", "running", 1), ("g", "pending", 1), ("h", "pending", 1)], key=str
    )


def test_tasks_not_started_in_time_expire(driver: Driver[Any]) -> None:
    a, b = add(driver, row(expires_at=NOW + 10), row(expires_at=NOW + 60))
    assert driver.any_expired(NOW) is False
    assert driver.any_expired(NOW + 10) is True
    assert driver.expire(NOW + 10) == 1
    assert history(driver, ["id", "status"]) == [(a, "expired")]
    assert tasks(driver, ["id"]) == [(b,)]


def test_cancel_batch_picks_by_filter_and_id_range(driver: Driver[Any]) -> None:
    ids = add(driver, row(group="g"), row(group="h"), row(group="g"), row("delete", group="g"))

    @dataclass(frozen=True)
    class Where:  # a CancelMatch
        status: list[str]
        task_type: list[str] | None
        group: list[str] | None
        label: list[str] | None
        tags: list[tuple[str, str]] | None = None

    where = Where(status=["pending"], task_type=["copy"], group=["g"], label=None)
    moved, last = driver.cancel_batch(where, CancelSlice(0, ids[-1], 1))
    assert (moved, last) == (1, ids[0])
    moved, last = driver.cancel_batch(where, CancelSlice(ids[0], ids[-1], 10))
    assert (moved, last) == (1, ids[2])
    assert history(driver, ["id", "status"]) == [(ids[0], "cancelled"), (ids[2], "cancelled")]


# ---------------------------------------------------------------------- workers


def test_leases_recovery_and_lost_attempts(driver: Driver[Any]) -> None:
    a, b = add(driver, row(), row())
    driver.register("w1", lease_timeout=30)
    driver.register("w2", lease_timeout=30)
    in_claim(driver, lambda conn: driver.mark_running(conn, [a], NOW, "w1", []))
    in_claim(driver, lambda conn: driver.mark_running(conn, [b], NOW, "w2", []))
    assert driver.renew("w1") is True
    running, stale = driver.owner_leases(None)
    assert sorted((owner, bool(out)) for owner, out, _ in running) == [
        ("w1", False),
        ("w2", False),
    ]
    assert stale == []
    _, stale_later = driver.owner_leases(time.time() + 3600)
    assert sorted(stale_later) == ["w1", "w2"]

    assert driver.give_back([("w1", "w1 is gone")], [], None) == 1
    assert driver.renew("w1") is False  # forgotten: its lease was taken away
    assert driver.release_owner("w2") == 1
    assert driver.owned_tasks("w2") == []
    assert tasks(driver, ["id", "status", "attempts"]) == [(a, "pending", 0), (b, "pending", 0)]
    assert attempts(driver) == [
        (a, 1, "w1", "lost", "w1 is gone", None),
        (b, 1, "w2", "released", None, None),
    ]


def test_what_held_groups_back_is_written_with_a_renewal(driver: Driver[Any]) -> None:
    """A heartbeat's renewal writes what held a worker's groups back (schema 14) in the
    same statement: ``None`` keeps it, ``""`` clears it; a renewal through the driver
    keeps it.  Only the workers whose lease runs are read, by the store's clock."""
    one = held_text({"g": "group limit", "type:t": "rate limit"})
    two = held_text({"h": "group limit", "g": "byte budget"})
    assert (one, two) == (
        '{"g":"group limit","type:t":"rate limit"}',
        '{"g":"byte budget","h":"group limit"}',
    )
    for owner in ("w1", "w2", "w3"):
        driver.register(owner, lease_timeout=30)
    driver.register("w4", lease_timeout=0.2)
    beat = driver.heartbeat(timeout=5)
    try:
        assert driver.held_rows(None) == []  # registered: nothing said yet
        assert beat.renew("w1", one) is not None
        assert beat.renew("w2", two) is not None
        assert beat.renew("w3", "") is not None  # nothing held back
        assert beat.renew("w4", one) is not None
        assert driver.held_rows(None) == [one, two, one]
        assert driver.renew("w1") is True  # kept by a renewal that says nothing of it
        assert beat.renew("w2") is not None  # and by a heartbeat's
        time.sleep(0.3)  # w4's lease ran out by the store's clock: not believed
        assert driver.held_rows(None) == [one, two]
        assert beat.renew("w2", "") is not None  # no longer held back: cleared
        assert driver.held_rows(None) == [one]
        assert driver.held_rows(time.time() + 3600) == []  # an hour on, no lease runs
        assert beat.renew("gone", one) is None  # no such worker: nothing written
        assert driver.held_rows(None) == [one]
    finally:
        beat.close()
    assert driver.release_owner("w1") == 0  # its row is forgotten, and what it held
    assert driver.held_rows(None) == []


# ---------------------------------------------------------------------- dashboard reads


def page(**fields: Any) -> Browse:
    """A page of ``browse`` from the top, 50 rows, with ``fields`` set."""
    return Browse(**{"before": MAX_INT64, "limit": 50, **fields})


def shown(rows: list[tuple[Any, ...]], *names: str) -> list[tuple[Any, ...]]:
    """``names`` of each row of ``browse`` (``active`` is the field after the others)."""
    fields = [*BROWSED, "active"]
    return [tuple(r[fields.index(n)] for n in names) for r in rows]


def tagged(*pairs: tuple[str, str], **given: Any) -> Row:
    return dataclasses.replace(row(**given), tags=pairs)


def test_browse_reads_both_tables_newest_first_in_pages(driver: Driver[Any]) -> None:
    a, b, c, d, e = add(
        driver,
        tagged(("env", "prod"), key="user/1", group="g"),
        tagged(("env", "prod"), ("team", "x"), key="user/2"),
        tagged(("env", "dev"), key="User/3", group="g"),
        row("delete", "a%b"),
        row("delete", "a_b", group="h"),
    )
    claim(driver, "w1", limit=1)  # a runs
    driver.write(
        "cannot record progress in",
        lambda conn: driver.store_progress(conn, "w1", [(a, 1, 0.5, "half")]),
        dispatch=True,
    )
    driver.write(
        "cannot submit to", lambda c_: driver.finish(c_, [b, d], Ending("expired", NOW + 1))
    )
    every = driver.browse(page())
    assert len(every) == 5 and all(len(r) == len(BROWSED) + 1 for r in every)
    assert shown(every, "id", "status", "active", "finished_at", "progress") == [
        (e, "pending", True, None, None),
        (d, "expired", False, NOW + 1, None),
        (c, "pending", True, None, None),
        (b, "expired", False, NOW + 1, None),
        (a, "running", True, None, 0.5),
    ]
    assert shown(every, "id", "task_type", "dedup_key", "group", "priority", "attempts")[-1] == (
        a,
        "copy",
        "user/1",
        "g",
        128,
        1,
    )
    assert shown(driver.browse(page(limit=2)), "id") == [(e,), (d,)]
    assert shown(driver.browse(page(before=d, limit=2)), "id") == [(c,), (b,)]
    assert driver.browse(page(before=a)) == []
    # a table ruled out is not read; the filters, each table alike
    assert shown(driver.browse(page(finished=False)), "id") == [(e,), (c,), (a,)]
    assert shown(driver.browse(page(active=False)), "id") == [(d,), (b,)]
    assert driver.browse(page(active=False, finished=False)) == []
    assert shown(driver.browse(page(status=["expired", "running"])), "id") == [(d,), (b,), (a,)]
    assert shown(driver.browse(page(task_type=["delete"])), "id") == [(e,), (d,)]
    assert driver.browse(page(batch_ids=[7])) == []  # (batches: the public suites)
    assert shown(driver.browse(page(group=["g", "h"])), "id") == [(e,), (c,), (a,)]
    assert shown(driver.browse(page(key_prefix="user/")), "id") == [(b,), (a,)]
    assert shown(driver.browse(page(key_prefix="a%")), "id") == [(d,)]
    assert shown(driver.browse(page(key_prefix="a_")), "id") == [(e,)]
    assert shown(driver.browse(page(key_prefix="")), "id") == [(e,), (d,), (c,), (b,), (a,)]
    for common in (False, True):  # the rare pair's tasks looked up, or each row checked
        prod = page(tags=[("env", "prod")], tags_common=common)
        assert shown(driver.browse(prod), "id") == [(b,), (a,)]
        both = page(tags=[("team", "x"), ("env", "prod")], tags_common=common)
        assert shown(driver.browse(both), "id") == [(b,)]
        none = page(tags=[("team", "x"), ("env", "dev")], tags_common=common)
        assert driver.browse(none) == []


def test_throughput_rows_count_per_minute_and_status(driver: Driver[Any]) -> None:
    minute = math.floor(NOW / 60)
    ids = add(driver, *(row() for _ in range(6)))
    ends = [
        (ids[0], "completed", minute * 60),
        (ids[1], "completed", minute * 60 + 59.5),
        (ids[2], "expired", minute * 60 + 30),
        (ids[3], "cancelled", (minute - 1) * 60 + 1),
        (ids[4], "cancelled", (minute - 3) * 60 - 0.5),  # before the window
        (ids[5], "completed", (minute + 1) * 60),  # at its end: not in it
    ]
    for tid, status, at in ends:
        driver.write(
            "cannot submit to",
            lambda c_, t=tid, s=status, at=at: driver.finish(c_, [t], Ending(s, at)),
        )
    got = driver.throughput_rows((minute - 2) * 60.0, (minute + 1) * 60.0)
    assert sorted(got) == [
        (minute - 1, "cancelled", 1),
        (minute, "completed", 2),
        (minute, "expired", 1),
    ]
    assert driver.throughput_rows((minute + 5) * 60.0, (minute + 6) * 60.0) == []


def test_recent_counts_every_active_task_and_history_from_a_time(driver: Driver[Any]) -> None:
    ids = add(
        driver,
        row("copy", group="g"),
        row("copy", group="g"),
        row("delete"),
        row("copy", group="g"),
        row("copy", group="g"),
    )
    for tid, at in ((ids[3], NOW - 10), (ids[4], NOW - 1000)):
        driver.write(
            "cannot submit to",
            lambda c_, t=tid, at=at: driver.finish(c_, [t], Ending("completed", at)),
        )
    assert sorted(driver.recent_counts(NOW - 100), key=str) == sorted(
        [
            ("g", "copy", "pending", 2),
            (None, "delete", "pending", 1),
            ("g", "copy", "completed", 1),
        ],
        key=str,
    )
    assert ("g", "copy", "completed", 2) in driver.recent_counts(NOW - 2000)


def test_worker_rows_with_their_running_tasks(driver: Driver[Any]) -> None:
    assert driver.worker_rows() == []
    a, b, _ = add(driver, row(), row(), row())
    driver.register("hb:20:x", lease_timeout=30)
    driver.register("ha:9:y", lease_timeout=5)
    driver.register("hb:3:z", lease_timeout=7)
    in_claim(driver, lambda conn: driver.mark_running(conn, [a, b], NOW, "hb:20:x", []))
    before = time.time()
    rows = driver.worker_rows()
    assert [(r[0], r[1], r[2], r[5], r[6]) for r in rows] == [
        ("ha:9:y", "ha", 9, 5.0, 0),
        ("hb:3:z", "hb", 3, 7.0, 0),
        ("hb:20:x", "hb", 20, 30.0, 2),
    ]
    for r in rows:  # started and last renewed by the store's clock, just now
        assert before - 30 < r[3] < time.time() + 30
        assert before - 30 < r[4] < time.time() + 30


# ---------------------------------------------------------------------- queries, retention


def test_stats_attempt_filters_and_retention(driver: Driver[Any]) -> None:
    a, b, c = add(driver, row(group="g"), row(group="g"), row(group="h", priority=3))
    claim(driver, "w1")
    for tid in (a, b):
        driver.write(
            "cannot record completed tasks in",
            lambda conn, tid=tid: driver.finish_owned(
                conn, Owned([tid], [1], "w1"), Ending("completed", NOW)
            ),
        )
    assert sorted(driver.stats_rows("group")) == [("g", "completed", 2), ("h", "running", 1)]
    assert [r[0] for r in driver.attempt_rows(None, ["completed"], 1)] == [b]  # newest first
    assert driver.attempt_rows([c], None, None) == []

    assert driver.prune_select(math.inf, 1) == [a]
    assert driver.prune_select(NOW - 1, None) == []
    rows = driver.prune_rows([a, b])
    assert [(r[0], r[5]) for r in rows] == [(a, "completed"), (b, "completed")]
    with driver.prune_lock():
        assert driver.prune_delete([a]) == 1
    assert history(driver, ["id"]) == [(b,)]


def test_metadata_values(driver: Driver[Any]) -> None:
    assert driver.meta_get("contract") is None
    driver.meta_set("contract", "one")
    driver.meta_set("contract", "two")
    assert driver.meta_get("contract") == "two"
    driver.meta_set("contract", None)
    assert driver.meta_get("contract") is None
    assert driver.integrity_check() == "ok"
