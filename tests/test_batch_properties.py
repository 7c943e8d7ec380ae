"""Property tests of the batch path (hypothesis).

1. The same random batch as TaskSubmissions, polars, Arrow, a RecordBatchReader, pandas
   and Parquet — the last two also down the path of large plans (a private file of
   checked rows) — gives identical outcomes and identical stores.
2. The store agrees with a small plain-Python model of the rules.
Every input row is accounted for exactly once; no two active tasks share a key.

Both run on both backends.  The examples of one test share its stores (``empty_store``:
on PostgreSQL one database per input form, emptied before each example).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import taskmill as tm
from taskmill.batch import outcome as outcome_module
from taskmill.batch import prepare as plan_module

pytestmark = pytest.mark.backends("sqlite", "postgres")

TYPES = st.sampled_from(["a", "a", "a", "b", "", None])
KEYS = st.sampled_from(["k0", "k1", "k2", "k3", "k0", "k1", "", None])
PRIORITIES = st.sampled_from([None, 0, 128, 200, 64, 255, 300, -1])
GROUPS = st.sampled_from([None, "g1", "g2"])
STRATEGIES = st.sampled_from([None, "skip", "supersede", "reject", "bogus"])
PAYLOADS = st.sampled_from([None, b"p1", b"p2"])

ROW = st.fixed_dictionaries(
    {
        "task_type": TYPES,
        "dedup_key": KEYS,
        "priority": PRIORITIES,
        "group": GROUPS,
        "on_duplicate": STRATEGIES,
        "payload": PAYLOADS,
    }
)
# pre-filled store: (key, priority, running?)
PREFILL = st.lists(
    st.tuples(
        st.sampled_from(["k0", "k1", "k2", "k3"]), st.sampled_from([0, 128, 200]), st.booleans()
    ),
    max_size=4,
    unique_by=lambda t: t[0],
)
SCHEMA = {
    "task_type": pl.String,
    "dedup_key": pl.String,
    "priority": pl.Int64,
    "group": pl.String,
    "on_duplicate": pl.String,
    "payload": pl.Binary,
}
#: ``empty_store`` is function-scoped but gives a store emptied anew for every example.
HEALTH = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=HEALTH)
EmptyStore = Callable[[str], tm.TaskStore]


def prefill(store: tm.TaskStore, spec: list[tuple[str, int, bool]]) -> None:
    for key, priority, _ in spec:
        store.submit(tm.TaskSubmission("a", dedup_key=key, priority=priority))
    running = [i + 1 for i, (_, _, r) in enumerate(spec) if r]
    if running:
        owner = store.new_owner()
        claimed = store.claim(len(spec), task_types=["a"], owner=owner)
        for task in claimed:  # keep only the chosen ones running
            if task.id not in running:
                store.release([task.id], owner=owner)


def batch_of(x: Any, chunk: int | None) -> tm.BatchSubmission:
    b = tm.BatchSubmission().tasks(x)
    if chunk is not None:
        b = b.transaction_limit(chunk).chunk_size(chunk)
    return b


def forms(rows: list[dict], folder: Path) -> dict[str, Any]:
    df = pl.DataFrame(rows, schema=SCHEMA)
    pq_path = folder / "plan.parquet"
    df.write_parquet(pq_path)
    return {
        "submissions": [
            tm.TaskSubmission(r["task_type"], **{k: v for k, v in r.items() if k != "task_type"})
            for r in rows
        ],
        "polars": df,
        "lazy": df.lazy(),
        "arrow": df.to_arrow(),
        "reader": pa.RecordBatchReader.from_batches(
            df.to_arrow().schema, df.to_arrow().to_batches(max_chunksize=3)
        ),
        "pandas": pd.DataFrame(
            {
                c: pd.Series(df[c].to_list(), dtype=object)
                if c != "priority"
                else pd.Series(df[c].to_list(), dtype="float64")
                for c in df.columns
            }
        ),
        "parquet": pq_path,
        # the path of large plans (a private file of checked rows), however small
        "parquet-streamed": pq_path,
        "reader-streamed": pa.RecordBatchReader.from_batches(
            df.to_arrow().schema, df.to_arrow().to_batches(max_chunksize=3)
        ),
    }


def snapshot(store: tm.TaskStore) -> tuple[list, list]:
    t = (
        store.tasks()
        .select(
            "id", "task_type", "dedup_key", "group", "priority", "status", "queue_pos", "payload"
        )
        .rows()
    )
    h = store.history().select("id", "status", "replaced_by").rows()
    return t, h


def check_invariants(store: tm.TaskStore, out: tm.BatchOutcome, n: int) -> None:
    df = out.to_polars()
    assert df["index"].to_list() == list(range(n))  # every row exactly once, in order
    active = store.tasks().filter(pl.col("dedup_key").is_not_null())
    assert active.select("task_type", "dedup_key").is_duplicated().sum() == 0
    assert store.integrity_check() == "ok"


@SETTINGS
@given(rows=st.lists(ROW, max_size=14), pre=PREFILL, chunk=st.sampled_from([None, 2, 5]))
def test_every_input_form_gives_the_same_outcome_and_store(
    empty_store: EmptyStore,
    rows: list[dict],
    pre: list,
    chunk: int | None,
) -> None:
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for name, x in forms(rows, folder).items():
            with empty_store(name) as store:
                prefill(store, pre)
                # a streamed form takes the path of large plans: checked rows on disk, and
                # the outcome spooled to a file in slices of 3 rows
                small, share, kept, cut = (
                    plan_module.IN_MEMORY_ROWS,
                    plan_module.DEDUP_SHARE_ROWS,
                    outcome_module.OUTCOME_IN_MEMORY,
                    outcome_module.OUTCOME_SLICE,
                )
                if name.endswith("-streamed"):
                    # … and dedup in shares of the fingerprints of about 4 rows
                    plan_module.IN_MEMORY_ROWS = outcome_module.OUTCOME_IN_MEMORY = 0
                    plan_module.DEDUP_SHARE_ROWS = 4
                    outcome_module.OUTCOME_SLICE = 3
                try:
                    out = store.submit_batch(batch_of(x, chunk))
                    check_invariants(store, out, len(rows))
                finally:
                    plan_module.IN_MEMORY_ROWS, plan_module.DEDUP_SHARE_ROWS = small, share
                    outcome_module.OUTCOME_IN_MEMORY, outcome_module.OUTCOME_SLICE = kept, cut
                results[name] = (
                    out.to_polars(),
                    snapshot(store),
                    [(i, e.kind, str(e)) for i, e in out.failed],
                )
    first_name, first = next(iter(results.items()))
    for name, got in results.items():
        assert got[0].equals(first[0]), (name, first_name, got[0], first[0])
        assert got[1] == first[1], (name, first_name)
        assert got[2] == first[2], (name, first_name)


# ---------------------------------------------------------------- the model


def model(rows: list[dict], pre: list, chunk: int | None) -> tuple[list[tuple], dict]:
    """A plain-Python rendering of the batch rules."""
    active: dict[tuple[str, str], dict] = {}
    next_id = 0
    for key, priority, running in pre:
        next_id += 1
        active[("a", key)] = {
            "id": next_id,
            "priority": priority,
            "pos": next_id,
            "status": "running" if running else "pending",
        }

    def invalid(r: dict) -> str | None:
        if r["task_type"] in (None, ""):
            return "invalid_task_type"
        if r["dedup_key"] == "":
            return "invalid_dedup_key"
        if r["priority"] is not None and not 0 <= r["priority"] <= 255:
            return "invalid_priority"
        if r["on_duplicate"] not in (None, "skip", "supersede", "reject"):
            return "invalid_strategy"
        return None

    errors = [invalid(r) for r in rows]
    last: dict[tuple, int] = {}
    for i, r in enumerate(rows):
        if errors[i] is None and r["dedup_key"] is not None:
            last[(r["task_type"], r["dedup_key"])] = i
    result: list[tuple] = [()] * len(rows)
    n = len(rows)
    bounds = (
        [(0, n)]
        if chunk is None or n <= chunk
        else [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]
    )
    for lo, hi in bounds:
        for i in range(lo, hi):
            r = rows[i]
            if errors[i] is not None:
                result[i] = (i, "failed", errors[i], None, None)
                continue
            k = (r["task_type"], r["dedup_key"])
            if r["dedup_key"] is not None and last[k] != i:
                result[i] = (i, "deduplicated", "in_batch", "winner", None)
                continue
            prio = 128 if r["priority"] is None else r["priority"]
            strategy = r["on_duplicate"] or "skip"
            old = active.get(k) if r["dedup_key"] is not None else None
            if old is None:
                next_id += 1
                result[i] = (i, "submitted", None, next_id, None)
                if r["dedup_key"] is not None:
                    active[k] = {
                        "id": next_id,
                        "priority": prio,
                        "pos": next_id,
                        "status": "pending",
                    }
            elif strategy == "skip":
                if old["status"] == "pending" and prio < old["priority"]:
                    old["priority"] = prio
                    result[i] = (i, "upgraded", None, old["id"], None)
                else:
                    result[i] = (i, "deduplicated", "existing", old["id"], None)
            elif strategy == "supersede":
                next_id += 1
                pos = old["pos"] if old["status"] == "pending" else next_id
                result[i] = (i, "superseded", None, next_id, old["id"])
                active[k] = {"id": next_id, "priority": prio, "pos": pos, "status": "pending"}
            else:
                result[i] = (i, "failed", "duplicate", old["id"], None)
    # in-batch losers point at their winner's task
    final = []
    for row in result:
        if row[3] == "winner":
            r = rows[row[0]]
            winner = result[last[(r["task_type"], r["dedup_key"])]]
            row = (*row[:3], winner[3], None)
        final.append(row)
    return final, {k: (v["id"], v["priority"], v["pos"]) for k, v in active.items()}


def _row(key: str, priority: int | None = None, strategy: str | None = None) -> dict:
    return {
        "task_type": "a",
        "dedup_key": key,
        "priority": priority,
        "group": None,
        "on_duplicate": strategy,
        "payload": None,
    }


@settings(max_examples=80, deadline=None, suppress_health_check=HEALTH)
@given(rows=st.lists(ROW, max_size=16), pre=PREFILL, chunk=st.sampled_from([None, 3]))
@example(
    rows=[_row("k0", 128), _row("k1", 100)], pre=[("k0", 128, False), ("k1", 128, True)], chunk=None
)
@example(
    rows=[_row("k2"), _row("k0", None, "supersede"), _row("k1", 0, "supersede")],
    pre=[("k0", 128, True), ("k1", 200, False)],
    chunk=None,
)
def test_store_agrees_with_the_model(
    empty_store: EmptyStore, rows: list[dict], pre: list, chunk: int | None
) -> None:
    expected_rows, expected_active = model(rows, pre, chunk)
    with tempfile.TemporaryDirectory() as tmp:
        subs = forms(rows, Path(tmp))["submissions"]
        with empty_store("m") as store:
            prefill(store, pre)
            out = store.submit_batch(batch_of(subs, chunk))
            got = (
                out.to_polars()
                .select("index", "action", "reason", "task_id", "replaced_task_id")
                .rows()
            )
            assert got == expected_rows
            keyed = store.tasks().filter(pl.col("dedup_key").is_not_null())
            got_active = {
                (t, k): (i, p, q)
                for t, k, i, p, q in keyed.select(
                    "task_type", "dedup_key", "id", "priority", "queue_pos"
                ).iter_rows()
            }
            assert got_active == expected_active
            check_invariants(store, out, len(rows))
