"""PostgresStore on a real PostgreSQL server (the ``pg_url`` fixture: a fresh database per
test).  Where tests/test_store.py, tests/test_keys.py or tests/test_dispatch_trust.py
check a behaviour of the SQLite store, the test here makes the same assertions, so both
backends are held to the same outcomes; the rest checks what only a shared server has:
workers in several processes, advisory locks, lost connections."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pytest

import taskmill as tm
from taskmill.store import ClaimedTask
from taskmill.store.keys import key_hash
from taskmill.store.postgres import PostgresStore
from taskmill.store.postgres.migrate import SCHEMA_VERSION
from taskmill.store.postgres.store import CLAIM_LOCK, SUBMIT_LOCK, queries

from conftest import ENV

PYTHON = sys.executable


@pytest.fixture
def store(pg_url: str) -> Iterator[PostgresStore]:
    """A PostgresStore on a fresh database (this module's ``store``: PostgreSQL)."""
    with PostgresStore.open(pg_url) as s:
        yield s


def ids(df: pl.DataFrame) -> list[int]:
    return df["id"].to_list()


def raw(url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on the database outside taskmill (a fault a test injects, or a
    state it sets up); returns its rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def _spawn(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [PYTHON, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )


# ---------------------------------------------------------------- opening


def test_open_creates_the_schema_and_reopening_keeps_the_store(pg_url: str) -> None:
    with PostgresStore.open(pg_url) as store:
        assert store.counts() == {
            "pending": 0,
            "running": 0,
            "paused": 0,
            "blocked": 0,
            "waiting": 0,
            "completed": 0,
            "failed": 0,
            "cancelled": 0,
            "superseded": 0,
            "expired": 0,
        }
        assert store.integrity_check() == "ok"
    assert raw(pg_url, "SELECT value FROM taskmill.meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)
    ]
    with PostgresStore.open(pg_url) as store:
        store.submit(tm.TaskSubmission("t"))
    with PostgresStore.open(pg_url) as store:
        assert store.counts()["pending"] == 1


def test_every_query_is_named_and_bound() -> None:
    named = queries()
    assert {"claim", "claim_candidates", "finish", "insert_task", "integrity_problems"} <= set(
        named
    )
    assert all("{KEY_HASH}" not in sql for sql in named.values())


def test_an_unreachable_server_is_a_store_error(pg_server: Any) -> None:
    url = pg_server.url().replace(f":{pg_server.port}/", ":1/")
    with pytest.raises(tm.StoreError, match="cannot connect to task store") as err:
        PostgresStore.open(url, busy_timeout=2)
    assert err.value.kind == "store"


def test_a_newer_schema_is_refused(pg_url: str) -> None:
    PostgresStore.open(pg_url).close()
    raw(pg_url, "UPDATE taskmill.meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(tm.SchemaTooNew, match="newer than this taskmill"):
        PostgresStore.open(pg_url)


def test_a_foreign_taskmill_schema_is_refused_untouched(pg_url: str) -> None:
    raw(pg_url, "CREATE SCHEMA taskmill")
    raw(pg_url, "CREATE TABLE taskmill.tasks (mine text)")
    raw(pg_url, "INSERT INTO taskmill.tasks VALUES ('keep me')")
    with pytest.raises(tm.NotATaskStore, match="schema 'taskmill' that taskmill did not make"):
        PostgresStore.open(pg_url)
    tables = raw(
        pg_url,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'taskmill'",
    )
    assert tables == [("tasks",)]
    assert raw(pg_url, "SELECT mine FROM taskmill.tasks") == [("keep me",)]


def test_messages_name_the_database_without_its_password() -> None:
    from taskmill.store.postgres.store import describe

    where = describe("postgresql://ann:s3cret@db.example:6543/jobs")
    assert where == "PostgreSQL database 'jobs' on db.example:6543"
    assert "s3cret" not in describe("host=h password=s3cret dbname=d")


def test_frames_have_the_sqlite_stores_columns(store: PostgresStore, tmp_path: Path) -> None:
    with tm.TaskStore.open(tmp_path / "s.db") as lite:
        for s in (store, lite):
            s.submit(tm.TaskSubmission("t", dedup_key="a", group="g", payload=b"p"))
            s.cancel(1)
            s.submit(tm.TaskSubmission("t", dedup_key="b", label="x", max_retries=2))
        assert store.tasks().schema == lite.tasks().schema
        assert store.history().schema == lite.history().schema
        for by in ("group", "priority", "task_type"):
            assert store.stats(by).schema == lite.stats(by).schema
        drop = ["created_at", "started_at", "finished_at"]
        assert store.tasks().drop(drop[:2]).rows() == lite.tasks().drop(drop[:2]).rows()
        assert store.history().drop(drop).rows() == lite.history().drop(drop).rows()


def test_the_same_methods_and_signatures_as_the_sqlite_store() -> None:
    """Every public method of the face, batches included, on both engines with the face's
    parameters, kinds and defaults (a user never needs to know which engine it got)."""
    import inspect

    from taskmill.store.sqlite import SqliteStore

    face_names = [n for n in vars(tm.TaskStore) if not n.startswith("_")]
    names = [n for n in face_names if callable(getattr(tm.TaskStore, n))]
    assert "claim" in names and "integrity_check" in names and "open" in names
    for name in names:
        face = inspect.signature(getattr(tm.TaskStore, name))
        params = [(p.name, p.kind, p.default) for p in face.parameters.values()]
        for engine in (SqliteStore, PostgresStore):
            sig = inspect.signature(getattr(engine, name))
            mine = [(p.name, p.kind, p.default) for p in sig.parameters.values()]
            assert mine == params, (engine.__name__, name)


@pytest.mark.parametrize("analysed", [True, False], ids=["analysed", "never-analysed"])
@pytest.mark.parametrize("query", ["claim", "claim_candidates"])
def test_the_claim_walks_the_claim_index_with_no_sort(
    pg_url: str, query: str, analysed: bool
) -> None:
    # never analysed: a large batch just landed in an empty queue and autovacuum has not
    # run yet; with the planner's defaults each claim then read and sorted every pending
    # row (a bitmap scan and a sort: 6 ms a claim at 5,000 tasks instead of 0.1 ms)
    store = PostgresStore.open(pg_url)
    try:
        raw(
            pg_url,
            "INSERT INTO taskmill.tasks (task_type, group_name, priority, queue_pos, status, "
            "created_at) SELECT 't' || (i % 3), 'g' || (i % 5), i % 4 * 50, i, "
            "CASE WHEN i % 10 = 0 THEN 'running' ELSE 'pending' END, 0 "
            "FROM generate_series(1, 20000) i",
        )
        if analysed:
            raw(pg_url, "ANALYZE taskmill.tasks")
        params = {
            "types": ["t0", "t1"],
            "now": time.time(),
            "owner": "nobody",
            "held": ["g1"],
            "limit": 16,
        }
        with store.driver._dispatch_lock:  # the connection claims run on, with its settings
            conn = store.driver._dispatch_connection()
            plan = conn.execute("EXPLAIN " + queries()[query], params).fetchall()
    finally:
        store.close()
    lines = [r[0] for r in plan]
    # claim: the walk is the CTE that locks the candidates; claim_candidates is the walk
    start = next((i for i, line in enumerate(lines) if line.strip() == "CTE picked"), 0)
    depth = len(lines[start]) - len(lines[start].lstrip())
    end = next(
        (
            i
            for i in range(start + 1, len(lines))
            if len(lines[i]) - len(lines[i].lstrip()) <= depth
        ),
        len(lines),
    )
    walk = "\n".join(lines[start:end])
    assert "Index Scan using tasks_claim" in walk, "\n".join(lines)
    assert "Sort" not in walk and "Bitmap" not in walk, "\n".join(lines)


# ---------------------------------------------------------------- keys


def test_stored_key_hashes_are_the_python_ones(store: PostgresStore, pg_url: str) -> None:
    store.submit(tm.TaskSubmission("é", dedup_key="ü∂ 🚀 key"))
    store.submit(tm.TaskSubmission("t"))
    rows = raw(pg_url, "SELECT task_type, dedup_key, key_hash FROM taskmill.tasks ORDER BY id")
    assert rows == [("é", "ü∂ 🚀 key", key_hash("é", "ü∂ 🚀 key")), ("t", None, None)]


# ---------------------------------------------------------------- key-hash collisions


@pytest.fixture
def collided(store: PostgresStore, pg_url: str) -> PostgresStore:
    """A store whose one task (key 'a') carries the hash of key 'b' (as test_keys.py)."""
    assert store.submit(tm.TaskSubmission("t", dedup_key="a", priority=100)).task_id == 1
    raw(pg_url, "UPDATE taskmill.tasks SET key_hash = %s WHERE id = 1", (key_hash("t", "b"),))
    return store


@pytest.mark.parametrize("strategy", list(tm.DuplicateStrategy))
def test_a_single_submit_that_collides_fails_and_changes_nothing(
    collided: PostgresStore, strategy: tm.DuplicateStrategy
) -> None:
    store = collided
    with pytest.raises(tm.InvalidSubmission) as caught:
        store.submit(tm.TaskSubmission("t", dedup_key="b", priority=0, on_duplicate=strategy))
    assert caught.value.kind == "key_collision"
    assert caught.value.field == "dedup_key"
    assert "active task 1" in str(caught.value) and "'b'" in str(caught.value)
    assert store.tasks().select("id", "dedup_key", "priority", "status").rows() == [
        (1, "a", 100, "pending")
    ]
    assert store.history().height == 0
    # other keys go on as usual
    assert store.submit(tm.TaskSubmission("t", dedup_key="c")).action == "submitted"
    # and the integrity check names the row whose hash is not its key's
    report = store.integrity_check()
    assert report.startswith("active tasks whose key_hash is not the hash"), report
    assert report.endswith(": 1")


# ---------------------------------------------------------------- claim order and groups


def test_claim_order_is_priority_then_queue_order(store: PostgresStore) -> None:
    for key, prio in [("a", 128), ("b", 0), ("c", 128), ("d", 255), ("e", 0)]:
        store.submit(tm.TaskSubmission("t", dedup_key=key, priority=prio))
    owner = store.new_owner()
    got = store.claim(2, task_types=["t"], owner=owner)
    assert [(c.dedup_key, c.priority, c.attempt) for c in got] == [("b", 0, 1), ("e", 0, 1)]
    got = store.claim(10, task_types=["t"], owner=owner)
    assert [c.dedup_key for c in got] == ["a", "c", "d"]
    assert store.owned_tasks(owner) == [1, 2, 3, 4, 5]
    assert store.claim(10, task_types=["t"], owner=owner) == []
    assert store.claim(0, task_types=["t"], owner=owner) == []
    store.release_owner(owner)


def test_claim_returns_the_task(store: PostgresStore) -> None:
    store.submit(
        tm.TaskSubmission(
            "t", dedup_key="k", group="g", priority=7, payload=b"p", label="l", max_retries=3
        )
    )
    owner = store.new_owner()
    [task] = store.claim(1, task_types=["t"], owner=owner)
    assert task == ClaimedTask(1, "t", "k", "g", 7, b"p", "l", 1, 3)
    row = store.tasks().row(0, named=True)
    assert (row["status"], row["attempts"]) == ("running", 1)
    assert row["started_at"] is not None
    store.release_owner(owner)


def test_group_limits_hold_across_two_store_objects(store: PostgresStore, pg_url: str) -> None:
    """Two PostgresStore objects (two connections, two owners), as two workers."""
    for i in range(6):
        store.submit(tm.TaskSubmission("t", dedup_key=f"a{i}", group="A"))
    with PostgresStore.open(pg_url) as second:
        one, two = store.new_owner(), second.new_owner()
        limits = {"group_limits": {"A": 3}}
        assert len(store.claim(2, task_types=["t"], owner=one, **limits)) == 2
        assert [c.dedup_key for c in second.claim(5, task_types=["t"], owner=two, **limits)] == [
            "a2"
        ]
        assert store.claim(5, task_types=["t"], owner=one, **limits) == []
        assert second.claim(5, task_types=["t"], owner=two, **limits) == []
        assert second.release_owner(two) == 1
        assert [c.dedup_key for c in store.claim(5, task_types=["t"], owner=one, **limits)] == [
            "a2"
        ]
        assert store.counts()["running"] == 3
        store.release_owner(one)


def _claim_at_once(stores: list[PostgresStore], owners: list[str]) -> list[int]:
    """Every store claims (group g limited to 3) at the same moment, each in a thread of
    its own; returns how many tasks each got."""
    barrier = threading.Barrier(len(stores))
    got = [0] * len(stores)

    def claim(j: int) -> None:
        barrier.wait()
        tasks = stores[j].claim(10, task_types=["t"], owner=owners[j], group_limits={"g": 3})
        got[j] = len(tasks)

    threads = [threading.Thread(target=claim, args=(j,)) for j in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def _all_pending_again(url: str) -> None:
    raw(
        url,
        "UPDATE taskmill.tasks SET status = 'pending', owner = NULL, attempts = 0, "
        "started_at = NULL",
    )


def test_group_limits_hold_between_threads_claiming_at_once(
    store: PostgresStore, pg_url: str
) -> None:
    """Four store objects claim at the same moment, round after round: the limit is
    never exceeded (each claim counts the others' running tasks under the claim lock)."""
    for i in range(40):
        store.submit(tm.TaskSubmission("t", dedup_key=f"k{i}", group="g"))
    stores = [PostgresStore.open(pg_url) for _ in range(4)]
    try:
        owners = [s.new_owner() for s in stores]
        for _ in range(15):
            got = _claim_at_once(stores, owners)
            assert sum(got) == 3, got
            assert store.counts()["running"] == 3
            _all_pending_again(pg_url)
        for s, o in zip(stores, owners, strict=True):
            s.release_owner(o)
    finally:
        for s in stores:
            s.close()


_CLAIMER = """
import sys
from taskmill.store.postgres import PostgresStore

with PostgresStore.open(sys.argv[1]) as store:
    owner = store.new_owner()
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        got = store.claim(10, task_types=["t"], owner=owner, group_limits={"g": 3})
        print(len(got), flush=True)
    store.release_owner(owner)
"""


def test_group_limits_hold_across_two_processes(store: PostgresStore, pg_url: str) -> None:
    """Two worker processes claim at the same moment, round after round."""
    for i in range(20):
        store.submit(tm.TaskSubmission("t", dedup_key=f"k{i}", group="g"))
    procs = [_spawn(_CLAIMER, pg_url) for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        for _ in range(25):
            for p in procs:  # both wake at once
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            got = [int(p.stdout.readline()) for p in procs]  # type: ignore[union-attr]
            assert sum(got) == 3, got
            assert store.counts()["running"] == 3
            _all_pending_again(pg_url)
        for p in procs:
            p.stdin.write("stop\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        for p in procs:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()


def test_a_task_that_a_submit_is_deciding_on_is_skipped_not_waited_for(
    store: PostgresStore, pg_url: str
) -> None:
    """The claim's FOR UPDATE SKIP LOCKED: a row another transaction holds is passed by."""
    for key in "ab":
        store.submit(tm.TaskSubmission("t", dedup_key=key))
    owner = store.new_owner()
    with psycopg.connect(pg_url) as other:  # a transaction holding task 1 (like a submit)
        other.execute("SELECT id FROM taskmill.tasks WHERE id = 1 FOR UPDATE")
        assert [c.id for c in store.claim(5, task_types=["t"], owner=owner)] == [2]
        other.rollback()
    assert [c.id for c in store.claim(5, task_types=["t"], owner=owner)] == [1]
    store.release_owner(owner)


# ---------------------------------------------------------------- attempts


def test_retries_then_a_final_failure(store: PostgresStore) -> None:
    store.submit(tm.TaskSubmission("t", dedup_key="a", max_retries=1))
    owner = store.new_owner()
    now = time.time()
    [one] = store.claim(1, task_types=["t"], owner=owner, now=now)
    assert one.attempt == 1
    # a stale attempt number, or another owner, records nothing
    assert store.fail(1, owner=owner, error="e", retry_at=now, attempt=2) is None
    assert store.fail(1, owner="someone:1:else", error="e", retry_at=None) is None
    assert store.fail(1, owner=owner, error="first", retry_at=now + 5, attempt=1) == "retry"
    row = store.tasks().row(0, named=True)
    assert (row["status"], row["attempts"], row["last_error"]) == ("pending", 1, "first")
    assert row["run_after"].timestamp() == pytest.approx(now + 5)
    assert store.claim(1, task_types=["t"], owner=owner, now=now + 4) == []
    [two] = store.claim(1, task_types=["t"], owner=owner, now=now + 5)
    assert two.attempt == 2
    assert store.tasks()["run_after"].to_list() == [None]
    assert store.fail(1, owner=owner, error="second", retry_at=None, attempt=2) == "failed"
    assert store.history().select("id", "status", "attempts", "last_error").rows() == [
        (1, "failed", 2, "second")
    ]
    assert store.fail(1, owner=owner, error="again", retry_at=None) is None
    assert store.counts()["failed"] == 1
    store.release_owner(owner)


def test_release_is_not_counted_as_a_try(store: PostgresStore) -> None:
    for key in "ab":
        store.submit(tm.TaskSubmission("t", dedup_key=key))
    owner = store.new_owner()
    got = store.claim(2, task_types=["t"], owner=owner)
    assert [c.attempt for c in got] == [1, 1]
    assert store.release([1, 2], owner=owner, attempts=[1, 5]) == 1  # 2 is not attempt 5
    assert store.release([1], owner="someone:1:else") == 0
    assert store.tasks().select("id", "status", "attempts").rows() == [
        (1, "pending", 0),
        (2, "running", 1),
    ]
    assert store.tasks()["started_at"].is_null().to_list() == [True, False]
    [again] = store.claim(1, task_types=["t"], owner=owner)
    assert (again.id, again.attempt) == (1, 1)
    assert store.release([], owner=owner) == 0
    with pytest.raises(ValueError, match="one attempt number per task id"):
        store.release([1, 2], owner=owner, attempts=[1])
    assert store.release_owner(owner) == 2
    assert store.tasks().select("status", "attempts").rows() == [("pending", 0)] * 2


def test_complete_many_completes_only_the_attempts_still_running(store: PostgresStore) -> None:
    for key in "abc":
        store.submit(tm.TaskSubmission("t", dedup_key=key))
    owner = store.new_owner()
    store.claim(3, task_types=["t"], owner=owner)
    assert store.cancel(3) == "running"
    assert store.complete_many([1, 2, 3], owner=owner, attempts=[1, 2, 1]) == {1}
    assert store.complete_many([1, 2], owner=owner) == {2}  # a retried call: 1 is done
    assert store.complete_many([], owner=owner) == set()
    assert store.history().select("id", "status", "attempts").rows() == [
        (1, "completed", 1),
        (2, "completed", 1),
        (3, "cancelled", 1),
    ]
    assert store.lost_tasks([1, 3, 99], owner=owner) == {
        1: ("completed", None),
        3: ("cancelled", None),
        99: ("gone", None),
    }
    store.release_owner(owner)


# ---------------------------------------------------------------- workers and leases


def test_a_lease_that_ran_out_frees_its_tasks_and_its_owner_learns_it(
    store: PostgresStore,
) -> None:
    """A worker on another machine cannot be checked by pid: its lease decides
    (test_dispatch_trust.py's test, on PostgreSQL)."""
    for key in "ab":
        store.submit(tm.TaskSubmission("t", dedup_key=key))
    remote = "elsewhere:4242:0123456789ab"
    store.register(remote, lease_timeout=30.0)
    t0 = time.time()
    assert [c.id for c in store.claim(2, task_types=["t"], owner=remote)] == [1, 2]
    assert store.recover(now=t0 + 10) == 0  # still within its lease
    assert store.counts()["running"] == 2
    assert store.renew(remote)  # renewed at about t0
    assert store.recover(now=t0 + 29) == 0
    assert store.recover(now=time.time() + 31) == 2
    assert store.tasks().select("dedup_key", "status", "attempts").rows() == [
        ("a", "pending", 0),
        ("b", "pending", 0),
    ]
    assert not store.renew(remote)  # the owner is told its lease is gone
    assert store.complete_many([1, 2], owner=remote) == set()  # and records nothing
    assert store.lost_tasks([1, 2], owner=remote) == {1: ("pending", None), 2: ("pending", None)}
    # registered again, it works on
    store.register(remote, lease_timeout=30.0)
    assert store.renew(remote)
    assert [c.attempt for c in store.claim(2, task_types=["t"], owner=remote)] == [1, 1]
    assert store.complete_many([1, 2], owner=remote, attempts=[1, 1]) == {1, 2}


def test_a_worker_that_stops_renewing_loses_its_tasks_to_another_worker(pg_url: str) -> None:
    """Two store objects: the first worker's lease runs out; recovery through the second
    puts its tasks back, and the second claims them."""
    with PostgresStore.open(pg_url) as a, PostgresStore.open(pg_url) as b:
        for key in "abc":
            a.submit(tm.TaskSubmission("t", dedup_key=key))
        gone = "host-a:1:aaaaaaaaaaaa"  # a worker elsewhere, as seen from here
        a.register(gone, lease_timeout=5.0)
        assert len(a.claim(2, task_types=["t"], owner=gone)) == 2
        worker = b.new_owner(lease_timeout=5.0)
        assert [c.id for c in b.claim(5, task_types=["t"], owner=worker)] == [3]
        t0 = time.time()
        assert b.recover(now=t0 + 4) == 0
        assert b.recover(now=t0 + 60) == 2  # the live worker of this process is kept
        assert b.owned_tasks(worker) == [3]
        assert b.owned_tasks(gone) == []
        assert [c.id for c in b.claim(5, task_types=["t"], owner=worker)] == [1, 2]
        assert raw(pg_url, "SELECT owner FROM taskmill.workers") == [(worker,)]
        b.release_owner(worker)


def test_tasks_of_a_dead_process_of_this_host_are_recovered(
    store: PostgresStore, pg_url: str
) -> None:
    store.submit(tm.TaskSubmission("t", dedup_key="a"))
    done = subprocess.run([PYTHON, "-c", "import os; print(os.getpid())"], capture_output=True)
    dead_pid = int(done.stdout)
    from taskmill.store.workers import HOST as _HOST

    owner = f"{_HOST}:{dead_pid}:deadbeef0000"
    store.register(owner, lease_timeout=3600)
    store.claim(1, task_types=["t"], owner=owner)
    assert store.recover() == 1
    assert store.tasks().select("status", "attempts").rows() == [("pending", 0)]
    assert raw(pg_url, "SELECT count(*) FROM taskmill.workers") == [(0,)]


def test_a_running_task_of_a_01_worker_elsewhere_is_recovered(
    store: PostgresStore, pg_url: str
) -> None:
    """A task left running by a worker that holds no lease (0.1 wrote no worker rows)."""
    store.submit(tm.TaskSubmission("t", dedup_key="a"))
    raw(pg_url, "UPDATE taskmill.tasks SET status = 'running', owner = 'old:1:x', attempts = 1")
    assert store.recover() == 1
    assert store.tasks().select("status", "attempts").rows() == [("pending", 0)]


def test_new_owner_needs_a_positive_lease(store: PostgresStore) -> None:
    with pytest.raises(tm.SchedulerError, match="more than 0 seconds"):
        store.new_owner(lease_timeout=0)


# ---------------------------------------------------------------- control and queries


def test_integrity_check_names_what_is_broken(store: PostgresStore, pg_url: str) -> None:
    store.submit(tm.TaskSubmission("t", dedup_key="a"))
    store.submit(tm.TaskSubmission("t", dedup_key="b"))
    store.cancel(2)
    assert store.integrity_check() == "ok"
    raw(pg_url, "UPDATE taskmill.tasks SET owner = 'x:1:y' WHERE id = 1")
    raw(
        pg_url,
        "INSERT INTO taskmill.history (id, task_type, priority, status, attempts, created_at, "
        "finished_at) VALUES (1, 't', 1, 'completed', 1, 0, 0), (9, 't', 1, 'completed', 1, 0, 0)",
    )
    assert store.integrity_check().splitlines() == [
        "ids both active and finished: 1",
        "running tasks without an owner, or other tasks with one: 1",
        "ids above the last one the id sequence handed out: 1",
    ]


# ---------------------------------------------------------------- many writers


_SUBMITTER = """
import json, random, sys
import taskmill as tm
from taskmill.store.postgres import PostgresStore

url, strategy, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
keys = [f"k{i}" for i in range(30)] * 3
random.Random(seed).shuffle(keys)
out = []
with PostgresStore.open(url) as store:
    print("ready", flush=True)
    sys.stdin.readline()
    for key in keys:
        res = store.submit(tm.TaskSubmission("t", dedup_key=key, on_duplicate=strategy))
        out.append([key, res.action, res.task_id, res.replaced_task_id])
print(json.dumps(out))
"""


@pytest.mark.parametrize("strategy", ["skip", "supersede"])
def test_submits_from_many_processes_serialize_per_key(
    store: PostgresStore, pg_url: str, strategy: str
) -> None:
    """Three processes submit the same 30 keys three times each, in different orders."""
    procs = [_spawn(_SUBMITTER, pg_url, strategy, str(seed)) for seed in range(3)]
    try:
        for p in procs:
            assert p.stdout is not None
            assert p.stdout.readline().strip() == "ready", p.stderr.read() if p.stderr else ""
        for p in procs:
            p.stdin.write("go\n")  # type: ignore[union-attr]
            p.stdin.flush()  # type: ignore[union-attr]
        results = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            results.extend(json.loads(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert len(results) == 270
    active = store.tasks()
    assert sorted(active["dedup_key"].to_list()) == sorted(f"k{i}" for i in range(30))
    actions = (
        pl.DataFrame(results, schema=["key", "action", "task_id", "replaced"], orient="row")
        .group_by("action")
        .len()
    )
    history = store.history()
    if strategy == "skip":
        assert dict(actions.rows()) == {"submitted": 30, "deduplicated": 240}
        assert history.height == 0
    else:
        # each key: one first submit, then a chain of 8 replacements ending at the active task
        assert dict(actions.rows()) == {"submitted": 30, "superseded": 240}
        assert history.height == 240
        assert set(history["status"].to_list()) == {"superseded"}
        every = set(ids(active)) | set(ids(history))
        assert set(history["replaced_by"].to_list()) <= every
        replaced = sorted(r[3] for r in results if r[3] is not None)
        assert replaced == sorted(ids(history))  # each task was replaced exactly once
        # a task superseding a pending one took its place: one queue place per key
        assert sorted(active["queue_pos"].to_list()) == sorted(
            min(r[2] for r in results if r[0] == key and r[1] == "submitted")
            for key in {r[0] for r in results}
        )
    assert store.integrity_check() == "ok"


def _until_taskmill_waits_for_a_lock(url: str) -> None:
    """Return once a connection of the store in this database waits for a lock held by
    another transaction (fails after 30 s)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        waiting = raw(
            url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND application_name = 'taskmill' AND wait_event_type = 'Lock'",
        )
        if waiting[0][0]:
            return
        time.sleep(0.01)
    pytest.fail("the store never waited for the lock")


def _in_thread(call: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(call()))
    thread.start()
    return thread, out


def test_a_supersede_decides_on_the_task_as_a_claim_in_flight_left_it(
    store: PostgresStore, pg_url: str
) -> None:
    """The submit locks the task of its key before deciding: a claim that was marking it
    running commits first, and the replacement queues as for a running task."""
    for key in "ab":
        store.submit(tm.TaskSubmission("t", dedup_key=key))
    owner = store.new_owner()
    with psycopg.connect(pg_url) as claim:  # a claim in flight, holding task 1
        claim.execute(
            "UPDATE taskmill.tasks SET status = 'running', owner = %s, attempts = 1 WHERE id = 1",
            (owner,),
        )
        thread, out = _in_thread(
            lambda: store.submit(tm.TaskSubmission("t", dedup_key="a", on_duplicate="supersede"))
        )
        _until_taskmill_waits_for_a_lock(pg_url)
        claim.commit()
        thread.join(30)
    assert out == [tm.SubmitOutcome("superseded", 3, 1)]
    assert store.tasks().select("id", "queue_pos", "status").rows() == [
        (2, 2, "pending"),
        (3, 3, "pending"),
    ]
    assert store.history().select("id", "status", "attempts", "replaced_by").rows() == [
        (1, "superseded", 1, 3)
    ]
    assert store.complete(1, owner=owner) is False
    store.release_owner(owner)


def test_the_unique_index_catches_a_writer_that_bypassed_the_submit_lock(
    store: PostgresStore, pg_url: str
) -> None:
    """A row inserted without the submit lock, committed while a submit of its key was
    inserting: the submit meets the unique index, runs again and sees that task.  The id
    it had drawn is not handed out again (a gap: ids are never reused)."""
    with psycopg.connect(pg_url) as rogue:
        rogue.execute(
            "INSERT INTO taskmill.tasks (id, task_type, dedup_key, priority, queue_pos, "
            "created_at, key_hash) VALUES (nextval('taskmill.task_ids'), 't', 'k', 9, 1, 0, %s)",
            (key_hash("t", "k"),),
        )
        thread, out = _in_thread(lambda: store.submit(tm.TaskSubmission("t", dedup_key="k")))
        _until_taskmill_waits_for_a_lock(pg_url)
        rogue.commit()
        thread.join(30)
    assert out == [tm.SubmitOutcome("deduplicated", 1)]
    assert store.tasks().select("id", "dedup_key", "priority").rows() == [(1, "k", 9)]
    assert store.submit(tm.TaskSubmission("t", dedup_key="other")).task_id == 3
    assert store.integrity_check() == "ok"


def test_of_two_calls_finishing_one_task_only_the_first_records_it(
    store: PostgresStore, pg_url: str
) -> None:
    """A cancel that meets a finish in flight waits for it, then finds the task gone."""
    store.submit(tm.TaskSubmission("t", dedup_key="a"))
    with psycopg.connect(pg_url) as first:  # another worker's finish, not yet committed
        first.execute(
            queries()["finish"],
            {
                "ids": [1],
                "attempts": None,
                "replaced_by": None,
                "owner": None,
                "status": "completed",
                "error": None,
                "now": 1.0,
            },
        )
        thread, out = _in_thread(lambda: store.cancel(1))
        _until_taskmill_waits_for_a_lock(pg_url)
        first.commit()
        thread.join(30)
    assert out == [None]
    assert store.history().select("id", "status").rows() == [(1, "completed")]
    assert store.integrity_check() == "ok"


def test_a_renewal_in_flight_keeps_its_tasks_from_recovery(
    store: PostgresStore, pg_url: str
) -> None:
    """Recovery found the lease out, but the worker was renewing at that moment: recovery
    waits for the renewal, and then leaves the worker its tasks."""
    store.submit(tm.TaskSubmission("t", dedup_key="a"))
    remote = "elsewhere:4242:0123456789ab"
    store.register(remote, lease_timeout=30.0)
    store.claim(1, task_types=["t"], owner=remote)
    later = time.time() + 60
    with psycopg.connect(pg_url) as renewal:  # the worker's renewal, not yet committed
        renewal.execute(
            "UPDATE taskmill.workers SET heartbeat_at = %s WHERE owner = %s", (later, remote)
        )
        thread, out = _in_thread(lambda: store.recover(now=later - 1))
        _until_taskmill_waits_for_a_lock(pg_url)
        renewal.commit()
        thread.join(30)
    assert out == [0]
    assert store.owned_tasks(remote) == [1]
    assert store.renew(remote)
    # once it really stops renewing, the tasks go back
    assert store.recover(now=time.time() + 120) == 1
    assert not store.renew(remote)


# ---------------------------------------------------------------- errors and connections


def test_a_submit_that_waits_too_long_for_the_submit_lock_is_store_locked(pg_url: str) -> None:
    with PostgresStore.open(pg_url, busy_timeout=0.2) as store:
        with psycopg.connect(pg_url) as other:
            other.execute("SELECT pg_advisory_xact_lock(%s)", (SUBMIT_LOCK,))
            store.submit(tm.TaskSubmission("t"))  # no key: nothing to decide, no lock
            with pytest.raises(tm.StoreLocked, match="lock timeout") as err:
                store.submit(tm.TaskSubmission("t", dedup_key="k"))
            assert err.value.kind == "store"
            other.rollback()
        assert store.submit(tm.TaskSubmission("t", dedup_key="k")).task_id == 2


def test_a_claim_counting_group_limits_waits_for_the_claim_lock(pg_url: str) -> None:
    with PostgresStore.open(pg_url, busy_timeout=0.2) as store:
        store.submit(tm.TaskSubmission("t", group="g"))
        store.submit(tm.TaskSubmission("t", group="g"))
        owner = store.new_owner()
        with psycopg.connect(pg_url) as other:
            other.execute("SELECT pg_advisory_xact_lock(%s)", (CLAIM_LOCK,))
            with pytest.raises(tm.StoreLocked):
                store.claim(1, task_types=["t"], owner=owner, group_limits={"g": 1})
            with pytest.raises(tm.StoreLocked):
                store.claim(1, task_types=["t"], owner=owner, default_group_limit=1)
            # counting no limit, a claim needs no lock: SKIP LOCKED keeps claims apart
            assert [c.id for c in store.claim(1, task_types=["t"], owner=owner)] == [1]
            other.rollback()
        assert store.claim(1, task_types=["t"], owner=owner, group_limits={"g": 1}) == []
        assert store.claim(1, task_types=["t"], owner=owner, group_limits={"g": 2})[0].id == 2
        store.release_owner(owner)


def test_a_lost_connection_is_opened_again(store: PostgresStore, pg_url: str) -> None:
    store.submit(tm.TaskSubmission("t", dedup_key="a"))
    assert store.counts()["pending"] == 1  # the read connection is open too
    killed = raw(
        pg_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE application_name = 'taskmill' AND datname = current_database()",
    )
    assert killed == [(True,), (True,)]
    # nothing had been sent on the dead connections: each call opens a new one and goes on
    assert store.counts()["pending"] == 1
    assert store.submit(tm.TaskSubmission("t", dedup_key="b")).action == "submitted"
    assert store.tasks()["dedup_key"].to_list() == ["a", "b"]


# ---------------------------------------------------------------- the scheduler on it
# test_scheduler.py runs the scheduler on both backends from a location; here it is
# given an open PostgresStore object.


async def test_a_scheduler_supersedes_a_running_task_on_postgres(pg_url: str) -> None:
    started = asyncio.Event()
    flags: list[bool] = []
    payloads: list[bytes | None] = []

    async def slow(ctx: tm.TaskContext) -> None:
        payloads.append(ctx.payload)
        if ctx.payload == b'"v1"':
            started.set()
            try:
                await asyncio.sleep(30)
            finally:
                flags.append(ctx.cancelled)

    with PostgresStore.open(pg_url) as store:
        async with tm.Scheduler(store, executors={"t": slow}) as sched:
            events = sched.subscribe()
            first = await sched.submit(tm.TaskSubmission("t", dedup_key="k", payload="v1"))
            await asyncio.wait_for(started.wait(), 10)
            second = await sched.submit(
                tm.TaskSubmission("t", dedup_key="k", payload="v2", on_duplicate="supersede")
            )
            await sched.wait_idle(timeout=10)
            got = events.drain()
        hist = store.history().sort("id")
        assert store.integrity_check() == "ok"
    assert flags == [True]
    assert payloads == [b'"v1"', b'"v2"']
    assert hist.select("id", "status", "replaced_by").rows() == [
        (first.task_id, "superseded", second.task_id),
        (second.task_id, "completed", None),
    ]
    sup = [e for e in got if isinstance(e, tm.TaskSuperseded)]
    assert [(e.task_id, e.replaced_by, e.was_running) for e in sup] == [
        (first.task_id, second.task_id, True)
    ]
