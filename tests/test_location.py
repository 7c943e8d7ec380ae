"""A store's location alone chooses its backend (``TaskStore.open``, ``Scheduler``, the
CLI's ``--db`` and ``TASKMILL_DB`` all take one)."""

from __future__ import annotations

from pathlib import Path

import pytest

import taskmill as tm
from taskmill.store.location import parse_location


@pytest.mark.parametrize(
    ("location", "kind", "where"),
    [
        ("tasks.db", "sqlite", Path("tasks.db")),
        ("/var/lib/taskmill/tasks.db", "sqlite", Path("/var/lib/taskmill/tasks.db")),
        (Path("rel/tasks.db"), "sqlite", Path("rel/tasks.db")),
        ("sqlite:///rel/tasks.db", "sqlite", Path("rel/tasks.db")),
        ("sqlite:////abs/tasks.db", "sqlite", Path("/abs/tasks.db")),
        ("a:b.db", "sqlite", Path("a:b.db")),  # a colon in a file name is still a file
        ("postgresql://u:pw@db.example:5432/q", "postgres", "postgresql://u:pw@db.example:5432/q"),
        ("postgres://u@h/q", "postgres", "postgres://u@h/q"),
        ("PostgreSQL://u@h/q", "postgres", "PostgreSQL://u@h/q"),
        ("postgresql+psycopg://u@h/q", "postgres", "postgresql://u@h/q"),
    ],
)
def test_the_location_tells_the_backend(location: object, kind: str, where: object) -> None:
    parsed = parse_location(location)  # type: ignore[arg-type]
    assert parsed.kind == kind
    assert (parsed.path if kind == "sqlite" else parsed.url) == where


@pytest.mark.parametrize("location", ["mysql://u@h/q", "s3://bucket/tasks.db", "sqlite:///"])
def test_a_location_no_backend_serves_is_refused(location: str) -> None:
    with pytest.raises(tm.StoreError, match=r"store location '.*'"):
        parse_location(location)


def test_taskstore_open_takes_every_spelling(tmp_path: Path, pg_url: str) -> None:
    from taskmill.backends.postgres.driver import PostgresDriver

    with tm.TaskStore.open(f"sqlite:///{tmp_path}/a.db") as store:  # four slashes: absolute
        assert isinstance(store, tm.TaskStore) and store.driver.path == tmp_path / "a.db"
        store.submit(tm.TaskSubmission("t", dedup_key="k"))
    with tm.TaskStore.open(tmp_path / "a.db") as store:
        assert store.tasks()["dedup_key"].to_list() == ["k"]
    for url in (pg_url, pg_url.replace("postgresql://", "postgres://", 1)):
        with tm.TaskStore.open(url) as store:
            assert isinstance(store, tm.TaskStore) and isinstance(store.driver, PostgresDriver)
            store.submit(tm.TaskSubmission("t", dedup_key="k"))  # the second: deduplicated
            assert store.tasks()["dedup_key"].to_list() == ["k"]
    with pytest.raises(tm.StoreError, match="mysql:// is not a store"):
        tm.TaskStore.open("mysql://u@h/q")
