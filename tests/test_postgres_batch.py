"""PostgresStore.submit_batch / plan_batch on a real server: for the same inputs the outcome
and the store equal the SQLite store's, row for row (ids, queue places, history)."""

from __future__ import annotations

import ast
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import taskmill as tm
from taskmill.store import batch as staging
from taskmill.store.keys import key_hash
from taskmill.store.postgres.store import SUBMIT_LOCK, PostgresStore

from conftest import ENV, PYTHON, need, raw_sql

AnyStore = tm.TaskStore | PostgresStore
TASK_COLS = ["id", "task_type", "dedup_key", "group", "priority", "status", "queue_pos"]
TASK_COLS += ["payload", "label", "max_retries", "attempts"]
HISTORY_COLS = ["id", "dedup_key", "priority", "status", "replaced_by", "attempts"]


@pytest.fixture
def pg(pg_url: str) -> Iterator[PostgresStore]:
    with PostgresStore.open(pg_url) as store:
        yield store


@pytest.fixture
def lite(tmp_path: Path) -> Iterator[tm.TaskStore]:
    with tm.TaskStore.open(tmp_path / "tasks.db") as store:
        yield store


def contents(store: AnyStore) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """The store's active tasks and history, times left out (they differ by nature)."""
    tasks = store.tasks().select(TASK_COLS).sort("id").rows()
    history = store.history().select(HISTORY_COLS).sort("id").rows()
    return tasks, history


def staging_tables(url: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'taskmill' "
            "AND tablename LIKE 'stage%'"
        ).fetchall()
    return [r[0] for r in rows]


def no_two_active_share_a_key(url: str) -> None:
    with psycopg.connect(url) as conn:
        dup = conn.execute(
            "SELECT task_type, dedup_key FROM taskmill.tasks WHERE dedup_key IS NOT NULL "
            "GROUP BY 1, 2 HAVING count(*) > 1"
        ).fetchall()
    assert dup == []


def seed(store: AnyStore) -> None:
    """The same history in both stores: pending, running, paused and finished tasks."""
    for i, prio in enumerate([50, 50, 50, 50, 200, 10]):
        store.submit(tm.TaskSubmission("t", dedup_key=f"k{i}", priority=prio, payload=b"x"))
    owner = store.new_owner()
    [claimed] = store.claim(1, task_types=["t"], owner=owner)  # k5 (priority 10) runs
    assert claimed.dedup_key == "k5"
    assert store.pause(2)  # k1 paused
    assert store.cancel(4) == "pending"  # k3 to history


def plan_frame() -> pl.DataFrame:
    """Rows against the seeded keys and new ones: in-batch duplicates, no-key rows, an
    invalid row, more and less urgent priorities."""
    keys = ["k0", "k1", "k2", "k3", "k4", "k5", "n1", "n2", "n1", None, "k4", "n3", None]
    prios = [10, 10, 90, 5, 100, 1, 7, 8, 6, 3, 20, 300, 4]
    n = len(keys)
    return pl.DataFrame(
        {
            "task_type": ["t"] * n,
            "dedup_key": keys,
            "priority": prios,
            "label": [f"L{i}" for i in range(n)],
            "group": [None if i % 3 else f"g{i % 2}" for i in range(n)],
            "payload": [None if i % 4 == 1 else f"p{i}".encode() for i in range(n)],
        },
        schema_overrides={"payload": pl.Binary},
    )


def as_form(form: str, frame: pl.DataFrame, strategy: str, tmp_path: Path) -> Any:
    """``frame`` as input form ``form``, with duplicate strategy ``strategy``."""
    with_strategy = frame.with_columns(pl.lit(strategy).alias("on_duplicate"))
    if form == "submissions":
        return [
            tm.TaskSubmission(
                r["task_type"],
                dedup_key=r["dedup_key"],
                priority=r["priority"],
                label=r["label"],
                group=r["group"],
                payload=r["payload"],
                on_duplicate=strategy,  # type: ignore[arg-type]
            )
            for r in frame.iter_rows(named=True)
        ]
    if form == "polars":
        return with_strategy
    if form == "lazy":
        return with_strategy.lazy()
    if form == "pandas":
        return with_strategy.to_pandas()
    if form == "batch_submission":
        return tm.BatchSubmission().on_duplicate(strategy).tasks(frame)
    if form == "parquet_folder":
        folder = tmp_path / f"plan-{strategy}"
        folder.mkdir(exist_ok=True)
        pq.write_table(with_strategy.head(5).to_arrow(), folder / "part-0.parquet")
        pq.write_table(with_strategy.slice(5).to_arrow(), folder / "part-1.parquet")
        return folder
    if form == "arrow":
        return with_strategy.to_arrow()
    if form == "reader":
        table = with_strategy.to_arrow()
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=4))
    if form == "parquet":
        path = tmp_path / f"plan-{strategy}.parquet"
        pq.write_table(with_strategy.to_arrow(), path)
        return path
    raise AssertionError(form)


