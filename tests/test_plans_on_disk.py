"""Plans read from files (Parquet, Arrow streams, LazyFrames) keep only what in-batch dedup
needs in memory: the checked rows wait in a private file, keys are read back for the rows
an outcome shows, and a key-fingerprint collision never merges two different keys."""

from __future__ import annotations

import gc
import os
import tempfile
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import taskmill as tm
from taskmill.batch import dedup
from taskmill.batch import prepare as plan_module
from taskmill.plan import prepare

from conftest import assert_store_consistent

pytestmark = pytest.mark.usefixtures("streamed")  # however small, these plans go to disk

#: Duplicates inside the batch (k1 three times, k2 twice, k1 under another type), invalid
#: rows (an empty type, a priority of 300), a keyless row, and a payload per row.
PLAN = pl.DataFrame(
    {
        "task_type": ["up", "up", "del", "up", "", "up", "up", "up", "up"],
        "dedup_key": ["k1", "k2", "k1", "k1", "k3", "k4", None, "k2", "k1"],
        "group": ["g1", "g2", "g1", "g1", "g1", "g2", "g2", "g1", "g2"],
        "priority": [10, 20, 30, 40, 50, 300, 70, 80, 90],
        "payload": [f"p{i}" for i in range(9)],
    }
)


def _forms(tmp_path: Path) -> dict[str, object]:
    path = tmp_path / "plan.parquet"
    PLAN.write_parquet(path, row_group_size=4)
    handle = pq.ParquetFile(path)
    return {
        "parquet": path,
        "reader": pa.RecordBatchReader.from_batches(
            handle.schema_arrow, handle.iter_batches(batch_size=2)
        ),
        "lazy": pl.scan_parquet(path),
    }


def _expected(tmp_path: Path) -> pl.DataFrame:
    with tm.TaskStore.open(tmp_path / "reference.db") as store:
        return store.submit_batch(PLAN).to_polars()


@pytest.mark.parametrize("share", [None, 1, 3])
@pytest.mark.parametrize("form", ["parquet", "reader", "lazy"])
def test_a_plan_on_disk_gives_the_in_memory_outcome_with_a_narrow_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str, share: int | None
) -> None:
    """``share``: dedup sorts the fingerprints of this many rows at a time (by default
    all of these at once; 1 and 3: in 9 and 3 shares, each holding every repeat of its
    keys)."""
    expected = _expected(tmp_path)
    if share is not None:
        monkeypatch.setattr(plan_module, "DEDUP_SHARE_ROWS", share)
    source = _forms(tmp_path)[form]
    prepared = prepare(source)
    # what stays in memory per row: whether it wins; apart, the failed rows and the
    # rows that lose to a later row of their key
    assert prepared.frame.columns == ["winner"]
    winners = [False, False, True, False, False, False, True, True, True]
    assert prepared.frame["winner"].to_list() == winners
    assert prepared.sparse is not None
    marks = prepared.marks(0, len(prepared))
    assert marks.columns == [
        "index",
        "error_kind",
        "error_field",
        "error",
        "winner_index",
        "winner",
    ]
    assert marks["winner"].to_list() == winners
    failed = marks.filter(pl.col("error_kind").is_not_null())["index"].to_list()
    assert prepared.sparse.errors["index"].to_list() == failed
    lost = marks.filter(~pl.col("winner") & pl.col("error_kind").is_null())
    assert prepared.sparse.losers.rows() == lost.select("index", "winner_index").rows()
    # any range of rows gives the same marks as the whole
    assert pl.concat([prepared.marks(0, 4), prepared.marks(4, 9)]).equals(marks)
    prepared.close()
    with tm.TaskStore.open(tmp_path / f"{form}.db") as store:
        out = store.submit_batch(_forms(tmp_path)[form])
        assert out.to_polars().equals(expected)
        tasks, _ = assert_store_consistent(store, key_hashes=True)
        got = tasks.select("task_type", "dedup_key", "payload").sort("payload").rows()
        assert got == [
            ("del", "k1", b"p2"),
            ("up", None, b"p6"),
            ("up", "k2", b"p7"),
            ("up", "k1", b"p8"),
        ]


