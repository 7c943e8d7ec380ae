"""A large outcome is written to a private Parquet file slice by slice and read from there:
every view of it equals the same outcome held in memory."""

from __future__ import annotations

import gc

import polars as pl
import pytest

import taskmill as tm
from taskmill.batch import outcome as outcome_module

pytestmark = pytest.mark.backends("sqlite", "postgres")


def mixed_plan() -> pl.DataFrame:
    """Rows of every kind: new, repeated in the batch, invalid, queued (skipped or
    upgraded), superseding, rejected."""
    n = 60
    return pl.DataFrame(
        {
            "task_type": ["t"] * n,
            "dedup_key": [f"k{i % 40}" if i % 11 else "" for i in range(n)],
            "priority": [300 if i == 7 else i % 4 * 60 for i in range(n)],
            "on_duplicate": [["skip", "supersede", "reject"][i % 3] for i in range(n)],
            "group": [None if i % 5 else f"g{i % 3}" for i in range(n)],
        }
    )


def views(out: tm.BatchOutcome) -> dict[str, object]:
    return {
        "frame": out.to_polars(),
        "arrow": out.to_arrow(),
        "counts": out.counts(),
        "submitted": out.submitted,
        "deduplicated": out.deduplicated,
        "superseded": out.superseded,
        "upgraded": out.upgraded,
        "failed": [(i, type(e).__name__, e.kind, str(e)) for i, e in out.failed],
        "summary": out.summary("group"),
        "reasons": out.reasons(),
        "first failed": out.rows(pl.col("action") == "failed", limit=3),
        "view": out.view("in batch"),
        "len": len(out),
        "text": str(out).split("\n", 1)[1],
    }


def assert_same(a: dict[str, object], b: dict[str, object]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        x, y = a[name], b[name]
        if isinstance(x, pl.DataFrame):
            assert isinstance(y, pl.DataFrame)
            assert x.equals(y) and x.schema == y.schema, name
        else:
            assert x == y, name


def test_a_spooled_outcome_reads_like_one_in_memory(
    store: tm.TaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same batch planned with its outcome in memory, then planned and submitted with
    it spooled in slices of 7 rows: every list, table and summary is the same (a plan's
    ids are what the submit then takes)."""
    seed = pl.DataFrame({"task_type": ["t"] * 10, "dedup_key": [f"k{i}" for i in range(10)]})
    store.submit_batch(seed.with_columns(pl.lit(200).alias("priority")))
    in_memory = store.plan_batch(mixed_plan())
    monkeypatch.setattr(outcome_module, "OUTCOME_IN_MEMORY", 0)
    monkeypatch.setattr(outcome_module, "OUTCOME_SLICE", 7)
    planned = store.plan_batch(mixed_plan())
    submitted = store.submit_batch(mixed_plan())
    assert [o.spooled for o in (in_memory, planned, submitted)] == [False, True, True]
    expected = views(in_memory)
    assert_same(expected, views(planned))
    assert_same(expected, views(submitted))
    counts = expected["counts"]
    assert isinstance(counts, dict) and all(counts[a] > 0 for a in outcome_module.ACTIONS)


def test_a_spooled_outcome_file_goes_with_the_outcome(
    store: tm.TaskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(outcome_module, "OUTCOME_IN_MEMORY", 0)
    out = store.submit_batch(mixed_plan())
    store.close()
    spool = out._files[0]
    path = spool.path  # type: ignore[union-attr]
    assert path.exists() and out.counts()["submitted"] > 0
    del out, spool
    gc.collect()
    assert not path.exists()


@pytest.mark.parametrize("rows", [10, outcome_module.OUTCOME_IN_MEMORY + 1])
def test_merge_results_read_the_same_however_often(rows: int) -> None:
    """Kept in memory or spooled (past OUTCOME_IN_MEMORY rows), the results of a batch's
    transactions read back whole, in order, every time they are read."""
    results = outcome_module.MergeResults(rows)
    for lo in (0, 3):
        results.append(
            pl.DataFrame(
                {
                    "index": [lo, lo + 1, lo + 2],
                    "action": ["submitted", "deduplicated", "failed"],
                    "reason": [None, "existing", "duplicate"],
                    "task_id": [lo + 10, 4, None],
                    "replaced_task_id": [None, None, None],
                    "error": [None, None, "an active task …"],
                },
                schema=outcome_module._RESULT_SCHEMA,
            )
        )
    first = results.frame().collect()
    again = results.frame().collect()
    results.close()
    assert first.equals(again) and first["index"].to_list() == [0, 1, 2, 3, 4, 5]
    assert first["task_id"].to_list() == [10, 4, None, 13, 4, None]
    assert first["action"].cast(pl.String).to_list() == ["submitted", "deduplicated", "failed"] * 2
