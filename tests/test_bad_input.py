"""Bad input fails its own row and never poisons the store; outcomes claim only what the
store holds — on both backends (a SQLite file, a PostgreSQL database).  Every test here
failed on 0.1 (commit 043ae3e) for the defect it names; what is about SQLite files alone is
marked ``sqlite_only``."""

from __future__ import annotations

import asyncio
import decimal
import gc
import os
import shlex
import subprocess
import textwrap
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskmill as tm
from taskmill.cli import cli

from conftest import (
    ENV,
    PYTHON,
    allow_key,
    assert_store_consistent,
    raw_sql,
    refuse_key,
    run_sql,
    staged,
)

pytestmark = pytest.mark.backends("sqlite", "postgres")


def _invalid_utf8(values: list[bytes | None], kind: pa.DataType | None = None) -> pa.Array:
    """Arrow text holding bytes that are not UTF-8 (Arrow does not check a view)."""
    kind = pa.string() if kind is None else kind
    binary = {pa.string(): pa.binary(), pa.large_string(): pa.large_binary()}.get(kind)
    if binary is not None:
        return pa.array(values, type=binary).view(kind)
    return pa.array(values, type=pa.binary_view()).view(pa.string_view())


async def _runs_everything(db: str | Path) -> list[str]:
    """Run every task of the store through a scheduler; the keys, in the order run."""
    ran: list[str] = []

    async def work(ctx: tm.TaskContext) -> None:
        ran.append(ctx.dedup_key or "")

    async with tm.Scheduler(db, executors={"t": work}, max_concurrency=1) as sched:
        await sched.wait_idle(timeout=30)
    return ran


# ---------------------------------------------------------------- 1, 2: encodings


@pytest.mark.parametrize("kind", [pa.string(), pa.large_string(), pa.string_view()])
def test_invalid_utf8_in_an_arrow_column_fails_its_row_and_the_queue_keeps_running(
    location: str | Path, kind: pa.DataType
) -> None:
    """0.1: committed, then tasks() and every claim failed ("Could not decode to UTF-8
    column 'dedup_key'"): 0 of 4 tasks ran."""
    table = pa.table(
        {
            "task_type": ["t"] * 4,
            "dedup_key": _invalid_utf8([b"a", b"caf\xe9", b"b", b"c"], kind),
        }
    )
    with tm.TaskStore.open(location) as store:
        out = store.submit_batch(table)
        rows = out.to_polars().select("index", "action", "reason", "error").rows()
        assert rows == [
            (0, "submitted", None, None),
            (1, "failed", "invalid_encoding", "dedup_key is not valid UTF-8"),
            (2, "submitted", None, None),
            (3, "submitted", None, None),
        ]
        [(index, err)] = out.failed
        assert index == 1 and isinstance(err, tm.InvalidSubmission)
        assert err.field == "dedup_key"
        assert store.tasks()["dedup_key"].to_list() == ["a", "b", "c"]
    assert asyncio.run(_runs_everything(location)) == ["a", "b", "c"]


def test_invalid_utf8_in_other_text_columns_and_dictionaries(store: tm.TaskStore) -> None:
    groups = pa.DictionaryArray.from_arrays(
        pa.array([0, 1, 0]), _invalid_utf8([b"s3://eu", b"s3://\xff"])
    )
    table = pa.table(
        {
            "task_type": _invalid_utf8([b"t", b"t", b"\xc3("]),
            "dedup_key": ["a", "b", "c"],
            "group": groups,
            "label": _invalid_utf8([b"\x80", b"ok", b"ok"]),
        }
    )
    out = store.submit_batch(table).to_polars()
    assert out.select("index", "action", "reason", "error").rows() == [
        (0, "failed", "invalid_encoding", "label is not valid UTF-8"),
        (1, "failed", "invalid_encoding", "group is not valid UTF-8"),
        (2, "failed", "invalid_encoding", "task_type is not valid UTF-8"),
    ]
    assert store.tasks().height == 0 and store.integrity_check() == "ok"


