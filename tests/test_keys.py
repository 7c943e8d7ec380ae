"""The compact unique key: a 64-bit hash of ``(task_type, dedup_key)`` under the active-key
index, the text kept as the truth.  Collisions are forced (a stored hash rewritten, or a
weak hash put in DuckDB's place at the staging interface) to test the collision rule:
the newcomer fails with kind ``key_collision`` and the store is left as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import polars as pl
import pytest

import taskmill as tm
from taskmill.store import batch as staging
from taskmill.store.keys import DUCKDB_KEY_HASH, key_hash

from conftest import assert_store_consistent, raw_sql

KEYS = [
    ("sync.upload", "s3://eu-west-1/data/part-1.parquet"),
    ("sync.upload", "s3://eu-west-1/data/part-2.parquet"),
    ("ab", "c"),
    ("a", "bc"),
    ("é", "ü∂ 🚀 key"),
    ("t", "x" * 1000),
    ("sync.copy", None),
]


def test_the_definition() -> None:
    digest = hashlib.md5(b"11:sync.uploads3://b/k").digest()
    assert key_hash("sync.upload", "s3://b/k") == int.from_bytes(digest[:8], "big", signed=True)
    assert key_hash("t", None) is None
    assert key_hash("ab", "c") != key_hash("a", "bc")  # the length prefix separates them


def test_duckdb_computes_the_same_hash_as_python() -> None:
    con = duckdb.connect()
    frame = pl.DataFrame(KEYS, schema=["task_type", "dedup_key"], orient="row")
    con.register("frame", frame.to_arrow())
    got = [h for (h,) in con.execute(f"SELECT {DUCKDB_KEY_HASH} FROM frame").fetchall()]
    assert got == [key_hash(t, k) for t, k in KEYS]
    # both signs occur: the wrap to negative is exercised
    many = pl.DataFrame({"task_type": ["t"] * 200, "dedup_key": [f"k{i}" for i in range(200)]})
    con.register("many", many.to_arrow())
    hashes = [h for (h,) in con.execute(f"SELECT {DUCKDB_KEY_HASH} FROM many").fetchall()]
    assert hashes == [key_hash("t", f"k{i}") for i in range(200)]
    assert min(hashes) < 0 < max(hashes)


def test_stored_hashes_match_for_single_and_batch_submits(tmp_path: Path) -> None:
    with tm.TaskStore.open(tmp_path / "s.db") as store:
        store.submit(tm.TaskSubmission("one", dedup_key="a"))
        store.submit(tm.TaskSubmission("one"))
        store.submit_batch(pl.DataFrame(KEYS, schema=["task_type", "dedup_key"], orient="row"))
        rows = store.driver.conn.execute(
            "SELECT task_type, dedup_key, key_hash FROM tasks"
        ).fetchall()
        assert len(rows) == 2 + len(KEYS)
        assert all(h == key_hash(t, k) for t, k, h in rows)
        assert_store_consistent(store)


def _collide(db: Path, task_id: int, task_type: str, dedup_key: str) -> None:
    """Give active task ``task_id`` the key hash of another key (a forced collision)."""
    raw_sql(
        db, f"UPDATE tasks SET key_hash = {key_hash(task_type, dedup_key)} WHERE id = {task_id}"
    )


@pytest.fixture
def collided(tmp_path: Path) -> Path:
    """A store whose one task (key 'a') carries the hash of key 'b'."""
    db = tmp_path / "c.db"
    with tm.TaskStore.open(db) as store:
        assert store.submit(tm.TaskSubmission("t", dedup_key="a", priority=100)).task_id == 1
    _collide(db, 1, "t", "b")
    return db


def _only_task_a(store: tm.TaskStore) -> None:
    tasks = store.tasks()
    assert tasks.select("id", "dedup_key", "priority", "status").rows() == [
        (1, "a", 100, "pending")
    ]
    assert store.history().height == 0


@pytest.mark.parametrize("strategy", list(tm.DuplicateStrategy))
def test_a_single_submit_that_collides_fails_and_changes_nothing(
    collided: Path, strategy: tm.DuplicateStrategy
) -> None:
    with tm.TaskStore.open(collided) as store:
        with pytest.raises(tm.InvalidSubmission) as caught:
            store.submit(tm.TaskSubmission("t", dedup_key="b", priority=0, on_duplicate=strategy))
        assert caught.value.kind == "key_collision"
        assert caught.value.field == "dedup_key"
        assert "active task 1" in str(caught.value) and "'b'" in str(caught.value)
        _only_task_a(store)
        # other keys go on as usual
        assert store.submit(tm.TaskSubmission("t", dedup_key="c")).action == "submitted"


@pytest.mark.parametrize("strategy", ["skip", "supersede", "reject"])
def test_a_batch_row_that_collides_with_the_store_fails_alone(
    collided: Path, strategy: str
) -> None:
    plan = pl.DataFrame(
        {
            "task_type": ["t", "t", "t"],
            "dedup_key": ["b", "c", "b"],
            "priority": [5, 5, 0],
            "on_duplicate": [strategy] * 3,
        }
    )
    with tm.TaskStore.open(collided) as store:
        planned = store.plan_batch(plan)
        out = store.submit_batch(plan)
        for result in (planned, out):
            rows = result.to_polars().select("index", "action", "reason", "task_id").rows()
            assert rows == [
                (0, "failed", "key_collision", None),
                (1, "submitted", None, 2),
                (2, "failed", "key_collision", None),
            ]
        failed = dict(out.failed)
        assert set(failed) == {0, 2}
        assert all(isinstance(e, tm.InvalidSubmission) for e in failed.values())
        assert failed[2].kind == "key_collision" and failed[2].field == "dedup_key"
        assert "active task 1" in str(failed[2])
        tasks = store.tasks().sort("id")
        assert tasks.select("id", "dedup_key", "priority").rows() == [(1, "a", 100), (2, "c", 5)]
        assert store.history().height == 0


def test_two_keys_of_one_batch_that_collide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A weak hash (the key's length) in DuckDB's place: 'k1' and 'k2' collide; the earlier
    row goes in, the later fails, and the earlier rows of its key share its fate."""
    monkeypatch.setattr(staging, "DUCKDB_KEY_HASH", "CAST(strlen(dedup_key) AS BIGINT)")
    plan = pl.DataFrame({"task_type": ["t"] * 5, "dedup_key": ["k1", "k2", "long", "k1", None]})
    with tm.TaskStore.open(tmp_path / "w.db") as store:
        out = store.submit_batch(plan)
        rows = out.to_polars().select("index", "action", "reason", "task_id").rows()
        assert rows == [
            (0, "failed", "key_collision", None),
            (1, "submitted", None, 1),
            (2, "submitted", None, 2),
            (3, "failed", "key_collision", None),
            (4, "submitted", None, 3),
        ]
        assert "row 1" in dict(out.failed)[3].args[0]
        tasks = store.tasks().sort("id")
        assert tasks.select("id", "dedup_key").rows() == [(1, "k2"), (2, "long"), (3, None)]
        assert_store_consistent(store, key_hashes=False)  # the hashes are the weak ones
