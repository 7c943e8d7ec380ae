"""Child tasks on both backends: a running task spawns children (``ctx.spawn``), waits for
them holding no slot, and ends with them — completed when every child completed, failed
(``child_failed``) otherwise, after its type's finalizer; cancelling a parent cancels its
children.  The store's side is driven by hand (claim, spawn, park, complete) so every
step is checked; the scheduler's side runs real executors."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskmill as tm
from taskmill.cli import cli
from taskmill.scheduler.attempts import TaskContext

pytestmark = pytest.mark.backends("sqlite", "postgres")

TYPES = ["parent", "child", "other"]


def claim(store: tm.TaskStore, owner: str, n: int = 100) -> dict[int, Any]:
    """Claim up to ``n`` tasks for ``owner``: the claimed tasks by id."""
    return {c.id: c for c in store.claim(n, task_types=TYPES, owner=owner)}


def kids(n: int, prefix: str = "c") -> list[tm.TaskSubmission]:
    return [tm.TaskSubmission("child", dedup_key=f"{prefix}{i}") for i in range(n)]


def running_parent(store: tm.TaskStore) -> tuple[int, str]:
    """A parent task submitted and claimed: its id and owner."""
    parent = store.submit(tm.TaskSubmission("parent", dedup_key="p")).task_id
    owner = store.new_owner()
    assert list(claim(store, owner, 1)) == [parent]
    return parent, owner


def state(store: tm.TaskStore) -> dict[str, tuple[str, int | None]]:
    """Every task by dedup key: its status and parent (active or in history)."""
    rows = store.history().select("dedup_key", "status", "parent_id").rows()
    rows += store.tasks().select("dedup_key", "status", "parent_id").rows()
    return {key: (status, parent) for key, status, parent in rows}


def test_a_parent_waits_holding_no_slot_and_completes_with_its_last_child(
    store: tm.TaskStore,
) -> None:
    parent, owner = running_parent(store)
    out = store.spawn(parent, kids(3))
    assert out.counts()["submitted"] == 3 and out.batch_id is not None
    children = out.submitted
    tasks = store.tasks()
    assert tasks.filter(pl.col("parent_id") == parent)["id"].to_list() == children
    assert store.park(parent, owner=owner, attempt=1) is None  # children active: waiting
    row = store.task(parent)
    assert row is not None and row["status"] == "waiting" and row["active"]
    # never claimed while it waits; its children are
    worker = store.new_owner()
    assert sorted(claim(store, worker)) == children
    assert store.counts()["waiting"] == 1 and store.counts()["running"] == 3
    assert store.complete_many(children[:2], owner=worker) == set(children[:2])
    assert store.task(parent)["status"] == "waiting"  # type: ignore[index]
    assert store.children(parent) == {
        **dict.fromkeys(tm.TaskStatus, 0),
        "running": 1,
        "completed": 2,
    }
    assert store.complete_many(children[2:], owner=worker) == {children[2]}
    assert state(store) == {
        "p": ("completed", None),
        "c0": ("completed", parent),
        "c1": ("completed", parent),
        "c2": ("completed", parent),
    }
    attempts = store.attempts(parent)
    assert attempts.select("attempt", "outcome").rows() == [(1, "waiting")]
    assert store.attempts(outcome="waiting")["task_id"].to_list() == [parent]


def test_a_child_that_does_not_complete_fails_its_parent(store: tm.TaskStore) -> None:
    parent, owner = running_parent(store)
    children = store.spawn(parent, kids(4)).submitted
    assert store.park(parent, owner=owner, attempt=1) is None
    worker = store.new_owner()
    claim(store, worker)
    assert store.fail(children[0], owner=worker, error="boom", retry_at=None) == "failed"
    assert store.cancel(children[1]) == "running"
    assert store.complete_many(children[2:], owner=worker) == set(children[2:])
    [row] = store.history(status="failed").filter(pl.col("id") == parent).rows(named=True)
    assert row["last_error"] == (
        "child_failed: 2 of 4 child task(s) did not complete (1 cancelled, 1 failed)"
    )


def test_a_finalizer_is_due_once_the_last_child_ended(store: tm.TaskStore) -> None:
    parent, owner = running_parent(store)
    children = store.spawn(parent, kids(2)).submitted
    assert store.park(parent, owner=owner, attempt=1, finalizer=True) is None
    worker = store.new_owner()
    assert sorted(claim(store, worker)) == children
    store.complete_many(children, owner=worker)
    # pending again, in its queue place, for a scheduler to run the finalizer
    assert store.task(parent)["status"] == "pending"  # type: ignore[index]
    [again] = claim(store, worker).values()
    assert again.id == parent and again.finalizing and again.attempt == 2
    assert store.complete_many([parent], owner=worker) == {parent}
    assert store.history(status="completed")["id"].to_list() == sorted([parent, *children])


def test_with_no_child_active_park_gives_their_counts(store: tm.TaskStore) -> None:
    parent, owner = running_parent(store)
    children = store.spawn(parent, kids(2)).submitted
    worker = store.new_owner()
    claim(store, worker)
    store.complete_many(children[:1], owner=worker)
    store.fail(children[1], owner=worker, error="x", retry_at=None)
    assert store.park(parent, owner=owner, attempt=1) == {"completed": 1, "failed": 1}
    assert store.task(parent)["status"] == "running"  # type: ignore[index]
    # an attempt that no longer runs parks nothing
    assert store.park(parent, owner=owner, attempt=2) is False
    assert store.park(parent, owner=worker, attempt=1) is False


def test_cancelling_a_parent_cancels_its_children_and_theirs(store: tm.TaskStore) -> None:
    parent, owner = running_parent(store)
    [child, other] = store.spawn(parent, kids(2)).submitted
    worker = store.new_owner()
    assert claim(store, worker, 1).keys() == {child}
    grandchildren = store.spawn(child, kids(2, "g")).submitted
    assert store.park(child, owner=worker, attempt=1) is None
    assert store.park(parent, owner=owner, attempt=1) is None
    assert store.cancel(parent) == "waiting"
    assert state(store) == {
        "p": ("cancelled", None),
        "c0": ("cancelled", parent),
        "c1": ("cancelled", parent),
        "g0": ("cancelled", child),
        "g1": ("cancelled", child),
    }
    errors = store.history().filter(pl.col("id").is_in([other, *grandchildren]))["last_error"]
    assert errors.to_list() == ["cancelled: its parent task ended cancelled"] * 3
    assert store.tasks().height == 0


def test_a_parent_that_fails_for_good_cancels_its_children(store: tm.TaskStore) -> None:
    parent, owner = running_parent(store)
    store.spawn(parent, kids(2))
    assert store.fail(parent, owner=owner, error="oops", retry_at=None) == "failed"
    assert state(store) == {
        "p": ("failed", None),
        "c0": ("cancelled", parent),
        "c1": ("cancelled", parent),
    }


def test_a_retried_parent_keeps_its_children(store: tm.TaskStore) -> None:
    parent, owner = running_parent(store)
    store.spawn(parent, kids(2))
    assert store.fail(parent, owner=owner, error="oops", retry_at=store.now()) == "retry"
    assert state(store) == {
        "p": ("pending", None),
        "c0": ("pending", parent),
        "c1": ("pending", parent),
    }


def test_a_spawn_after_the_parent_stopped_inserts_nothing(store: tm.TaskStore) -> None:
    parent, _ = running_parent(store)
    store.cancel(parent)
    with pytest.raises(tm.SchedulerError) as err:
        store.spawn(parent, kids(3))
    assert err.value.kind == "parent_not_running"
    assert f"task {parent} is no longer running" in str(err.value)
    assert store.tasks().height == 0 and store.history().height == 1


def test_a_superseded_child_hands_its_parent_to_its_successor(store: tm.TaskStore) -> None:
    parent, owner = running_parent(store)
    [c0, c1] = store.spawn(parent, kids(2)).submitted
    assert store.park(parent, owner=owner, attempt=1) is None
    replace = tm.TaskSubmission(
        "child", dedup_key="c0", on_duplicate=tm.DuplicateStrategy.SUPERSEDE
    )
    new = store.submit(replace)
    assert new.action == "superseded" and new.replaced_task_id == c0
    assert store.task(new.task_id)["parent_id"] == parent  # type: ignore[index]
    worker = store.new_owner()
    assert sorted(claim(store, worker)) == [c1, new.task_id]
    store.complete_many([c1], owner=worker)
    assert store.task(parent)["status"] == "waiting"  # type: ignore[index]
    store.complete_many([new.task_id], owner=worker)
    # completed: the superseded child does not count against it
    assert store.history().filter(pl.col("id") == parent)["status"].to_list() == ["completed"]
    assert store.children(parent)["superseded"] == 1


def test_children_may_depend_on_each_other(store: tm.TaskStore) -> None:
    parent, owner = running_parent(store)
    plan = pl.DataFrame(
        {
            "task_type": ["child", "child", "child"],
            "dedup_key": ["copy", "delete", "other"],
            "depends_on": [None, ["copy"], None],
        }
    )
    copy, delete, other = store.spawn(parent, plan).submitted
    assert store.park(parent, owner=owner, attempt=1) is None
    worker = store.new_owner()
    assert sorted(claim(store, worker)) == [copy, other]
    store.complete_many([copy, other], owner=worker)
    assert list(claim(store, worker)) == [delete]
    store.complete_many([delete], owner=worker)
    assert state(store)["p"] == ("completed", None)


def test_a_waiting_parent_counts_as_running_in_its_batch(store: tm.TaskStore) -> None:
    out = store.submit_batch([tm.TaskSubmission("parent", dedup_key="p")])
    owner = store.new_owner()
    [parent] = claim(store, owner, 1)
    store.spawn(parent, kids(1))
    store.park(parent, owner=owner, attempt=1)
    assert out.batch_id is not None
    status = store.batch(out.batch_id)
    assert status.counts["running"] == 1 and not status.done
    assert "waiting" not in status.counts


# ---------------------------------------------------------------------- the scheduler


async def test_spawned_children_run_while_their_parent_waits_in_one_slot(
    store: tm.TaskStore,
) -> None:
    """One slot: the parent's attempt ends (waiting) before any child can run; the
    finalizer runs once, with the children's counts, and the parent completes."""
    seen: list[Any] = []

    def parent(ctx: TaskContext) -> None:
        out = ctx.spawn([tm.TaskSubmission("child", dedup_key=f"c{i}") for i in range(5)])
        seen.append(("spawned", out.counts()["submitted"]))

    def child(ctx: TaskContext) -> None:
        seen.append(("child", ctx.dedup_key))

    def finalize(ctx: TaskContext) -> None:
        seen.append(("finalize", {s: n for s, n in ctx.children.items() if n}))

    top = store.submit(tm.TaskSubmission("parent", dedup_key="p")).task_id
    async with tm.Scheduler(
        store,
        executors={"parent": parent, "child": child},
        finalizers={"parent": finalize},
        max_concurrency=1,
        poll_interval=0.05,
    ) as sched:
        await wait_ended(store, top)
        await sched.wait_idle()
    assert seen == [
        ("spawned", 5),
        *[("child", f"c{i}") for i in range(5)],
        ("finalize", {"completed": 5}),
    ]
    history = store.history()
    assert history.filter(pl.col("id") == top)["status"].to_list() == ["completed"]
    assert history.filter(pl.col("parent_id") == top).height == 5
    assert store.attempts(top)["outcome"].to_list() == ["waiting", "completed"]