def test_a_file_name_that_is_not_utf8_fails_its_row_in_every_input_form(
    store: tm.TaskStore,
) -> None:
    """0.1: a raw UnicodeEncodeError from submit(), and the whole submit_batch died."""
    name = os.fsdecode(b"caf\xe9.jpg")  # what os.listdir gives for a latin-1 name
    assert name == "caf\udce9.jpg"
    with pytest.raises(tm.InvalidSubmission) as err:
        store.submit(tm.TaskSubmission("t", dedup_key=name))
    assert (err.value.kind, err.value.field) == ("invalid_encoding", "dedup_key")
    as_list = store.plan_batch(
        [tm.TaskSubmission("t", dedup_key=name), tm.TaskSubmission("t", dedup_key="ok")]
    )
    frame = pd.DataFrame(
        {"task_type": ["t", "t"], "dedup_key": pd.Series([name, "ok"], dtype=object)}
    )
    as_pandas = store.plan_batch(frame)
    for out in (as_list, as_pandas):
        assert out.to_polars().select("action", "reason", "error").rows() == [
            ("failed", "invalid_encoding", "dedup_key is not valid UTF-8"),
            ("submitted", None, None),
        ]
    done = store.submit_batch(frame)
    assert done.counts()["submitted"] == 1
    assert store.tasks()["dedup_key"].to_list() == ["ok"]
    # the bad name is shown escaped in the outcome, never stored
    assert as_list.to_polars()["dedup_key"][0] == "caf\\udce9.jpg"


# ---------------------------------------------------------------- 3: NaN and infinities


def test_non_finite_numbers_fail_alike_in_a_list_and_a_packed_table(store: tm.TaskStore) -> None:
    """0.1: payload_columns turned NaN and ±inf into JSON null, while submit() refused
    the same payload as invalid_payload."""
    values = [1.5, float("nan"), float("inf"), float("-inf")]
    nested = [[1.0], [2.0], [float("nan")], [3.0]]
    listed = store.plan_batch(
        [
            tm.TaskSubmission("t", payload={"size": v, "parts": n})
            for v, n in zip(values, nested, strict=True)
        ]
    )
    packed = store.plan_batch(
        tm.BatchSubmission()
        .payload_columns(["size", "parts"])
        .tasks(pl.DataFrame({"task_type": ["t"] * 4, "size": values, "parts": nested}))
    )
    want = [
        ("submitted", None, None),
        ("failed", "invalid_payload", tm.model.NON_FINITE_PAYLOAD),
        ("failed", "invalid_payload", tm.model.NON_FINITE_PAYLOAD),
        ("failed", "invalid_payload", tm.model.NON_FINITE_PAYLOAD),
    ]
    assert listed.to_polars().select("action", "reason", "error").rows() == want
    assert packed.to_polars().select("action", "reason", "error").rows() == want
    nested_only = store.plan_batch(
        tm.BatchSubmission()
        .payload_columns(["s"])
        .tasks(pl.DataFrame({"task_type": ["t", "t"], "s": [{"x": 1.0}, {"x": float("inf")}]}))
    )
    assert nested_only.to_polars()["action"].to_list() == ["submitted", "failed"]


# ---------------------------------------------------------------- 4: panics and odd types


@pytest.mark.parametrize(
    ("column", "packed", "message"),
    [
        (pa.array([[b"x"]], type=pa.list_(pa.binary())), True, "no JSON form"),
        (pa.array([{"a": b"x"}]), True, "no JSON form"),
        (pa.array([decimal.Decimal("1.5")], type=pa.decimal256(40, 2)), False, "cannot read"),
        (pa.array([decimal.Decimal("1.5")], type=pa.decimal256(40, 2)), True, "cannot read"),
        (
            pa.array([pa.MonthDayNano([1, 2, 3])], type=pa.month_day_nano_interval()),
            False,
            "cannot read",
        ),
        (pc.run_end_encode(pa.array([1])), False, "cannot read"),
        (
            pa.UnionArray.from_sparse(
                pa.array([0], type=pa.int8()), [pa.array([1]), pa.array(["a"])]
            ),
            False,
            "cannot read",
        ),
    ],
    ids=[
        "list-of-binary",
        "struct-of-binary",
        "decimal256",
        "decimal256-packed",
        "interval",
        "run-end-encoded",
        "union",
    ],
)
def test_unsupported_columns_are_refused_before_anything_is_written(
    store: tm.TaskStore, column: pa.Array, packed: bool, message: str
) -> None:
    """0.1: pyo3_runtime.PanicException (a BaseException) or a raw polars ComputeError."""
    table = pa.table({"task_type": ["t"], "odd": column})
    batch = tm.BatchSubmission().tasks(table)
    batch = batch.payload_columns(["odd"]) if packed else batch.columns(label="odd")
    with pytest.raises(tm.SchedulerError, match=message) as err:
        store.submit_batch(batch)
    assert err.value.kind == "invalid_input" and "'odd'" in str(err.value)
    assert store.tasks().height == 0 and store.history().height == 0