FORMS = ["submissions", "polars", "lazy", "pandas", "arrow", "reader", "parquet"]
FORMS += ["parquet_folder", "batch_submission"]
STRATEGIES = ["skip", "supersede", "reject"]


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("form", FORMS)
def test_same_outcome_and_store_as_sqlite(
    pg: PostgresStore, lite: tm.TaskStore, pg_url: str, tmp_path: Path, form: str, strategy: str
) -> None:
    seed(pg)
    seed(lite)
    commits: dict[str, list[tuple[list[int], list[tuple[int, int]]]]] = {"pg": [], "lite": []}
    got = {}
    for name, store in (("pg", pg), ("lite", lite)):
        planned = store.plan_batch(as_form(form, plan_frame(), strategy, tmp_path))
        done = store.submit_batch(
            as_form(form, plan_frame(), strategy, tmp_path),
            on_commit=lambda ids, sup, n=name: commits[n].append((ids, sup)),
        )
        assert planned.to_polars().equals(done.to_polars())  # nothing else wrote: exact
        got[name] = done.to_polars()
    assert got["pg"].equals(got["lite"]), (got["pg"], got["lite"])
    assert commits["pg"] == commits["lite"] and len(commits["pg"]) == 1
    assert contents(pg) == contents(lite)
    assert pg.integrity_check() == "ok"
    assert staging_tables(pg_url) == []


def test_chunked_batch_and_progress_match_sqlite(pg: PostgresStore, lite: tm.TaskStore) -> None:
    keys = [f"c{i % 170}" for i in range(230)]
    frame = pl.DataFrame(
        {"task_type": ["t"] * 230, "dedup_key": keys, "priority": [i % 9 for i in range(230)]}
    )
    seen: dict[str, list[Any]] = {"pg": [], "lite": []}
    outs = {}
    for name, store in (("pg", pg), ("lite", lite)):
        store.submit(tm.TaskSubmission("t", dedup_key="c3", priority=200))
        batch = tm.BatchSubmission().transaction_limit(100).chunk_size(40).on_duplicate("supersede")
        plan = store.plan_batch(batch.tasks(frame))
        out = store.submit_batch(
            batch.tasks(frame),
            on_commit=lambda ids, sup, n=name: seen[n].append(("commit", ids, sup)),
            progress=lambda done, total, n=name: seen[n].append(("progress", done, total)),
        )
        assert plan.to_polars().equals(out.to_polars())
        outs[name] = out.to_polars()
    assert outs["pg"].equals(outs["lite"])
    assert seen["pg"] == seen["lite"]
    # 6 transactions; the first inserts nothing (its keys come again later: those win)
    assert sum(1 for s in seen["pg"] if s[0] == "progress") == 6
    assert sum(1 for s in seen["pg"] if s[0] == "commit") == 5
    assert contents(pg) == contents(lite)


def test_plan_writes_nothing(pg: PostgresStore, pg_url: str) -> None:
    pg.submit(tm.TaskSubmission("t", dedup_key="a", priority=100))
    before = contents(pg)
    batch = tm.BatchSubmission().transaction_limit(2).chunk_size(2).on_duplicate("supersede")
    frame = pl.DataFrame({"task_type": ["t"] * 5, "dedup_key": ["a", "b", "c", None, "d"]})
    plan = pg.plan_batch(batch.tasks(frame))
    assert plan.to_polars().select("action", "task_id", "replaced_task_id").rows() == [
        ("superseded", 2, 1),
        ("submitted", 3, None),
        ("submitted", 4, None),
        ("submitted", 5, None),
        ("submitted", 6, None),
    ]
    assert contents(pg) == before
    with psycopg.connect(pg_url) as conn:  # not even an id was drawn
        assert conn.execute("SELECT last_value FROM taskmill.task_ids").fetchone() == (1,)
    assert staging_tables(pg_url) == []
    assert pg.submit_batch(batch.tasks(frame)).to_polars().equals(plan.to_polars())


