"""Reliability: crashes mid-batch, a full or read-only disk, and malformed input — on both
backends (a SQLite file, a PostgreSQL database).  What is about SQLite files (a tmpfs that
fills up or turns read-only, staging files beside the store) is marked ``sqlite_only``, with
a PostgreSQL counterpart where the behaviour matters there too.

Short forms run in CI; the long forms (``pytest -m slow``) run 20 crash trials and
10,000 fuzzed inputs.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskmill as tm

from conftest import (
    ENV,
    PYTHON,
    ROOT,
    allow_key,
    can_mount,
    is_postgres,
    need,
    refuse_key,
    run_sql,
    staged,
)

pytestmark = pytest.mark.backends("sqlite", "postgres")

ROWS, CHUNK = 3_000, 100


def _keys() -> list[str]:
    return [f"obj-{i:05d}" for i in range(ROWS)]


def _stage_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.stage-*"))


@pytest.fixture
def new_location(
    location: str | Path, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[[str], str | Path]:
    """``new_location(name)``: where a new, empty store of the test's backend is — a file
    in tmp_path, or a new database on the test server."""
    if not is_postgres(location):
        return lambda name: tmp_path / f"{name}.db"
    server = request.getfixturevalue("pg_server")
    base = str(location).rsplit("/", 1)[1]
    return lambda name: server.create_database(f"{base}_{name.replace('-', '_')}")


# ---------------------------------------------------------------- crashes

SUBMITTER = textwrap.dedent("""
    import sys, polars as pl, taskmill as tm
    keys = [f"obj-{i:05d}" for i in range(%(rows)d)]
    plan = pl.DataFrame({"task_type": ["t"] * len(keys), "dedup_key": keys,
                         "payload": [k * 20 for k in keys]})
    with tm.TaskStore.open(sys.argv[1]) as store:
        print("ready", flush=True)
        store.submit_batch(tm.BatchSubmission().transaction_limit(%(chunk)d)
                           .chunk_size(%(chunk)d).tasks(plan),
                           progress=lambda done, total: print(done, flush=True))
    print("done", flush=True)
""") % {"rows": ROWS, "chunk": CHUNK}


def crash_trial(
    new_location: Callable[[str], str | Path], seed: int, *, after_chunks: int | None = None
) -> int:
    """Kill a chunked batch right after ``after_chunks`` chunks committed (by default a
    seeded number of them, plus up to 50 ms: whatever the machine's speed, the kills land
    all along the batch); check the store; resubmit; check again.

    Returns how many chunks had committed when the process died.
    """
    db = new_location(f"crash-{seed}")
    proc = subprocess.Popen(
        [PYTHON, "-c", SUBMITTER, str(db)], env=ENV, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    if after_chunks is None:  # a seeded moment: after some chunks, then a little more
        rng = random.Random(seed)
        after_chunks = rng.randint(0, ROWS // CHUNK - 1)
        pause = rng.uniform(0.0, 0.05)
    else:
        pause = 0.0
    for _ in range(after_chunks):  # each line: one chunk committed
        assert int(proc.stdout.readline()) > 0
    time.sleep(pause)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    proc.stdout.close()
    keys = _keys()
    with tm.TaskStore.open(db) as store:
        assert store.integrity_check() == "ok"
        assert staged(db) == []  # a dead process's staging files are swept on open
        present = store.tasks()
        n = present.height
        assert n % CHUNK == 0  # whole chunks only: each is all-or-nothing
        assert present["dedup_key"].to_list() == keys[:n]  # in input order, a prefix
        assert present["id"].to_list() == list(range(1, n + 1))
        assert present["payload"].to_list() == [k.encode() * 20 for k in keys[:n]]
        plan = pl.DataFrame(
            {"task_type": ["t"] * ROWS, "dedup_key": keys, "payload": [k * 20 for k in keys]}
        )
        again = store.submit_batch(
            tm.BatchSubmission().transaction_limit(CHUNK).chunk_size(CHUNK).tasks(plan)
        )
        assert again.counts()["deduplicated"] == n
        assert again.counts()["submitted"] == ROWS - n
        final = store.tasks()
        assert final["dedup_key"].to_list() == keys  # exactly the batch, once, in order
        assert final["id"].n_unique() == ROWS
        assert store.integrity_check() == "ok"
    return n // CHUNK


def test_crash_mid_batch_short(new_location: Callable[[str], str | Path]) -> None:
    # killed once the 3rd, 11th, 20th chunk had committed: whatever else was under way
    # (the 4th, 12th, 21st chunk's staging or merge) is lost whole, nothing after it
    committed = [
        crash_trial(new_location, seed, after_chunks=k) for seed, k in enumerate((3, 11, 20))
    ]
    for k, n in zip((3, 11, 20), committed, strict=True):
        assert k <= n <= k + 1 < ROWS // CHUNK, committed  # the kill landed mid-batch


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_crash_mid_batch_long(new_location: Callable[[str], str | Path]) -> None:
    committed = [crash_trial(new_location, seed) for seed in range(20)]
    # the kills landed at different moments: before, inside and after the batch
    assert len(set(committed)) >= 4, committed
    out = ROOT / "test-output" / "crash-trials.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"trials": 20, "chunks_committed_at_kill": committed}))


# ---------------------------------------------------------------- faults


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs (the tests run as root, as CI does)."""
    need(can_mount(), "root and mount(8) to mount a tmpfs", "run the tests as root (CI does)")
    mount = tmp_path / "fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.sqlite_only("a SQLite file on a tmpfs that fills up")