# ---------------------------------------------------------------- 5: a plan that changes


def _plan_part(path: Path, prefix: str, n: int) -> None:
    keys = [f"{prefix}-{i:05d}" for i in range(n)]
    pl.DataFrame(
        {"task_type": ["t"] * n, "dedup_key": keys, "payload": [f"payload of {k}" for k in keys]}
    ).write_parquet(path)


def _payloads_match_keys(store: tm.TaskStore) -> int:
    tasks = store.tasks().select("dedup_key", "payload")
    for key, payload in tasks.iter_rows():
        assert payload == f"payload of {key}".encode(), (key, payload)
    return tasks.height


@pytest.mark.parametrize("how", ["replaced", "rewritten-in-place"])
@pytest.mark.usefixtures("streamed")
def test_a_parquet_plan_that_changes_mid_batch_stops_with_the_committed_part(
    location: str | Path, tmp_path: Path, how: str
) -> None:
    """0.1: a file replaced between the two reads attached other objects' payloads to
    20,000 of 40,000 tasks; one rewritten in place gave a raw OSError after 6 chunks."""
    folder = tmp_path / "plan"
    folder.mkdir()
    _plan_part(folder / "a.parquet", "a", 20_000)
    _plan_part(folder / "b.parquet", "b", 20_000)

    def change(done: int, total: int) -> None:
        if done != 10_000:
            return
        target = folder / "b.parquet"
        if how == "replaced":  # another plan renamed over it
            _plan_part(tmp_path / "other.parquet", "other", 20_000)
            os.replace(tmp_path / "other.parquet", target)
        else:
            with open(target, "r+b") as fh:  # same name, same inode, new bytes
                fh.seek(100)
                fh.write(b"\x00" * 64)

    batch = tm.BatchSubmission().transaction_limit(10_000).chunk_size(10_000).tasks(str(folder))
    with tm.TaskStore.open(location) as store:
        with pytest.raises(tm.BatchInterrupted, match="changed while the batch") as err:
            store.submit_batch(batch, progress=change)
        assert len(err.value.outcome) == 20_000  # the chunks of a.parquet, nothing after
        assert err.value.outcome.counts()["submitted"] == 20_000
        assert _payloads_match_keys(store) == 20_000
        assert_store_consistent(store)
    # the chunk staged ahead while the last one merged is gone too
    assert staged(location) == []


# ---------------------------------------------------------------- 6: interrupted outcomes


def test_an_outcome_never_claims_a_row_whose_winner_did_not_commit(location: str | Path) -> None:
    """0.1: row 0 was 'deduplicated (in_batch)' although no task had key a."""
    with tm.TaskStore.open(location):
        pass
    refuse_key(location, "boom")
    plan = [
        tm.TaskSubmission("t", dedup_key="a", payload="v1"),
        tm.TaskSubmission("t", dedup_key="b"),
        tm.TaskSubmission("t", dedup_key="a", payload="v2"),
        tm.TaskSubmission("t", dedup_key="boom"),
    ]
    batch = tm.BatchSubmission().transaction_limit(2).chunk_size(2).tasks(plan)
    with tm.TaskStore.open(location) as store:
        with pytest.raises(tm.BatchInterrupted) as err:
            store.submit_batch(batch)
        rows = err.value.outcome.to_polars().select("index", "action", "reason", "task_id")
        assert rows.rows() == [(0, "failed", "interrupted", None), (1, "submitted", None, 1)]
        [(index, error)] = err.value.outcome.failed
        assert index == 0 and "row 2" in str(error) and "chunk 2" in str(error)
        assert store.tasks()["dedup_key"].to_list() == ["b"]
    allow_key(location)
    with tm.TaskStore.open(location) as store:
        again = store.submit_batch(batch)
        assert again.counts()["submitted"] == 2  # a (v2) and boom
        assert store.tasks().select("dedup_key", "payload").rows() == [
            ("b", None),
            ("a", b'"v2"'),
            ("boom", None),
        ]


