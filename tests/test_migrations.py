"""Schema migrations: a store written by taskmill 0.1 is upgraded in place, keeping every
task, id, queue position and history row; a migrated schema equals a fresh one."""

from __future__ import annotations

import re
import shutil
import sqlite3
from pathlib import Path

import polars as pl
import pytest

import taskmill as tm
from taskmill.store.keys import key_hash
from taskmill.store.sql import SCHEMA_VERSION, migrations

from conftest import ROOT, assert_store_consistent

FIXTURES = ROOT / "tests" / "fixtures"
FIXTURE = FIXTURES / "store-v1.db"
FIXTURE_V2 = FIXTURES / "store-v2.db"

ACTIVE = (
    "SELECT id, task_type, dedup_key, group_name, priority, queue_pos, status, payload, "
    "label, expected_read_bytes, expected_write_bytes, expected_net_rx_bytes, "
    "expected_net_tx_bytes, max_retries, attempts, last_error, run_after, created_at "
    "FROM tasks ORDER BY id"
)


def _rows(path: Path, sql: str) -> list[tuple]:
    assert path.is_file() and path.stat().st_size > 0, f"{path} is missing"
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _schema(path: Path) -> list[tuple[str, str, str]]:
    """Every table and index, its SQL with whitespace normalised (none around
    punctuation: ``ALTER TABLE … ADD COLUMN`` writes ``REAL\n, key_hash INTEGER)``)."""
    rows = _rows(
        path,
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL "
        "AND name NOT LIKE 'sqlite_%' ORDER BY type, name",
    )
    return [(t, n, re.sub(r"\s*([(),])\s*", r"\1", " ".join(s.split()))) for t, n, s in rows]


