"""Batches as units of work, on both backends: each ``submit_batch`` that inserts a task is
recorded with an id, its tasks carry it, its counts follow them to their end, and the
batch is finished — its counts frozen, ``BatchFinished`` announced once — when its
submission ended and none of its tasks is active."""

from __future__ import annotations

import asyncio
from pathlib import Path

import polars as pl
import pytest

import taskmill as tm
from taskmill.batch.status import BATCH_STATUSES

from conftest import allow_key, refuse_key

pytestmark = pytest.mark.backends("sqlite", "postgres")

ZERO = dict.fromkeys(BATCH_STATUSES, 0)


def plan(keys: list[str], **columns: list[object]) -> pl.DataFrame:
    return pl.DataFrame({"task_type": ["up"] * len(keys), "dedup_key": keys, **columns})


def claim(store: tm.TaskStore, n: int = 100) -> tuple[str, list[int]]:
    owner = store.new_owner()
    return owner, [c.id for c in store.claim(n, task_types=["up"], owner=owner)]


def test_a_batch_is_recorded_with_its_tasks(store: tm.TaskStore) -> None:
    single = store.submit(tm.TaskSubmission("up", dedup_key="alone"))
    batch = tm.BatchSubmission().name("nightly eu-west-1")
    out = store.submit_batch(
        batch.tasks(plan(["a", "b", "c", "a"], expected_write_bytes=[1, 2, 3, 4]))
    )
    assert isinstance(out.batch_id, int)
    status = store.batch(out.batch_id)
    assert isinstance(status, tm.BatchStatus)
    assert (status.batch_id, status.name, status.total) == (out.batch_id, "nightly eu-west-1", 3)
    assert status.counts == ZERO | {"pending": 3}
    assert (status.done, status.finished_at) == (False, None)
    assert (status.expected_bytes, status.completed_bytes) == (2 + 3 + 4, 0)
    assert status.created_at.tzinfo is not None
    tasks = store.tasks().sort("id")
    assert tasks.select("dedup_key", "batch_id").rows() == [
        ("alone", None),
        ("b", out.batch_id),
        ("c", out.batch_id),
        ("a", out.batch_id),
    ]
    assert store.tasks(batch_id=out.batch_id)["dedup_key"].to_list() == ["b", "c", "a"]
    assert single.task_id not in store.tasks(batch_id=out.batch_id)["id"].to_list()


def test_plans_and_batches_that_insert_nothing_record_none(store: tm.TaskStore) -> None:
    assert store.plan_batch(plan(["a"])).batch_id is None
    first = store.submit_batch(plan(["a"]))
    again = store.submit_batch(plan(["a"]))  # deduplicated: nothing inserted
    bad = store.submit_batch(plan([""], task_type=[""]))  # failed rows only
    assert (again.batch_id, bad.batch_id) == (None, None)
    assert store.batches()["batch_id"].to_list() == [first.batch_id]
    later = store.submit_batch(plan(["b"]))
    assert later.batch_id is not None and first.batch_id is not None
    assert later.batch_id > first.batch_id


def test_a_chunked_batch_has_one_id_and_counts_every_chunk(store: tm.TaskStore) -> None:
    commits: list[list[int]] = []
    keys = [f"k{i}" for i in range(23)]
    batch = tm.BatchSubmission().transaction_limit(10).chunk_size(5).tasks(plan(keys))
    out = store.submit_batch(batch, on_commit=lambda ids, sup: commits.append(ids))
    assert len(commits) == 5
    assert store.tasks()["batch_id"].unique().to_list() == [out.batch_id]
    assert out.batch_id is not None
    assert store.batch(out.batch_id).total == 23