# ---------------------------------------------------------------- 7: terminal markup


HOSTILE = ["[/bold]", "[link=https://evil.example]s3://eu-west-1[/link]", ":warning: [red]x"]


def test_the_cli_prints_hostile_names_as_text(location: str | Path, tmp_path: Path) -> None:
    """0.1: a group named [/bold] made submit fail after committing and every later
    stats crash (MarkupError); a [link=…] group became a clickable link elsewhere."""
    plan = tmp_path / "plan.parquet"
    pl.DataFrame(
        {
            "task_type": ["t", "t", "t", "t"],
            "dedup_key": ["a", "b", "c", "[bold]k"],
            "group": [*HOSTILE, None],
            "priority": [1, 2, 3, 999],  # the last row fails: its key shows in the error list
        }
    ).write_parquet(plan)
    db = location
    wide = {"COLUMNS": "200"}
    submitted = CliRunner().invoke(cli, ["submit", str(plan), "--db", str(db)], env=wide)
    assert submitted.exit_code == 0, submitted.output
    for name in HOSTILE:
        assert name in submitted.output
    stats = CliRunner().invoke(cli, ["stats", "--db", str(db)], env=wide)
    assert stats.exit_code == 0, stats.output
    for name in HOSTILE:
        assert name in stats.output
    # on a real terminal too: no escape sequence for a link is ever written
    shown = subprocess.run(
        ["script", "-qec", f"{PYTHON} -m taskmill stats --db {shlex.quote(str(db))}", "/dev/null"],
        capture_output=True,
        env={**ENV, "COLUMNS": "200", "TERM": "xterm-256color"},
        timeout=120,
    )
    assert shown.returncode == 0
    assert b"\x1b]8;" not in shown.stdout  # OSC 8, the hyperlink sequence
    assert b"[link=https://evil.example]" in shown.stdout


# ---------------------------------------------------------------- 8: a lying footer


def _lying_footer(path: Path, claimed: int) -> None:
    """A Parquet file of 1,234 rows whose footer claims ``claimed`` rows."""
    import struct

    table = pa.table({"task_type": ["t"] * 1234, "dedup_key": [f"k{i}" for i in range(1234)]})
    pq.write_table(table, path)
    data = path.read_bytes()
    size = struct.unpack("<I", data[-8:-4])[0]
    footer = data[-8 - size : -8]

    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            low, n = n & 0x7F, n >> 7
            out.append(low | (0x80 if n else 0))
            if not n:
                return bytes(out)

    old = varint(1234 * 2)  # zigzag-encoded i64 in Thrift's compact protocol
    at = footer.index(old)  # the first one is the file's own row count
    new = footer[:at] + varint(claimed * 2) + footer[at + len(old) :]
    path.write_bytes(data[: -8 - size] + new + struct.pack("<I", len(new)) + b"PAR1")
    assert pq.read_metadata(path).num_rows == claimed