def test_the_outcome_reads_keys_for_the_rows_it_shows(tmp_path: Path) -> None:
    expected = _expected(tmp_path)
    with tm.TaskStore.open(tmp_path / "tasks.db") as store:
        out = store.submit_batch(_forms(tmp_path)["parquet"])
    failed = out.rows(pl.col("action") == "failed")
    assert failed.select("index", "task_type", "dedup_key", "reason", "error_field").rows() == [
        (4, "", "k3", "invalid_task_type", "task_type"),
        (5, "up", "k4", "invalid_priority", "priority"),
    ]
    assert out.rows(pl.col("action") == "deduplicated", limit=2)["index"].to_list() == [0, 1]
    assert out.deduplicated == ["k1", "k2", "k1"]
    assert out.summary("group").equals(
        tm.BatchOutcome(expected).summary("group")  # the same table built in memory
    )
    by_type = out.summary(["task_type", "action"])
    assert by_type.equals(tm.BatchOutcome(expected).summary(["task_type", "action"]))
    assert by_type.select("task_type", "action", "rows").rows() == [
        ("", "failed", 1),
        ("del", "submitted", 1),
        ("up", "submitted", 3),
        ("up", "deduplicated", 3),
        ("up", "failed", 1),
    ]
    assert [(i, e.kind, e.field) for i, e in out.failed] == [
        (4, "invalid_task_type", "task_type"),
        (5, "invalid_priority", "priority"),
    ]
    with pytest.raises(tm.SchedulerError, match="no outcome column 'colour'"):
        out.summary("colour")


def test_the_checked_rows_live_as_long_as_an_outcome_reads_them(tmp_path: Path) -> None:
    def spooled() -> set[Path]:
        gc.collect()  # earlier tests' outcomes, still in reference cycles, let go of theirs
        own = f"taskmill-plan-{os.getpid()}-*.parquet"  # not other processes' plans
        return set(Path(tempfile.gettempdir()).glob(own))

    before = spooled()
    with tm.TaskStore.open(tmp_path / "tasks.db") as store:
        out = store.submit_batch(_forms(tmp_path)["reader"])
        planned = store.plan_batch(_forms(tmp_path)["parquet"])
    assert len(spooled() - before) == 2
    # 3 keys already queued now, 3 rows lost inside the batch; the keyless row goes on
    assert planned.counts() == {
        "submitted": 1,
        "deduplicated": 6,
        "superseded": 0,
        "upgraded": 0,
        "failed": 2,
    }
    del planned
    gc.collect()
    assert len(spooled() - before) == 1
    assert out.to_polars()["dedup_key"].to_list() == PLAN["dedup_key"].to_list()
    del out
    gc.collect()
    assert not spooled() - before  # none of this test's files is left


@pytest.mark.parametrize("form", ["polars", "parquet"])
def test_a_fingerprint_collision_never_merges_two_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    """Every keyed row gets the same fingerprint (the real one wrapped at its interface):
    only the exact keys may decide which rows are duplicates."""
    expected = _expected(tmp_path)
    real = dedup._fingerprint

    def constant() -> pl.Expr:
        return pl.when(real().is_not_null()).then(pl.lit(42, dtype=pl.UInt64))

    monkeypatch.setattr(dedup, "_fingerprint", constant)
    source = PLAN if form == "polars" else _forms(tmp_path)["parquet"]
    with tm.TaskStore.open(tmp_path / "tasks.db") as store:
        out = store.submit_batch(source)
        assert out.to_polars().equals(expected)
        assert_store_consistent(store, key_hashes=True)


def test_repeated_finds_every_value_seen_twice() -> None:
    values = pl.Series([5, None, 7, 5, None, 9, 7, 7], dtype=pl.UInt64)
    assert dedup._repeated(values).to_list() == [
        True,
        False,
        True,
        True,
        False,
        False,
        True,
        True,
    ]
    assert dedup._repeated(pl.Series([], dtype=pl.UInt64)).to_list() == []


def test_a_small_plan_from_a_file_is_prepared_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Up to IN_MEMORY_ROWS rows a file or a stream is read once, whole: no private file."""
    monkeypatch.setattr(plan_module, "IN_MEMORY_ROWS", PLAN.height)
    expected = _expected(tmp_path)
    for form, source in _forms(tmp_path).items():
        prepared = prepare(source)
        assert prepared.checked is None and prepared.payloads is None, form
        assert "dedup_key" in prepared.frame.columns
    with tm.TaskStore.open(tmp_path / "tasks.db") as store:
        assert store.submit_batch(_forms(tmp_path)["reader"]).to_polars().equals(expected)
    monkeypatch.setattr(plan_module, "IN_MEMORY_ROWS", PLAN.height - 1)  # one row more: on disk
    assert prepare(_forms(tmp_path)["parquet"]).checked is not None