def test_chunk_that_cannot_commit_interrupts_and_resubmit_completes(
    pg_url: str, tmp_path: Path
) -> None:
    """After chunk 1 commits, another session holds the submit lock: chunk 2 waits past
    busy_timeout, cannot commit, and the batch stops with chunk 1's outcome."""
    frame = pl.DataFrame({"task_type": ["t"] * 120, "dedup_key": [f"k{i}" for i in range(120)]})
    batch = tm.BatchSubmission().transaction_limit(50).chunk_size(50).tasks(frame)
    blocker = psycopg.connect(pg_url, autocommit=True)
    try:

        def hold_lock(ids: list[int], sup: list[tuple[int, int]]) -> None:
            blocker.execute("SELECT pg_advisory_lock(%s)", (SUBMIT_LOCK,))

        with PostgresStore.open(pg_url, busy_timeout=0.5) as pg:
            with pytest.raises(tm.BatchInterrupted, match="chunk 2 of 3") as err:
                pg.submit_batch(batch, on_commit=hold_lock)
            partial = err.value.outcome
            assert partial.to_polars()["index"].to_list() == list(range(50))
            assert partial.submitted == list(range(1, 51))
            assert sorted(pg.tasks()["dedup_key"].to_list()) == sorted(f"k{i}" for i in range(50))
            assert staging_tables(pg_url) == []  # the failed chunk's and the one staged ahead
            blocker.execute("SELECT pg_advisory_unlock(%s)", (SUBMIT_LOCK,))
            again = pg.submit_batch(batch)
            assert again.counts()["deduplicated"] == 50
            assert again.counts()["submitted"] == 70
            with tm.TaskStore.open(tmp_path / "l.db") as lite:  # SQLite, same two steps
                lite.submit_batch(frame.head(50))
                expected = lite.submit_batch(batch)
                assert again.to_polars().equals(expected.to_polars())
                assert contents(lite) == contents(pg)
            assert pg.integrity_check() == "ok"
    finally:
        blocker.close()


def test_key_hash_collision_against_the_store(
    pg: PostgresStore, lite: tm.TaskStore, pg_url: str
) -> None:
    """Active task 1 (key 'a') carries key 'b''s hash: a row of key 'b' fails with
    'key_collision' (the text is the truth) on both stores alike."""
    for store in (pg, lite):
        assert store.submit(tm.TaskSubmission("t", dedup_key="a", priority=100)).task_id == 1
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE taskmill.tasks SET key_hash = %s WHERE id = 1", (key_hash("t", "b"),))
    raw_sql(lite.driver.path, f"UPDATE tasks SET key_hash = {key_hash('t', 'b')} WHERE id = 1")
    frame = pl.DataFrame({"task_type": ["t"] * 3, "dedup_key": ["b", "c", "b"]})
    for strategy in STRATEGIES:
        batch = tm.BatchSubmission().on_duplicate(strategy).tasks(frame)
        out = pg.submit_batch(batch)
        assert out.to_polars().equals(lite.submit_batch(batch).to_polars())
        rows = out.to_polars().select("index", "action", "reason", "task_id").rows()
        assert rows[0] == (0, "failed", "key_collision", None)
        assert rows[2] == (2, "failed", "key_collision", None)
        failed = dict(out.failed)
        assert "active task 1" in str(failed[2]) and failed[2].kind == "key_collision"
    assert contents(pg) == contents(lite)
    # c: submitted as 2, superseded by 3 (supersede), then a duplicate (reject: failed)
    assert pg.tasks().select("id", "dedup_key").sort("id").rows() == [(1, "a"), (3, "c")]
    assert staging_tables(pg_url) == []


