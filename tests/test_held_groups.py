"""What held groups back, from the store alone (schema 14): each scheduler writes what its
last claim held back (a group limit, a byte budget, a rate limit) to its worker row with
its lease renewal; ``store.held_groups()`` reads it over the live workers, so another
store object — a notebook's ``store.widget()``, the dashboard — shows it with no
scheduler of its own."""

from __future__ import annotations

import asyncio
import re
import signal
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

import taskmill as tm
from taskmill.backends.workers import held_text, merge_held
from taskmill.views.notebook import StoreWidget

from conftest import is_postgres, run_sql, table, worker_process

pytestmark = pytest.mark.backends("sqlite", "postgres")

T = TypeVar("T")


async def until(read: Callable[[], T], wanted: Callable[[T], bool], timeout: float = 15) -> T:
    """``read()`` again (off the event loop) until ``wanted`` of it, or fail with the last."""
    deadline = time.monotonic() + timeout
    while True:
        got = await asyncio.to_thread(read)
        if wanted(got) or time.monotonic() > deadline:
            assert wanted(got), got
            return got
        await asyncio.sleep(0.05)


def group_rows(view: StoreWidget) -> dict[str, list[str]]:
    """The widget's group table: each row's cells by its group's name."""
    rows = re.findall(r"<tr>(.*?)</tr>", view.groups.value)
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in rows]
    return {row[0]: row[1:] for row in cells if row}


async def test_a_binding_group_limit_shows_in_another_store_until_it_no_longer_binds(
    location: str | Path,
) -> None:
    gate = asyncio.Event()

    async def wait(ctx: tm.TaskContext) -> None:
        await gate.wait()

    with tm.TaskStore.open(location) as other:
        other.submit_batch(
            [tm.TaskSubmission("t", group="g", dedup_key=f"g{i}") for i in range(3)]
            + [tm.TaskSubmission("t", group="h", dedup_key="h")]
            + [tm.TaskSubmission("u", dedup_key=f"u{i}") for i in range(2)]
        )
        assert other.held_groups() == {}  # no worker yet
        async with tm.Scheduler(
            location,
            executors={"t": wait, "u": wait},
            max_concurrency=8,
            group_concurrency={"g": 1},
            rate_limits={"type:u": tm.RateLimit(0.5)},  # one u now, the next in 2 s
            poll_interval=0.05,
        ) as sched:
            both = {"g": "group limit", "type:u": "rate limit"}
            assert await until(other.held_groups, lambda h: h == both) == both
            assert sched.held == both
            # the notebook's view of the store says so, in g's row and of the type u
            view = other.widget(refresh=None)
            rows = group_rows(view)
            assert (rows["g"], rows["h"]) == (
                ["2", "1", "0", "0", "group limit"],
                ["0", "1", "0", "0", ""],
            )
            assert rows[""][-1] == ""  # a type held back shows under the counts, not here
            assert "held task types: u (rate limit)" in view.status.value

            # g's tasks run one after another: its limit no longer binds; the second u
            # starts once its bucket has a token again, and nothing is held back once
            # the bucket has one more (an empty bucket holds its type back)
            gate.set()
            assert await until(other.held_groups, lambda h: h == {}) == {}
            await sched.wait_idle(timeout=20)
            assert other.counts()["completed"] == 6
            owner = sched.worker
            assert run_sql(
                location,
                f"SELECT held FROM {table(location, 'workers')} WHERE owner = "
                + ("%s" if is_postgres(location) else "?"),
                (owner,),
            ) == [(None,)]
            view.refresh()
            assert group_rows(view)["g"] == ["0", "0", "3", "0", ""]
            assert "group limit" not in view.groups.value
            assert "held task types" not in view.status.value


async def test_a_worker_that_stops_takes_what_it_held_with_it(location: str | Path) -> None:
    async def wait(ctx: tm.TaskContext) -> None:
        await asyncio.sleep(30)

    with tm.TaskStore.open(location) as other:
        other.submit_batch([tm.TaskSubmission("t", group="g", dedup_key=f"g{i}") for i in range(2)])
        sched = tm.Scheduler(
            location,
            executors={"t": wait},
            group_concurrency={"g": 1},
            poll_interval=0.05,
            close_timeout=0.1,
        )
        async with sched:
            held = await until(other.held_groups, lambda h: h == {"g": "group limit"})
            assert held == {"g": "group limit"}
        assert other.held_groups() == {}  # its row went with it


def test_workers_held_are_merged_over_the_live_ones(store: tm.TaskStore) -> None:
    """Several workers: each group's distinct reasons, sorted, joined by "; "; a worker
    whose lease ran out (by the store's clock) is left out."""
    owners = [store.new_owner(lease_timeout=30) for _ in range(3)]
    late = store.new_owner(lease_timeout=0.2)
    beat = store.heartbeat(timeout=5)
    try:
        said = [
            {"g": "group limit", "type:t": "rate limit"},
            {"g": "byte budget", "h": "group limit"},
            {"g": "group limit"},
        ]
        for owner, held in zip(owners, said, strict=True):
            assert beat.renew(owner, held_text(held)) is not None
        assert beat.renew(late, held_text({"k": "rate limit"})) is not None
        time.sleep(0.3)
        assert store.held_groups() == {
            "g": "byte budget; group limit",
            "h": "group limit",
            "type:t": "rate limit",
        }
        assert list(store.held_groups()) == ["g", "h", "type:t"]  # by name
        assert store.held_groups(now=time.time() + 3600) == {}  # an hour on: no lease runs
    finally:
        beat.close()


def test_merging_passes_over_what_is_not_a_held_object() -> None:
    assert merge_held(['{"g":"group limit"}', None, "", "not json", "[1]", '{"g":3,"h":""}']) == {
        "g": "group limit"
    }


def test_a_killed_worker_process_shows_what_it_held_until_its_lease_runs_out(
    location: str | Path, tmp_path: Path
) -> None:
    """A real ``taskmill worker`` whose group limit binds: another store sees it; killed
    (SIGKILL: its row stays), what it held shows no more once its lease ran out."""
    (tmp_path / "held_steps.py").write_text(
        textwrap.dedent(
            """
            import time

            def step(ctx):
                time.sleep(60)
            """
        )
    )
    with tm.TaskStore.open(location) as other:
        other.submit_batch([tm.TaskSubmission("t", group="g", dedup_key=f"g{i}") for i in range(3)])
        proc = worker_process(
            location,
            tmp_path,
            "--executor=t=held_steps:step",
            "--group-limit",
            "g=1",
            "--lease-timeout",
            "2",
            "--poll-interval",
            "0.05",
        )
        try:
            deadline = time.monotonic() + 30
            while other.held_groups() != {"g": "group limit"} and time.monotonic() < deadline:
                assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
                time.sleep(0.05)
            assert other.held_groups() == {"g": "group limit"}
            assert other.counts()["running"] == 1
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate(timeout=10)  # its stderr read and closed
        killed = time.monotonic()
        while other.held_groups() and time.monotonic() - killed < 15:
            time.sleep(0.05)
        assert other.held_groups() == {}
        assert time.monotonic() - killed < 15
        # not forgotten (no scheduler recovered it): only its lease decides
        rows = run_sql(location, f"SELECT held FROM {table(location, 'workers')}")
        assert rows == [('{"g":"group limit"}',)]