def test_full_disk_is_a_clear_error_and_nothing_half_written(small_fs: Path) -> None:
    db = small_fs / "tasks.db"
    with tm.TaskStore.open(db) as store:
        store.submit_batch(
            pl.DataFrame({"task_type": ["t"] * 10, "dedup_key": [f"k{i}" for i in range(10)]})
        )
        before = store.tasks()
        big = pl.DataFrame(
            {
                "task_type": ["t"] * 20_000,
                "dedup_key": [f"big-{i}" for i in range(20_000)],
                "payload": ["x" * 300] * 20_000,
            }
        )
        with pytest.raises(tm.SchedulerError) as err:
            store.submit_batch(big)
        assert err.value.kind == "store"
        assert "full" in str(err.value).lower() or "space" in str(err.value).lower()
        assert store.tasks().equals(before)
        assert store.integrity_check() == "ok"
        assert not _stage_files(small_fs)
        # still usable
        assert store.submit(tm.TaskSubmission("t", dedup_key="after")).action == "submitted"


@pytest.fixture
def small_tablespace(pg_url: str) -> Iterator[str]:
    """A tablespace of the test server on a 3 MiB tmpfs (a folder the server's own system
    user can reach), holding the table of active tasks; its name."""
    import pwd
    import tempfile

    from taskmill.pgserver import SYSTEM_USER

    need(can_mount(), "root and mount(8) to mount a tmpfs", "run the tests as root (CI does)")
    try:
        server_user = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        pytest.skip("the test server does not run as a system user of its own")
    mount = Path(tempfile.mkdtemp(prefix="taskmill-tablespace-"))
    os.chmod(mount, 0o755)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    name = "small_" + pg_url.rsplit("/", 1)[1]
    try:
        os.chown(mount, server_user.pw_uid, server_user.pw_gid)
        tm.TaskStore.open(pg_url).close()
        run_sql(pg_url, f"CREATE TABLESPACE {name} LOCATION '{mount}'")
        try:
            run_sql(pg_url, f"ALTER TABLE taskmill.tasks SET TABLESPACE {name}")
            yield name
        finally:
            run_sql(pg_url, "ALTER TABLE taskmill.tasks SET TABLESPACE pg_default")
            run_sql(pg_url, f"DROP TABLESPACE {name}")
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def test_full_disk_on_postgres(pg_url: str, small_tablespace: str) -> None:
    """test_full_disk_is_a_clear_error_and_nothing_half_written on PostgreSQL: the disk
    that fills up holds the table of active tasks."""
    with tm.TaskStore.open(pg_url) as store:
        store.submit_batch(
            pl.DataFrame({"task_type": ["t"] * 10, "dedup_key": [f"k{i}" for i in range(10)]})
        )
        before = store.tasks()
        big = pl.DataFrame(
            {
                "task_type": ["t"] * 20_000,
                "dedup_key": [f"big-{i}" for i in range(20_000)],
                "payload": ["x" * 300] * 20_000,
            }
        )
        with pytest.raises(tm.SchedulerError) as err:
            store.submit_batch(big)
        assert err.value.kind == "store"
        assert "full" in str(err.value).lower() or "space" in str(err.value).lower()
        assert store.tasks().equals(before)
        assert store.integrity_check() == "ok"
        assert staged(pg_url) == []
        # still usable
        assert store.submit(tm.TaskSubmission("t", dedup_key="after")).action == "submitted"


