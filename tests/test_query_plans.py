"""The plans SQLite picks for the statements every batch and every claim run.

SQLite keeps no statistics in a store, so its planner goes by the shape of a statement; a
statement that reads the whole task table costs a batch merge time in proportion to the
store, not to the batch (a 300k-row plan took 4.4 s instead of 2.5 s while each chunk's
expiry sweep read every pending task).  These tests pin the index each hot statement uses.
"""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest

import taskmill as tm
from taskmill.backends.sql import q


def _plan(conn: sqlite3.Connection, name: str) -> list[str]:
    sql = q(name)
    names = re.findall(r":(\w+)", sql)
    params = {p: None for p in names} if names else [None] * sql.count("?")
    return [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


@pytest.fixture
def conn(tmp_path: Path):
    path = tmp_path / "plans.db"
    tm.TaskStore.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("ATTACH ':memory:' AS taskmill_stage")
    conn.execute(q("staging_schema").replace("CREATE TABLE s", "CREATE TABLE taskmill_stage.s"))
    conn.execute(q("batch_match_create"))
    yield conn
    conn.close()


@pytest.mark.parametrize(
    ("name", "index"),
    [
        ("expired_ids", "tasks_expiry"),  # every batch merge and every expiry sweep
        ("batch_match_fill", "tasks_active_key"),  # every staged row probes the key index
        ("find_active", "tasks_active_key"),  # every single submit
    ],
)
def test_a_hot_statement_searches_its_index(conn: sqlite3.Connection, name: str, index: str):
    plan = _plan(conn, name)
    on_tasks = [s for s in plan if re.search(r"\b(tasks|t)\b", s) and not s.startswith("SCAN s")]
    assert on_tasks, plan
    assert all(f"USING INDEX {index}" in s or f"COVERING INDEX {index}" in s for s in on_tasks), (
        plan
    )
    assert not any(step.startswith("SCAN tasks") for step in plan), plan


@pytest.mark.parametrize(
    ("name", "indexes"),
    [
        # every scheduler's sweep, as attempts end: the open batches, each probed once
        ("batches_done", ["batches_open", "tasks_batch"]),
        # store.batch(id), the widget's refresh: the batch's own tasks, active and finished
        ("batch_tallies", ["tasks_batch", "history_batch"]),
        ("batch_finish", ["tasks_batch"]),
    ],
)
def test_the_batch_statements_search_their_indexes(
    conn: sqlite3.Connection, name: str, indexes: list[str]
) -> None:
    plan = _plan(conn, name)
    for index in indexes:
        assert any(f"INDEX {index}" in step for step in plan), plan
    assert not any(re.match(r"SCAN (tasks|history|t)\b", step) for step in plan), plan
    assert _plan(conn, "batch_row") == ["SEARCH batches USING INTEGER PRIMARY KEY (rowid=?)"]


@pytest.mark.parametrize(
    ("name", "indexes"),
    [
        # every end of a task that did not complete: its active children
        ("family_children", ["tasks_parent"]),
        # every end of a child: its parent's other children, and the verdict's counts
        ("family_busy", ["tasks_parent"]),
        ("family_tallies", ["history_parent"]),
        # ctx.children, taskmill tasks: one parent's children, active and finished
        ("family_counts", ["tasks_parent", "history_parent"]),
        # a batch sealed after it stopped: the edges on rows it never merged
        ("deps_unmerged", ["task_deps_row"]),
    ],
)
def test_the_child_task_statements_search_their_indexes(
    conn: sqlite3.Connection, name: str, indexes: list[str]
) -> None:
    plan = _plan(conn, name)
    for index in indexes:
        assert any(f"INDEX {index}" in step for step in plan), plan
    assert not any(re.match(r"SCAN (tasks|history|t|d|task_deps)\b", step) for step in plan), plan


def test_aging_reads_the_queue_index_level_by_level(conn: sqlite3.Connection) -> None:
    """Claims with aging find the pending priority levels by probing tasks_queue once per
    level, then read the first tasks of each level through it."""
    from taskmill.backends.sql import at_level

    levels = _plan(conn, "pending_levels")
    assert any("tasks_queue" in step for step in levels), levels
    assert not any(re.match(r"SCAN (tasks|t)\b", step) for step in levels), levels
    sql = at_level(q("claim_candidates"))
    names = re.findall(r":(\w+)", sql)
    plan = [r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, dict.fromkeys(names))]
    assert any("USING INDEX tasks_queue (status=? AND priority=?)" in s for s in plan), plan
    assert not any("TEMP B-TREE FOR ORDER BY" in s for s in plan), plan