async def test_a_parent_whose_children_ended_before_it_returned_finalizes_at_once(
    store: tm.TaskStore,
) -> None:
    """Its code waits for its children to end (two slots): no child is active when it
    returns, so the finalizer runs in the same attempt."""
    calls: list[dict[str, int]] = []

    def parent(ctx: TaskContext) -> None:
        ctx.spawn([tm.TaskSubmission("child", dedup_key="only")])
        deadline = time.monotonic() + 30
        while ctx.children["completed"] < 1 and time.monotonic() < deadline:
            time.sleep(0.02)

    def finalize(ctx: TaskContext) -> None:
        calls.append({s: n for s, n in ctx.children.items() if n})

    top = store.submit(tm.TaskSubmission("parent", dedup_key="p")).task_id
    async with tm.Scheduler(
        store,
        executors={"parent": parent, "child": lambda ctx: None},
        finalizers={"parent": finalize},
        max_concurrency=2,
        poll_interval=0.05,
    ) as sched:
        await wait_ended(store, top)
        await sched.wait_idle()
    assert calls == [{"completed": 1}]
    assert store.attempts(top)["outcome"].to_list() == ["completed"]


async def test_a_failed_child_fails_its_parent_after_the_finalizer(store: tm.TaskStore) -> None:
    calls: list[dict[str, int]] = []

    def parent(ctx: TaskContext) -> None:
        ctx.spawn([tm.TaskSubmission("child", dedup_key=k) for k in ("ok", "bad")])

    def child(ctx: TaskContext) -> None:
        if ctx.dedup_key == "bad":
            raise ValueError("no such object")

    top = store.submit(tm.TaskSubmission("parent", dedup_key="p")).task_id
    async with tm.Scheduler(
        store,
        executors={"parent": parent, "child": child},
        finalizers={"parent": lambda ctx: calls.append(dict(ctx.children))},
        max_retries=0,
        poll_interval=0.05,
    ):
        await wait_ended(store, top)
    [row] = store.history().filter(pl.col("id") == top).rows(named=True)
    assert row["status"] == "failed"
    assert row["last_error"] == "child_failed: 1 of 2 child task(s) did not complete (1 failed)"
    assert [{s: n for s, n in c.items() if n} for c in calls] == [{"completed": 1, "failed": 1}]