@pytest.fixture
def v1_store(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    shutil.copy(FIXTURE, path)
    return path


def test_the_fixture_is_a_01_store() -> None:
    assert _rows(FIXTURE, "PRAGMA user_version") == [(1,)]
    assert "workers" not in {n for _, n, _ in _schema(FIXTURE)}


def test_opening_a_01_store_upgrades_it_in_place_keeping_everything(v1_store: Path) -> None:
    tasks_before = _rows(v1_store, ACTIVE)
    history_before = _rows(v1_store, "SELECT * FROM history ORDER BY id")
    seq_before = _rows(v1_store, "SELECT seq FROM sqlite_sequence WHERE name = 'tasks'")
    assert len(tasks_before) == 21 and len(history_before) == 4
    with tm.TaskStore.open(v1_store) as store:
        assert_store_consistent(store)
        # the task a 0.1 worker on another host left running holds no lease: pending again
        assert store.counts()["running"] == 0
    assert _rows(v1_store, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    after = _rows(v1_store, ACTIVE)
    recovered = [r for r in tasks_before if r[6] == "running"]
    assert [r[0] for r in recovered] == [3]
    # every task kept with its id, queue position, payload…; only the recovered one changed
    assert [r for r in after if r[0] != 3] == [r for r in tasks_before if r[0] != 3]
    [row3] = [r for r in after if r[0] == 3]
    assert row3[6] == "pending" and row3[14] == 0
    # kept as they were; schema 7 adds each one's batch_id and schema 9 its parent_id
    # last (NULL: no recorded batch, no parent)
    history_after = _rows(v1_store, "SELECT * FROM history ORDER BY id")
    assert [r[:-2] for r in history_after] == history_before
    assert [r[-2:] for r in history_after] == [(None, None)] * len(history_before)
    assert _rows(v1_store, "SELECT seq FROM sqlite_sequence WHERE name = 'tasks'") == seq_before
    # the queue order 0.1 set up still holds: the supersede kept the replaced one's place
    assert [r[0] for r in sorted(after, key=lambda r: (r[4], r[5]))][:3] == [2, 12, 15]
    with tm.TaskStore.open(v1_store) as store:
        new = store.submit(tm.TaskSubmission("sync.upload", dedup_key="new"))
        assert new.task_id == seq_before[0][0] + 1  # ids are never reused


@pytest.mark.parametrize("fixture", [FIXTURE, FIXTURE_V2], ids=["v1", "v2"])
def test_a_migrated_schema_equals_a_fresh_one(fixture: Path, tmp_path: Path) -> None:
    old = tmp_path / "old.db"
    shutil.copy(fixture, old)
    tm.TaskStore.open(old).close()
    fresh = tmp_path / "fresh.db"
    tm.TaskStore.open(fresh).close()
    assert _schema(old) == _schema(fresh)
    indexes = {n: s for t, n, s in _schema(old) if t == "index"}
    assert "(key_hash)" in indexes["tasks_active_key"] and "history_key" not in indexes


@pytest.mark.parametrize("version", [3, 4, 5])
def test_a_store_created_fresh_by_an_older_version_migrates_to_the_fresh_schema(
    version: int, tmp_path: Path
) -> None:
    """A store made by the ``schema.sql`` of an older release (kept in the fixtures, as
    released) ends, once opened, with the schema a fresh store has: a migration must
    not only extend the migrated stores of its time, but the fresh ones too."""
    old = tmp_path / "old.db"
    conn = sqlite3.connect(old)
    conn.executescript((FIXTURES / f"sqlite_schema_v{version}.sql").read_text())
    conn.execute("INSERT INTO taskmill_meta VALUES ('application', 'taskmill')")
    conn.execute(f"PRAGMA user_version = {version}")
    conn.commit()
    conn.close()
    tm.TaskStore.open(old).close()
    fresh = tmp_path / "fresh.db"
    tm.TaskStore.open(fresh).close()
    assert _rows(old, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert _schema(old) == _schema(fresh)


def test_a_schema_2_store_gets_its_key_hashes_keeping_everything(tmp_path: Path) -> None:
    db = tmp_path / "v2.db"
    shutil.copy(FIXTURE_V2, db)
    assert _rows(db, "PRAGMA user_version") == [(2,)]
    tasks_before = _rows(db, ACTIVE)
    history_before = _rows(db, "SELECT * FROM history ORDER BY id")
    seq_before = _rows(db, "SELECT seq FROM sqlite_sequence WHERE name = 'tasks'")
    assert len(tasks_before) == 62 and len(history_before) == 4
    with tm.TaskStore.open(db) as store:
        assert_store_consistent(store)  # every key hash is the hash of its key
        # keys are found through their hashes, per task type
        again = tm.TaskSubmission("sync.delete", dedup_key="a.txt", priority=255)
        assert store.submit(again).action == "deduplicated"
        out = store.submit_batch(
            pl.DataFrame(
                {"task_type": ["sync.upload", "sync.copy"], "dedup_key": ["ü/∂ 🚀.txt", "k0"]}
            )
        )
        assert out.counts()["deduplicated"] == 2
    assert _rows(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert _rows(db, ACTIVE) == tasks_before
    history_after = _rows(db, "SELECT * FROM history ORDER BY id")
    # and batch_id (schema 7), parent_id (schema 9)
    assert [r[:-2] for r in history_after] == history_before
    assert [r[-2:] for r in history_after] == [(None, None)] * len(history_before)
    assert _rows(db, "SELECT seq FROM sqlite_sequence WHERE name = 'tasks'") == seq_before
    hashes = _rows(db, "SELECT task_type, dedup_key, key_hash FROM tasks")
    assert sum(h is None for _, _, h in hashes) == 1  # the task without a key
    assert all(h == key_hash(t, k) for t, k, h in hashes)


def test_migrations_are_numbered_without_gaps() -> None:
    assert list(migrations()) == list(range(2, SCHEMA_VERSION + 1))


def test_a_failing_migration_leaves_the_store_untouched(
    v1_store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All of the upgrade or none of it: a migration that fails half-way rolls back."""
    from taskmill.store import sql

    before = v1_store.read_bytes()
    broken = {**migrations(), SCHEMA_VERSION: migrations()[SCHEMA_VERSION] + "\nBROKEN SQL;"}
    monkeypatch.setattr(sql, "migrations", lambda: broken)
    monkeypatch.setattr("taskmill.backends.sqlite.driver.migrations", lambda: broken)
    with pytest.raises(tm.SchedulerError, match="syntax error"):
        tm.TaskStore.open(v1_store)
    for suffix in ("-wal", "-shm"):
        Path(f"{v1_store}{suffix}").unlink(missing_ok=True)
    assert v1_store.read_bytes() == before
    assert _rows(v1_store, "PRAGMA user_version") == [(1,)]


#: The SHA-256 (first 16 hex digits) of every released migration, as run: its text with
#: its `-- include:` parts in place.  A released migration never changes — a store that
#: ran it would not run it again — so a change to the schema is a new migration.  This
#: matters most for the parts a migration includes (attempts.sql): editing one for a later
#: schema would change a fresh store and every migrated one alike, and the test that
#: compares them would pass while a store already at that version kept the old part.
RELEASED = {
    "sqlite": {
        2: "e002e65aa0cf2bee",
        3: "15ec6f17cd2d9ba2",
        4: "9937ea21441e3b5f",
        5: "d2bedea390ddab70",
        6: "ecdd5ccc79dffa68",
        7: "b5fcf1c90342b586",
        8: "c06e8a68dbb0ce12",
        9: "fee5d68037003eea",
        10: "82b036672d519024",
        11: "21cbc0a3aa346188",
        12: "6d0a63dc9569c83e",
        13: "f4bc4674ded19b1f",
        14: "5b43972d1d307572",
    },
    "postgres": {
        4: "134ae89966aed797",
        5: "01f8f0ca59eb25f1",
        6: "79ee5f9d135dee5e",
        7: "03590e4ca2684105",
        8: "8885b45575ef3e1b",
        9: "de3d0045f519da16",
        10: "3260661db8312efc",
        11: "71c5afc5b2546870",
        12: "c1d9ea4a1648158b",
        13: "94db9b3eb2598f7f",
        14: "a57428410fad4564",
    },
}


def test_released_migrations_never_change() -> None:
    import hashlib

    from taskmill.store.postgres.migrate import migrations as postgres_migrations

    for engine, found in (("sqlite", migrations()), ("postgres", postgres_migrations())):
        digests = {v: hashlib.sha256(t.encode()).hexdigest()[:16] for v, t in found.items()}
        changed = {v for v in RELEASED[engine] if digests.get(v) != RELEASED[engine][v]}
        assert not changed, (
            f"{engine} migration(s) {sorted(changed)} changed after release: write a new "
            "migration (and a new part file) instead"
        )
        new = sorted(set(digests) - set(RELEASED[engine]))
        assert not new, f"record the new {engine} migration(s) {new} in RELEASED: {digests}"


def test_an_include_line_gives_way_to_its_part_whole(tmp_path: Path) -> None:
    """A part stands where its include line stood, line end and all: a migration written
    as includes of the objects it creates expands to the text it was released with."""
    from taskmill.store.sql import with_includes

    (tmp_path / "part.sql").write_text("CREATE TABLE p (\n    x TEXT\n);\n")
    script = (
        "ALTER TABLE a RENAME TO b;\n-- include: part.sql\nDROP TABLE b;\n\n-- include: part.sql"
    )
    assert with_includes(script, tmp_path) == (
        "ALTER TABLE a RENAME TO b;\nCREATE TABLE p (\n    x TEXT\n);\nDROP TABLE b;\n\n"
        "CREATE TABLE p (\n    x TEXT\n);\n"
    )


@pytest.mark.parametrize("package", ["taskmill.backends.sqlite", "taskmill.backends.postgres"])
def test_every_part_is_released_text(package: str) -> None:
    """The SQL files beside ``migrations/`` other than the schema and the queries are
    parts, and each is included by a migration: its text is held by that migration's
    digest (above), so no part changes once released."""
    from importlib import resources

    folder = resources.files(package)
    parts = {
        e.name
        for e in folder.iterdir()
        if e.name.endswith(".sql") and e.name not in ("schema.sql", "queries.sql")
    }
    included = {
        name
        for e in folder.joinpath("migrations").iterdir()
        for name in re.findall(r"^-- include: (\S+)$", e.read_text(), re.MULTILINE)
    }
    assert parts and parts == included