def test_a_tag_filter_reads_its_rarest_pair_and_checks_the_others_by_key(
    conn: sqlite3.Connection,
) -> None:
    """tasks(tags=…), history(tags=…), cancel_where(tags=…): the first pair (the rarest:
    the store orders them) through task_tags_pair, every other one a primary-key probe of
    the task it found — a common pair's tasks are never all read."""
    plan = [
        r[3]
        for r in conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE id IN " + q("fragment_tagged"),
            {"tags": '[["shard", "42"], ["env", "prod"]]'},
        )
    ]
    assert "SEARCH g USING COVERING INDEX task_tags_pair (key=? AND value=?)" in plan, plan
    assert "SEARCH o USING PRIMARY KEY (task_id=? AND key=?)" in plan, plan
    assert not any(re.match(r"SCAN (g|o|task_tags)\b", step) for step in plan), plan
    for name in ("cancel_candidates", "cancel_candidates_by_key"):
        assert "task_tags_pair" in " ".join(_plan(conn, name)), name


def _browse_plan(conn: sqlite3.Connection, **fields: Any) -> list[tuple[int, int, str]]:
    """``(id, parent, step)`` of the plan of the page of ``browse`` with ``fields``."""
    from taskmill.backends.calls import Browse
    from taskmill.backends.sqlite.driver import browse_statement
    from taskmill.columns import MAX_INT64

    statement = browse_statement(Browse(**{"before": MAX_INT64, "limit": 50, **fields}))
    assert statement is not None
    sql, params = statement
    return [(r[0], r[1], r[3]) for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params)]


@pytest.mark.parametrize(
    ("fields", "walk"),
    [
        ({}, "USING INTEGER PRIMARY KEY (rowid<?)"),
        ({"status": ["completed"], "active": False}, "USING INTEGER PRIMARY KEY (rowid<?)"),
        ({"status": ["pending"], "finished": False}, "USING INTEGER PRIMARY KEY (rowid<?)"),
        ({"task_type": ["t"], "group": ["g"]}, "USING INTEGER PRIMARY KEY (rowid<?)"),
        ({"key_prefix": "user/"}, "USING INTEGER PRIMARY KEY (rowid<?)"),
        ({"batch_ids": [1, 2]}, "USING INTEGER PRIMARY KEY (rowid<?)"),
        ({"tags": [["env", "prod"]], "tags_common": True}, "USING INTEGER PRIMARY KEY (rowid<?)"),
        # a rare pair: its tasks looked up by id, in descending order
        ({"tags": [["shard", "42"], ["env", "prod"]]}, "USING INTEGER PRIMARY KEY (rowid=?)"),
        # one batch: its index, whose entries are in rowid order
        ({"batch_ids": [1]}, "USING INDEX {table}_batch (batch_id=? AND rowid<?)"),
    ],
    ids=repr,
)
def test_a_page_of_browse_walks_each_table_by_id_with_no_sort(
    conn: sqlite3.Connection, fields: dict[str, Any], walk: str
) -> None:
    """Each table read by the page of ``browse``: one walk down its ids (or one batch's
    index entries), in the order of the page — no sort of its rows, no other index; the
    only sorts are the merge's, of at most two pages' rows."""
    plan = _browse_plan(conn, **fields)
    shown = "\n".join(f"{i} {p} {s}" for i, p, s in plan)
    read = {
        t
        for t in ("tasks", "history")
        if fields.get("active" if t == "tasks" else "finished", True)
    }
    walks = [s for _, _, s in plan if re.match(r"(SCAN|SEARCH) t\b", s)]
    assert sorted(walks) == sorted(f"SEARCH t {walk.format(table=t)}" for t in read), shown
    branches = {i for i, _, s in plan if s.startswith("CO-ROUTINE")}
    inner = [s for _, p, s in plan if p in branches and "TEMP B-TREE" in s]
    assert not inner, shown  # a branch's rows come in its order
    assert not any(re.match(r"SCAN (task_tags|g|o)\b", s) for _, _, s in plan), shown