@pytest.mark.sqlite_only("a SQLite file on a tmpfs remounted read-only")
def test_read_only_file_system(small_fs: Path) -> None:
    db = small_fs / "tasks.db"
    with tm.TaskStore.open(db) as store:
        store.submit(tm.TaskSubmission("t", dedup_key="k"))
        store.driver.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    try:
        with pytest.raises(tm.SchedulerError) as err, tm.TaskStore.open(db) as store:
            store.submit(tm.TaskSubmission("t", dedup_key="k2"))
        assert err.value.kind == "store"
        assert (
            "readonly" in str(err.value).lower()
            or "read-only" in str(err.value).lower()
            or "unable to open" in str(err.value).lower()
        )
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    with tm.TaskStore.open(db) as store:
        assert store.tasks()["dedup_key"].to_list() == ["k"]


def test_read_only_database(pg_url: str) -> None:
    """test_read_only_file_system on PostgreSQL: the database turned read-only (every new
    transaction of it read-only, as on a standby)."""
    with tm.TaskStore.open(pg_url) as store:
        store.submit(tm.TaskSubmission("t", dedup_key="k"))
    name = pg_url.rsplit("/", 1)[1]
    run_sql(pg_url, f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    try:
        with pytest.raises(tm.SchedulerError) as err, tm.TaskStore.open(pg_url) as store:
            store.submit(tm.TaskSubmission("t", dedup_key="k2"))
        assert err.value.kind == "store"
        assert "read-only" in str(err.value).lower()
    finally:
        # from another database: every transaction of this one is read-only now
        admin = pg_url.rsplit("/", 1)[0] + "/postgres"
        run_sql(admin, f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
    with tm.TaskStore.open(pg_url) as store:
        assert store.tasks()["dedup_key"].to_list() == ["k"]


@pytest.mark.sqlite_only("a 0.1 store is a SQLite file; here on a tmpfs remounted read-only")
def test_a_01_store_on_a_read_only_file_system_is_refused_untouched(small_fs: Path) -> None:
    db = small_fs / "old.db"
    shutil.copy(ROOT / "tests" / "fixtures" / "store-v1.db", db)
    before = db.read_bytes()
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    try:
        with pytest.raises(tm.SchedulerError) as err:
            tm.TaskStore.open(db)
        assert err.value.kind == "store"
        message = str(err.value).lower()
        assert "older schema" in message or "read" in message or "unable to open" in message
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_fs)], check=True)
    assert db.read_bytes() == before
    assert sorted(p.name for p in small_fs.iterdir()) == ["old.db"]


def test_staging_files_never_outlive_a_failed_batch(location: str | Path) -> None:
    with tm.TaskStore.open(location) as store:
        with pytest.raises(tm.SchedulerError):
            store.submit_batch(pl.DataFrame({"task_type": ["t"], "nope": [1]}))
        refuse_key(location, None)  # every insert fails
        with pytest.raises(tm.SchedulerError):
            store.submit_batch(pl.DataFrame({"task_type": ["t"] * 5}))
        assert staged(location) == []
    allow_key(location)