def test_two_keys_of_one_batch_that_collide(
    pg: PostgresStore, lite: tm.TaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A weak hash (the key's length) in DuckDB's place, as in test_keys.py: the same
    outcome on both stores."""
    monkeypatch.setattr(staging, "DUCKDB_KEY_HASH", "CAST(strlen(dedup_key) AS BIGINT)")
    frame = pl.DataFrame({"task_type": ["t"] * 5, "dedup_key": ["k1", "k2", "long", "k1", None]})
    got = pg.submit_batch(frame).to_polars()
    assert got.equals(lite.submit_batch(frame).to_polars())
    assert got.select("index", "action", "reason", "task_id").rows() == [
        (0, "failed", "key_collision", None),
        (1, "submitted", None, 1),
        (2, "submitted", None, 2),
        (3, "failed", "key_collision", None),
        (4, "submitted", None, 3),
    ]
    assert contents(pg) == contents(lite)


_RACER = """
import sys
import threading
import polars as pl
import taskmill as tm
from taskmill.store.postgres.store import PostgresStore

url, tag = sys.argv[1], sys.argv[2]
keys = [f"k{i}" for i in range(0, 3000, 1 if tag == "a" else 2)]
frame = pl.DataFrame({"task_type": ["t"] * len(keys), "dedup_key": keys})
batch = tm.BatchSubmission().transaction_limit(500).chunk_size(500).on_duplicate(
    "supersede" if tag == "a" else "skip").tasks(frame)
stop = threading.Event()
keyless = []


def submit_keyless() -> None:  # single submits without a key draw ids without the lock
    with PostgresStore.open(url, busy_timeout=60) as other:
        while not stop.is_set():
            keyless.append(other.submit(tm.TaskSubmission("free")).task_id)


with PostgresStore.open(url, busy_timeout=60) as store:
    thread = threading.Thread(target=submit_keyless)
    thread.start()
    try:
        out = store.submit_batch(batch)
    finally:
        stop.set()
        thread.join()
    assert len(out) == len(keys), len(out)
    print(len(keyless))
    print(out.counts())
"""


def test_batches_racing_from_two_processes(pg: PostgresStore, pg_url: str) -> None:
    procs = [
        subprocess.Popen(
            [PYTHON, "-c", textwrap.dedent(_RACER), pg_url, tag],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for tag in ("a", "b")
    ]
    outputs = [p.communicate(timeout=240) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    counts = [ast.literal_eval(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert sum(counts[0].values()) == 3000 and sum(counts[1].values()) == 1500
    assert counts[0]["failed"] == counts[1]["failed"] == 0
    no_two_active_share_a_key(pg_url)
    tasks = pg.tasks()
    keyed = tasks.filter(pl.col("task_type") == "t")
    assert sorted(keyed["dedup_key"].to_list()) == sorted(f"k{i}" for i in range(3000))
    history = pg.history()
    # every insert is either active or superseded; b's skipped rows inserted nothing
    inserted = sum(c["submitted"] + c["superseded"] for c in counts)
    keyless = sum(int(out.strip().splitlines()[-2]) for out, _ in outputs)
    assert keyless > 0
    assert tasks.height + history.height == inserted + keyless
    assert tasks.filter(pl.col("task_type") == "free").height == keyless
    assert set(history["status"].to_list()) <= {"superseded"}
    assert pg.integrity_check() == "ok"
    assert staging_tables(pg_url) == []


def test_staging_tables_of_a_dead_process_are_swept(pg_url: str) -> None:
    from taskmill.store.postgres.batch import stage_prefix

    dead = subprocess.run([PYTHON, "-c", "import os; print(os.getpid())"], capture_output=True)
    pid = int(dead.stdout)
    name = f"{stage_prefix(pid)}abc"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        PostgresStore.open(pg_url).close()  # the schema exists
        conn.execute(f'CREATE UNLOGGED TABLE taskmill."{name}" (x int)')
    assert staging_tables(pg_url) == [name]
    PostgresStore.open(pg_url).close()
    assert staging_tables(pg_url) == []


#: A batch of 20 keyed tasks, on the store at argv[1]; its merge waits up to 300 s for
#: the submit lock (a test holds it to catch the batch mid-way).
_BATCH = """
import sys
import polars as pl
import taskmill as tm
from taskmill.store.postgres.store import PostgresStore

frame = pl.DataFrame({"task_type": ["t"] * 20, "dedup_key": [f"k{i}" for i in range(20)]})
with PostgresStore.open(sys.argv[1], busy_timeout=300) as store:
    print(store.submit_batch(tm.BatchSubmission().tasks(frame)).counts(), flush=True)
"""
#: The host name of a batch run "elsewhere" (a UTS namespace of its own).
OTHER_HOST = "taskmill-elsewhere"


def can_unshare_uts() -> bool:
    """Whether this process may run a command under a host name of its own."""
    import shutil

    if shutil.which("unshare") is None:
        return False
    done = subprocess.run(
        ["unshare", "--uts", "hostname", OTHER_HOST], capture_output=True, timeout=30
    )
    return done.returncode == 0


def start_batch(url: str, where: str) -> subprocess.Popen[str]:
    """Run :data:`_BATCH` in a process of its own, on this host (``where="here"``) or
    under another host name (``"elsewhere"``: a new UTS namespace, same machine,
    same server — as a machine of its own would look to the store)."""
    command = [PYTHON, "-c", textwrap.dedent(_BATCH), url]
    if where == "elsewhere":
        need(can_unshare_uts(), "unshare --uts (root)", "run the tests as root")
        # unshare and sh exec: the process is the batch's Python itself
        command = ["unshare", "--uts", "sh", "-c", 'hostname "$0" && exec "$@"', OTHER_HOST]
        command += [PYTHON, "-c", textwrap.dedent(_BATCH), url]
    return subprocess.Popen(
        command, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def sessions_waiting_for_a_lock(url: str) -> int:
    return raw(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'",
    )[0][0]


def other_sessions(url: str, *mine: psycopg.Connection[Any]) -> int:
    """How many sessions are connected to the database at ``url``, besides this one and
    those of ``mine``."""
    return raw(
        url,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND pid <> pg_backend_pid() AND pid <> ALL(%s)",
        ([c.info.backend_pid for c in mine],),
    )[0][0]


def session_alive(url: str, backend: int) -> bool:
    """Whether the server has a session served by process ``backend``."""
    return raw(url, "SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (backend,))[0][0] > 0


def raw(url: str, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as conn:
        return conn.execute(statement, params).fetchall()


def poll(what: Any, deadline: float = 120.0) -> bool:
    """Poll ``what()`` until it is true (or the deadline passes); returns the last answer."""
    import time

    end = time.monotonic() + deadline
    while not what() and time.monotonic() < end:
        time.sleep(0.05)
    return bool(what())


@pytest.fixture
def submits_held(pg_url: str) -> Iterator[psycopg.Connection[Any]]:
    """The submit lock, held by a transaction of the test until it ends the transaction
    (a batch's merge waits for it with its staging table made and filled)."""
    PostgresStore.open(pg_url).close()  # the schema exists
    with psycopg.connect(pg_url) as conn:
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (SUBMIT_LOCK,))
        yield conn


def caught_mid_batch(proc: subprocess.Popen[str], url: str) -> str:
    """Wait for ``proc``'s batch to wait on the submit lock; returns its staging table."""
    assert poll(lambda: sessions_waiting_for_a_lock(url) == 1 or proc.poll() is not None)
    assert proc.poll() is None, proc.communicate()
    [table] = staging_tables(url)
    return table


def test_a_staging_table_goes_with_the_session_that_made_it(pg_url: str) -> None:
    """Tables named as a batch names them (after the session that made them): those of a
    session the server still has stay — even when the pid in the name is gone from this
    host (two machines of one host name), those of an ended session go — whichever host
    made them.  Of the older names (no session), another host's stay; a name taskmill
    does not give stays."""
    from taskmill.store.postgres.batch import stage_prefix

    dead = subprocess.run([PYTHON, "-c", "import os; print(os.getpid())"], capture_output=True)
    here = stage_prefix(int(dead.stdout))  # this host's tag, a process that is gone
    elsewhere = "stage_0badc0de_4242_"  # another host's
    PostgresStore.open(pg_url).close()  # the schema exists
    create = 'CREATE UNLOGGED TABLE taskmill."{}" (x int)'
    with psycopg.connect(pg_url, autocommit=True) as ended:
        gone = ended.info.backend_pid
        for name in (f"{here}b{gone}_old1", f"{elsewhere}b{gone}_old2"):
            ended.execute(create.format(name))
    assert poll(lambda: not session_alive(pg_url, gone))
    with psycopg.connect(pg_url, autocommit=True) as live:
        kept = [f"{here}b{live.info.backend_pid}_new1", f"{elsewhere}b{live.info.backend_pid}_new2"]
        kept += [f"{elsewhere}older", "stage_not_ours"]
        for name in kept:
            live.execute(create.format(name))
        PostgresStore.open(pg_url).close()
        assert sorted(staging_tables(pg_url)) == sorted(kept)


@pytest.mark.parametrize("where", ["here", "elsewhere"])
def test_staging_tables_of_a_killed_batch_are_swept(
    submits_held: psycopg.Connection[Any], pg_url: str, where: str
) -> None:
    """A batch dies mid-way (killed while its merge waits for the submit lock): its
    staging table goes when a store is next opened — once the server has seen the
    batch's sessions end, for a batch on another machine; at once on this host (the
    sweep waits for the session of a process of this host that is gone)."""
    from taskmill.store.postgres.batch import stage_prefix

    proc = start_batch(pg_url, where)
    try:
        table = caught_mid_batch(proc, pg_url)
        ours = table.startswith(stage_prefix(0)[: -len("0_")])
        assert ours == (where == "here")  # the host tag in the name
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    submits_held.rollback()  # the dead batch's session gets the lock, then sees the EOF
    if where == "elsewhere":
        assert poll(lambda: other_sessions(pg_url, submits_held) == 0)
    assert staging_tables(pg_url) == [table]
    with PostgresStore.open(pg_url) as store:
        assert staging_tables(pg_url) == []
        assert store.tasks().height == 0  # nothing of the dead batch was merged


@pytest.mark.parametrize("where", ["here", "elsewhere"])
def test_the_staging_table_of_a_live_batch_is_not_swept(
    submits_held: psycopg.Connection[Any], pg_url: str, where: str
) -> None:
    """Stores opened while a batch of another process (on this host or another) waits to
    merge leave its staging table alone; the batch then finishes as usual."""
    proc = start_batch(pg_url, where)
    try:
        table = caught_mid_batch(proc, pg_url)
        for _ in range(3):
            PostgresStore.open(pg_url).close()
            assert staging_tables(pg_url) == [table]
        submits_held.rollback()
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "'submitted': 20" in out
    assert staging_tables(pg_url) == []
    with PostgresStore.open(pg_url) as store:
        assert store.tasks().height == 20


def test_a_batch_whose_session_was_lost_and_its_table_swept_stages_again(
    pg: PostgresStore, pg_url: str
) -> None:
    """The one way a sweep may take a live batch's table: the session that made it is
    lost (here ended by the server between two chunks, the next chunk staged ahead on it)
    and another store is opened before the batch goes on.  The batch then stages that
    chunk again on its new session, and finishes as if nothing happened."""
    frame = pl.DataFrame({"task_type": ["t"] * 40, "dedup_key": [f"k{i}" for i in range(40)]})
    batch = tm.BatchSubmission().transaction_limit(20).chunk_size(20).tasks(frame)
    swept: list[list[str]] = []

    def lose_the_session(ids: list[int], pairs: list[tuple[int, int]]) -> None:
        if swept:
            return
        assert pg.driver._conn is not None
        session = pg.driver._conn.info.backend_pid
        ahead = staging_tables(pg_url)
        assert len(ahead) == 1 and f"_b{session}_" in ahead[0]  # the next chunk's
        raw(pg_url, f"SELECT pg_terminate_backend({session})")
        assert poll(lambda: not session_alive(pg_url, session))
        PostgresStore.open(pg_url).close()  # sweeps what the ended session made
        swept.append(ahead)
        assert staging_tables(pg_url) == []

    out = pg.submit_batch(batch, on_commit=lose_the_session)
    assert swept, "the batch did not run in two chunks"
    assert out.counts()["submitted"] == 40
    assert sorted(pg.tasks()["dedup_key"].to_list()) == sorted(f"k{i}" for i in range(40))
    assert staging_tables(pg_url) == []


def test_ids_drawn_around_a_keyless_submit_stay_ascending() -> None:
    """When a keyless submit (which draws without the submit lock) took an id inside the
    batch's draw, the batch's new rows take the ids it drew, in input order."""
    from taskmill.store.postgres.batch import _renumber

    result = pl.DataFrame(
        {
            "action": ["submitted", "deduplicated", "superseded", "failed", "submitted"],
            "task_id": [5, 2, 6, None, 7],
        }
    )
    assert _renumber(result, [5, 8, 9])["task_id"].to_list() == [5, 2, 8, None, 9]


def test_ids_not_in_one_block_still_follow_input_order(pg: PostgresStore, pg_url: str) -> None:
    """A sequence that does not hand out consecutive ids (as when keyless submits draw in
    between): new tasks take the ids drawn, in input order; a superseding task still takes
    the pending task's queue place."""
    pg.submit(tm.TaskSubmission("t", dedup_key="a"))
    with psycopg.connect(pg_url) as conn:
        conn.execute("ALTER SEQUENCE taskmill.task_ids INCREMENT BY 3")
    batch = tm.BatchSubmission().on_duplicate("supersede")
    frame = pl.DataFrame({"task_type": ["t"] * 3, "dedup_key": ["b", "a", None]})
    out = pg.submit_batch(batch.tasks(frame))
    assert out.to_polars().select("action", "task_id", "replaced_task_id").rows() == [
        ("submitted", 4, None),
        ("superseded", 7, 1),
        ("submitted", 10, None),
    ]
    tasks = pg.tasks().select("id", "dedup_key", "queue_pos").sort("id").rows()
    assert tasks == [(4, "b", 4), (7, "a", 1), (10, None, 10)]
    assert pg.history().select("id", "status", "replaced_by").rows() == [(1, "superseded", 7)]
    assert pg.integrity_check() == "ok"


def test_staging_that_fails_leaves_no_table_and_no_task(
    pg: PostgresStore, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real copy runs, then staging fails: the batch raises, the store is unchanged
    and the staging table is dropped."""
    from taskmill.store.postgres.batch import PostgresBatch

    real_fill = PostgresBatch._fill

    def fill_then_fail(self: PostgresBatch, table: str, frame: pl.DataFrame) -> Any:
        real_fill(self, table, frame)
        assert staging_tables(pg_url) == [table]
        raise tm.StoreError("the copy broke")

    monkeypatch.setattr(PostgresBatch, "_fill", fill_then_fail)
    frame = pl.DataFrame({"task_type": ["t"] * 3, "dedup_key": ["a", "b", "c"]})
    with pytest.raises(tm.StoreError, match="the copy broke"):
        pg.submit_batch(frame)
    assert pg.tasks().height == 0
    assert staging_tables(pg_url) == []


def test_a_merge_that_fails_after_writing_rolls_back_whole(
    pg: PostgresStore, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Chunk 2's merge superseded, upgraded and inserted, then failed before commit: none
    of it stays (chunk 1 does); the ids it drew are a gap, not handed out again."""
    from taskmill.store.postgres.batch import PostgresBatch

    pg.submit(tm.TaskSubmission("t", dedup_key="k60", priority=100))  # id 1, chunk 2's key
    real_insert = PostgresBatch._insert
    calls: list[int] = []

    def insert_then_fail(self: PostgresBatch, *args: Any) -> int:
        inserted = real_insert(self, *args)
        calls.append(inserted)
        if len(calls) == 2:
            raise tm.StoreError("the server went away")
        return inserted

    monkeypatch.setattr(PostgresBatch, "_insert", insert_then_fail)
    frame = pl.DataFrame({"task_type": ["t"] * 100, "dedup_key": [f"k{i}" for i in range(100)]})
    batch = tm.BatchSubmission().transaction_limit(50).chunk_size(50).on_duplicate("supersede")
    with pytest.raises(tm.BatchInterrupted, match="chunk 2 of 2") as err:
        pg.submit_batch(batch.tasks(frame))
    assert err.value.outcome.submitted == list(range(2, 52))
    assert pg.tasks().filter(pl.col("dedup_key") == "k60").select("id", "priority").rows() == [
        (1, 100)
    ]
    assert pg.history().height == 0 and pg.tasks().height == 51
    assert staging_tables(pg_url) == []
    monkeypatch.setattr(PostgresBatch, "_insert", real_insert)
    again = pg.submit_batch(batch.tasks(frame.slice(50)))
    # ids 52..101 were drawn by the failed merge: the sequence does not give them back
    assert again.to_polars()["task_id"].to_list() == list(range(102, 152))
    assert again.counts()["superseded"] == 1
    assert pg.history().select("id", "status", "replaced_by").rows() == [(1, "superseded", 112)]
    assert pg.integrity_check() == "ok"
