"""Shared test setup: store fixtures, the environment of test subprocesses, the store
invariants most tests check, and what a test needs of the machine."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest

import taskmill as tm

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
#: The environment of every test subprocess: this checkout's taskmill first.
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
#: Under CI every test must run: a missing tool is a failure there, not a skip.
IN_CI = bool(os.environ.get("CI"))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tasks.db"


#: The backends a module marked ``pytest.mark.backends(...)`` runs on.
BACKENDS = ("sqlite", "postgres")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "backends(*names): run this module's tests that take the `location` (or `store`) "
        "fixture once per backend named (sqlite, postgres)",
    )
    config.addinivalue_line(
        "markers",
        "sqlite_only(reason): the test is about SQLite files (raw SQL on the file, its "
        "locking, WAL, staging files beside it...): it runs on SQLite only, whatever "
        "backends its module runs on",
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """The one parametrisation of the backend: ``location`` (and what builds on it,
    ``store``) is a SQLite path or a PostgreSQL URL, per the module's ``backends`` marker;
    a test marked ``sqlite_only`` — which must give its reason — gets SQLite alone."""
    only = metafunc.definition.get_closest_marker("sqlite_only")
    if only is not None and not (only.args or only.kwargs.get("reason")):
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: sqlite_only needs a reason")
    marker = metafunc.definition.get_closest_marker("backends")
    if marker is None:
        return  # a module that does not ask for backends: SQLite, ids as they were
    if only is None and "db_path" in metafunc.fixturenames:
        raise pytest.UsageError(
            f"{metafunc.definition.nodeid}: db_path is a SQLite file; in a module run on "
            "several backends take `location`, or mark the test sqlite_only with a reason"
        )
    if "location" not in metafunc.fixturenames:
        return
    names = ("sqlite",) if only is not None else marker.args
    metafunc.parametrize("location", names, indirect=True, ids=list(names))


@pytest.fixture
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where the store of a test is: a SQLite file in tmp_path, or the URL of a fresh
    database on the test's PostgreSQL server holding an empty store (``pg_store_url``;
    see ``pytest_generate_tests``)."""
    backend = getattr(request, "param", "sqlite")
    if backend == "sqlite":
        return tmp_path / "tasks.db"
    if backend == "postgres":
        return request.getfixturevalue("pg_store_url")
    raise ValueError(f"unknown backend {backend!r}")