@pytest.mark.sqlite_only("staging files beside the SQLite file")
def test_a_dead_processs_staging_files_are_swept_on_open(tmp_path: Path) -> None:
    db = tmp_path / "tasks.db"
    tm.TaskStore.open(db).close()
    # a dead process's leftovers are swept when the store is next opened
    leftover = tmp_path / ".tasks.db.stage-999999999-abc.sqlite"
    leftover.write_bytes(b"")
    mine = tmp_path / f".tasks.db.stage-{os.getpid()}-abc.sqlite"
    mine.write_bytes(b"")
    tm.TaskStore.open(db).close()
    assert not leftover.exists() and mine.exists()
    mine.unlink()


def test_a_dead_processs_staging_tables_are_swept_on_open(pg_url: str) -> None:
    """The same on PostgreSQL, where a batch stages into tables of the schema taskmill."""
    from taskmill.store.postgres.batch import stage_prefix

    tm.TaskStore.open(pg_url).close()
    leftover = f"{stage_prefix(999999999)}abc"
    mine = f"{stage_prefix()}abc"
    for name in (leftover, mine):
        run_sql(pg_url, f'CREATE UNLOGGED TABLE taskmill."{name}" (ord bigint)')
    tm.TaskStore.open(pg_url).close()
    assert staged(pg_url) == [mine]
    run_sql(pg_url, f'DROP TABLE taskmill."{mine}"')


# ---------------------------------------------------------------- malformed input

NAMES = [
    "task_type",
    "dedup_key",
    "group",
    "priority",
    "payload",
    "label",
    "expected_read_bytes",
    "on_duplicate",
    "max_retries",
    "x'); DROP TABLE tasks; --",
    'weird "name"',
    "ünïcode",
]
DTYPES = [
    pl.String,
    pl.Int64,
    pl.Float64,
    pl.Boolean,
    pl.Binary,
    pl.List(pl.String),
    pl.Null,
    pl.UInt64,
    pl.Int8,
]


def _values(dtype: pl.DataType, n: int) -> st.SearchStrategy:
    text = st.one_of(
        st.none(),
        st.sampled_from(
            ["", "t", "k1", "x" * 5000, "'; DROP TABLE tasks; --", "\u0000nul", "skip", "supersede"]
        ),
        st.text(max_size=8),
    )
    pick = {
        pl.String: text,
        pl.Int64: st.one_of(
            st.none(), st.integers(-(2**63), 2**63 - 1), st.sampled_from([0, 5, 255, 256, -1])
        ),
        pl.Float64: st.one_of(
            st.none(),
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([1.0, 2.5, 300.0]),
        ),
        pl.Boolean: st.one_of(st.none(), st.booleans()),
        pl.Binary: st.one_of(st.none(), st.binary(max_size=10), st.just(b"\xff\xfe invalid utf-8")),
        pl.Null: st.none(),
        pl.UInt64: st.one_of(st.none(), st.integers(0, 2**64 - 1)),
        pl.Int8: st.one_of(st.none(), st.integers(-128, 127)),
    }
    base = pick.get(
        dtype, st.one_of(st.none(), st.lists(text.filter(lambda v: v is not None), max_size=3))
    )
    return st.lists(base, min_size=n, max_size=n)


@st.composite
def tables(draw: st.DrawFn) -> pl.DataFrame:
    n = draw(st.integers(0, 12))
    names = draw(st.lists(st.sampled_from(NAMES), min_size=0, max_size=5, unique=True))
    if draw(st.booleans()):
        names = ["task_type", *[c for c in names if c != "task_type"]]
    columns = {}
    for name in names:
        dtype = draw(
            st.sampled_from(DTYPES if name != "task_type" or draw(st.booleans()) else [pl.String])
        )
        columns[name] = pl.Series(name, draw(_values(dtype, n)), dtype=dtype, strict=False)
    return pl.DataFrame(columns) if columns else pl.DataFrame()


