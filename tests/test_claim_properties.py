"""Property test of the claim (hypothesis), on both backends.

A claim must take exactly what a plain model takes: the pending tasks of the claimed
types that are due, in dispatch order (priority, then queue order, then id), passing over
a task whose group is at its limit — counting every running task of the group, whoever
runs it, and the tasks this claim took before it — until ``limit`` tasks are taken.
The PostgreSQL store reads candidates a window at a time and counts limits in SQL; the
model has no windows, so a window that passes over too much, or too little, shows.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import taskmill as tm

pytestmark = pytest.mark.backends("sqlite", "postgres")

EmptyStore = Callable[[str], tm.TaskStore]

GROUPS = [None, "a", "b", "c"]
TASK = st.tuples(
    st.sampled_from(["t", "t", "t", "u"]),  # task type ("u" is never claimed)
    st.sampled_from(GROUPS),
    st.sampled_from([0, 128, 255]),  # priority
)
LIMITS = st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(0, 3), max_size=3)
CLAIMS = st.lists(
    st.tuples(
        st.integers(1, 12),  # limit
        LIMITS,
        st.one_of(st.none(), st.integers(0, 3)),  # default group limit
    ),
    min_size=1,
    max_size=4,
)


def model(
    pending: list[tuple[int, str, str | None, int]],
    running: Counter[str | None],
    limit: int,
    limits: dict[str, int],
    default: int | None,
) -> list[int]:
    """The ids a claim must take, in order (``pending``: id, type, group, priority)."""
    taken: list[int] = []
    for tid, ttype, group, _ in sorted(pending, key=lambda p: (p[3], p[0])):
        if len(taken) == limit:
            break
        if ttype != "t":
            continue
        cap = None if group is None else limits.get(group, default)
        if cap is not None and running[group] >= cap:
            continue
        running[group] += 1
        taken.append(tid)
    return taken


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(tasks=st.lists(TASK, max_size=30), claims=CLAIMS)
# a group fills up within the claim, past the first window of candidates
@example(tasks=[("t", "a", 0)] * 12 + [("t", "b", 0)], claims=[(2, {"a": 3}, None)])
def test_a_claim_takes_what_the_model_takes(
    empty_store: EmptyStore,
    tasks: list[tuple[str, str | None, int]],
    claims: list[tuple[int, dict[str, int], int | None]],
) -> None:
    with empty_store("claims") as store:
        ids = [
            store.submit(tm.TaskSubmission(ttype, group=group, priority=prio)).task_id
            for ttype, group, prio in tasks
        ]
        pending = [(tid, *task) for tid, task in zip(ids, tasks, strict=True)]
        running: Counter[str | None] = Counter()
        # another worker runs some tasks already: limits count them too
        other = store.new_owner()
        first = store.claim(2, task_types=["t"], owner=other)
        for c in first:
            running[c.group] += 1
        pending = [p for p in pending if p[0] not in {c.id for c in first}]
        owner = store.new_owner()
        for limit, limits, default in claims:
            expected = model(pending, running.copy(), limit, limits, default)
            got = store.claim(
                limit,
                task_types=["t"],
                owner=owner,
                group_limits=limits,
                default_group_limit=default,
            )
            assert [c.id for c in got] == expected, (limit, limits, default)
            assert all(c.attempt == 1 and c.task_type == "t" for c in got)
            for c in got:
                running[c.group] += 1
            pending = [p for p in pending if p[0] not in set(expected)]
        counts = store.counts()
        assert counts["running"] == sum(running.values())
        assert counts["pending"] == len(pending)