def is_postgres(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(("postgresql://", "postgres://"))


@pytest.fixture
def store(location: str | Path) -> Iterator[tm.TaskStore]:
    with tm.TaskStore.open(location) as s:
        yield s


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    """One throwaway PostgreSQL server for the whole test run (testing/pgserver.py), its
    files in memory when the machine has room for them (:func:`_memory_folder`).

    A server that cannot start ends the run with one error naming the cause, rather than
    an error for every PostgreSQL test."""
    from taskmill.pgserver import PostgresNotFound, PostgresUnreachable, ThrowawayPostgres

    server = ThrowawayPostgres(parent=_memory_folder())
    try:
        server.start()
    except (PostgresNotFound, PostgresUnreachable, OSError, subprocess.SubprocessError) as exc:
        detail = getattr(exc, "stderr", None) or ""
        pytest.exit(
            f"the throwaway PostgreSQL server of the tests did not start: {exc}\n{detail}",
            returncode=1,
        )
    try:
        yield server
    finally:
        server.stop()


#: The database every ``pg_store_url`` is cloned from: an empty store of the current
#: schema, made once per session (see ``pg_template``).
PG_TEMPLATE = "taskmill_template"


@pytest.fixture(scope="session")
def pg_template(pg_server: Any) -> str:
    """The name of a template database holding an empty taskmill store of the current
    schema, made once per session: a test's store database is a copy of it rather than an
    empty database whose schema (tables, indexes, trigger functions) each test's first
    ``TaskStore.open`` would create again.  Nothing is ever written to it (its id sequence
    is untouched: a copy's first task is id 1), and no one may connect to it."""
    url = pg_server.create_database(PG_TEMPLATE)
    tm.TaskStore.open(url).close()
    run_sql(
        pg_server.url(),
        f"ALTER DATABASE {PG_TEMPLATE} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false",
    )
    return PG_TEMPLATE


def _test_database(
    server: Any, request: pytest.FixtureRequest, template: str | None = None
) -> Iterator[str]:
    """A new database on the test server named after the test (a copy of ``template``,
    else empty); yields its URL, then drops it.

    Dropped at once (some 15 ms), the server keeps only the databases of the tests that
    are running, which a folder in memory can hold; left to the end of the run, the
    hundreds of databases of a run (8 MB each) were written out to disk, then deleted
    with the server's folder (15-20 s a hundred on the CI machine's ext4)."""
    import re

    import psycopg
    from psycopg import sql

    name = re.sub(r"\W", "_", request.node.name.lower())[:40] + f"_{os.getpid()}"
    name += f"_{next(_databases)}"
    create = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        create += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with psycopg.connect(server.url(), autocommit=True) as conn:
        conn.execute(create)
    yield server.url(name)
    _drop_database(server, name)


def _drop_database(server: Any, name: str) -> None:
    """Drop a test's database, cutting off whatever is still connected to it (a store the
    test left open, a worker it started); a database that cannot be dropped (the server
    is down) stays until the server is thrown away."""
    import psycopg
    from psycopg import sql

    drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    try:
        with psycopg.connect(server.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(drop)
    except psycopg.Error:
        pass


#: The room a folder in memory must have left for the test server to use it: the server
#: holds the template, the databases of the tests running and of the few that keep theirs
#: (8 MB each), and its write-ahead log.
MEMORY_ROOM = 4 << 30


def _memory_folder() -> str | None:
    """``/dev/shm`` (a tmpfs) when it has :data:`MEMORY_ROOM` free, else None (the
    system's temporary folder).

    Every test's database is a file-by-file copy of a template (some 300 files, 8 MB):
    on a disk file system each copy took 200-350 ms on the CI machine (ext4, shared with
    other jobs' writes), in memory 30 ms."""
    try:
        stat = os.statvfs("/dev/shm")
    except OSError:
        return None
    return "/dev/shm" if stat.f_bavail * stat.f_frsize >= MEMORY_ROOM else None


@pytest.fixture
def pg_url(pg_server: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty database on the test server (for tests of what taskmill finds in a
    database: none of its schema, an older one, a user's own tables)."""
    yield from _test_database(pg_server, request)


@pytest.fixture
def pg_store_url(pg_server: Any, pg_template: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the test server holding an empty taskmill store (a copy of
    ``pg_template``): what ``location`` is on PostgreSQL."""
    yield from _test_database(pg_server, request, pg_template)


_databases = itertools.count()


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plans read from files and streams take the path of large plans (a private file of
    checked rows, read back per chunk) however small they are."""
    from taskmill.batch import prepare as plan_module

    monkeypatch.setattr(plan_module, "IN_MEMORY_ROWS", 0)


def run_py(code: str, **kwargs: object) -> subprocess.Popen:
    """Start ``python -c code`` (dedented) with this checkout's taskmill."""
    return subprocess.Popen([PYTHON, "-c", textwrap.dedent(code)], env=ENV, **kwargs)  # type: ignore[call-overload]


def assert_store_consistent(
    store: tm.TaskStore, *, key_hashes: bool = True
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The invariants every store keeps (either backend): the integrity check passes, no two active
    tasks share a key, each active task's key hash is the hash of its key, no id is both
    active and finished.  Returns (tasks, history)."""
    from taskmill.store.keys import key_hash

    assert store.integrity_check() == "ok"
    if key_hashes:
        select = "SELECT task_type, dedup_key, key_hash FROM "
        url = getattr(store.driver, "_url", None)
        if url is not None:  # a PostgresStore
            rows = run_sql(url, select + table(url, "tasks"))
        else:
            rows = store.driver.conn.execute(select + "tasks").fetchall()
        for task_type, dedup_key, hashed in rows:
            assert hashed == key_hash(task_type, dedup_key), (task_type, dedup_key, hashed)
    active = store.tasks()
    history = store.history()
    keyed = active.filter(pl.col("dedup_key").is_not_null()).select("task_type", "dedup_key")
    assert keyed.is_duplicated().sum() == 0, "two active tasks share a key"
    assert active["id"].n_unique() == active.height
    assert history["id"].n_unique() == history.height
    assert not set(active["id"].to_list()) & set(history["id"].to_list())
    # every recorded attempt is of a task the store holds, and counted as it says: one
    # that was a try (completed, failed) never past the task's count; one that was not
    # (released, lost: the next one carries its number again) at most one past it
    held = dict(zip(active["id"], active["attempts"], strict=True))
    held.update(zip(history["id"], history["attempts"], strict=True))
    tried = store.attempts()
    for task_id, attempt, outcome in tried.select("task_id", "attempt", "outcome").iter_rows():
        assert task_id in held, f"attempt of task {task_id}, which the store does not hold"
        extra = 1 if outcome in ("released", "lost") else 0
        assert attempt <= held[task_id] + extra, (task_id, attempt, outcome, held[task_id])
    return active, history


def need(ok: bool, what: str, how: str) -> None:
    """Skip a test whose machine lacks ``what`` (saying ``how`` to get it) — except
    under CI, where the test must run and fails instead."""
    if ok:
        return
    message = f"needs {what}; {how}"
    if IN_CI:
        pytest.fail(f"{message} (CI is set: .ci/run must provide it)")
    pytest.skip(message)


def can_mount() -> bool:
    """Whether this process may mount a tmpfs (root, with mount(8) and the right)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", folder], capture_output=True
        )
        if done.returncode != 0:
            return False
        subprocess.run(["umount", folder], capture_output=True)
    return True


def raw_sql(db: Path, statement: str) -> None:
    """Run one statement on a store file through plain sqlite3 (a fault a test injects,
    or a state it sets up) and commit it."""
    import sqlite3

    conn = sqlite3.connect(db)
    try:
        conn.execute(statement)
        conn.commit()
    finally:
        conn.close()


def table(location: str | Path, name: str) -> str:
    """The name of the store table ``name`` (tasks, history…) in SQL on ``location``:
    PostgreSQL keeps taskmill's tables in the schema ``taskmill``."""
    return f"taskmill.{name}" if is_postgres(location) else name


def worker_process(
    location: str | Path,
    folder: Path,
    *options: str,
    stdout: int = subprocess.DEVNULL,
) -> subprocess.Popen[str]:
    """A real ``taskmill worker`` process on ``location`` with ``options`` (its
    ``--executor``/``--finalizer`` modules importable from ``folder``), stderr piped."""
    env = {**ENV, "PYTHONPATH": f"{folder}{os.pathsep}{ENV.get('PYTHONPATH', '')}"}
    args = [PYTHON, "-m", "taskmill", "worker", "--db", str(location), *options]
    return subprocess.Popen(args, env=env, stdout=stdout, stderr=subprocess.PIPE, text=True)


def run_sql(location: str | Path, statement: str, params: Any = ()) -> list[tuple]:
    """Run one statement on a store outside taskmill, through the backend's own driver
    (sqlite3 on the file, psycopg on the database), and commit it; returns its rows.
    Parameters are ``?`` on SQLite, ``%s`` on PostgreSQL."""
    if is_postgres(location):
        import psycopg

        with psycopg.connect(str(location), autocommit=True) as conn:
            cur = conn.execute(statement, params or None)
            return cur.fetchall() if cur.description else []
    import sqlite3

    conn = sqlite3.connect(location)
    try:
        got = conn.execute(statement, params).fetchall()
        conn.commit()
        return got
    finally:
        conn.close()


#: The tables a property test empties between examples (the sequence of ids is owned by
#: taskmill.tasks.id, so RESTART IDENTITY starts it again at 1).
_PG_TABLES = (
    "taskmill.tasks, taskmill.history, taskmill.workers, taskmill.attempts, taskmill.batches, "
    "taskmill.task_deps"
)


@pytest.fixture
def empty_store(
    location: str | Path,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Callable[[str], tm.TaskStore]:
    """``empty_store(name)`` opens an empty store, anew on every call — for hypothesis
    tests, whose examples all run inside one test.  On SQLite a new file each time; on
    PostgreSQL one database per name for the whole test (a copy of ``pg_template``),
    emptied (TRUNCATE … RESTART IDENTITY) before each use, as a fresh database per example
    would be far too slow."""
    if not is_postgres(location):

        def fresh_file(name: str) -> tm.TaskStore:
            return tm.TaskStore.open(tmp_path_factory.mktemp("example") / f"{name}.db")

        return fresh_file

    server = request.getfixturevalue("pg_server")
    template = request.getfixturevalue("pg_template")
    urls: dict[str, str] = {"": str(location)}

    def emptied(name: str) -> tm.TaskStore:
        if name not in urls:
            databases = _test_database(server, request, template)
            urls[name] = next(databases)
            request.addfinalizer(lambda: next(databases, None))  # drops it
        store = tm.TaskStore.open(urls[name])
        run_sql(urls[name], f"TRUNCATE {_PG_TABLES} RESTART IDENTITY")
        return store

    return emptied


def refuse_key(location: str | Path, key: str | None) -> None:
    """A trigger that refuses to insert the task of ``key``, or every task when ``key`` is
    None (a real failure of the store)."""
    test = "true" if key is None else f"NEW.dedup_key = '{key}'"
    if is_postgres(location):
        run_sql(
            location,
            f"""CREATE FUNCTION fail_once() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF {test} THEN RAISE EXCEPTION 'disk says no'; END IF;
                    RETURN NEW;
                END $$""",
        )
        run_sql(
            location,
            "CREATE TRIGGER fail_once BEFORE INSERT ON taskmill.tasks "
            "FOR EACH ROW EXECUTE FUNCTION fail_once()",
        )
    else:
        run_sql(
            location,
            f"""CREATE TRIGGER fail_once BEFORE INSERT ON tasks
                WHEN {test} BEGIN SELECT RAISE(ABORT, 'disk says no'); END""",
        )


def allow_key(location: str | Path) -> None:
    """Drop the trigger of :func:`refuse_key`."""
    if is_postgres(location):
        run_sql(location, "DROP TRIGGER fail_once ON taskmill.tasks")
        run_sql(location, "DROP FUNCTION fail_once()")
    else:
        run_sql(location, "DROP TRIGGER fail_once")


def staged(location: str | Path) -> list[str]:
    """What a batch staged and left behind: files beside a SQLite store, tables in the
    schema ``taskmill`` of a PostgreSQL one."""
    if is_postgres(location):
        rows = run_sql(
            location,
            "SELECT tablename FROM pg_tables WHERE schemaname = 'taskmill' "
            "AND tablename LIKE 'stage%'",
        )
        return [r[0] for r in rows]
    return [p.name for p in Path(location).parent.glob(".*.stage-*")]


def fail_now(store: tm.TaskStore, *subs: tm.TaskSubmission) -> list[int]:
    """Submit, run and fail these tasks for good; returns their ids."""
    ids = [store.submit(sub).task_id for sub in subs]
    owner = store.new_owner()
    claimed = store.claim(len(ids), task_types={s.task_type for s in subs}, owner=owner)
    assert sorted(t.id for t in claimed) == sorted(ids)
    for task_id in ids:
        assert store.fail(task_id, owner=owner, error="boom", retry_at=None) == "failed"
    store.release_owner(owner)
    return ids


#: Debian's Chromium, as the browser tests start it (headless, and none of its calls
#: home: this machine's closed network refuses them).
CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
