"""TaskStore on both backends (a SQLite file, a PostgreSQL database): opening, single
submit semantics, history, queries.  What is about SQLite files alone is marked
``sqlite_only``."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import polars as pl
import pytest

import taskmill as tm
from taskmill.store.sql import SCHEMA_VERSION, queries, schema

from conftest import is_postgres, run_sql, table

pytestmark = pytest.mark.backends("sqlite", "postgres")


def ids(df: pl.DataFrame) -> list[int]:
    return df["id"].to_list()


# ---------------------------------------------------------------- opening


def test_open_creates_an_empty_store_and_reopening_keeps_it(location: str | Path) -> None:
    with tm.TaskStore.open(location) as store:
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
    # reopening an existing store works and keeps it
    with tm.TaskStore.open(location) as store:
        store.submit(tm.TaskSubmission("t"))
    with tm.TaskStore.open(location) as store:
        assert store.counts()["pending"] == 1


@pytest.mark.sqlite_only("the file's journal mode, PRAGMA user_version and sqlite_master")
def test_open_makes_a_wal_file_with_schema_and_version(db_path: Path) -> None:
    tm.TaskStore.open(db_path).close()
    conn = sqlite3.connect(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"tasks", "history", "taskmill_meta"} <= tables
    conn.close()


@pytest.mark.sqlite_only("the SQLite store's schema.sql and queries.sql")
def test_schema_and_queries_are_readable_sql() -> None:
    assert "CREATE TABLE tasks" in schema()
    assert {"claim_candidates", "finish_to_history", "insert_task"} <= set(queries())


def _snapshot(path: Path) -> bytes:
    return path.read_bytes()


@pytest.mark.sqlite_only("a foreign SQLite file (tests/test_postgres_store.py: a foreign schema)")
def test_foreign_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
    conn.execute("INSERT INTO customers VALUES (1, 'ada')")
    conn.commit()
    conn.close()
    before = _snapshot(path)
    with pytest.raises(tm.SchedulerError, match="not a taskmill store") as err:
        tm.TaskStore.open(path)
    assert err.value.kind == "store"
    assert "customers" in str(err.value)
    assert _snapshot(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


@pytest.mark.sqlite_only("a file that is not a SQLite database")
def test_non_sqlite_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("this is not a database, just some text that is long enough " * 20)
    before = _snapshot(path)
    with pytest.raises(tm.SchedulerError, match="not a SQLite database") as err:
        tm.TaskStore.open(path)
    assert err.value.kind == "store"
    assert _snapshot(path) == before


@pytest.mark.sqlite_only(
    "PRAGMA user_version and the file's bytes (PostgreSQL: test_postgres_store)"
)
def test_newer_schema_is_refused_untouched(db_path: Path) -> None:
    tm.TaskStore.open(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = _snapshot(db_path)
    with pytest.raises(tm.SchedulerError, match="newer than this taskmill") as err:
        tm.TaskStore.open(db_path)
    assert err.value.kind == "store"
    assert _snapshot(db_path) == before


@pytest.mark.sqlite_only("the folder of a store file")
def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(tm.SchedulerError, match="does not exist") as err:
        tm.TaskStore.open(tmp_path / "nope" / "tasks.db")
    assert str(tmp_path / "nope") in str(err.value)
    assert not (tmp_path / "nope").exists()


def test_closed_store_says_so(location: str | Path) -> None:
    store = tm.TaskStore.open(location)
    store.close()
    store.close()  # idempotent
    with pytest.raises(tm.SchedulerError, match="closed"):
        store.counts()
    with pytest.raises(tm.StoreError, match="closed"):
        store.submit(tm.TaskSubmission("t"))


async def test_the_store_is_a_task_store_whatever_the_engine(location: str | Path) -> None:
    with tm.TaskStore.open(location) as store:
        assert isinstance(store, tm.TaskStore)
        # nothing a user calls needs the engine's class: its public names are the face's
        # (but SQLite's raw connection, for SQLite-only tools)
        extra = {n for n in dir(type(store)) if not n.startswith("_")} - set(dir(tm.TaskStore))
        assert extra <= {"conn"}
        async with tm.Scheduler(store, executors={}) as sched:
            assert sched.store is store
    async with tm.Scheduler(location, executors={}) as sched:
        assert isinstance(sched.store, tm.TaskStore)
    assert not {"SqliteStore", "PostgresStore"} & set(dir(tm))


def test_the_face_is_abstract_and_importable_from_its_old_places() -> None:
    from taskmill.store import TaskStore as from_store
    from taskmill.store.sqlite import TaskStore as from_sqlite

    assert from_store is from_sqlite is tm.TaskStore
    with pytest.raises(TypeError):
        tm.TaskStore()  # type: ignore[abstract]
    with pytest.raises(tm.SchedulerError, match="not object") as err:
        tm.Scheduler(object(), executors={})  # type: ignore[arg-type]
    assert err.value.kind == "invalid_argument"


# ---------------------------------------------------------------- submit


def test_submit_inserts_with_defaults(store: tm.TaskStore) -> None:
    res = store.submit(tm.TaskSubmission("sync.upload", dedup_key="a", payload={"x": 1}))
    assert (res.action, res.task_id, res.replaced_task_id) == ("submitted", 1, None)
    row = store.tasks().row(0, named=True)
    assert row["task_type"] == "sync.upload"
    assert row["dedup_key"] == "a"
    assert row["group"] is None
    assert row["priority"] == 128
    assert row["status"] == "pending"
    assert row["payload"] == b'{"x":1}'
    assert row["attempts"] == 0
    assert row["queue_pos"] == 1


def test_payload_bytes_stored_as_is(store: tm.TaskStore) -> None:
    store.submit(tm.TaskSubmission("t", payload=b"\x00\xffraw"))
    store.submit(tm.TaskSubmission("t", payload="text"))
    assert store.tasks()["payload"].to_list() == [b"\x00\xffraw", b'"text"']


def test_skip_deduplicates_and_keeps_store(store: tm.TaskStore) -> None:
    first = store.submit(tm.TaskSubmission("t", dedup_key="k", priority=100, payload=1))
    again = store.submit(tm.TaskSubmission("t", dedup_key="k", priority=200, payload=2))
    assert again == tm.SubmitOutcome("deduplicated", first.task_id)
    df = store.tasks()
    assert df.select("id", "priority", "payload").rows() == [(1, 100, b"1")]
    assert store.history().height == 0


def test_skip_upgrades_priority_of_pending(store: tm.TaskStore) -> None:
    store.submit(tm.TaskSubmission("t", dedup_key="k", priority=tm.Priority.BACKGROUND))
    res = store.submit(tm.TaskSubmission("t", dedup_key="k", priority=tm.Priority.HIGH))
    assert res == tm.SubmitOutcome("upgraded", 1)
    assert store.tasks()["priority"].to_list() == [64]
    # a less urgent duplicate changes nothing
    res = store.submit(tm.TaskSubmission("t", dedup_key="k", priority=tm.Priority.IDLE))
    assert res == tm.SubmitOutcome("deduplicated", 1)
    assert store.tasks().select("id", "priority", "queue_pos").rows() == [(1, 64, 1)]


def test_skip_does_not_upgrade_running(store: tm.TaskStore) -> None:
    store.submit(tm.TaskSubmission("t", dedup_key="k", priority=200))
    owner = store.new_owner()
    assert [c.id for c in store.claim(1, task_types=["t"], owner=owner)] == [1]
    res = store.submit(tm.TaskSubmission("t", dedup_key="k", priority=0))
    assert res == tm.SubmitOutcome("deduplicated", 1)
    assert store.tasks()["priority"].to_list() == [200]
    store.release_owner(owner)


def test_supersede_pending_takes_its_queue_place(store: tm.TaskStore) -> None:
    for key in "abc":
        store.submit(tm.TaskSubmission("t", dedup_key=key))
    res = store.submit(
        tm.TaskSubmission(
            "t", dedup_key="a", payload="new", on_duplicate=tm.DuplicateStrategy.SUPERSEDE
        )
    )
    assert res == tm.SubmitOutcome("superseded", 4, 1)
    assert store.tasks()["dedup_key"].to_list() == ["a", "b", "c"]
    assert ids(store.tasks()) == [4, 2, 3]
    assert store.tasks().select("id", "queue_pos", "payload").rows() == [
        (4, 1, b'"new"'),
        (2, 2, None),
        (3, 3, None),
    ]
    hist = store.history()
    assert hist.select("id", "status", "replaced_by").rows() == [(1, "superseded", 4)]
    # and the claim dispatches it first, in the replaced task's place
    owner = store.new_owner()
    assert [c.id for c in store.claim(3, task_types=["t"], owner=owner)] == [4, 2, 3]
    store.release_owner(owner)


def test_supersede_running_queues_normally(store: tm.TaskStore) -> None:
    for key in "ab":
        store.submit(tm.TaskSubmission("t", dedup_key=key))
    owner = store.new_owner()
    store.claim(1, task_types=["t"], owner=owner)
    res = store.submit(tm.TaskSubmission("t", dedup_key="a", on_duplicate="supersede"))
    assert res == tm.SubmitOutcome("superseded", 3, 1)
    assert ids(store.tasks()) == [2, 3]
    # the old attempt's completion changes nothing
    assert store.complete(1, owner=owner) is False
    assert store.history().select("id", "status", "attempts", "replaced_by").rows() == [
        (1, "superseded", 1, 3)
    ]
    assert store.lost_tasks([1], owner=owner) == {1: ("superseded", 3)}
    store.release_owner(owner)


def test_reject_raises_and_keeps_store(store: tm.TaskStore) -> None:
    store.submit(tm.TaskSubmission("t", dedup_key="k"))
    with pytest.raises(tm.DuplicateTask) as err:
        store.submit(tm.TaskSubmission("t", dedup_key="k", on_duplicate="reject"))
    assert err.value.kind == "duplicate"
    assert err.value.existing_task_id == 1
    assert isinstance(err.value, tm.SchedulerError)
    assert ids(store.tasks()) == [1]
    assert store.history().height == 0
    # the refused submit took no id
    assert store.submit(tm.TaskSubmission("t", dedup_key="other")).task_id == 2


def test_no_key_is_never_duplicate_and_types_are_separate(store: tm.TaskStore) -> None:
    store.submit(tm.TaskSubmission("t"))
    store.submit(tm.TaskSubmission("t"))
    store.submit(tm.TaskSubmission("t", dedup_key="k"))
    store.submit(tm.TaskSubmission("u", dedup_key="k"))
    assert ids(store.tasks()) == [1, 2, 3, 4]


def test_history_never_blocks_a_new_submission(store: tm.TaskStore) -> None:
    store.submit(tm.TaskSubmission("t", dedup_key="k"))
    owner = store.new_owner()
    store.claim(1, task_types=["t"], owner=owner)
    assert store.complete(1, owner=owner)
    res = store.submit(tm.TaskSubmission("t", dedup_key="k", on_duplicate="reject"))
    assert res == tm.SubmitOutcome("submitted", 2)
    store.release_owner(owner)


def test_uniqueness_is_enforced_by_the_database(store: tm.TaskStore, location: str | Path) -> None:
    """The unique index is on the key hash: a writer that bypasses taskmill but sets the
    hash (as it must) cannot add a second active task of a key."""
    from taskmill.store.keys import key_hash

    store.submit(tm.TaskSubmission("t", dedup_key="k"))
    if is_postgres(location):
        import psycopg

        refused: type[Exception] = psycopg.errors.UniqueViolation
        mark = "%s"
    else:
        refused, mark = sqlite3.IntegrityError, "?"
    with pytest.raises(refused, match=r"(?i)unique"):
        run_sql(
            location,
            f"INSERT INTO {table(location, 'tasks')} "
            "(task_type, dedup_key, priority, queue_pos, created_at, key_hash) "
            f"VALUES ('t', 'k', 1, 99, 0, {mark})",
            (key_hash("t", "k"),),
        )
    assert ids(store.tasks()) == [1]


def test_ids_are_never_reused(location: str | Path) -> None:
    with tm.TaskStore.open(location) as store:
        for _ in range(3):
            store.submit(tm.TaskSubmission("t"))
        owner = store.new_owner()
        claimed = store.claim(3, task_types=["t"], owner=owner)
        for task in claimed:
            store.complete(task.id, owner=owner)
        assert store.tasks().height == 0
        store.cancel(store.submit(tm.TaskSubmission("t")).task_id)
        store.release_owner(owner)
    with tm.TaskStore.open(location) as store:
        assert store.submit(tm.TaskSubmission("t")).task_id == 5
        assert ids(store.history()) == [1, 2, 3, 4]


@pytest.mark.parametrize(
    ("kwargs", "kind", "field", "message"),
    [
        ({"task_type": None}, "invalid_task_type", "task_type", "task_type is missing"),
        ({"task_type": ""}, "invalid_task_type", "task_type", "task_type is an empty string"),
        ({"task_type": 5}, "invalid_task_type", "task_type", "must be a string, got int"),
        ({"dedup_key": ""}, "invalid_dedup_key", "dedup_key", "dedup_key is an empty string"),
        ({"dedup_key": "x" * 5000}, "invalid_dedup_key", "dedup_key", "longer than 4,096"),
        ({"priority": 999}, "invalid_priority", "priority", "within 0..255, got 999"),
        ({"priority": -1}, "invalid_priority", "priority", "within 0..255, got -1"),
        ({"priority": 1.5}, "invalid_priority", "priority", "must be an integer, got float"),
        ({"priority": True}, "invalid_priority", "priority", "must be an integer, got bool"),
        ({"group": 3}, "invalid_group", "group", "group must be a string"),
        (
            {"expected_read_bytes": -5},
            "invalid_expected_bytes",
            "expected_read_bytes",
            "expected_read_bytes must be within",
        ),
        (
            {"expected_net_tx_bytes": "big"},
            "invalid_expected_bytes",
            "expected_net_tx_bytes",
            "must be an integer",
        ),
        (
            {"on_duplicate": "ignore"},
            "invalid_strategy",
            "on_duplicate",
            "one of skip, supersede, reject; got 'ignore'",
        ),
        ({"payload": {1, 2}}, "invalid_payload", "payload", "cannot be encoded as JSON"),
        ({"payload": float("nan")}, "invalid_payload", "payload", "cannot be encoded"),
        (
            {"payload": b"x" * (1024 * 1024 + 1)},
            "payload_too_large",
            "payload",
            "1,048,577 bytes, over the 1,048,576-byte limit",
        ),
        ({"max_retries": -1}, "invalid_max_retries", "max_retries", "within 0..1000"),
    ],
)
def test_bad_values_fail_at_submission_naming_the_field(
    store: tm.TaskStore, kwargs: dict, kind: str, field: str, message: str
) -> None:
    args = {"task_type": "t", **kwargs}
    sub = tm.TaskSubmission(args.pop("task_type"), **args)
    with pytest.raises(tm.InvalidSubmission) as err:
        store.submit(sub)
    assert err.value.kind == kind
    assert err.value.field == field
    assert message in str(err.value)
    assert store.tasks().height == 0


def test_payload_at_the_limit_is_accepted(store: tm.TaskStore) -> None:
    store.submit(tm.TaskSubmission("t", payload=b"x" * (1024 * 1024)))
    assert store.tasks()["payload"].bin.size().to_list() == [1024 * 1024]


# ---------------------------------------------------------------- control and queries


def test_cancel_pause_resume(store: tm.TaskStore) -> None:
    for key in "abc":
        store.submit(tm.TaskSubmission("t", dedup_key=key))
    assert store.cancel(1) == "pending"
    assert store.cancel(1) is None
    assert store.pause(2) is True
    assert store.pause(2) is False
    owner = store.new_owner()
    assert [c.id for c in store.claim(5, task_types=["t"], owner=owner)] == [3]
    assert store.resume(2) is True
    assert store.resume(2) is False
    assert [c.id for c in store.claim(5, task_types=["t"], owner=owner)] == [2]
    assert store.counts()["running"] == 2
    assert store.history().select("id", "status").rows() == [(1, "cancelled")]
    assert store.pause(3) is False  # running tasks are not paused
    store.release_owner(owner)


def test_claim_respects_group_limits_without_head_of_line_blocking(
    store: tm.TaskStore,
) -> None:
    for i in range(5):
        store.submit(tm.TaskSubmission("t", dedup_key=f"a{i}", group="A", priority=0))
    for i in range(3):
        store.submit(tm.TaskSubmission("t", dedup_key=f"b{i}", group="B", priority=200))
    store.submit(tm.TaskSubmission("t", dedup_key="n", priority=255))
    owner = store.new_owner()
    got = store.claim(
        10, task_types=["t"], owner=owner, group_limits={"A": 2}, default_group_limit=1
    )
    assert [c.dedup_key for c in got] == ["a0", "a1", "b0", "n"]
    # A's two and B's one are still running: nothing more of A or B
    assert (
        store.claim(10, task_types=["t"], owner=owner, group_limits={"A": 2}, default_group_limit=1)
        == []
    )
    # the running tasks are counted from the store, whoever runs them
    other = store.new_owner()
    b0 = next(c for c in got if c.dedup_key == "b0")
    assert store.complete(b0.id, owner=owner)
    got = store.claim(
        10, task_types=["t"], owner=other, group_limits={"A": 2}, default_group_limit=1
    )
    assert [c.dedup_key for c in got] == ["b1"]
    store.release_owner(other)
    store.release_owner(owner)


def test_claim_skips_types_without_executor_and_future_retries(store: tm.TaskStore) -> None:
    store.submit(tm.TaskSubmission("other"))
    store.submit(tm.TaskSubmission("t", dedup_key="a"))
    store.submit(tm.TaskSubmission("t", dedup_key="b"))
    owner = store.new_owner()
    [first] = store.claim(1, task_types=["t"], owner=owner)
    retry_at = time.time() + 3600
    assert store.fail(first.id, owner=owner, error="boom", retry_at=retry_at) == "retry"
    got = store.claim(5, task_types=["t"], owner=owner)
    assert [c.dedup_key for c in got] == ["b"]
    row = store.tasks(task_type="t", status="pending").row(0, named=True)
    assert (row["dedup_key"], row["attempts"], row["last_error"]) == ("a", 1, "boom")
    assert store.next_retry_at() == retry_at
    assert store.has_work(["t"]) and store.has_work(["other"]) and not store.has_work(["x"])
    # once due, it is claimed again as its second attempt
    [again] = store.claim(5, task_types=["t"], owner=owner, now=retry_at + 1)
    assert (again.dedup_key, again.attempt) == ("a", 2)
    assert store.next_retry_at() is None
    store.release_owner(owner)


def test_fail_without_retry_moves_to_history(store: tm.TaskStore) -> None:
    store.submit(tm.TaskSubmission("t", dedup_key="a", group="g", payload={"p": 1}))
    owner = store.new_owner()
    store.claim(1, task_types=["t"], owner=owner)
    assert store.fail(1, owner=owner, error="ValueError: bad", retry_at=None) == "failed"
    row = store.history().row(0, named=True)
    assert row["status"] == "failed"
    assert row["last_error"] == "ValueError: bad"
    assert row["attempts"] == 1
    assert (row["task_type"], row["dedup_key"], row["group"], row["payload"]) == (
        "t",
        "a",
        "g",
        b'{"p":1}',
    )
    assert row["finished_at"] >= row["created_at"]
    assert store.tasks().height == 0
    store.release_owner(owner)


def test_tasks_and_history_filters(store: tm.TaskStore) -> None:
    store.submit(tm.TaskSubmission("a", group="g1", priority=5))
    store.submit(tm.TaskSubmission("b", group="g2", priority=1))
    store.submit(tm.TaskSubmission("a", group="g2", priority=3))
    store.cancel(1)
    assert ids(store.tasks()) == [2, 3]  # dispatch order
    assert ids(store.tasks(task_type="a")) == [3]
    assert ids(store.tasks(group=["g1", "g2"], limit=1)) == [2]
    assert ids(store.tasks(status=[])) == []
    assert ids(store.tasks(limit=-1)) == [2, 3]  # as SQLite's LIMIT -1
    assert ids(store.history(status="cancelled")) == [1]
    assert store.history(status="completed").height == 0
    assert store.tasks()["created_at"].dtype == pl.Datetime("us", "UTC")
    assert store.integrity_check() == "ok"


@pytest.mark.sqlite_only("SQLite's read connection per thread (PostgresStore shares one reader)")
def test_read_connections_of_ended_threads_are_closed(store: tm.TaskStore) -> None:
    import threading

    def read() -> None:
        assert store.counts()["pending"] == 0

    for _ in range(20):
        t = threading.Thread(target=read)
        t.start()
        t.join()
    assert len(store.driver._readers) <= 2  # the last thread's, and maybe this one's


def test_counts_and_stats(store: tm.TaskStore) -> None:
    store.submit(tm.TaskSubmission("a", dedup_key="1", group="g1", priority=5))
    store.submit(tm.TaskSubmission("a", dedup_key="2", group="g1", priority=5))
    store.submit(tm.TaskSubmission("b", dedup_key="3", group="g2", priority=1))
    store.submit(tm.TaskSubmission("b", dedup_key="4", priority=1))
    store.submit(tm.TaskSubmission("b", dedup_key="4", priority=1, on_duplicate="supersede"))
    owner = store.new_owner()
    store.claim(1, task_types=["b"], owner=owner)  # task 3 (g2)
    store.pause(2)
    store.cancel(1)
    assert store.counts() == {
        "pending": 1,
        "running": 1,
        "paused": 1,
        "blocked": 0,
        "waiting": 0,
        "completed": 0,
        "failed": 0,
        "cancelled": 1,
        "superseded": 1,
        "expired": 0,
    }
    by_group = store.stats("group")
    assert by_group.columns == [
        "group",
        "pending",
        "running",
        "paused",
        "blocked",
        "waiting",
        "completed",
        "failed",
        "cancelled",
        "superseded",
        "expired",
        "total",
    ]
    assert by_group.rows() == [
        ("g1", 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 2),
        ("g2", 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1),
        (None, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 2),
    ]
    assert store.stats("priority").select("priority", "total").rows() == [(1, 3), (5, 2)]
    assert store.stats("task_type").select("task_type", "running", "total").rows() == [
        ("a", 0, 2),
        ("b", 1, 3),
    ]
    with pytest.raises(tm.SchedulerError, match="use group, priority or task_type") as err:
        store.stats("owner")
    assert err.value.kind == "invalid_argument"  # as every other argument (issue 21)
    store.release_owner(owner)
