"""Schedules in the store, on both engines, at times the tests give: each occurrence is
submitted once with its own dedup key, missed occurrences are not replayed, an occurrence
waits for nothing (it is skipped while the last one's task is pending or blocked), cron
expressions are read in their time zone through daylight-saving changes, a replace keeps
what it should, pause and resume, bad arguments write nothing, and stores firing at once
(threads, each with a store of its own) submit each occurrence once.  The same with real
worker processes: ``test_schedules_workers.py``."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import taskmill as tm
from taskmill.store.schedules import occurrence_key

from conftest import is_postgres, run_sql, table

pytestmark = pytest.mark.backends("sqlite", "postgres")

#: A whole second, far from any daylight-saving change (2027-01-15 08:00:00 UTC).
T0 = 1_800_000_000.0
BERLIN = "Europe/Berlin"


def utc(text: str) -> float:
    """An ISO time with its offset, as Unix seconds."""
    return dt.datetime.fromisoformat(text).timestamp()


def keys(store: tm.TaskStore, task_type: str | None = None) -> list[str]:
    """The dedup keys of every task, active and finished, by id."""
    rows = [
        *store.tasks(task_type=task_type).select("id", "dedup_key").rows(),
        *store.history(task_type=task_type).select("id", "dedup_key").rows(),
    ]
    return [key for _, key in sorted(rows)]


def row(store: tm.TaskStore, name: str) -> dict[str, Any]:
    found = store.schedules(details=True).filter(pl.col("name") == name)
    assert found.height == 1, name
    return found.row(0, named=True)


def at(seconds: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, dt.UTC)


def test_each_occurrence_submits_its_task_once_with_its_own_key(store: tm.TaskStore) -> None:
    sub = tm.TaskSubmission(
        "ping",
        group="net",
        priority="high",
        payload={"n": 1},
        label="l",
        max_retries=2,
        tags={"team": "data", "env": "prod"},
    )
    made = store.schedule("tick", sub, every=timedelta(seconds=10), now=T0 + 0.4)
    # no start_at: the first occurrence is the second it was made, due at once
    assert made["next_at"] == at(T0) and made["last_at"] is None and not made["paused"]
    [run] = store.run_schedules(now=T0 + 0.5)
    assert (run.name, run.at, run.action) == ("tick", T0, "submitted")
    assert store.run_schedules(now=T0 + 0.6) == []  # fired: nothing due before T0 + 10
    assert store.run_schedules(now=T0 + 9.9) == []
    task = store.task(run.task_id)
    assert task is not None
    assert task["dedup_key"] == "tick@2027-01-15T08:00:00+00:00" == occurrence_key("tick", T0)
    assert (task["task_type"], task["group"], task["priority"], task["label"]) == (
        "ping",
        "net",
        64,
        "l",
    )
    assert (task["payload"], task["max_retries"], task["status"]) == (b'{"n":1}', 2, "pending")
    [tags] = store.tasks(ids=run.task_id)["tags"].to_list()
    assert tags == [{"key": "env", "value": "prod"}, {"key": "team", "value": "data"}]
    store.cancel(run.task_id)  # ended: the next occurrence is not held back
    [second] = store.run_schedules(now=T0 + 10.0)
    assert (second.at, second.action) == (T0 + 10, "submitted")
    assert keys(store) == [occurrence_key("tick", T0), occurrence_key("tick", T0 + 10)]
    state = row(store, "tick")
    assert (state["last_at"], state["next_at"]) == (at(T0 + 10), at(T0 + 20))
    assert (state["last_task_id"], state["skipped"]) == (second.task_id, 0)


def test_missed_occurrences_are_not_replayed(store: tm.TaskStore) -> None:
    store.schedule("tick", tm.TaskSubmission("ping"), every=timedelta(seconds=10), now=T0)
    [first] = store.run_schedules(now=T0)
    store.cancel(first.task_id)
    # no scheduler ran for 95 s: nine occurrences came due; the latest alone is submitted
    [late] = store.run_schedules(now=T0 + 95.2)
    assert (late.at, late.action, late.missed) == (T0 + 90, "submitted", 8)  # 10 … 80 s
    assert store.run_schedules(now=T0 + 99.9) == []
    state = row(store, "tick")
    assert (state["next_at"], state["missed"], state["skipped"]) == (at(T0 + 100), 8, 0)
    assert keys(store) == [occurrence_key("tick", T0), occurrence_key("tick", T0 + 90)]
    # on time again: nothing missed
    store.cancel(late.task_id)
    [again] = store.run_schedules(now=T0 + 100)
    assert (again.at, again.missed) == (T0 + 100, 0) and row(store, "tick")["missed"] == 8


def test_an_occurrence_is_skipped_while_the_last_ones_task_is_pending_or_blocked(
    store: tm.TaskStore, location: str | Path
) -> None:
    store.schedule("tick", tm.TaskSubmission("ping"), every=timedelta(seconds=1), now=T0)
    [first] = store.run_schedules(now=T0)
    runs = [store.run_schedules(now=T0 + k)[0] for k in (1, 2)]  # still pending: no pile-up
    assert [(r.action, r.task_id) for r in runs] == [("skipped", first.task_id)] * 2
    run_sql(
        location,
        f"UPDATE {table(location, 'tasks')} SET status = 'blocked' WHERE id = {first.task_id}",
    )
    [blocked] = store.run_schedules(now=T0 + 3)
    assert blocked.action == "skipped"
    run_sql(
        location,
        f"UPDATE {table(location, 'tasks')} SET status = 'pending' WHERE id = {first.task_id}",
    )
    owner = store.new_owner()
    claimed = store.claim(1, task_types=["ping"], owner=owner)
    assert [t.id for t in claimed] == [first.task_id]
    [running] = store.run_schedules(now=T0 + 4)  # running is not waiting: submitted
    assert running.action == "submitted" and running.task_id != first.task_id
    assert store.complete(first.task_id, owner=owner)
    assert [r.action for r in store.run_schedules(now=T0 + 5)] == ["skipped"]
    assert keys(store) == [occurrence_key("tick", T0), occurrence_key("tick", T0 + 4)]
    state = row(store, "tick")
    assert (state["skipped"], state["last_at"], state["last_task_id"]) == (
        4,
        at(T0 + 4),
        running.task_id,
    )


def test_cron_occurrences_follow_wall_time_in_their_zone(store: tm.TaskStore) -> None:
    """02:30 every day in Berlin: on 29 March 2026 clocks jump from 02:00 to 03:00, and the
    occurrence comes at 03:00 (as Debian's cron does); on 25 October 02:30 comes twice and
    the occurrence once."""
    sub = tm.TaskSubmission("report")
    start = utc("2026-03-27T12:00:00+00:00")
    made = store.schedule("nightly", sub, cron="30 2 * * *", timezone=BERLIN, now=start)
    assert made["next_at"] == at(utc("2026-03-28T02:30:00+01:00"))
    fired = []
    for now in (
        utc("2026-03-28T02:30:00+01:00"),
        utc("2026-03-29T03:00:00+02:00"),
        utc("2026-03-30T02:30:00+02:00"),
    ):
        assert store.run_schedules(now=now - 1) == []  # not before its time
        [run] = store.run_schedules(now=now)
        store.cancel(run.task_id)
        fired.append(run.at)
    assert fired == [
        utc("2026-03-28T01:30:00+00:00"),
        utc("2026-03-29T01:00:00+00:00"),
        utc("2026-03-30T00:30:00+00:00"),
    ]
    store.schedule(
        "nightly", sub, cron="30 2 * * *", timezone=BERLIN, now=utc("2026-10-24T12:00:00+00:00")
    )  # another anchor… the same timing: the next occurrence is kept
    assert row(store, "nightly")["next_at"] == at(utc("2026-03-31T02:30:00+02:00"))
    store.unschedule("nightly")
    store.schedule(
        "nightly", sub, cron="30 2 * * *", timezone=BERLIN, now=utc("2026-10-24T12:00:00+00:00")
    )
    october = []
    for now in (utc("2026-10-25T02:30:00+02:00"), utc("2026-10-26T02:30:00+01:00")):
        [run] = store.run_schedules(now=now + 1)
        store.cancel(run.task_id)
        october.append(run.at)
    # the second 02:30 of the 25th (00:30 UTC + 1 h) is no occurrence of its own
    assert october == [utc("2026-10-25T00:30:00+00:00"), utc("2026-10-26T01:30:00+00:00")]
    assert row(store, "nightly")["next_at"] == at(utc("2026-10-27T02:30:00+01:00"))


def test_a_cron_schedule_far_behind_fires_its_latest_occurrence(store: tm.TaskStore) -> None:
    store.schedule("minutely", tm.TaskSubmission("m"), cron="* * * * *", now=T0)
    [first] = store.run_schedules(now=T0)
    store.cancel(first.task_id)
    [late] = store.run_schedules(now=T0 + 30 * 86_400 + 90.5)  # a month without a scheduler
    assert (late.at, late.missed) == (T0 + 30 * 86_400 + 60, 30 * 1440)
    assert row(store, "minutely")["next_at"] == at(T0 + 30 * 86_400 + 120)


def test_start_at_anchors_an_interval_and_delays_a_cron(store: tm.TaskStore) -> None:
    sub = tm.TaskSubmission("t")
    # on the quarter hours of an anchor in the past: the next one of that grid
    past = store.schedule("q", sub, every=timedelta(minutes=15), start_at=T0 - 3600, now=T0 + 61)
    assert past["next_at"] == at(T0 + 900)
    # a naive start_at is a wall time in the schedule's zone
    later = store.schedule(
        "c", sub, cron="0 * * * *", timezone=BERLIN, start_at=dt.datetime(2027, 1, 20), now=T0
    )
    assert later["next_at"] == at(utc("2027-01-20T00:00:00+01:00"))
    assert later["start_at"] == at(utc("2027-01-20T00:00:00+01:00"))


def test_a_replace_keeps_the_next_occurrence_only_when_the_timing_is_the_same(
    store: tm.TaskStore,
) -> None:
    every = timedelta(seconds=60)
    store.schedule("s", tm.TaskSubmission("a"), every=every, now=T0)
    [first] = store.run_schedules(now=T0)
    store.pause_schedule("s")
    # another submission, the same timing: next occurrence, pause and last task kept
    store.schedule("s", tm.TaskSubmission("b", group="g"), every=every, now=T0 + 30.5)
    state = row(store, "s")
    assert (state["task_type"], state["group"], state["next_at"]) == ("b", "g", at(T0 + 60))
    kept = (state["paused"], state["last_task_id"], state["last_at"])
    assert kept == (True, first.task_id, at(T0))
    assert state["created_at"] == at(T0) and state["updated_at"] == at(T0 + 30.5)
    # another timing: counted again from now (the second it is), still paused
    store.schedule("s", tm.TaskSubmission("b"), every=timedelta(seconds=7), now=T0 + 30.5)
    state = row(store, "s")
    assert (state["every"], state["next_at"], state["paused"]) == (
        timedelta(seconds=7),
        at(T0 + 30),
        True,
    )
    assert store.run_schedules(now=T0 + 40) == []  # paused
    store.schedule("s", tm.TaskSubmission("b"), cron="0 9 * * *", timezone=BERLIN, now=T0 + 40)
    state = row(store, "s")
    assert (state["every"], state["cron"], state["timezone"]) == (None, "0 9 * * *", BERLIN)
    assert state["next_at"] == at(T0 + 86_400)  # 09:00 in Berlin is 08:00 UTC in January


def test_pause_and_resume(store: tm.TaskStore) -> None:
    store.schedule("s", tm.TaskSubmission("t"), every=timedelta(seconds=10), now=T0)
    assert store.pause_schedule("s") is True
    assert store.pause_schedule("s") is False  # paused already
    assert store.run_schedules(now=T0 + 35) == []
    assert store.next_schedule_at() is None
    # resumed: from the first occurrence at or after now; what came due meanwhile is not
    assert store.resume_schedule("s", now=T0 + 35.5) is True
    assert store.resume_schedule("s", now=T0 + 35.5) is False
    assert row(store, "s")["next_at"] == at(T0 + 40)
    assert store.next_schedule_at() == T0 + 40
    assert store.run_schedules(now=T0 + 39) == []
    assert [(r.at, r.action) for r in store.run_schedules(now=T0 + 40)] == [(T0 + 40, "submitted")]
    for call in (store.pause_schedule, store.resume_schedule):
        with pytest.raises(tm.SchedulerError, match="no schedule named 'nope'") as err:
            call("nope")
        assert err.value.kind == "unknown_schedule"


def test_unschedule_removes_the_schedule_and_keeps_its_tasks(store: tm.TaskStore) -> None:
    store.schedule("s", tm.TaskSubmission("t"), every=timedelta(seconds=10), now=T0)
    [run] = store.run_schedules(now=T0)
    assert store.unschedule("s") is True
    assert store.unschedule("s") is False
    assert store.schedules().height == 0 and store.run_schedules(now=T0 + 100) == []
    assert keys(store) == [occurrence_key("s", T0)]
    assert store.task(run.task_id) is not None


def test_the_submissions_own_key_strategy_and_offsets_apply_to_each_occurrence(
    store: tm.TaskStore,
) -> None:
    own = tm.TaskSubmission("sync", dedup_key="bucket", on_duplicate="reject")
    store.schedule("own", own, every=timedelta(seconds=10), now=T0)
    timed = tm.TaskSubmission("t", run_after=timedelta(seconds=5), expires_at=timedelta(minutes=1))
    store.schedule("timed", timed, every=timedelta(seconds=10), now=T0)
    runs = {r.name: r for r in store.run_schedules(now=T0 + 0.5)}
    assert runs["own"].action == "submitted"
    task = store.task(runs["own"].task_id)
    assert task is not None and task["dedup_key"] == "bucket"
    timed_task = store.task(runs["timed"].task_id)
    assert timed_task is not None
    # counted from the occurrence (T0), not from when it was fired
    assert timed_task["run_after"] == at(T0 + 5) and timed_task["expires_at"] == at(T0 + 60)
    # the task of "own" runs: the next occurrence is not skipped, but its key is active
    # and its strategy rejects: counted as skipped, nothing submitted
    owner = store.new_owner()
    assert len(store.claim(5, task_types=["sync"], owner=owner)) == 1
    late = {r.name: r for r in store.run_schedules(now=T0 + 10)}
    assert (late["own"].action, late["own"].task_id) == ("rejected", runs["own"].task_id)
    assert "already has task_type 'sync' and dedup_key 'bucket'" in (late["own"].error or "")
    assert row(store, "own")["skipped"] == 1 and keys(store, "sync") == ["bucket"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "give exactly one of every= .* and cron="),
        ({"every": timedelta(seconds=5), "cron": "* * * * *"}, "give exactly one of every="),
        ({"every": timedelta(seconds=0.5)}, "every must be at least 1 second"),
        ({"every": 60}, "every must be a datetime.timedelta"),
        ({"cron": "* * * *"}, "not a five-field cron expression .* it has 4 field"),
        ({"cron": "0 * * * * *"}, "not a five-field cron expression .* it has 6 field"),
        ({"cron": "@hourly"}, "not a five-field cron expression"),
        ({"cron": "61 * * * *"}, "cron='61 \\* \\* \\* \\*' is not a valid cron expression"),
        ({"cron": "0 0 31 2 *"}, "is not a valid cron expression|never matches"),
        ({"cron": 5}, "cron must be a five-field cron expression"),
        ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "not a known time zone"),
        ({"every": timedelta(hours=1), "start_at": "tomorrow"}, "start_at must be a datetime"),
    ],
)
def test_bad_timing_raises_naming_the_argument_and_writes_nothing(
    store: tm.TaskStore, kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(tm.SchedulerError, match=message) as err:
        store.schedule("s", tm.TaskSubmission("t"), **kwargs)
    assert err.value.kind == "invalid_argument"
    assert store.schedules().height == 0


@pytest.mark.parametrize(
    ("name", "submission", "field", "message"),
    [
        ("", tm.TaskSubmission("t"), None, "name must be a non-empty string"),
        ("x" * 1025, tm.TaskSubmission("t"), None, "longer than 1,024 characters"),
        ("s", "t", None, "a schedule submits a TaskSubmission, not str"),
        ("s", tm.TaskSubmission(""), "task_type", "task_type is an empty string"),
        ("s", tm.TaskSubmission("t", priority=999), "priority", "priority must be within"),
        ("s", tm.TaskSubmission("t", depends_on=[1]), "depends_on", "cannot depend on"),
        (
            "s",
            tm.TaskSubmission("t", run_after=dt.datetime(2030, 1, 1)),
            "run_after",
            "must be a timedelta of 0 or more, counted from each occurrence",
        ),
        (
            "s",
            tm.TaskSubmission("t", run_after=timedelta(minutes=5), expires_at=timedelta(minutes=1)),
            "expires_at",
            "expires_at must be later than run_after",
        ),
    ],
)
def test_a_bad_name_or_submission_raises_and_writes_nothing(
    store: tm.TaskStore, name: str, submission: Any, field: str | None, message: str
) -> None:
    with pytest.raises(tm.SchedulerError, match=message) as err:
        store.schedule(name, submission, every=timedelta(minutes=1))
    if field is not None:
        assert isinstance(err.value, tm.InvalidSubmission) and err.value.field == field
    assert store.schedules().height == 0


def test_the_frames_columns_and_types(store: tm.TaskStore) -> None:
    assert store.schedules().schema == pl.Schema(
        {
            "name": pl.String,
            "task_type": pl.String,
            "every": pl.Duration("us"),
            "cron": pl.String,
            "next_at": pl.Datetime("us", "UTC"),
            "last_at": pl.Datetime("us", "UTC"),
            "paused": pl.Boolean,
        }
    )
    store.schedule("b", tm.TaskSubmission("t", group="g"), cron="*/5 * * * *", now=T0)
    store.schedule("a", tm.TaskSubmission("t"), every=timedelta(hours=1, seconds=1), now=T0)
    frame = store.schedules()
    assert frame.rows() == [
        ("a", "t", timedelta(hours=1, seconds=1), None, at(T0), None, False),
        ("b", "t", None, "*/5 * * * *", at(T0), None, False),
    ]
    detailed = store.schedules(details=True)
    assert detailed.columns[:7] == frame.columns
    assert detailed.columns[7:] == [
        "timezone",
        "start_at",
        "last_task_id",
        "skipped",
        "missed",
        "dedup_key",
        "group",
        "priority",
        "created_at",
        "updated_at",
    ]
    assert detailed["group"].to_list() == [None, "g"]


def test_stores_firing_at_once_submit_each_occurrence_once(location: str | Path) -> None:
    """Six threads, each with a store of its own (its own connections), fire the same due
    occurrences of five schedules at the same moments; between rounds the tasks are
    cancelled, so that no occurrence is skipped.  Each occurrence is submitted once."""
    names = [f"s{i}" for i in range(5)]
    rounds = 8
    with tm.TaskStore.open(location) as store:
        for name in names:
            store.schedule(name, tm.TaskSubmission("t"), every=timedelta(seconds=1), now=T0)
    stores = [tm.TaskStore.open(location) for _ in range(6)]
    fired: list[tuple[str, float, str]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(stores) + 1)
    errors: list[BaseException] = []

    def fire(store: tm.TaskStore) -> None:
        try:
            for k in range(rounds):
                barrier.wait(timeout=60)
                runs = store.run_schedules(now=T0 + k + 0.5)
                with lock:
                    fired.extend((r.name, r.at, r.action) for r in runs)
                barrier.wait(timeout=60)
        except BaseException as exc:  # reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=fire, args=(s,)) for s in stores]
    try:
        for t in threads:
            t.start()
        with tm.TaskStore.open(location) as store:
            for _ in range(rounds):
                barrier.wait(timeout=60)  # go
                barrier.wait(timeout=60)  # all fired
                store.cancel_where(status="pending")
    finally:
        for t in threads:
            t.join(timeout=60)
        for s in stores:
            s.close()
    assert not errors, errors
    expected = sorted((n, T0 + k, "submitted") for n in names for k in range(rounds))
    assert sorted(fired) == expected
    with tm.TaskStore.open(location) as store:
        assert sorted(keys(store)) == sorted(
            occurrence_key(n, T0 + k) for n in names for k in range(rounds)
        )
        assert store.history()["status"].unique().to_list() == ["cancelled"]


def test_the_due_look_walks_its_index(store: tm.TaskStore, location: str | Path) -> None:
    from taskmill.backends.postgres.queries import q as pg_q
    from taskmill.backends.sql import q as sqlite_q

    for i in range(20):
        store.schedule(f"s{i}", tm.TaskSubmission("t"), every=timedelta(seconds=5), now=T0)
    if is_postgres(location):
        import psycopg

        with psycopg.connect(str(location), autocommit=True) as conn:
            conn.execute("SET enable_seqscan = off")
            for name in ("schedules_due", "schedules_next"):
                plan = conn.execute("EXPLAIN " + pg_q(name), {"now": T0, "limit": 100}).fetchall()
                assert "schedules_due" in " ".join(r[0] for r in plan), plan
        return
    import sqlite3

    conn = sqlite3.connect(location)
    try:
        for name in ("schedules_due", "schedules_next"):
            plan = conn.execute(
                "EXPLAIN QUERY PLAN " + sqlite_q(name), {"now": T0, "limit": 100}
            ).fetchall()
            detail = " ".join(r[-1] for r in plan)
            assert "USING INDEX schedules_due" in detail and "TEMP B-TREE" not in detail, plan
    finally:
        conn.close()


async def test_a_scheduler_fires_the_stores_schedules_and_announces_their_tasks(
    location: str | Path,
) -> None:
    ran: list[str] = []

    async def ping(ctx: tm.TaskContext) -> None:
        ran.append(ctx.dedup_key or "")

    async with tm.Scheduler(location, executors={"ping": ping}, poll_interval=0.2) as sched:
        events = sched.subscribe()
        sched.store.schedule("tick", tm.TaskSubmission("ping"), every=timedelta(seconds=1))
        submitted: list[tm.TaskSubmitted] = []
        async with asyncio.timeout(20):
            async for event in events:
                if isinstance(event, tm.TaskSubmitted):
                    submitted.append(event)
                if len(submitted) == 2:
                    break
        await sched.wait_idle()
        sched.store.unschedule("tick")
        history = sched.store.history()
    # two occurrences a second apart, each run once
    times = [dt.datetime.fromisoformat(e.dedup_key.split("@")[1]) for e in submitted if e.dedup_key]
    assert times[1] - times[0] == timedelta(seconds=1)
    assert sorted(ran) == sorted(history["dedup_key"].to_list())
    assert [e.dedup_key for e in submitted] == ran[:2]
