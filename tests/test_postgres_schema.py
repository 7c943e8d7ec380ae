"""The PostgreSQL schema and its runner, on a real server the tests start themselves:
created once under concurrent first opens, in a schema of its own beside the user's
tables, refused when newer, the key hash computed in SQL as in Python, uniqueness
enforced by PostgreSQL, and the claim walking its index with no sort."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from taskmill.store.keys import POSTGRES_KEY_HASH, key_hash
from taskmill.store.postgres.migrate import SCHEMA_VERSION, ensure_schema

from conftest import ENV

TABLES = [
    "attempts",
    "batches",
    "group_pauses",
    "history",
    "meta",
    "rate_buckets",
    "schedules",
    "task_deps",
    "task_tags",
    "tasks",
    "workers",
]


def _tables(conn: psycopg.Connection, schema: str) -> list[str]:
    rows = conn.execute(
        "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
        "ORDER BY table_name",
        (schema,),
    ).fetchall()
    return [r[0] for r in rows]


def test_a_fresh_database_gets_the_schema_once_beside_the_users_tables(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.tasks (mine text)")  # the user's own table
        conn.execute("INSERT INTO public.tasks VALUES ('keep me')")
        assert ensure_schema(conn) == 0
        assert _tables(conn, "taskmill") == TABLES
        version = conn.execute("SELECT value FROM taskmill.meta").fetchall()
        assert version == [(str(SCHEMA_VERSION),)]
        assert ensure_schema(conn) == SCHEMA_VERSION  # a second open changes nothing
        assert _tables(conn, "taskmill") == TABLES
        assert _tables(conn, "public") == ["tasks"]
        assert conn.execute("SELECT mine FROM public.tasks").fetchall() == [("keep me",)]


def test_concurrent_first_opens_create_it_exactly_once(pg_url: str) -> None:
    code = (
        "import sys, psycopg\n"
        "from taskmill.store.postgres.migrate import ensure_schema\n"
        "with psycopg.connect(sys.argv[1], autocommit=True) as c:\n"
        "    print(ensure_schema(c))\n"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, pg_url], stdout=subprocess.PIPE, text=True, env=ENV
        )
        for _ in range(4)
    ]
    found = sorted(int(p.communicate(timeout=60)[0]) for p in procs)
    assert [p.returncode for p in procs] == [0, 0, 0, 0]
    assert found == [0, SCHEMA_VERSION, SCHEMA_VERSION, SCHEMA_VERSION]


def test_a_newer_schema_is_refused_unchanged(pg_url: str) -> None:
    import taskmill as tm

    with psycopg.connect(pg_url, autocommit=True) as conn:
        ensure_schema(conn)
        conn.execute("UPDATE taskmill.meta SET value = '99' WHERE key = 'schema_version'")
        with pytest.raises(tm.SchemaTooNew, match="schema version 99, newer than this"):
            ensure_schema(conn, "the test database")
        assert conn.execute("SELECT value FROM taskmill.meta").fetchall() == [("99",)]


@pytest.mark.parametrize(
    ("task_type", "dedup_key"),
    [
        ("sync.upload", "s3://eu-west-1/photos/a.jpg"),
        ("ab", "c"),
        ("a", "bc"),
        ("sync.delete", "données/été/café ☕.jpg"),
        ("t", "x" * 1000),
    ],
)
def test_the_key_hash_in_sql_is_the_python_one(
    pg_server: object, task_type: str, dedup_key: str
) -> None:
    with psycopg.connect(pg_server.url()) as conn:  # type: ignore[attr-defined]
        sql = f"SELECT {POSTGRES_KEY_HASH} FROM (SELECT %s AS task_type, %s AS dedup_key) k"
        [(got,)] = conn.execute(sql, (task_type, dedup_key)).fetchall()
        [(none,)] = conn.execute(sql, (task_type, None)).fetchall()
    assert got == key_hash(task_type, dedup_key)
    assert none is None


def test_postgres_enforces_one_active_task_per_key_hash(pg_url: str) -> None:
    insert = (
        "INSERT INTO taskmill.tasks (task_type, dedup_key, priority, queue_pos, created_at, "
        f"key_hash) SELECT task_type, dedup_key, 100, 1, 0, {POSTGRES_KEY_HASH} "
        "FROM (SELECT %s::text AS task_type, %s::text AS dedup_key) s"
    )
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ensure_schema(conn)
        conn.execute(insert, ("up", "a"))
        conn.execute(insert, ("up", None))
        conn.execute(insert, ("up", None))  # no key: never a duplicate
        with pytest.raises(psycopg.errors.UniqueViolation, match="tasks_active_key"):
            conn.execute(insert, ("up", "a"))
        rows = conn.execute("SELECT dedup_key FROM taskmill.tasks ORDER BY id").fetchall()
        assert rows == [("a",), (None,), (None,)]


def test_the_claim_walks_its_index_with_no_sort(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        ensure_schema(conn)
        conn.execute(
            "INSERT INTO taskmill.tasks (task_type, priority, queue_pos, status, created_at) "
            "SELECT 't', i % 4 * 50, i, CASE WHEN i % 10 = 0 THEN 'running' ELSE 'pending' END, "
            "0 FROM generate_series(1, 20000) i"
        )
        conn.execute("ANALYZE taskmill.tasks")
        plan = conn.execute(
            "EXPLAIN SELECT id FROM taskmill.tasks WHERE status = 'pending' "
            "AND (run_after IS NULL OR run_after <= 1) ORDER BY priority, queue_pos, id "
            "LIMIT 16 FOR UPDATE SKIP LOCKED"
        ).fetchall()
    text = "\n".join(r[0] for r in plan)
    assert "Index Scan using tasks_claim" in text, text
    assert "Sort" not in text, text


def _structure(url: str) -> dict[str, list[tuple]]:
    """Every column, constraint, index and trigger of the taskmill schema."""
    with psycopg.connect(url) as conn:
        return {
            "columns": conn.execute(
                "SELECT table_name, column_name, data_type, is_nullable, column_default "
                "FROM information_schema.columns WHERE table_schema = 'taskmill' "
                "ORDER BY table_name, ordinal_position"
            ).fetchall(),
            "constraints": conn.execute(
                "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
                "FROM pg_constraint WHERE connamespace = 'taskmill'::regnamespace "
                "ORDER BY 1, 2"
            ).fetchall(),
            "indexes": conn.execute(
                "SELECT tablename, indexname, indexdef FROM pg_indexes "
                "WHERE schemaname = 'taskmill' ORDER BY 1, 2"
            ).fetchall(),
            "triggers": conn.execute(
                "SELECT tgname, pg_get_triggerdef(t.oid), p.prosrc FROM pg_trigger AS t "
                "JOIN pg_proc AS p ON p.oid = t.tgfoid "
                "WHERE t.tgrelid::regclass::text LIKE 'taskmill.%' AND NOT t.tgisinternal "
                "ORDER BY 1"
            ).fetchall(),
        }


def test_a_schema_3_store_is_brought_to_the_fresh_schema_keeping_its_rows(
    pg_server: object, pg_url: str
) -> None:
    import taskmill as tm

    v3 = (Path(__file__).parent / "fixtures" / "postgres_schema_v3.sql").read_text()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA taskmill")
        conn.execute(v3)
        conn.execute("INSERT INTO taskmill.meta VALUES ('schema_version', '3')")
        conn.execute(
            "INSERT INTO taskmill.tasks (task_type, dedup_key, priority, queue_pos, created_at, "
            "key_hash) VALUES ('t', 'k', 128, 1, 0, %s)",
            (key_hash("t", "k"),),
        )
        conn.execute("SELECT setval('taskmill.task_ids', 1)")
    with tm.TaskStore.open(pg_url) as store:
        assert store.tasks()["dedup_key"].to_list() == ["k"]
        # schema 4's controls work on the migrated store
        store.submit(tm.TaskSubmission("t", dedup_key="e", expires_at=1.0))
        assert store.expire_due() == 1
        assert store.history().select("dedup_key", "status").rows() == [("e", "expired")]
    fresh = pg_server.create_database(pg_url.rsplit("/", 1)[1] + "_fresh")  # type: ignore[attr-defined]
    tm.TaskStore.open(fresh).close()
    with psycopg.connect(pg_url) as conn:
        version = conn.execute("SELECT value FROM taskmill.meta").fetchone()
    assert version == (str(SCHEMA_VERSION),) and SCHEMA_VERSION == 14
    assert _structure(pg_url) == _structure(fresh)


@pytest.mark.parametrize("version", [4, 5])
def test_a_store_created_fresh_by_an_older_version_migrates_to_the_fresh_schema(
    pg_server: object, pg_url: str, version: int
) -> None:
    """As on SQLite: a store made by the ``schema.sql`` of an older release (kept in the
    fixtures) ends, once opened, with the schema a fresh store has."""
    import taskmill as tm

    old = (Path(__file__).parent / "fixtures" / f"postgres_schema_v{version}.sql").read_text()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA taskmill")
        conn.execute(old)
        conn.execute("INSERT INTO taskmill.meta VALUES ('schema_version', %s)", (str(version),))
    tm.TaskStore.open(pg_url).close()
    fresh = pg_server.create_database(pg_url.rsplit("/", 1)[1] + "_fresh")  # type: ignore[attr-defined]
    tm.TaskStore.open(fresh).close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT value FROM taskmill.meta").fetchone() == (str(SCHEMA_VERSION),)
    assert _structure(pg_url) == _structure(fresh)
