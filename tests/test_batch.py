"""submit_batch / plan_batch: every rule of "Semantics of one batch", exact outcomes and
stores, on both backends (SQLite and PostgreSQL; what is about SQLite files alone is marked
``sqlite_only``)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import textwrap
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import taskmill as tm
from taskmill.batch import outcome as outcome_module

from conftest import PYTHON, allow_key, is_postgres, refuse_key, run_sql, staged

pytestmark = pytest.mark.backends("sqlite", "postgres")

OUT_COLS = ["index", "action", "reason", "task_id", "replaced_task_id"]


def rows(out: tm.BatchOutcome, cols: list[str] = OUT_COLS) -> list[tuple]:
    return out.to_polars().select(cols).rows()


def active(store: tm.TaskStore) -> list[tuple]:
    return store.tasks().select("id", "dedup_key", "priority", "status").rows()


# ---------------------------------------------------------------- rule 1: validation


def test_bad_rows_fail_and_the_rest_goes_on(store: tm.TaskStore) -> None:
    df = pl.DataFrame(
        {
            "task_type": ["t", None, "t", "t", "t", "t", "t", "t"],
            "dedup_key": ["a", "b", "", "c", "d", "e", "f", "g"],
            "priority": [1, 2, 3, 300, -1, 5, 6, 7],
            "expected_read_bytes": [0, 0, 0, 0, 0, -4, 0, 0],
            "on_duplicate": [None, None, None, None, None, None, "maybe", None],
            "payload": [b"ok", None, None, None, None, None, None, b"x" * (1024 * 1024 + 1)],
        }
    )
    out = store.submit_batch(df)
    assert out.submitted == [1]
    assert [(i, e.kind, str(e)) for i, e in out.failed] == [
        (1, "invalid_task_type", "task_type is missing"),
        (2, "invalid_dedup_key", "dedup_key is an empty string"),
        (3, "invalid_priority", "priority must be within 0..255, got 300"),
        (4, "invalid_priority", "priority must be within 0..255, got -1"),
        (
            5,
            "invalid_expected_bytes",
            "expected_read_bytes must be within 0..9223372036854775807, got -4",
        ),
        (6, "invalid_strategy", "on_duplicate must be one of skip, supersede, reject; got 'maybe'"),
        (7, "payload_too_large", "payload is 1,048,577 bytes, over the 1,048,576-byte limit"),
    ]
    assert all(isinstance(e, tm.InvalidSubmission) for _, e in out.failed)
    assert [e.field for _, e in out.failed] == [
        "task_type",
        "dedup_key",
        "priority",
        "priority",
        "expected_read_bytes",
        "on_duplicate",
        "payload",
    ]
    assert [e.index for _, e in out.failed] == [1, 2, 3, 4, 5, 6, 7]
    assert active(store) == [(1, "a", 1, "pending")]
    assert store.tasks()["payload"].to_list() == [b"ok"]


def test_list_of_submissions_fails_the_same_rows(store: tm.TaskStore) -> None:
    subs = [
        tm.TaskSubmission("t", dedup_key="a", payload={"n": 1}),
        tm.TaskSubmission("", dedup_key="b"),
        tm.TaskSubmission("t", priority=999),
        tm.TaskSubmission("t", payload={1, 2}),
        tm.TaskSubmission("t", group=7),
        "not a submission",
    ]
    out = store.submit_batch(subs)
    assert out.submitted == [1]
    assert [(i, e.kind, e.field) for i, e in out.failed] == [
        (1, "invalid_task_type", "task_type"),
        (2, "invalid_priority", "priority"),
        (3, "invalid_payload", "payload"),
        (4, "invalid_group", "group"),
        (5, "invalid_input", None),
    ]
    assert store.tasks()["payload"].to_list() == [b'{"n":1}']


def test_pandas_float_ints_and_whole_input_errors(store: tm.TaskStore, tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({"task_type": ["t", "t", "t"], "priority": [1, None, 2.5]})
    assert frame["priority"].dtype == "float64"
    out = store.submit_batch(frame)
    assert rows(out, ["index", "action", "priority"]) == [
        (0, "submitted", 1),
        (1, "submitted", 128),
        (2, "failed", None),
    ]
    assert str(out.failed[0][1]) == "priority must be an integer, got float"

    before = store.counts()
    with pytest.raises(tm.SchedulerError, match="unknown column 'colour'") as err:
        store.submit_batch(pl.DataFrame({"task_type": ["t"], "colour": ["red"]}))
    assert err.value.field == "colour"
    with pytest.raises(tm.SchedulerError, match=r"column priority has type List\(Int64\)"):
        store.submit_batch(pl.DataFrame({"task_type": ["t"], "priority": [[1]]}))
    with pytest.raises(tm.SchedulerError, match="no task_type column"):
        store.submit_batch(pl.DataFrame({"dedup_key": ["k"]}))
    with pytest.raises(tm.SchedulerError, match="does not exist"):
        store.submit_batch(tmp_path / "missing.parquet")
    (tmp_path / "bad.parquet").write_text("not parquet")
    with pytest.raises(tm.SchedulerError, match=r"bad\.parquet is not a Parquet file"):
        store.submit_batch(str(tmp_path / "bad.parquet"))
    dup = pa.table([pa.array(["t"]), pa.array(["x"])], names=["task_type", "task_type"])
    with pytest.raises(tm.SchedulerError, match="duplicate column names: 'task_type'"):
        store.submit_batch(dup)
    with pytest.raises(tm.SchedulerError, match="cannot submit a int"):
        store.submit_batch(5)
    assert store.counts() == before


def test_columns_and_payload_columns(store: tm.TaskStore) -> None:
    plan = pl.DataFrame(
        {
            "action": ["sync.upload", "sync.delete"],
            "key": ["b/x", "b/y"],
            "endpoint": ["s3://eu", None],
            "src": ["/x", "/y"],
            "size": [10, 20],
        }
    )
    batch = (
        tm.BatchSubmission()
        .default_group("s3://default")
        .default_priority(tm.Priority.HIGH)
        .columns(task_type="action", dedup_key="key", group="endpoint")
        .payload_columns(["src", "size"])
        .tasks(plan)
    )
    out = store.submit_batch(batch)
    assert out.submitted == [1, 2]
    got = store.tasks().select("task_type", "dedup_key", "group", "priority", "payload").rows()
    assert got == [
        ("sync.upload", "b/x", "s3://eu", 64, b'{"src":"/x","size":10}'),
        ("sync.delete", "b/y", "s3://default", 64, b'{"src":"/y","size":20}'),
    ]
    with pytest.raises(tm.SchedulerError, match=r"column 'nope' .* is not in the input"):
        store.submit_batch(tm.BatchSubmission().columns(task_type="nope").tasks(plan))


# ---------------------------------------------------------------- rule 2: last wins


def test_inside_the_batch_the_last_valid_row_wins(store: tm.TaskStore) -> None:
    subs = [
        tm.TaskSubmission("t", dedup_key="k", payload=1),
        tm.TaskSubmission("t", dedup_key="k", payload=2),
        tm.TaskSubmission("t", dedup_key="k", payload=3, priority=999),  # invalid: no part
        tm.TaskSubmission("u", dedup_key="k", payload=4),  # another type: another key
        tm.TaskSubmission("t", payload=5),
        tm.TaskSubmission("t", payload=6),  # keyless rows are never duplicates
    ]
    out = store.submit_batch(subs)
    assert rows(out) == [
        (0, "deduplicated", "in_batch", 1, None),
        (1, "submitted", None, 1, None),
        (2, "failed", "invalid_priority", None, None),
        (3, "submitted", None, 2, None),
        (4, "submitted", None, 3, None),
        (5, "submitted", None, 4, None),
    ]
    assert out.deduplicated == ["k"]
    assert store.tasks()["payload"].to_list() == [b"2", b"4", b"5", b"6"]


# ---------------------------------------------------------------- rule 3: against the store


def test_skip_dedups_and_upgrades_only_pending_more_urgent(store: tm.TaskStore) -> None:
    store.submit(tm.TaskSubmission("t", dedup_key="pending", priority=200))
    store.submit(tm.TaskSubmission("t", dedup_key="same", priority=100))
    store.submit(tm.TaskSubmission("t", dedup_key="running", priority=200))
    owner = store.new_owner()
    store.claim(1, task_types=["t"], owner=owner)  # 'same' (priority 100) is running
    out = store.submit_batch(
        [
            tm.TaskSubmission("t", dedup_key="pending", priority=10),
            tm.TaskSubmission("t", dedup_key="same", priority=5),
            tm.TaskSubmission("t", dedup_key="running", priority=250),
            tm.TaskSubmission("t", dedup_key="new"),
        ]
    )
    assert rows(out) == [
        (0, "upgraded", None, 1, None),
        (1, "deduplicated", "existing", 2, None),
        (2, "deduplicated", "existing", 3, None),
        (3, "submitted", None, 4, None),
    ]
    assert out.upgraded == [1]
    assert out.deduplicated == ["same", "running"]
    assert sorted(active(store)) == [
        (1, "pending", 10, "pending"),
        (2, "same", 100, "running"),
        (3, "running", 200, "pending"),
        (4, "new", 128, "pending"),
    ]
    store.release_owner(owner)


def test_supersede_pending_takes_place_running_queues_normally(store: tm.TaskStore) -> None:
    for key in ("p", "r", "x"):
        store.submit(tm.TaskSubmission("t", dedup_key=key, payload=key))
    owner = store.new_owner()
    store.claim(1, task_types=["t"], owner=owner)  # 'p' is running
    out = (
        tm.BatchSubmission()
        .on_duplicate("supersede")
        .tasks(
            [
                tm.TaskSubmission("t", dedup_key="r", payload="r2"),
                tm.TaskSubmission("t", dedup_key="p", payload="p2"),
            ]
        )
    )
    res = store.submit_batch(out)
    assert rows(res) == [(0, "superseded", None, 4, 2), (1, "superseded", None, 5, 1)]
    assert res.superseded == [(4, 2), (5, 1)]
    # 'r2' took r's place (before x); 'p2' queues behind everything
    assert store.tasks().select("id", "dedup_key", "payload").rows() == [
        (4, "r", b'"r2"'),
        (3, "x", b'"x"'),
        (5, "p", b'"p2"'),
    ]
    assert store.history().select("id", "status", "replaced_by").rows() == [
        (1, "superseded", 5),
        (2, "superseded", 4),
    ]
    assert store.complete(1, owner=owner) is False  # the running attempt lost its task
    store.release_owner(owner)


def test_reject_fails_with_duplicate_task(store: tm.TaskStore) -> None:
    store.submit(tm.TaskSubmission("t", dedup_key="k", payload="old"))
    out = store.submit_batch(
        tm.BatchSubmission()
        .on_duplicate(tm.DuplicateStrategy.REJECT)
        .tasks(
            [
                tm.TaskSubmission("t", dedup_key="k", payload="new"),
                tm.TaskSubmission("t", dedup_key="fresh"),
            ]
        )
    )
    assert rows(out) == [(0, "failed", "duplicate", 1, None), (1, "submitted", None, 2, None)]
    [(index, err)] = out.failed
    assert index == 0 and isinstance(err, tm.DuplicateTask) and err.existing_task_id == 1
    assert "already has task_type 't' and dedup_key 'k'" in str(err)
    assert store.tasks().select("id", "payload").rows() == [(1, b'"old"'), (2, None)]


def test_history_never_blocks(store: tm.TaskStore) -> None:
    store.submit(tm.TaskSubmission("t", dedup_key="k"))
    store.cancel(1)
    out = store.submit_batch([tm.TaskSubmission("t", dedup_key="k", on_duplicate="reject")])
    assert out.submitted == [2]


# ---------------------------------------------------------------- rule 4: order


async def test_dispatch_order_across_batches_and_singles(location: str | Path) -> None:
    ran: list[str] = []

    async def record(ctx: tm.TaskContext) -> None:
        ran.append(ctx.dedup_key or "")

    with tm.TaskStore.open(location) as store:
        store.submit(tm.TaskSubmission("t", dedup_key="s1"))
        store.submit_batch([tm.TaskSubmission("t", dedup_key=k) for k in ("b1", "b2")])
        store.submit(tm.TaskSubmission("t", dedup_key="s2", priority=64))
        store.submit_batch(
            pl.DataFrame(
                {
                    "task_type": ["t"] * 3,
                    "dedup_key": ["c1", "s1", "c2"],
                    "priority": [128, 128, 64],
                }
            )
        )
        # a supersede of pending 'b1' keeps b1's place
        store.submit_batch(
            tm.BatchSubmission()
            .on_duplicate("supersede")
            .tasks([tm.TaskSubmission("t", dedup_key="b1", payload="v2")])
        )
        store.submit(tm.TaskSubmission("t", dedup_key="s3"))
    async with tm.Scheduler(location, executors={"t": record}, max_concurrency=1) as sched:
        await sched.wait_idle(timeout=10)
    assert ran == ["s2", "c2", "s1", "b1", "b2", "c1", "s3"]


# ---------------------------------------------------------------- rule 5: transactions


def _plan(n: int, prefix: str = "k") -> pl.DataFrame:
    return pl.DataFrame({"task_type": ["t"] * n, "dedup_key": [f"{prefix}{i}" for i in range(n)]})


def test_small_batch_is_one_transaction(store: tm.TaskStore) -> None:
    commits: list[list[int]] = []
    out = store.submit_batch(_plan(500), on_commit=lambda ids, sup: commits.append(ids))
    assert len(commits) == 1 and commits[0] == list(range(1, 501)) == out.submitted


def test_large_batch_commits_in_chunks(store: tm.TaskStore) -> None:
    commits: list[list[int]] = []
    batch = tm.BatchSubmission().transaction_limit(100).chunk_size(40).tasks(_plan(200))
    out = store.submit_batch(batch, on_commit=lambda ids, sup: commits.append(ids))
    assert [len(c) for c in commits] == [40, 40, 40, 40, 40]
    assert [c[0] for c in commits] == [1, 41, 81, 121, 161]
    assert out.submitted == list(range(1, 201))


@pytest.mark.parametrize("spooled", [False, True], ids=["in-memory", "spooled"])
@pytest.mark.parametrize("k", [0, 2, 4])
def test_failed_chunk_keeps_earlier_chunks_and_resubmit_completes(
    location: str | Path, k: int, spooled: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``spooled``: the merge results and the outcome go through private files (as a
    batch of millions of rows does), in slices of 16 rows."""
    if spooled:
        monkeypatch.setattr(outcome_module, "OUTCOME_IN_MEMORY", 0)
        monkeypatch.setattr(outcome_module, "OUTCOME_SLICE", 16)
    plan = _plan(250)
    with tm.TaskStore.open(location) as store:
        store.submit(tm.TaskSubmission("t", dedup_key="k5", priority=200))  # pre-existing
    refuse_key(location, f"k{50 * k + 7}")  # a real failure inside chunk k
    batch = tm.BatchSubmission().transaction_limit(100).chunk_size(50).tasks(plan)
    with tm.TaskStore.open(location) as store:
        with pytest.raises(tm.BatchInterrupted, match=f"chunk {k + 1} of 5") as err:
            store.submit_batch(batch)
        partial = err.value.outcome
        assert err.value.kind == "store"
        assert len(partial) == 50 * k
        assert partial.to_polars()["index"].to_list() == list(range(50 * k))
        keys = set(store.tasks()["dedup_key"].to_list())
        assert keys == {f"k{i}" for i in range(50 * k)} | {"k5"}
        assert staged(location) == []  # nor the chunk staged ahead
        assert store.integrity_check() == "ok"
    allow_key(location)
    with tm.TaskStore.open(location) as store:
        again = store.submit_batch(batch)
        counts = again.counts()
        upgraded = 1 if k == 0 else 0  # k5 (priority 200) is raised by the first chunk to commit
        assert counts == {
            "submitted": 250 - 50 * k - upgraded,
            "deduplicated": 50 * k,
            "superseded": 0,
            "upgraded": upgraded,
            "failed": 0,
        }
        df = store.tasks()
        assert sorted(df["dedup_key"].to_list()) == sorted(f"k{i}" for i in range(250))
        # unique, but not necessarily 1..250: on PostgreSQL the ids the failed chunk drew
        # from the sequence are a gap (a sequence does not roll back)
        assert df["id"].n_unique() == 250


