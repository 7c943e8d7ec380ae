"""The notebook views, exercised in-process (the browser test drives them in JupyterLab),
on both backends."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import polars as pl
import pytest

import taskmill as tm

pytestmark = pytest.mark.backends("sqlite", "postgres")


def _outcome(store: tm.TaskStore) -> tm.BatchOutcome:
    store.submit(tm.TaskSubmission("t", dedup_key="k0", priority=200))
    store.submit(tm.TaskSubmission("t", dedup_key="s0"))
    frame = pl.DataFrame(
        {
            "task_type": ["t"] * 60 + ["", "t"],
            "dedup_key": [f"k{i % 25}" for i in range(60)] + ["bad", "s0"],
            "group": ["g1", "g2"] * 31,
            "priority": [5] * 61 + [None],
            "on_duplicate": [None] * 61 + ["supersede"],
        }
    )
    return store.submit_batch(frame)


def test_outcome_widget_counts_tabs_and_paging(store: tm.TaskStore) -> None:
    from taskmill.notebook import OutcomeWidget

    out = _outcome(store)
    widget = out.widget()
    assert isinstance(widget, OutcomeWidget)
    counts = out.counts()
    assert counts == {
        "submitted": 24,
        "deduplicated": 35,
        "superseded": 1,
        "upgraded": 1,
        "failed": 1,
    }
    head = widget.children[0].value
    for action, n in counts.items():
        assert re.search(rf"<td>{action}</td><td[^>]*><b>{n:,}</b>", head)
    titles = [widget.tabs.get_title(i) for i in range(5)]
    assert titles == [
        "in batch (35)",
        "already queued (0)",
        "superseded (1)",
        "upgraded (1)",
        "failed (1)",
    ]
    table = widget.tables["in batch"]
    assert table.pages == 2 and table.body.value.count("<tr>") == 21  # header + 20 rows
    table.next.click()
    assert table.page == 1 and table.body.value.count("<tr>") == 16
    assert "page 2 of 2 · 35 rows" in table.label.value
    table.descending.value = True  # re-sorting goes back to the first page
    assert table.page == 0
    assert table.current()["index"].to_list()[:3] == [34, 33, 32]
    failed = widget.tables["failed"].body.value
    assert "invalid_task_type" in failed and "task_type is an empty string" in failed
    widget.tabs.selected_index = 4
    widget.children[3].children[0].click()
    assert widget.exported is not None and widget.exported["index"].to_list() == [60]
    # 0.1 pointed at `widget.exported`, a name a user who displayed `out` does not have
    assert out.exported is widget.exported
    assert "out.exported" in widget.export_note.value
    assert out.view("superseded").select("task_id", "replaced_task_id").rows() == [(27, 2)]


def test_plan_widget_is_marked(store: tm.TaskStore) -> None:
    plan = store.plan_batch([tm.TaskSubmission("t", dedup_key="a")])
    assert "plan — nothing written" in plan.widget().children[0].value


def test_million_row_outcome_renders_one_page(store: tm.TaskStore) -> None:
    from taskmill.notebook import OutcomeWidget
    from taskmill.outcome import BatchOutcome

    n = 1_000_000
    frame = pl.select(pl.int_range(0, n).alias("index")).with_columns(
        pl.lit("t").alias("task_type"),
        pl.format("k{}", pl.col("index") % 1000).alias("dedup_key"),
        pl.lit(None, dtype=pl.String).alias("group"),
        pl.lit(128).alias("priority"),
        pl.lit("deduplicated").alias("action"),
        pl.lit("in_batch").alias("reason"),
        pl.lit(1).alias("task_id"),
        pl.lit(None, dtype=pl.Int64).alias("replaced_task_id"),
        pl.lit(None, dtype=pl.String).alias("error"),
    )
    widget = OutcomeWidget(BatchOutcome(frame))
    sent = sum(len(child.value) for child in widget.children if hasattr(child, "value"))
    page = widget.tables["in batch"].body.value
    assert page.count("<tr>") == 21
    assert sent + len(page) < 20_000  # only what is on screen goes to the browser


def test_outcome_fallbacks_outside_a_kernel(store: tm.TaskStore) -> None:
    out = _outcome(store)
    bundle = out._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    assert "submitted" in bundle["text/plain"] and "<table>" in bundle["text/html"]


def test_join_input(store: tm.TaskStore) -> None:
    plan = pl.DataFrame(
        {"task_type": ["t", "t", "t"], "dedup_key": ["a", "a", "b"], "size": [1, 2, 3]}
    )
    out = store.submit_batch(tm.BatchSubmission().payload_columns(["size"]).tasks(plan))
    joined = out.join_input(plan)
    assert joined.select("size", "action", "reason", "task_id").rows() == [
        (1, "deduplicated", "in_batch", 1),
        (2, "submitted", None, 1),
        (3, "submitted", None, 2),
    ]


async def test_queue_widget_follows_the_scheduler(location: str | Path) -> None:
    async def work(ctx: tm.TaskContext) -> None:
        await asyncio.sleep(0.001)
        if ctx.dedup_key == "k3":
            raise RuntimeError("boom")

    async with tm.Scheduler(location, executors={"t": work}, max_retries=0) as sched:
        view = sched.widget(refresh=50)
        await asyncio.sleep(0.05)
        await sched.submit_batch(
            [tm.TaskSubmission("t", dedup_key=f"k{i}", group="g") for i in range(40)]
        )
        await sched.wait_idle(timeout=20)
        await asyncio.sleep(0.1)  # one throttle window: the last events are drawn
        assert view.counts["completed"] == 39 and view.counts["failed"] == 1
        assert "completed <b>39</b>" in view.status.value
        assert "#4 (attempt 1): RuntimeError: boom" in view.failures.value
        assert view.updates >= 2
        assert not view.stopped
    assert view.stopped and "scheduler closed" in view.status.value


async def test_queue_widget_ends_with_the_stores_numbers(location: str | Path) -> None:
    """0.1: the view redrew only when an event came after its throttle window, so it
    ended with stale numbers (pending 2, completed 2,967 where the store said 0 and
    2,968); no manual refresh() here."""

    async def work(ctx: tm.TaskContext) -> None:
        if ctx.task_id % 10 == 0:
            raise RuntimeError("boom")

    async with tm.Scheduler(location, executors={"t": work}, max_retries=0) as sched:
        view = sched.widget(refresh=0.5)  # a 2-second throttle window
        await asyncio.sleep(0.05)
        await sched.submit_batch([tm.TaskSubmission("t", group=f"g{i % 3}") for i in range(300)])
        await sched.wait_idle(timeout=30)
        updates = view.updates
    with tm.TaskStore.open(location) as store:
        sched_counts = store.counts()
        final = store.stats("group")
    assert view.updates > updates  # drawn once more on close
    assert view.counts == sched_counts
    assert sched_counts["completed"] == 270 and sched_counts["failed"] == 30
    assert "completed <b>270</b>" in view.status.value
    assert "failed <b>30</b>" in view.status.value
    assert "pending <b>0</b>" in view.status.value and "running <b>0</b>" in view.status.value
    assert "<i>scheduler closed</i></span></div>" in view.status.value  # on the line
    for group in final["group"].to_list():
        assert group in view.groups.value


async def test_queue_widget_shows_store_trouble(location: str | Path) -> None:
    async with tm.Scheduler(location, executors={}) as sched:
        view = sched.widget(refresh=100)
        await asyncio.sleep(0.05)
        sched._publish(
            tm.StoreUnavailable(
                operation="the completion of 3 task(s)",
                error="database is locked",
                tries=2,
                retry_in=0.2,
            )
        )
        await asyncio.sleep(0.1)
        assert "store unavailable for the completion of 3 task(s)" in view.status.value
        assert "nothing is lost" in view.status.value
        sched._publish(tm.StoreRecovered(operation="the completion of 3 task(s)", tries=2))
        await asyncio.sleep(0.1)
        assert "store unavailable" not in view.status.value


async def test_queue_widget_shows_what_each_group_waits_on(location: str | Path) -> None:
    async def work(ctx: tm.TaskContext) -> None:
        return None

    with tm.TaskStore.open(location) as store:
        for i in range(5):
            store.submit(tm.TaskSubmission("t", dedup_key=f"r{i}", group="s3://eu"))
        store.submit(tm.TaskSubmission("t", dedup_key="p", group="paused"))
        store.submit(tm.TaskSubmission("t", dedup_key="l", group="later", run_after=4e9))
        # a task that waits for the one that waits for its start time
        store.submit(tm.TaskSubmission("t", dedup_key="d", group="after", depends_on=["l"]))
        store.pause_group("paused")
    async with tm.Scheduler(
        location,
        executors={"t": work},
        # a slow bucket: one task of s3://eu now, the next in 100 s
        rate_limits={"group:s3://eu": tm.RateLimit(per_second=0.01, burst=1)},
        poll_interval=0.05,
    ) as sched:
        view = sched.widget(refresh=50)
        for _ in range(100):
            if sched.store.counts()["completed"] == 1:
                break
            await asyncio.sleep(0.05)
        await view.refresh()
        table = view.groups.value
    assert sched.held == {"s3://eu": "rate limit"}
    row = {
        g: table.split(f">{g}<", 1)[1].split("</tr>", 1)[0] for g in ("s3://eu", "paused", "later")
    }
    assert ">rate limit<" in row["s3://eu"]
    assert ">paused<" in row["paused"]
    assert ">start time (1)<" in row["later"]
    after = table.split(">after<", 1)[1].split("</tr>", 1)[0]
    assert ">dependencies (1 blocked)<" in after


def test_batch_widget_shows_progress_counts_bytes_and_failures(store: tm.TaskStore) -> None:
    from taskmill.views.notebook import BatchWidget

    plan = pl.DataFrame(
        {
            "task_type": ["up"] * 8,
            "dedup_key": [f"<k{i}>" for i in range(8)],
            "expected_write_bytes": [10**9] * 8,
            "max_retries": [0] * 8,
        }
    )
    out = store.submit_batch(tm.BatchSubmission().name("<nightly>").tasks(plan))
    assert out.batch_id is not None
    owner = store.new_owner()
    ids = [c.id for c in store.claim(3, task_types=["up"], owner=owner)]
    store.complete(ids[0], owner=owner)
    store.fail(ids[1], owner=owner, error="disk <full>", retry_at=None)
    widget = BatchWidget(store.batch(out.batch_id))
    assert "&lt;nightly&gt;" in widget.headline.value and "in progress" in widget.headline.value
    assert (widget.bar.value, widget.bar.max, widget.bar.bar_style) == (2, 8, "info")
    assert "<b>2</b> of 8 ended (25.0%)" in widget.fraction.value
    shown = dict(
        re.findall(r"taskmill-status-(\w+)'><td>\w+</td><td[^>]*><b>([\d,]+)", widget.counts.value)
    )
    assert shown == {"pending": "5", "running": "1", "completed": "1", "failed": "1"}
    assert "<b>1.0 GB</b> of 8.0 GB completed" in widget.counts.value
    assert "&lt;k1&gt;" in widget.failures.value and "disk &lt;full&gt;" in widget.failures.value
    # the rest end: a refresh shows the batch done
    store.cancel_where(task_type="up")
    store.complete(ids[2], owner=owner)
    status = widget.refresh()
    assert status.done and widget.bar.value == 8 and "done" in widget.headline.value
    assert widget.bar.bar_style == "warning"  # done, with a failure


def test_batch_widget_refreshes_itself_until_done(store: tm.TaskStore) -> None:
    import time

    from taskmill.views.notebook import BatchWidget

    out = store.submit_batch(pl.DataFrame({"task_type": ["up"] * 3, "dedup_key": list("abc")}))
    assert out.batch_id is not None
    widget = BatchWidget(store.batch(out.batch_id), refresh=0.05)
    store.cancel_where(task_type="up")
    deadline = time.monotonic() + 10
    while not widget.status.done and time.monotonic() < deadline:
        time.sleep(0.05)
    assert widget.status.done and widget.bar.value == 3
    assert widget._thread is not None
    widget._thread.join(timeout=5)
    assert not widget._thread.is_alive()  # it stops once the batch is done
    updates = widget.updates
    time.sleep(0.2)
    assert widget.updates == updates


def test_batch_status_fallbacks_outside_a_kernel(store: tm.TaskStore) -> None:
    out = store.submit_batch(pl.DataFrame({"task_type": ["up"] * 2, "dedup_key": ["a", "b"]}))
    assert out.batch_id is not None
    bundle = store.batch(out.batch_id)._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    assert "0 of 2 ended" in bundle["text/plain"] and "<progress" in bundle["text/html"]