def test_a_parquet_footer_claiming_2_31_rows_is_refused_under_a_memory_limit(
    location: str | Path, tmp_path: Path
) -> None:
    """0.1: the process aborted (SIGABRT) under a memory limit."""
    plan = tmp_path / "lying.parquet"
    _lying_footer(plan, 2**31)
    code = textwrap.dedent(f"""
        import resource, taskmill as tm
        resource.setrlimit(resource.RLIMIT_AS, (3 * 1024**3, 3 * 1024**3))
        with tm.TaskStore.open({str(location)!r}) as store:
            try:
                store.submit_batch({str(plan)!r})
            except tm.SchedulerError as exc:
                print(exc.kind, exc)
            print("tasks", store.tasks().height)
    """)
    done = subprocess.run(
        [PYTHON, "-c", code], env=ENV, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "invalid_input" in done.stdout and "damaged Parquet file" in done.stdout
    assert "2,147,483,648 rows" in done.stdout and done.stdout.endswith("tasks 0\n")


# ---------------------------------------------------------------- 10: damaged stores


@pytest.mark.sqlite_only("it overwrites pages of the SQLite file")
def test_a_damaged_store_says_what_is_wrong_and_what_to_do(tmp_path: Path) -> None:
    """0.1: reported as 'not a SQLite database'."""
    db = tmp_path / "t.db"
    with tm.TaskStore.open(db) as store:
        store.submit_batch(pl.DataFrame({"task_type": ["t"] * 3000, "payload": ["x" * 200] * 3000}))
        with store.driver._lock:
            store.driver.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = 4096
    for p in range(2, len(data) // page):  # every page but the header page: garbage
        data[p * page + 10 : p * page + 60] = b"\xde\xad\xbe\xef" * 12 + b"!!"
    db.write_bytes(bytes(data))
    with pytest.raises(tm.StoreDamaged) as err, tm.TaskStore.open(db) as store:
        store.tasks()
        store.integrity_check()
    assert err.value.kind == "store"
    assert "damaged" in str(err.value) and "integrity_check" in str(err.value)


@pytest.mark.sqlite_only("files that are not a store, PRAGMA user_version")
def test_typed_store_errors(tmp_path: Path) -> None:
    text = tmp_path / "notes.db"
    text.write_text("not a database " * 100)
    with pytest.raises(tm.NotATaskStore):
        tm.TaskStore.open(text)
    other = tmp_path / "other.db"
    raw_sql(other, "CREATE TABLE x (a)")
    with pytest.raises(tm.NotATaskStore, match="not a taskmill store"):
        tm.TaskStore.open(other)
    newer = tmp_path / "newer.db"
    tm.TaskStore.open(newer).close()
    raw_sql(newer, "PRAGMA user_version = 99")
    with pytest.raises(tm.SchemaTooNew, match="upgrade taskmill"):
        tm.TaskStore.open(newer)
    for cls in (tm.StoreLocked, tm.NotATaskStore, tm.SchemaTooNew, tm.StoreDamaged):
        assert issubclass(cls, tm.StoreError) and issubclass(cls, tm.SchedulerError)


def test_typed_store_errors_on_postgres(pg_url: str) -> None:
    """test_typed_store_errors on a database: a store written by a newer taskmill is
    refused untouched, and a plain database is no obstacle (taskmill has its own schema)."""
    run_sql(pg_url, "CREATE TABLE public.x (a int)")
    tm.TaskStore.open(pg_url).close()  # the user's own tables live beside the store
    run_sql(pg_url, "UPDATE taskmill.meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(tm.SchemaTooNew, match="upgrade taskmill"):
        tm.TaskStore.open(pg_url)
    assert run_sql(pg_url, "SELECT value FROM taskmill.meta WHERE key = 'schema_version'") == [
        ("99",)
    ]


# ---------------------------------------------------------------- hostile tables, fuzzed


def _column(draw: st.DrawFn, n: int) -> pa.Array:
    kind = draw(
        st.sampled_from(
            [
                "string",
                "large_string",
                "string_view",
                "bad_utf8",
                "dict",
                "int",
                "uint64",
                "float",
                "bool",
                "binary",
                "list_str",
                "list_float",
                "struct",
                "decimal128",
                "decimal256",
                "date",
                "timestamp",
                "null",
                "list_binary",
                "interval",
            ]
        )
    )
    text = st.one_of(st.none(), st.text(max_size=8))
    if kind in ("string", "large_string", "string_view"):
        return pa.array(draw(st.lists(text, min_size=n, max_size=n)), type=getattr(pa, kind)())
    if kind == "bad_utf8":
        raw = draw(st.lists(st.one_of(st.none(), st.binary(max_size=6)), min_size=n, max_size=n))
        return pa.array(raw, type=pa.binary_view()).view(pa.string_view())
    if kind == "dict":
        return pa.array(draw(st.lists(text, min_size=n, max_size=n))).dictionary_encode()
    if kind == "int":
        return pa.array(
            draw(
                st.lists(
                    st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)), min_size=n, max_size=n
                )
            ),
            type=pa.int64(),
        )
    if kind == "uint64":
        return pa.array(
            draw(st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n)), type=pa.uint64()
        )
    if kind == "float":
        return pa.array(
            draw(st.lists(st.one_of(st.none(), st.floats()), min_size=n, max_size=n)),
            type=pa.float64(),
        )
    if kind == "bool":
        return pa.array(draw(st.lists(st.one_of(st.none(), st.booleans()), min_size=n, max_size=n)))
    if kind == "binary":
        return pa.array(
            draw(st.lists(st.one_of(st.none(), st.binary(max_size=6)), min_size=n, max_size=n))
        )
    if kind == "list_str":
        return pa.array(
            draw(st.lists(st.one_of(st.none(), st.lists(text, max_size=3)), min_size=n, max_size=n))
        )
    if kind == "list_float":
        return pa.array(
            draw(st.lists(st.lists(st.floats(), max_size=3), min_size=n, max_size=n)),
            type=pa.list_(pa.float64()),
        )
    if kind == "list_binary":
        return pa.array(
            draw(st.lists(st.lists(st.binary(max_size=3), max_size=2), min_size=n, max_size=n)),
            type=pa.list_(pa.binary()),
        )
    if kind == "struct":
        return pa.array([{"x": v} for v in draw(st.lists(st.floats(), min_size=n, max_size=n))])
    if kind in ("decimal128", "decimal256"):
        typ = pa.decimal128(10, 2) if kind == "decimal128" else pa.decimal256(40, 2)
        return pa.array([decimal.Decimal(i) / 4 for i in range(n)], type=typ)
    if kind == "date":
        return pa.array(list(range(n)), type=pa.date32())
    if kind == "timestamp":
        return pa.array(list(range(n)), type=pa.timestamp("us"))
    if kind == "interval":
        return pa.array(
            [pa.MonthDayNano([i, 0, 0]) for i in range(n)], type=pa.month_day_nano_interval()
        )
    return pa.nulls(n)