def _everything(store: tm.TaskStore) -> tuple[list, list]:
    """All of a store's rows, active and finished, every column."""
    return store.tasks().rows(), store.history().rows()


def test_plan_writes_nothing_and_predicts(store: tm.TaskStore, location: str | Path) -> None:
    store.submit(tm.TaskSubmission("t", dedup_key="k1", priority=200))
    batch = (
        tm.BatchSubmission()
        .transaction_limit(2)
        .chunk_size(2)
        .tasks([tm.TaskSubmission("t", dedup_key=k, priority=5) for k in ("k0", "k1", "k2", "k3")])
    )

    def state() -> tuple:
        if is_postgres(location):  # nor an id drawn from the sequence
            return _everything(store), run_sql(location, "SELECT last_value FROM taskmill.task_ids")
        return _everything(store), Path(location).read_bytes()  # not a byte of the file

    before = state()
    plan = store.plan_batch(batch)
    assert plan.planned and "plan — nothing written" in str(plan)
    assert state() == before
    assert staged(location) == []
    real = store.submit_batch(batch)
    assert (
        rows(plan)
        == rows(real)
        == [
            (0, "submitted", None, 2, None),
            (1, "upgraded", None, 1, None),
            (2, "submitted", None, 3, None),
            (3, "submitted", None, 4, None),
        ]
    )