async def test_a_finalizer_that_raises_fails_its_parent_for_good(store: tm.TaskStore) -> None:
    calls = 0

    def finalize(ctx: TaskContext) -> None:
        nonlocal calls
        calls += 1
        raise RuntimeError("manifest not written")

    top = store.submit(tm.TaskSubmission("parent", dedup_key="p")).task_id
    async with tm.Scheduler(
        store,
        executors={
            "parent": lambda ctx: ctx.spawn([tm.TaskSubmission("child", dedup_key="c")]),
            "child": lambda ctx: None,
        },
        finalizers={"parent": finalize},
        max_retries=3,
        retry_delay=0.01,
        poll_interval=0.05,
    ):
        await wait_ended(store, top)
    [row] = store.history().filter(pl.col("id") == top).rows(named=True)
    assert row["status"] == "failed" and calls == 1  # never retried
    assert row["last_error"] == "finalizer_failed: RuntimeError: manifest not written"
    [attempt] = store.attempts(top, outcome="failed").rows(named=True)
    assert "manifest not written" in attempt["traceback"]
    assert "finalize" in attempt["traceback"]


async def test_without_a_finalizer_the_parent_ends_in_its_last_childs_transaction(
    store: tm.TaskStore,
) -> None:
    release = threading.Event()

    def child(ctx: TaskContext) -> None:
        release.wait(30)

    top = store.submit(tm.TaskSubmission("parent", dedup_key="p")).task_id
    async with tm.Scheduler(
        store,
        executors={
            "parent": lambda ctx: ctx.spawn([tm.TaskSubmission("child", dedup_key="c")]),
            "child": child,
        },
        poll_interval=0.05,
    ) as sched:
        deadline = time.monotonic() + 30
        while store.counts()["waiting"] == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert store.tasks().select("id", "status").rows() == [
            (top, "waiting"),
            (top + 1, "running"),
        ]
        release.set()
        await wait_ended(store, top)
        await sched.wait_idle()
    assert store.attempts(top)["outcome"].to_list() == ["waiting"]  # no second attempt
    assert store.history().filter(pl.col("id") == top)["status"].to_list() == ["completed"]