def test_a_batch_is_not_done_while_its_submission_goes_on(store: tm.TaskStore) -> None:
    """The tasks of the first chunk all end before the second commits: the batch is not
    done (its submission has not ended), and no sweep finishes it."""
    seen: list[tuple[bool, int, list[tuple[int, dict[str, int]]]]] = []

    def committed(ids: list[int], superseded: list[tuple[int, int]]) -> None:
        if len(seen) == 0:
            assert store.cancel_where(task_type="up") == len(ids)
            [batch_id] = store.history()["batch_id"].unique().to_list()
            status = store.batch(batch_id)
            seen.append((status.done, status.counts["cancelled"], store.finish_batches()))

    batch = tm.BatchSubmission().transaction_limit(4).chunk_size(4).tasks(plan(list("abcdef")))
    out = store.submit_batch(batch, on_commit=committed)
    assert seen == [(False, 4, [])]
    assert out.batch_id is not None
    status = store.batch(out.batch_id)
    assert (status.done, status.counts["pending"], status.counts["cancelled"]) == (False, 2, 4)


def test_a_batch_ends_with_its_tasks_and_its_counts_are_frozen(store: tm.TaskStore) -> None:
    out = store.submit_batch(
        plan(list("abcdef"), expected_read_bytes=[10, 20, 30, 40, 50, 60], max_retries=[0] * 6)
    )
    batch_id = out.batch_id
    assert batch_id is not None
    owner, ids = claim(store, 3)  # a, b, c
    a, b, c, d, _, f = out.submitted  # e is superseded below
    assert ids == [a, b, c]
    store.complete(a, owner=owner)
    store.complete(b, owner=owner)
    assert store.fail(c, owner=owner, error="boom", retry_at=None) == "failed"
    store.cancel(d)
    newer = store.submit_batch(
        tm.BatchSubmission().on_duplicate("supersede").tasks(plan(["e"]))
    )  # e superseded: it counts in its own batch, its successor in the newer one
    store.cancel(f)
    status = store.batch(batch_id)  # done: e's successor belongs to the newer batch
    assert status.counts == ZERO | {
        "completed": 2,
        "failed": 1,
        "cancelled": 2,
        "superseded": 1,
    }
    assert status.done and status.finished_at is not None
    assert (status.expected_bytes, status.completed_bytes) == (210, 30)
    last_end = store.history(ids=f)["finished_at"].item()
    assert status.finished_at == last_end
    assert newer.batch_id is not None
    assert store.batch(newer.batch_id).counts == ZERO | {"pending": 1}
    # the first sweep finishes it, once
    assert store.finish_batches() == [(batch_id, status.counts)]
    assert store.finish_batches() == []
    # its counts are frozen: pruning its history changes nothing of them
    assert store.prune_history(keep_last=0) == 6
    again = store.batch(batch_id)
    assert (again.counts, again.finished_at, again.expected_bytes, again.completed_bytes) == (
        status.counts,
        status.finished_at,
        210,
        30,
    )


def test_batches_lists_every_batch_newest_first(store: tm.TaskStore) -> None:
    first = store.submit_batch(tm.BatchSubmission().name("one").tasks(plan(["a", "b"])))
    second = store.submit_batch(plan(["c"]))
    store.cancel(second.submitted[0])
    store.finish_batches()
    frame = store.batches()
    assert frame.columns == [
        "batch_id",
        "name",
        "created_at",
        "finished_at",
        "total",
        *BATCH_STATUSES,
        "expected_bytes",
        "completed_bytes",
    ]
    assert frame.select("batch_id", "name", "total", "pending", "cancelled").rows() == [
        (second.batch_id, None, 1, 0, 1),
        (first.batch_id, "one", 2, 2, 0),
    ]
    assert frame["finished_at"].is_null().to_list() == [False, True]
    assert store.batches(limit=1)["batch_id"].to_list() == [second.batch_id]