@pytest.mark.sqlite_only(
    "the file's write lock (PostgreSQL's lock waits: tests/test_postgres_batch.py)"
)
def test_write_lock_held_by_another_process(db_path: Path) -> None:
    with tm.TaskStore.open(db_path) as store:
        store.submit(tm.TaskSubmission("t", dedup_key="before"))
    holder = subprocess.Popen(
        [
            PYTHON,
            "-c",
            textwrap.dedent(f"""
        import sqlite3, sys, time
        c = sqlite3.connect({str(db_path)!r}, isolation_level=None)
        c.execute("BEGIN EXCLUSIVE")
        print("locked", flush=True)
        sys.stdin.readline()
        c.execute("ROLLBACK")
    """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        with tm.TaskStore.open(db_path, busy_timeout=0.3) as store:
            t0 = time.monotonic()
            with pytest.raises(tm.SchedulerError) as err:
                store.submit_batch(_plan(10))
            assert err.value.kind == "store"
            assert "locked" in str(err.value)
            assert time.monotonic() - t0 < 10
    finally:
        assert holder.stdin is not None
        holder.stdin.write("\n")
        holder.stdin.close()
        holder.wait(10)
        assert holder.stdout is not None
        holder.stdout.close()
    with tm.TaskStore.open(db_path) as store:
        assert store.tasks()["dedup_key"].to_list() == ["before"]
        assert store.submit_batch(_plan(10)).counts()["submitted"] == 10
    assert not list(db_path.parent.glob("*.stage-*"))  # staging files never outlive a batch


# ---------------------------------------------------------------- rule 6: notification


async def test_one_batch_submitted_per_commit_and_no_per_task_events(
    location: str | Path,
) -> None:
    async with tm.Scheduler(location, executors={}) as sched:
        events = sched.subscribe()
        await sched.submit_batch(_plan(300))
        await sched.submit_batch(
            tm.BatchSubmission().transaction_limit(100).chunk_size(50).tasks(_plan(250, "c"))
        )
        await sched.submit_batch(_plan(300))  # all deduplicated: nothing committed
        got = events.drain()
    assert [type(e).__name__ for e in got] == ["BatchSubmitted"] * 6
    assert [e.count for e in got] == [300, 50, 50, 50, 50, 50]
    assert all(e.count == len(e.task_ids) for e in got)
    assert got[0].task_ids == tuple(range(1, 301))


async def test_first_task_starts_before_the_last_chunk_commits(location: str | Path) -> None:
    async def work(ctx: tm.TaskContext) -> None:
        await asyncio.sleep(0)

    async with tm.Scheduler(location, executors={"t": work}, max_concurrency=2) as sched:
        # room for every event: tasks run while the batch commits, each adding two
        events = sched.subscribe(maxsize=200_000)
        batch = tm.BatchSubmission().transaction_limit(1000).chunk_size(1000).tasks(_plan(40_000))
        await sched.submit_batch(batch)
        got = events.drain()
    kinds = [type(e).__name__ for e in got]
    last_commit = len(kinds) - 1 - kinds[::-1].index("BatchSubmitted")
    assert kinds.count("BatchSubmitted") == 40
    assert "TaskDispatched" in kinds[:last_commit]


async def test_batch_supersede_tells_the_running_attempt(location: str | Path) -> None:
    started = asyncio.Event()
    flags: list[bool] = []

    async def slow(ctx: tm.TaskContext) -> None:
        if ctx.payload == b'"v1"':
            started.set()
            try:
                await asyncio.sleep(30)
            finally:
                flags.append(ctx.cancelled)

    async with tm.Scheduler(location, executors={"t": slow}) as sched:
        events = sched.subscribe()
        await sched.submit(tm.TaskSubmission("t", dedup_key="k", payload="v1"))
        await asyncio.wait_for(started.wait(), 10)
        out = await sched.submit_batch(
            tm.BatchSubmission()
            .on_duplicate("supersede")
            .tasks([tm.TaskSubmission("t", dedup_key="k", payload="v2")])
        )
        await sched.wait_idle(timeout=10)
        got = events.drain()
    assert out.superseded == [(2, 1)]
    assert flags == [True]
    sup = [e for e in got if isinstance(e, tm.TaskSuperseded)]
    assert [(e.task_id, e.replaced_by, e.was_running) for e in sup] == [(1, 2, True)]


# ---------------------------------------------------------------- outcome


def test_outcome_forms(store: tm.TaskStore, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="taskmill"):
        out = store.submit_batch(
            [
                tm.TaskSubmission("t", dedup_key="a", group="g1"),
                tm.TaskSubmission("t", dedup_key="a", group="g1"),
                tm.TaskSubmission("t", priority=-3, group="g2"),
            ]
        )
    assert len(out) == 3
    df = out.to_polars()
    assert df.columns == [
        "index",
        "task_type",
        "dedup_key",
        "group",
        "priority",
        "action",
        "reason",
        "task_id",
        "replaced_task_id",
        "error",
    ]
    assert out.to_arrow().num_rows == 3
    assert out.counts() == {
        "submitted": 1,
        "deduplicated": 1,
        "superseded": 0,
        "upgraded": 0,
        "failed": 1,
    }
    assert out.summary("group").rows() == [("g1", 2, 1, 1, 0, 0, 0), ("g2", 1, 0, 0, 0, 0, 1)]
    text = str(out)
    assert "failed row 2: [invalid_priority] priority must be within 0..255, got -3" in text
    assert "<table>" in out._repr_html_()
    [record] = [r for r in caplog.records if r.name == "taskmill"]
    assert "batch of 3 rows" in record.getMessage()
    assert "submitted=1, deduplicated=1" in record.getMessage()


def test_parquet_file_and_folder(store: tm.TaskStore, tmp_path: Path) -> None:
    folder = tmp_path / "plan"
    folder.mkdir()
    pq.write_table(_plan(3, "a").to_arrow(), folder / "part-0.parquet")
    pq.write_table(_plan(2, "b").to_arrow(), folder / "part-1.parquet")
    out = store.submit_batch(folder)
    assert out.counts()["submitted"] == 5
    assert store.submit_batch(str(folder / "part-0.parquet")).counts()["deduplicated"] == 3


@pytest.mark.parametrize("packed", [False, True])
def test_parquet_payloads_stream_in_order_across_files_and_chunks(
    store: tm.TaskStore, tmp_path: Path, packed: bool
) -> None:
    folder = tmp_path / "plan"
    folder.mkdir()
    n = 0
    for f in range(3):
        rows = list(range(n, n + 7))
        n += 7
        frame = pl.DataFrame(
            {
                "task_type": ["t"] * 7,
                "dedup_key": [f"k{i}" for i in rows],
                "src": [f"/data/{i}" for i in rows],
                "size": rows,
            }
        )
        if not packed:
            frame = frame.select(
                "task_type",
                "dedup_key",
                pl.concat_str(pl.lit('{"src":"'), "src", pl.lit('"}')).alias("payload"),
            )
        # small row groups: batches of the reader never line up with the chunks
        frame.write_parquet(folder / f"part-{f}.parquet", row_group_size=3)
    batch = tm.BatchSubmission().transaction_limit(4).chunk_size(4).tasks(folder)
    if packed:
        batch = batch.payload_columns(["src", "size"])
    out = store.submit_batch(batch)
    assert out.submitted == list(range(1, 22))
    got = store.tasks().select("dedup_key", "payload").rows()
    if packed:
        want = [(f"k{i}", f'{{"src":"/data/{i}","size":{i}}}'.encode()) for i in range(21)]
    else:
        want = [(f"k{i}", f'{{"src":"/data/{i}"}}'.encode()) for i in range(21)]
    assert got == want


def test_parquet_oversized_payload_fails_its_row_only(store: tm.TaskStore, tmp_path: Path) -> None:
    path = tmp_path / "plan.parquet"
    pl.DataFrame(
        {
            "task_type": ["t", "t", "t"],
            "dedup_key": ["a", "b", "c"],
            "payload": [b"x", b"y" * (1024 * 1024 + 1), b"z"],
        }
    ).write_parquet(path)
    out = store.submit_batch(path)
    assert [(i, e.kind) for i, e in out.failed] == [(1, "payload_too_large")]
    assert store.tasks().select("dedup_key", "payload").rows() == [("a", b"x"), ("c", b"z")]