@st.composite
def hostile_batches(draw: st.DrawFn) -> tuple[pa.Table, list[str], list[str]]:
    n = draw(st.integers(0, 6))
    names = ["task_type", "dedup_key", "group", "label", "priority", "payload", "on_duplicate"]
    chosen = draw(st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True))
    extra = draw(st.lists(st.sampled_from(["p1", "p2", "p3"]), max_size=2, unique=True))
    columns = {name: _column(draw, n) for name in [*chosen, *extra]}
    return pa.table(columns), extra, chosen


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(batch=hostile_batches())
def test_hostile_arrow_tables_never_escape_or_poison(
    empty_store: Callable[[str], tm.TaskStore], batch: tuple[pa.Table, list[str], list[str]]
) -> None:
    """Any Arrow type (nested, views, dictionaries, decimal256, intervals, invalid UTF-8,
    NaN/inf): only SchedulerErrors, every row accounted for, the store intact and the
    queue still dispatching afterwards."""
    table, packed, _ = batch
    with empty_store("fuzz") as store:
        store.submit(tm.TaskSubmission("t", dedup_key="before"))
        spec = tm.BatchSubmission().tasks(table)
        if packed and "payload" not in table.column_names:
            spec = spec.payload_columns(packed)
        try:
            out = store.submit_batch(spec)
        except tm.SchedulerError as exc:
            assert str(exc)
            assert store.tasks()["dedup_key"].to_list() == ["before"]  # nothing written
        else:
            frame = out.to_polars()
            assert frame["index"].to_list() == list(range(table.num_rows))
        assert_store_consistent(store)
        store.tasks()  # every stored value reads back
        store.history()
        owner = store.new_owner()
        claimed = store.claim(100, task_types=["t"], owner=owner)
        assert claimed, "the queue still dispatches"
        assert store.complete_many([c.id for c in claimed], owner=owner) == {c.id for c in claimed}
        store.release_owner(owner)


