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
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def store(db_path: Path) -> Iterator[tm.TaskStore]:
    with tm.TaskStore.open(db_path) as s:
        yield s


@pytest.fixture(scope="session")
def pg_server() -> Iterator[object]:
    """One throwaway PostgreSQL server for the whole test run (taskmill/pgserver.py)."""
    from taskmill.pgserver import ThrowawayPostgres

    with ThrowawayPostgres() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: object, request: pytest.FixtureRequest) -> str:
    """A fresh, empty database on the test server."""
    import re

    name = re.sub(r"\W", "_", request.node.name.lower())[:40] + f"_{os.getpid()}"
    name += f"_{next(_databases)}"
    return pg_server.create_database(name)  # type: ignore[attr-defined]


_databases = itertools.count()


@pytest.fixture
def streamed(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plans read from files and streams take the path of large plans (a private file of
    checked rows, read back per chunk) however small they are."""
    from taskmill import plan

    monkeypatch.setattr(plan, "IN_MEMORY_ROWS", 0)


def run_py(code: str, **kwargs: object) -> subprocess.Popen:
    """Start ``python -c code`` (dedented) with this checkout's taskmill."""
    return subprocess.Popen([PYTHON, "-c", textwrap.dedent(code)], env=ENV, **kwargs)  # type: ignore[call-overload]


def assert_store_consistent(
    store: tm.TaskStore, *, key_hashes: bool = True
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The invariants every store keeps: SQLite's integrity check passes, no two active
    tasks share a key, each active task's key hash is the hash of its key, no id is both
    active and finished.  Returns (tasks, history)."""
    from taskmill.store.keys import key_hash

    assert store.integrity_check() == "ok"
    if key_hashes:
        for task_type, dedup_key, hashed in store.conn.execute(
            "SELECT task_type, dedup_key, key_hash FROM tasks"
        ):
            assert hashed == key_hash(task_type, dedup_key), (task_type, dedup_key, hashed)
    active = store.tasks()
    history = store.history()
    keyed = active.filter(pl.col("dedup_key").is_not_null()).select("task_type", "dedup_key")
    assert keyed.is_duplicated().sum() == 0, "two active tasks share a key"
    assert active["id"].n_unique() == active.height
    assert history["id"].n_unique() == history.height
    assert not set(active["id"].to_list()) & set(history["id"].to_list())
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