def fuzz_once(store: tm.TaskStore, frame: pl.DataFrame) -> None:
    before = store.tasks()
    try:
        out = store.submit_batch(frame)
    except tm.SchedulerError as exc:
        assert str(exc)  # a message that says what was wrong
        assert store.tasks().equals(before)  # nothing written
        return
    assert len(out) == frame.height
    assert out.to_polars()["index"].to_list() == list(range(frame.height))
    added = out.counts()["submitted"] + out.counts()["superseded"]
    after = store.tasks()
    assert after.height == before.height + added - out.counts()["superseded"]
    for _, err in out.failed:
        assert isinstance(err, tm.SchedulerError) and err.kind and str(err)
    assert (
        after.filter(pl.col("dedup_key").is_not_null())
        .select("task_type", "dedup_key")
        .is_duplicated()
        .sum()
        == 0
    )


FUZZ = dict(
    deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)


@settings(max_examples=150, **FUZZ)
@given(frame=tables())
def test_malformed_tables_short(location: str | Path, frame: pl.DataFrame) -> None:
    with tm.TaskStore.open(location) as store:
        fuzz_once(store, frame)
        assert store.integrity_check() == "ok"


@pytest.mark.slow
@pytest.mark.timeout(3600)
@settings(max_examples=10_000, **FUZZ)
@given(frame=tables())
def test_malformed_tables_long(location: str | Path, frame: pl.DataFrame) -> None:
    with tm.TaskStore.open(location) as store:
        fuzz_once(store, frame)


def test_hostile_keys_groups_and_column_names_are_data(store: tm.TaskStore) -> None:
    evil = "x'); DROP TABLE tasks; --"
    out = store.submit_batch(
        pl.DataFrame(
            {
                "task_type": [evil],
                "dedup_key": [evil],
                "group": [evil],
                "label": ['"; DELETE FROM history'],
            }
        )
    )
    assert out.submitted == [1]
    assert store.tasks().select("task_type", "dedup_key", "group").rows() == [(evil, evil, evil)]
    with pytest.raises(tm.SchedulerError, match="unknown column"):
        store.submit_batch(pl.DataFrame({"task_type": ["t"], evil: [1]}))
    assert store.integrity_check() == "ok" and store.counts()["pending"] == 1


@pytest.mark.parametrize(
    ("field", "limit"), [("task_type", 4096), ("dedup_key", 4096), ("group", 1024), ("label", 1024)]
)
def test_text_limits_at_and_past_the_edge(store: tm.TaskStore, field: str, limit: int) -> None:
    base = {"task_type": "t", "dedup_key": None, "group": None, "label": None}
    ok = {**base, field: "a" * limit}
    too_long = {**base, field: "b" * (limit + 1)}
    out = store.submit_batch(pl.DataFrame([ok, too_long], schema={k: pl.String for k in base}))
    assert out.counts()["submitted"] == 1
    [(index, err)] = out.failed
    assert index == 1 and err.field == field
    assert f"longer than {limit:,} characters" in str(err)


def test_unsigned_values_past_int64_fail_their_row(store: tm.TaskStore) -> None:
    frame = pl.DataFrame(
        {"task_type": ["t", "t"], "expected_read_bytes": pl.Series([5, 2**64 - 1], dtype=pl.UInt64)}
    )
    out = store.submit_batch(frame)
    assert out.submitted == [1]
    [(index, err)] = out.failed
    assert index == 1 and err.kind == "invalid_expected_bytes"
    assert str(err).endswith("got 18446744073709551615")
    assert store.tasks()["expected_read_bytes"].to_list() == [5]


def test_exiting_right_after_a_batch_that_staged_nothing(location: str | Path) -> None:
    """DuckDB starts in the background when a batch begins; a process that exits before
    it is ready (nothing was staged) must still exit cleanly."""
    code = textwrap.dedent(f"""
        import polars as pl, taskmill as tm
        store = tm.TaskStore.open({str(location)!r})
        store.plan_batch(pl.DataFrame({{"task_type": [""]}}))
    """)
    for _ in range(5):
        proc = subprocess.run(
            [PYTHON, "-c", code], env=ENV, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