# ---------------------------------------------------------------- 9: streams stream


def _spooled_files() -> set[str]:
    gc.collect()  # earlier tests' outcomes, still in reference cycles, let go of theirs
    import tempfile

    # this process's own (other processes on the machine may be submitting too)
    own = f"taskmill-plan-{os.getpid()}-*.parquet"
    return {p.name for p in Path(tempfile.gettempdir()).glob(own)}


@pytest.mark.usefixtures("streamed")
def test_a_record_batch_reader_is_read_batch_by_batch_and_leaves_nothing_behind(
    store: tm.TaskStore,
) -> None:
    """0.1: a RecordBatchReader was read whole into memory (read_all)."""
    consumed: list[int] = []
    schema = pa.schema([("task_type", pa.string()), ("dedup_key", pa.string())])

    def batches():
        for b in range(5):
            consumed.append(b)
            keys = [f"k{b}-{i}".encode() for i in range(1000)]
            if b == 3:
                keys[7] = b"caf\xe9"
            yield pa.record_batch(
                [pa.array(["t"] * 1000), pa.array(keys, type=pa.binary()).view(pa.string())],
                schema=schema,
            )

    before = _spooled_files()
    reader = pa.RecordBatchReader.from_batches(schema, batches())
    out = store.submit_batch(
        tm.BatchSubmission().transaction_limit(2000).chunk_size(2000).tasks(reader)
    )
    assert consumed == [0, 1, 2, 3, 4]
    assert out.counts()["submitted"] == 4999
    [(index, err)] = out.failed
    assert index == 3007 and err.kind == "invalid_encoding"
    assert store.tasks().height == 4999
    # the copy of the stream is gone; the checked rows stay while the outcome reads its keys
    assert len(_spooled_files() - before) == 1
    assert out.to_polars()["dedup_key"][3008] == "k3-8"
    del out
    gc.collect()
    assert not _spooled_files() - before  # none of this test's files is left


@pytest.mark.usefixtures("streamed")
def test_a_lazyframe_is_sunk_not_collected_and_a_failing_stream_cleans_up(
    store: tm.TaskStore, tmp_path: Path
) -> None:
    plan = tmp_path / "plan.parquet"
    pl.DataFrame(
        {"task_type": ["t"] * 300, "dedup_key": [f"k{i % 200}" for i in range(300)]}
    ).write_parquet(plan)
    before = _spooled_files()
    out = store.submit_batch(pl.scan_parquet(plan).filter(pl.col("dedup_key") != "k5"))
    assert out.counts() == {
        "submitted": 199,
        "deduplicated": 99,
        "superseded": 0,
        "upgraded": 0,
        "failed": 0,
    }
    with pytest.raises(tm.SchedulerError, match="unknown column 'oops'"):
        store.submit_batch(pl.scan_parquet(plan).with_columns(pl.lit(1).alias("oops")))
    del out
    gc.collect()
    assert not _spooled_files() - before  # none of this test's files is left


@pytest.mark.usefixtures("streamed")
def test_invalid_utf8_inside_a_parquet_plan_fails_its_row(
    store: tm.TaskStore, tmp_path: Path
) -> None:
    """0.1 (and polars' reader): the whole file was refused for one bad string."""
    plan = tmp_path / "plan.parquet"
    pq.write_table(
        pa.table(
            {
                "task_type": ["t"] * 3,
                "dedup_key": _invalid_utf8([b"a", b"caf\xe9", b"b"]),
                "payload": ["p-a", "p-x", "p-b"],
            }
        ),
        plan,
    )
    before = _spooled_files()
    out = store.submit_batch(plan)
    assert out.to_polars().select("action", "reason").rows() == [
        ("submitted", None),
        ("failed", "invalid_encoding"),
        ("submitted", None),
    ]
    assert store.tasks().select("dedup_key", "payload").rows() == [("a", b"p-a"), ("b", b"p-b")]
    del out
    gc.collect()
    assert not _spooled_files() - before  # none of this test's files is left
