"""A batch's transaction is merged while it is still being staged: DuckDB fills staging
file ``j + 1`` while the store's connection merges file ``j`` (SQLite), the WAL is
checkpointed off the batch's path, and every outcome says where its time went."""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import pytest

import taskmill as tm
from taskmill.backends.staging import FIRST_PART_ROWS, PART_ROWS, Stager

from conftest import assert_store_consistent

pytestmark = pytest.mark.backends("sqlite", "postgres")

ROWS = FIRST_PART_ROWS + 3 * PART_ROWS  # four staging files in one transaction


def plan(n: int, prefix: str = "k") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "task_type": ["sync.upload"] * n,
            "dedup_key": [f"{prefix}{i:06d}" for i in range(n)],
            "priority": [i % 3 * 64 for i in range(n)],
        }
    )


def test_a_transaction_of_several_staging_files_keeps_every_row_in_order(
    store: tm.TaskStore,
) -> None:
    """Every fourth key is already queued: the others are inserted with ids in input
    order across the staging files, the queued ones are deduplicated (or upgraded)."""
    first = store.submit_batch(plan(ROWS).gather_every(4))
    assert first.counts()["submitted"] == ROWS // 4
    before = store.tasks().select("id", "dedup_key", "priority")
    out = store.submit_batch(plan(ROWS).with_columns(pl.lit(0).alias("priority")))
    counts = out.counts()
    assert counts["submitted"] == ROWS - ROWS // 4
    # a queued task at priority 64 or 128 is raised to 0; one already at 0 is skipped
    at_zero = before.filter(pl.col("priority") == 0).height
    assert counts["upgraded"] == ROWS // 4 - at_zero and counts["deduplicated"] == at_zero
    frame = out.to_polars()
    new = frame.filter(pl.col("action") == "submitted")
    assert new["index"].to_list() == [i for i in range(ROWS) if i % 4]
    start = new["task_id"][0]
    assert new["task_id"].to_list() == list(range(start, start + new.height))
    old = frame.filter(pl.col("action") != "submitted")
    assert old["task_id"].to_list() == before["id"].sort().to_list()
    active, history = assert_store_consistent(store)
    assert active.height == ROWS and history.height == 0
    assert (active["priority"] == 0).all()


@pytest.mark.sqlite_only(reason="the staging files and their pipeline are SQLite's")
def test_a_staging_file_that_fails_mid_transaction_leaves_the_store_untouched(
    store: tm.TaskStore, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third file fails after the first two were merged: the transaction rolls
    back whole, and no staging file is left beside the store."""
    store.submit(tm.TaskSubmission("sync.upload", dedup_key="before"))
    real_fill = Stager.fill
    calls: list[int] = []

    def failing_fill(path: Path, frame: pl.DataFrame) -> list[tuple[int, int]]:
        calls.append(frame.height)
        if len(calls) == 3:
            raise OSError("disk full (injected)")
        return real_fill(path, frame)

    monkeypatch.setattr(Stager, "fill", staticmethod(failing_fill))
    with pytest.raises(tm.SchedulerError, match=r"cannot stage a batch .*disk full \(injected\)"):
        store.submit_batch(plan(ROWS))
    assert len(calls) == 3
    active, history = assert_store_consistent(store)
    assert active["dedup_key"].to_list() == ["before"] and history.height == 0
    folder = store.driver.path.parent  # type: ignore[attr-defined]
    assert not list(folder.glob(".*.stage-*")), os.listdir(folder)


def test_an_outcome_says_where_its_time_went(store: tm.TaskStore) -> None:
    out = store.submit_batch(plan(20_000))
    phases = out.phases
    assert list(phases)[:4] == ["prepare", "stage", "merge", "outcome"]
    assert {"staging", "write_lock"} <= set(phases)
    assert all(seconds >= 0 for seconds in phases.values()), phases
    assert phases["merge"] > 0 and phases["staging"] > 0 and phases["write_lock"] > 0
    own = phases["prepare"] + phases["stage"] + phases["merge"] + phases["outcome"]
    assert out.elapsed is not None and own <= out.elapsed + 1e-3


@pytest.mark.sqlite_only(reason="the WAL and its checkpoints are SQLite's")
def test_the_wal_is_checkpointed_off_the_batch_path(store: tm.TaskStore, db_path: Path) -> None:
    """The batch connection never checkpoints (its commit returns once the pages are in
    the log); the store's checkpointer copies them into the file right after."""
    driver = store.driver
    store.submit_batch(plan(20_000))
    conn = driver._batch_conn  # type: ignore[attr-defined]
    assert conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
    checkpointer = driver.checkpointer  # type: ignore[attr-defined]
    assert checkpointer.wait(30)
    assert checkpointer.seconds, "no checkpoint ran after the batch"
    assert db_path.stat().st_size > 2_000_000  # the rows are in the store file itself
    store.close()
    assert not checkpointer._thread.is_alive()  # type: ignore[union-attr]
