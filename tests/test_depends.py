"""In-batch dependencies decided on the whole plan at once: edges to the winning rows of
a key, cycles, and failures carried down the graph — against a reference walk."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from taskmill.batch.depends import CYCLE, FAILED_DEPENDENCY, plan_dependencies


def rows(
    keys: list[str | None],
    deps: list[list[str]],
    *,
    valid: list[bool] | None = None,
    winner: list[bool] | None = None,
    ids: list[list[int]] | None = None,
) -> pl.DataFrame:
    n = len(keys)
    valid = valid or [True] * n
    return pl.DataFrame(
        {
            "index": list(range(n)),
            "dedup_key": keys,
            "valid": valid,
            "winner": winner or valid,
            "dep_keys": deps,
            "dep_ids": ids or [[] for _ in range(n)],
        },
        schema={
            "index": pl.Int64,
            "dedup_key": pl.String,
            "valid": pl.Boolean,
            "winner": pl.Boolean,
            "dep_keys": pl.List(pl.String),
            "dep_ids": pl.List(pl.Int64),
        },
    )


def failures(plan) -> dict[int, str]:
    return dict(plan.failures.select("index", "error_kind").iter_rows())


def test_a_chain_becomes_edges_to_the_winning_rows() -> None:
    plan = plan_dependencies(
        rows(
            ["a", "b", "c", "a"],
            [[], ["a"], ["b", "elsewhere"], []],
            winner=[False, True, True, True],
        )
    )
    assert failures(plan) == {}
    assert sorted(plan.edges.rows()) == [(1, 3), (2, 1)]  # "a": its winner, row 3
    assert sorted(plan.keys.rows()) == [(1, "a", True), (2, "b", True), (2, "elsewhere", False)]


def test_a_key_names_every_task_type_holding_it() -> None:
    frame = rows(["k", "k", "x"], [[], [], ["k"]])  # two task types under key k
    assert sorted(plan_dependencies(frame).edges.rows()) == [(2, 0), (2, 1)]


def test_cycles_fail_and_their_dependents_fail_after_them() -> None:
    plan = plan_dependencies(
        rows(["a", "b", "c", "d", "self"], [["b"], ["a"], ["a"], ["c"], ["self"]])
    )
    assert failures(plan) == {
        0: CYCLE,
        1: CYCLE,
        2: FAILED_DEPENDENCY,
        3: FAILED_DEPENDENCY,
        4: CYCLE,
    }
    messages = dict(plan.failures.select("index", "error").iter_rows())
    assert messages[2] == "depends on row 0 of this batch, which failed"
    assert messages[3] == "depends on row 2 of this batch, which failed"
    assert plan.edges.height == 0 and plan.keys.height == 0  # failed rows keep nothing


def test_a_dependency_on_a_failed_row_fails_down_the_chain() -> None:
    plan = plan_dependencies(
        rows(["bad", "b", "c", "free"], [[], ["bad"], ["b"], []], valid=[False, True, True, True])
    )
    assert failures(plan) == {1: FAILED_DEPENDENCY, 2: FAILED_DEPENDENCY}
    messages = dict(plan.failures.select("index", "error").iter_rows())
    assert messages[1] == "depends on 'bad', which failed in this batch"
    assert plan.edges.rows() == []


def test_ids_are_kept_for_the_store_to_look_up() -> None:
    plan = plan_dependencies(rows(["a", "b"], [[], []], ids=[[7, 7, 9], []]))
    assert plan.ids.rows() == [(0, 7), (0, 9)]


def _reference(keys: list[str], deps: list[list[str]], valid: list[bool]) -> dict[int, str]:
    """The same decisions by a plain walk (every row a winner of its own key)."""
    n = len(keys)
    holders: dict[str, list[int]] = {}
    for i, k in enumerate(keys):
        holders.setdefault(k, []).append(i)
    out: dict[int, list[int]] = {i: [] for i in range(n)}
    failed: dict[int, str] = {}
    for i in range(n):
        if not valid[i]:
            continue
        for k in deps[i]:
            targets = holders.get(k, [])
            good = [t for t in targets if valid[t]]
            out[i] += good
            if targets and not good:
                failed.setdefault(i, FAILED_DEPENDENCY)

    def reaches(start: int, goal: int) -> bool:
        seen, todo = set(), [start]
        while todo:
            node = todo.pop()
            for t in out[node]:
                if t == goal:
                    return True
                if t not in seen:
                    seen.add(t)
                    todo.append(t)
        return False

    for i in range(n):
        if valid[i] and reaches(i, i):
            failed.setdefault(i, CYCLE)
    changed = True
    while changed:
        changed = False
        for i in range(n):
            if valid[i] and i not in failed and any(t in failed for t in out[i]):
                failed[i] = FAILED_DEPENDENCY
                changed = True
    return failed


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from("abcdefg"),
            st.lists(st.sampled_from("abcdefgz"), max_size=3),
            st.booleans(),
        ),
        min_size=1,
        max_size=12,
    )
)
def test_every_row_is_decided_as_a_plain_walk_decides_it(spec) -> None:
    # distinct keys per row: each row is its key's winner (dedup is another module's job)
    keys = [f"{k}{i}" if i % 2 else k for i, (k, _, _) in enumerate(spec)]
    deps = [d for _, d, _ in spec]
    valid = [v or i == 0 for i, (_, _, v) in enumerate(spec)]
    plan = plan_dependencies(rows(keys, deps, valid=valid))  # type: ignore[arg-type]
    assert failures(plan) == _reference(keys, deps, valid)
    kept = set(plan.edges["index"].to_list())
    assert not kept & set(failures(plan))