def test_an_interrupted_batch_keeps_its_id_and_is_sealed(location: str | Path) -> None:
    tm.TaskStore.open(location).close()
    refuse_key(location, "k7")  # a real failure inside the second chunk
    keys = [f"k{i}" for i in range(10)]
    batch = tm.BatchSubmission().transaction_limit(5).chunk_size(5).tasks(plan(keys))
    with tm.TaskStore.open(location) as store:
        with pytest.raises(tm.BatchInterrupted) as err:
            store.submit_batch(batch)
        batch_id = err.value.outcome.batch_id
        assert batch_id is not None
        assert store.batch(batch_id).total == 5
        store.cancel_where(task_type="up")
        # sealed when the submission stopped: done once its five tasks ended
        assert store.finish_batches() == [(batch_id, ZERO | {"cancelled": 5})]
    allow_key(location)


def test_bad_batch_ids_and_names_are_refused(store: tm.TaskStore) -> None:
    with pytest.raises(tm.SchedulerError) as err:
        store.batch(12345)
    assert err.value.kind == "unknown_batch" and "12345" in str(err.value)
    with pytest.raises(tm.SchedulerError, match="batch_id"):
        store.batch("1")  # type: ignore[arg-type]
    with pytest.raises(tm.InvalidSubmission, match="string"):
        tm.BatchSubmission().name(5)  # type: ignore[arg-type]
    with pytest.raises(tm.InvalidSubmission, match="200"):
        tm.BatchSubmission().name("x" * 201)
    out = store.submit_batch(tm.BatchSubmission().name("<b>ü 🚀</b>").tasks(plan(["a"])))
    assert out.batch_id is not None
    status = store.batch(out.batch_id)
    assert status.name == "<b>ü 🚀</b>"
    assert "&lt;b&gt;" in status._repr_html_() and "<b>ü" not in status._repr_html_()


def test_retrying_failures_records_a_batch(store: tm.TaskStore) -> None:
    store.submit_batch(plan(["a"], max_retries=[0]))
    owner, [task] = claim(store)
    store.fail(task, owner=owner, error="boom", retry_at=None)
    again = store.retry_failed()
    assert again.batch_id is not None
    assert store.tasks()["batch_id"].to_list() == [again.batch_id]


async def test_every_scheduler_follows_a_batch_and_one_announces_it(
    location: str | Path,
) -> None:
    """Two schedulers share the store: the batch's tasks run on both, and its end is
    announced once, by one of them."""
    ran: list[str] = []

    def up(ctx: tm.TaskContext) -> None:
        ran.append(ctx.dedup_key or "")
        if ctx.dedup_key == "k3":
            raise RuntimeError("boom")

    store = tm.TaskStore.open(location)
    settings = {"executors": {"up": up}, "max_retries": 0, "poll_interval": 0.1}
    try:
        async with (
            tm.Scheduler(location, **settings) as one,
            tm.Scheduler(location, **settings) as two,
        ):
            events = [one.subscribe(), two.subscribe()]
            out = store.submit_batch(
                tm.BatchSubmission().name("n").tasks(plan([f"k{i}" for i in range(20)]))
            )
            assert out.batch_id is not None
            status = await one.wait_batch(out.batch_id, timeout=30)
            assert status.done and status.counts == ZERO | {"completed": 19, "failed": 1}
            assert (await two.wait_batch(out.batch_id, timeout=1)).done  # done: at once
            await asyncio.sleep(0.5)  # both sweep meanwhile
        finished = [e for sub in events for e in sub.drain() if isinstance(e, tm.BatchFinished)]
        assert [(e.batch_id, e.counts) for e in finished] == [(out.batch_id, status.counts)]
        assert sorted(ran) == sorted(f"k{i}" for i in range(20))
    finally:
        store.close()


async def test_wait_batch_times_out_and_knows_no_unknown_batch(location: str | Path) -> None:
    async with tm.Scheduler(location, executors={}) as sched:
        out = sched.store.submit_batch(plan(["a"]))  # no executor: it stays pending
        assert out.batch_id is not None
        with pytest.raises(TimeoutError):
            await sched.wait_batch(out.batch_id, timeout=0.3)
        with pytest.raises(tm.SchedulerError) as err:
            await sched.wait_batch(999, timeout=1)
        assert err.value.kind == "unknown_batch"