async def test_cancelling_a_running_parent_stops_its_running_children(
    store: tm.TaskStore,
) -> None:
    started = threading.Event()

    def child(ctx: TaskContext) -> None:
        started.set()
        while not ctx.cancelled:
            time.sleep(0.01)

    async def parent(ctx: TaskContext) -> None:
        await asyncio.to_thread(ctx.spawn, [tm.TaskSubmission("child", dedup_key="c")])
        while not ctx.cancelled:
            await asyncio.sleep(0.01)

    top = store.submit(tm.TaskSubmission("parent", dedup_key="p")).task_id
    async with tm.Scheduler(
        store, executors={"parent": parent, "child": child}, poll_interval=0.05
    ) as sched:
        await asyncio.to_thread(started.wait, 30)
        assert store.cancel(top) == "running"
        await sched.wait_idle()
    assert state(store) == {"p": ("cancelled", None), "c": ("cancelled", top)}


async def wait_ended(store: tm.TaskStore, task_id: int, timeout: float = 30) -> None:
    """Until task ``task_id`` is in history."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        row = store.task(task_id)
        if row is not None and not row["active"]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"task {task_id} did not end: {store.tasks().rows()}")


def test_a_child_superseded_by_a_batch_hands_its_parent_on(store: tm.TaskStore) -> None:
    parent, owner = running_parent(store)
    [c0, c1] = store.spawn(parent, kids(2)).submitted
    assert store.park(parent, owner=owner, attempt=1) is None
    out = store.submit_batch(
        pl.DataFrame({"task_type": ["child", "other"], "dedup_key": ["c1", "x"]}).with_columns(
            on_duplicate=pl.lit("supersede")
        )
    )
    [(new, old)] = out.superseded
    assert old == c1
    by_id = dict(store.tasks().select("id", "parent_id").rows())
    assert by_id == {parent: None, c0: parent, new: parent, new + 1: None}
    worker = store.new_owner()
    assert sorted(claim(store, worker)) == [c0, new, new + 1]
    store.complete_many([c0, new], owner=worker)
    assert state(store)["p"] == ("completed", None)


def test_the_cli_says_what_a_waiting_parent_waits_for(
    store: tm.TaskStore, location: str | Path
) -> None:
    parent, owner = running_parent(store)
    children = store.spawn(parent, kids(5)).submitted
    assert store.park(parent, owner=owner, attempt=1) is None
    worker = store.new_owner()
    claim(store, worker, 1)
    store.complete_many(children[:1], owner=worker)
    runner = CliRunner()
    listed = runner.invoke(cli, ["tasks", "--db", str(location)])
    assert listed.exit_code == 0, listed.output
    [line] = [line for line in listed.stdout.splitlines() if " waiting " in line]
    assert f"│ {parent} │" in line.replace("  ", " ") and "4 of 5 children" in line
    stats = runner.invoke(cli, ["stats", "--db", str(location)])
    assert stats.exit_code == 0, stats.output
    assert "waiting\xa01, completed\xa01" in stats.stdout  # (non-breaking spaces)


# ---------------------------------------------------------------------- a property


def _model_end(model: dict[int, str], kids_of: dict[int, list[int]], parent_of: dict[int, int]):
    """Rules of the model: ending a task cancels its active children (unless it
    completed) and ends its waiting parent once that one's last child ended."""

    def cancel_below(task: int) -> None:
        for child in kids_of.get(task, []):
            if model[child] in ("running", "waiting"):
                model[child] = "cancelled"
                cancel_below(child)

    def end(task: int, status: str) -> None:
        model[task] = status
        if status != "completed":
            cancel_below(task)
        parent = parent_of.get(task)
        while parent is not None and model[parent] == "waiting":
            ends = [model[c] for c in kids_of[parent]]
            if any(s in ("running", "waiting") for s in ends):
                return
            model[parent] = "completed" if set(ends) == {"completed"} else "failed"
            parent = parent_of.get(parent)

    return end


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    tree=st.lists(st.integers(min_value=0, max_value=3), min_size=1, max_size=4),
    data=st.data(),
)
def test_a_random_family_ends_as_the_rules_say(
    empty_store: Any, tree: list[int], data: st.DataObject
) -> None:
    """A parent spawns children, some of which spawn children of their own; the leaves
    end (completed, failed or cancelled) and some middle parents are cancelled, in any
    order.  After every step no active task has an ended parent, every waiting parent has
    an active child, and every task is where the rules say."""
    with empty_store("family") as store:
        owner = store.new_owner()
        root = store.submit(tm.TaskSubmission("parent", dedup_key="root")).task_id
        assert list(claim(store, owner)) == [root]
        kids_of: dict[int, list[int]] = {root: store.spawn(root, kids(len(tree))).submitted}
        assert store.park(root, owner=owner) is None
        claim(store, owner)
        leaves: list[int] = []
        middles: list[int] = []
        for child, n in zip(kids_of[root], tree, strict=True):
            if n:
                kids_of[child] = store.spawn(child, kids(n, f"{child}-")).submitted
                assert store.park(child, owner=owner) is None
                middles.append(child)
            else:
                leaves.append(child)
        claim(store, owner)
        leaves += [g for m in middles for g in kids_of[m]]
        parent_of = {c: p for p, cs in kids_of.items() for c in cs}
        model = {t: "running" for t in [root, *parent_of]}
        model.update({t: "waiting" for t in (root, *middles)})
        end = _model_end(model, kids_of, parent_of)
        events = [(t, data.draw(st.sampled_from(["complete", "fail", "cancel"]))) for t in leaves]
        events += [(m, "cancel") for m in middles if data.draw(st.booleans())]
        for task, action in data.draw(st.permutations(events)):
            if model[task] not in ("running", "waiting"):
                assert store.cancel(task) is None  # ended already: nothing to do
                continue
            if action == "complete":
                assert store.complete_many([task], owner=owner) == {task}
                end(task, "completed")
            elif action == "fail":
                assert store.fail(task, owner=owner, error="x", retry_at=None) == "failed"
                end(task, "failed")
            else:
                assert store.cancel(task) == model[task]
                end(task, "cancelled")
            active = store.tasks().select("id", "status", "parent_id").rows()
            ids = {t for t, _, _ in active}
            assert all(p is None or p in ids for _, _, p in active), active
            for t, status, _ in active:
                if status == "waiting":
                    assert any(p == t for _, _, p in active), (t, active)
            stored = dict(store.history().select("id", "status").rows())
            stored.update({t: s for t, s, _ in active})
            assert stored == model
        assert store.tasks().height == 0 or any(s in ("running", "waiting") for s in model.values())
