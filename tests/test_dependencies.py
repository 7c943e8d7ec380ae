"""Dependencies on both backends: what a task waits for, decided set-based in the batch's
transactions; blocked tasks released when what they wait for completes, and the policies
when it does not; cycles, failed and unknown dependencies failing their own rows."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskmill as tm

from conftest import allow_key, refuse_key

pytestmark = pytest.mark.backends("sqlite", "postgres")

TYPES = ["copy", "delete", "manifest", "other", "t"]


def run(store: tm.TaskStore, ids: list[int], *, fail: bool = False) -> None:
    """Claim and end the tasks ``ids`` (completed, or failed for good)."""
    owner = store.new_owner()
    claimed = [c.id for c in store.claim(1000, task_types=TYPES, owner=owner)]
    assert set(ids) <= set(claimed), (ids, claimed)
    for task in set(claimed) - set(ids):
        store.release([task], owner=owner)
    if fail:
        for task in ids:
            assert store.fail(task, owner=owner, error="boom", retry_at=None) == "failed"
    else:
        assert store.complete_many(ids, owner=owner) == set(ids)


def status(store: tm.TaskStore) -> dict[str, str]:
    """Every task by dedup key: its status (active or in history)."""
    active = store.tasks().select("dedup_key", "status").rows()
    ended = store.history().select("dedup_key", "status").rows()
    return dict(ended + active)


def move_plan() -> pl.DataFrame:
    """Move two objects: copy each, then delete its source; a manifest after both."""
    return pl.DataFrame(
        {
            "task_type": ["copy", "copy", "delete", "delete", "manifest"],
            "dedup_key": ["a", "b", "a-src", "b-src", "manifest"],
            "depends_on": [None, None, ["a"], ["b"], ["a-src", "b-src"]],
        }
    )


def test_a_move_plan_runs_in_dependency_order(store: tm.TaskStore) -> None:
    out = store.submit_batch(move_plan())
    assert out.counts()["submitted"] == 5
    a, b, a_src, b_src, manifest = out.submitted
    tasks = store.tasks()
    assert tasks.select("dedup_key", "status", "depends_on").rows() == [
        ("a", "pending", None),
        ("b", "pending", None),
        ("a-src", "blocked", [a]),
        ("b-src", "blocked", [b]),
        ("manifest", "blocked", [a_src, b_src]),
    ]
    assert store.counts()["blocked"] == 3
    # a blocked task is never claimed
    owner = store.new_owner()
    assert sorted(c.id for c in store.claim(10, task_types=TYPES, owner=owner)) == [a, b]
    store.complete_many([a], owner=owner)
    assert status(store)["a-src"] == "pending" and status(store)["b-src"] == "blocked"
    store.complete_many([b], owner=owner)
    run(store, [a_src, b_src])
    assert store.tasks().select("dedup_key", "status", "depends_on").rows() == [
        ("manifest", "pending", None)
    ]
    run(store, [manifest])
    assert store.counts()["completed"] == 5


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        (None, {"b": "cancelled", "c": "cancelled"}),  # cancel, and so on down the chain
        ("cancel", {"b": "cancelled", "c": "cancelled"}),
        ("fail", {"b": "failed", "c": "cancelled"}),
        ("ignore", {"b": "pending", "c": "blocked"}),
    ],
)
def test_a_failed_dependency_is_followed_by_policy(
    store: tm.TaskStore, policy: str | None, expected: dict[str, str]
) -> None:
    plan = pl.DataFrame(
        {
            "task_type": ["t", "t", "t"],
            "dedup_key": ["a", "b", "c"],
            "depends_on": [None, ["a"], ["b"]],
            "on_dependency_failure": [None, policy, None],
            "max_retries": [0, 0, 0],
        }
    )
    out = store.submit_batch(plan)
    run(store, [out.submitted[0]], fail=True)
    got = status(store)
    assert {k: got[k] for k in ("b", "c")} == expected
    if policy == "fail":
        [error] = store.history(ids=out.submitted[1])["last_error"].to_list()
        assert error == "dependency_failed: a task it depends on ended failed"


def test_cycles_and_failed_rows_fail_their_dependents_and_the_rest_goes_on(
    store: tm.TaskStore,
) -> None:
    plan = pl.DataFrame(
        {
            "task_type": ["t", "t", "t", "t", "", "t", "t"],
            "dedup_key": ["x", "y", "self", "after-cycle", "bad", "after-bad", "free"],
            "depends_on": [["y"], ["x"], ["self"], ["x"], None, ["bad"], None],
        }
    )
    out = store.submit_batch(plan)
    frame = out.to_polars().select("index", "action", "reason")
    assert frame.rows() == [
        (0, "failed", "dependency_cycle"),
        (1, "failed", "dependency_cycle"),
        (2, "failed", "dependency_cycle"),
        (3, "failed", "dependency_failed"),
        (4, "failed", "invalid_task_type"),
        (5, "failed", "dependency_failed"),
        (6, "submitted", None),
    ]
    assert store.tasks()["dedup_key"].to_list() == ["free"]


def test_a_row_failed_by_its_dependencies_leaves_its_key_to_the_last_valid_row(
    store: tm.TaskStore,
) -> None:
    plan = pl.DataFrame(
        {"task_type": ["t", "t"], "dedup_key": ["k", "k"], "depends_on": [None, ["k"]]}
    )
    out = store.submit_batch(plan)
    assert out.to_polars().select("action", "reason").rows() == [
        ("submitted", None),
        ("failed", "dependency_cycle"),
    ]


def test_unknown_dependencies_fail_their_rows(store: tm.TaskStore) -> None:
    existing = store.submit(tm.TaskSubmission("other", dedup_key="known"))
    out = store.submit_batch(
        [
            tm.TaskSubmission("t", dedup_key="by-key", depends_on=["known"]),
            tm.TaskSubmission("t", dedup_key="by-id", depends_on=[existing.task_id]),
            tm.TaskSubmission("t", dedup_key="no-key", depends_on=["nowhere"]),
            tm.TaskSubmission("t", dedup_key="no-id", depends_on=[999]),
            tm.TaskSubmission("t", dedup_key="after", depends_on=["no-key"]),
        ]
    )
    failed = {i: (e.kind, str(e)) for i, e in out.failed}
    assert failed == {
        2: (
            "unknown_dependency",
            "depends on 'nowhere', which names no task of this batch and no active task",
        ),
        3: ("unknown_dependency", "depends on task 999, which does not exist"),
        4: ("dependency_failed", "depends on 'no-key', which failed in this batch"),
    }
    blocked = store.tasks(status="blocked").select("dedup_key", "depends_on").rows()
    assert blocked == [("by-key", [existing.task_id]), ("by-id", [existing.task_id])]


def test_finished_dependencies_count_as_they_ended(store: tm.TaskStore) -> None:
    done = store.submit(tm.TaskSubmission("t", dedup_key="done"))
    broke = store.submit(tm.TaskSubmission("t", dedup_key="broke", max_retries=0))
    run(store, [done.task_id])
    run(store, [broke.task_id], fail=True)
    store.submit_batch(
        [
            tm.TaskSubmission("t", dedup_key="ok", depends_on=[done.task_id]),
            tm.TaskSubmission("t", dedup_key="off", depends_on=[broke.task_id]),
            tm.TaskSubmission(
                "t", dedup_key="on", depends_on=[broke.task_id], on_dependency_failure="ignore"
            ),
        ]
    )
    got = status(store)
    assert (got["ok"], got["off"], got["on"]) == ("pending", "cancelled", "pending")


def test_a_superseded_dependency_hands_its_dependents_to_its_successor(
    store: tm.TaskStore,
) -> None:
    first = store.submit_batch(
        pl.DataFrame(
            {"task_type": ["t", "t"], "dedup_key": ["a", "b"], "depends_on": [None, ["a"]]}
        )
    )
    newer = store.submit(tm.TaskSubmission("t", dedup_key="a", on_duplicate="supersede"))
    assert newer.action == "superseded"
    assert store.tasks(status="blocked")["depends_on"].to_list() == [[newer.task_id]]
    run(store, [newer.task_id])
    assert status(store)["b"] == "pending"
    assert first.submitted[0] != newer.task_id


def test_a_chunked_batch_resolves_rows_of_later_chunks(store: tm.TaskStore) -> None:
    keys = [f"k{i}" for i in range(9)]
    deps = [["k8"], None, None, None, None, None, None, None, ["k0"]]  # forward, backward
    deps[0] = ["k7"]
    plan = pl.DataFrame({"task_type": ["t"] * 9, "dedup_key": keys, "depends_on": deps})
    batch = tm.BatchSubmission().transaction_limit(3).chunk_size(3).tasks(plan)
    out = store.submit_batch(batch)
    ids = dict(zip(keys, out.submitted, strict=True))
    blocked = dict(store.tasks(status="blocked").select("dedup_key", "depends_on").rows())
    assert blocked == {"k0": [ids["k7"]], "k8": [ids["k0"]]}
    run(store, [ids["k7"]])
    assert status(store)["k0"] == "pending"


@pytest.mark.parametrize("policy", ["cancel", "fail", "ignore"])
def test_an_interrupted_batch_leaves_nothing_waiting_for_rows_it_never_merged(
    location: str | Path, policy: str
) -> None:
    """A chunked batch stops in its second chunk: rows of the first that wait for rows of
    the second follow their policy once it is sealed, and what waits for them after."""
    tm.TaskStore.open(location).close()
    refuse_key(location, "k4")  # a real failure inside the second chunk
    plan = pl.DataFrame(
        {
            "task_type": ["t"] * 6,
            "dedup_key": [f"k{i}" for i in range(6)],
            # k0 waits for k3 (a later chunk), k1 for k0; k2 waits for nothing
            "depends_on": [["k3"], ["k0"], None, None, None, None],
            "on_dependency_failure": [policy, None, None, None, None, None],
        }
    )
    batch = tm.BatchSubmission().transaction_limit(3).chunk_size(3).tasks(plan)
    try:
        with tm.TaskStore.open(location) as store:
            with pytest.raises(tm.BatchInterrupted) as err:
                store.submit_batch(batch)
            batch_id = err.value.outcome.batch_id
            assert batch_id is not None and store.batch(batch_id).total == 3
            k0, _, k2 = err.value.outcome.submitted
            ended = {"cancel": "cancelled", "fail": "failed", "ignore": "pending"}[policy]
            after = "blocked" if policy == "ignore" else "cancelled"  # k1 waits for k0
            assert status(store) == {"k0": ended, "k1": after, "k2": "pending"}
            if policy != "ignore":
                [error] = store.history(ids=k0)["last_error"].to_list()
                assert error == (
                    "dependency_failed: a task it depends on was never submitted "
                    "(its batch stopped)"
                )
            else:
                assert store.tasks(ids=k0)["depends_on"].to_list() == [None]
                run(store, [k0, k2])
                assert status(store)["k1"] == "pending"
            assert store.tasks(status="blocked").height == 0
    finally:
        allow_key(location)


def test_a_single_submit_with_dependencies_records_no_batch(store: tm.TaskStore) -> None:
    a = store.submit(tm.TaskSubmission("t", dedup_key="a"))
    b = store.submit(tm.TaskSubmission("t", dedup_key="b", depends_on=["a"]))
    assert b.action == "submitted"
    row = store.tasks(ids=b.task_id).row(0, named=True)
    assert (row["status"], row["depends_on"], row["batch_id"]) == ("blocked", [a.task_id], None)
    with pytest.raises(tm.SchedulerError) as err:
        store.submit(tm.TaskSubmission("t", dedup_key="c", depends_on=["nowhere"]))
    assert err.value.kind == "unknown_dependency"


def test_hostile_dependency_values_fail_their_row_with_a_clear_kind(store: tm.TaskStore) -> None:
    subs = [
        tm.TaskSubmission("t", dedup_key="null", depends_on=["a", None]),
        tm.TaskSubmission("t", dedup_key="huge", depends_on=[f"k{i}" for i in range(1001)]),
        tm.TaskSubmission("t", dedup_key="float", depends_on=[1.0]),
        tm.TaskSubmission("t", dedup_key="bool", depends_on=[True]),
        tm.TaskSubmission("t", dedup_key="zero", depends_on=[0]),
        tm.TaskSubmission("t", dedup_key="text", depends_on="a"),
        tm.TaskSubmission("t", dedup_key="policy", depends_on=["a"], on_dependency_failure="x"),
        tm.TaskSubmission("t", dedup_key="a"),
    ]
    out = store.submit_batch(subs)
    failed = {i: (e.kind, str(e)) for i, e in out.failed}
    assert failed == {
        0: ("invalid_dependency", "depends_on[1] is null"),
        1: ("invalid_dependency", "depends_on has 1,001 items, over the 1,000 limit"),
        2: (
            "invalid_dependency",
            "depends_on[0] must be a task id (int) or a dedup key (str), got float",
        ),
        3: (
            "invalid_dependency",
            "depends_on[0] must be a task id (int) or a dedup key (str), got bool",
        ),
        4: ("invalid_dependency", "depends_on[0] must be a task id of at least 1, got 0"),
        5: (
            "invalid_dependency",
            "depends_on must be a list of task ids (int) and dedup keys (str), got str",
        ),
        6: (
            "invalid_dependency_policy",
            "on_dependency_failure must be one of cancel, fail, ignore; got 'x'",
        ),
    }
    # a table with the same values fails the same rows with the same messages
    frame = pl.DataFrame(
        {
            "task_type": ["t"] * 4,
            "dedup_key": ["n", "h", "z", "p"],
            "depends_on": [["a", None], [f"k{i}" for i in range(1001)], [""], ["a"]],
            "on_dependency_failure": [None, None, None, "x"],
        }
    )
    table = {i: (e.kind, str(e)) for i, e in store.submit_batch(frame).failed}
    assert table == {
        0: failed[0],
        1: failed[1],
        2: ("invalid_dependency", "depends_on[0] is an empty string"),
        3: failed[6],
    }
    with pytest.raises(tm.InvalidSubmission, match="depends_on"):
        store.submit_batch(pl.DataFrame({"task_type": ["t"], "depends_on": [[1.5]]}))


def test_cancelling_a_dependency_cancels_what_waits_for_it(store: tm.TaskStore) -> None:
    out = store.submit_batch(move_plan())
    a = out.submitted[0]
    store.cancel(a)
    got = status(store)
    assert (got["a-src"], got["manifest"], got["b-src"]) == ("cancelled", "cancelled", "blocked")
    assert store.cancel_where(task_type="delete") == 1  # b-src; manifest ended already
    assert status(store)["manifest"] == "cancelled"


async def test_a_scheduler_runs_a_move_plan_in_order(location: str | Path) -> None:
    order: list[str] = []

    def step(ctx: tm.TaskContext) -> None:
        order.append(ctx.dedup_key or "")

    executors = {"copy": step, "delete": step, "manifest": step}
    async with tm.Scheduler(location, executors=executors, poll_interval=0.05) as sched:
        out = await sched.submit_batch(move_plan())
        assert out.batch_id is not None
        done = await sched.wait_batch(out.batch_id, timeout=30)
    assert done.counts["completed"] == 5
    assert order.index("a") < order.index("a-src") < order.index("manifest")
    assert order.index("b") < order.index("b-src") < order.index("manifest")
    assert asyncio.iscoroutinefunction(test_a_scheduler_runs_a_move_plan_in_order)


@pytest.mark.parametrize("form", ["parquet", "reader"])
def test_a_plan_kept_on_disk_decides_its_dependencies_as_one_in_memory(
    location: str | Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, form: str
) -> None:
    """However large a plan read from a file or a stream (here: any size goes to disk),
    its rows' dependencies are decided as a DataFrame's are, row for row."""
    import pyarrow.parquet as pq

    from taskmill.batch import prepare as plan_module

    plan = pl.concat(
        [
            move_plan(),
            pl.DataFrame(
                {
                    "task_type": ["t", "t", "t", "t"],
                    "dedup_key": ["x", "y", "lost", "after"],
                    "depends_on": [["y"], ["x"], ["nowhere"], ["lost"]],
                }
            ),
        ]
    )
    with tm.TaskStore.open(tmp_path / "reference.db") as reference:
        expected = reference.submit_batch(plan).to_polars()
    path = tmp_path / "plan.parquet"
    plan.write_parquet(path, row_group_size=3)
    monkeypatch.setattr(plan_module, "IN_MEMORY_ROWS", 0)
    source: object = path
    if form == "reader":
        import pyarrow as pa

        handle = pq.ParquetFile(path)
        source = pa.RecordBatchReader.from_batches(handle.schema_arrow, handle.iter_batches(2))
    with tm.TaskStore.open(location) as store:
        out = store.submit_batch(source)
        assert out.to_polars().drop("error").equals(expected.drop("error"))
        assert out.to_polars()["reason"].to_list()[5:] == [
            "dependency_cycle",
            "dependency_cycle",
            "unknown_dependency",
            "dependency_failed",
        ]
        assert store.counts()["blocked"] == 3


def _reference_run(deps: list[list[int]], policies: list[str], fails: set[int]) -> dict[int, str]:
    """How each row of a DAG plan ends when every task runs as soon as it may, the rows
    in ``fails`` failing: a plain simulation of the rules, row by row."""
    n = len(deps)
    status: dict[int, str] = {}
    waiting = {i: set(deps[i]) for i in range(n)}
    changed = True
    while changed:
        changed = False
        for i in range(n):
            if i in status:
                continue
            broken = [d for d in waiting[i] if status.get(d) in ("failed", "cancelled")]
            for d in broken:
                if policies[i] == "ignore":
                    waiting[i].discard(d)
            if broken and policies[i] != "ignore":
                status[i] = "failed" if policies[i] == "fail" else "cancelled"
                changed = True
                continue
            if all(status.get(d) == "completed" for d in waiting[i]):
                status[i] = "failed" if i in fails else "completed"
                changed = True
    return status


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    spec=st.lists(
        st.tuples(
            st.lists(st.integers(min_value=1, max_value=6), max_size=3),
            st.sampled_from(["cancel", "fail", "ignore"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_a_random_plan_ends_as_the_rules_say(
    empty_store: Any, spec: list[tuple[list[int], str, bool]]
) -> None:
    """Rows depend on earlier rows (a DAG), each with a policy; some fail when run.  Run
    by claiming whatever is pending until nothing is: every row ends as a plain
    simulation of the rules says, and nothing was ever claimed before what it waits for
    completed."""
    deps = [
        sorted({i - back for back in backs if i - back >= 0})
        for i, (backs, _, _) in enumerate(spec)
    ]
    policies = [p for _, p, _ in spec]
    fails = {i for i, (_, _, f) in enumerate(spec) if f}
    plan = pl.DataFrame(
        {
            "task_type": ["t"] * len(spec),
            "dedup_key": [f"k{i}" for i in range(len(spec))],
            "depends_on": [[f"k{d}" for d in ds] or None for ds in deps],
            "on_dependency_failure": policies,
            "max_retries": [0] * len(spec),
        },
        schema_overrides={"depends_on": pl.List(pl.String)},
    )
    with empty_store("dag") as store:
        out = store.submit_batch(plan)
        assert out.counts()["submitted"] == len(spec)
        key_of = {t: i for i, t in enumerate(out.submitted)}
        done: dict[int, str] = {}
        owner = store.new_owner()
        while True:
            claimed = store.claim(100, task_types=["t"], owner=owner)
            if not claimed:
                break
            for task in claimed:
                i = key_of[task.id]
                assert all(done.get(d) == "completed" or policies[i] == "ignore" for d in deps[i])
                if i in fails:
                    store.fail(task.id, owner=owner, error="boom", retry_at=None)
                    done[i] = "failed"
                else:
                    store.complete(task.id, owner=owner)
                    done[i] = "completed"
        assert store.tasks().height == 0
        ended = dict(store.history().select("dedup_key", "status").iter_rows())
        got = {int(k[1:]): s for k, s in ended.items()}
        assert got == _reference_run(deps, policies, fails)


def test_a_blocked_task_not_started_in_time_expires_and_its_dependents_follow(
    store: tm.TaskStore,
) -> None:
    later = 2_000_000_000.0
    store.submit_batch(
        [
            tm.TaskSubmission("t", dedup_key="a"),
            tm.TaskSubmission("t", dedup_key="b", depends_on=["a"], expires_at=later),
            tm.TaskSubmission("t", dedup_key="c", depends_on=["b"]),
        ]
    )
    assert store.expire_due(now=later) == 1
    got = status(store)
    assert (got["a"], got["b"], got["c"]) == ("pending", "expired", "cancelled")
