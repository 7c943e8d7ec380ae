"""Metrics, on both backends: ``sched.metrics()`` counts what a real scheduler did with real
tasks (by outcome), times its claims, and reads the store's queue (per status, per group);
``serve_metrics()`` and ``taskmill worker --metrics-port N`` serve the same in the
Prometheus text format, scraped here over HTTP and parsed with ``prometheus_client``'s
own parser."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import prometheus_client
import pytest
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

import taskmill as tm
from taskmill.cli import cli
from taskmill.scheduler.metrics import CLAIM_BUCKETS

from conftest import worker_process

pytestmark = pytest.mark.backends("sqlite", "postgres")

FAST = {"poll_interval": 0.05, "retry_delay": 0.05}


def scrape(port: int) -> dict[str, float]:
    """``http://127.0.0.1:port/metrics`` parsed by prometheus_client: every sample by its
    name, labels written as in the text format (the keys of ``sched.metrics()``)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain")
        text = answer.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def buckets(values: dict[str, float], name: str) -> dict[float, float]:
    """A histogram's cumulative buckets, by upper bound."""
    prefix = f'{name}_bucket{{le="'
    return {float(k[len(prefix) : -2]): v for k, v in values.items() if k.startswith(prefix)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_counts_by_outcome_claims_and_the_queue(location: str | Path) -> None:
    """5 completed, 2 failed, 1 retried then completed, 1 cancelled, 1 superseded, 4 left
    pending over two groups: every count exact."""
    tries: dict[int, int] = {}

    def flaky(ctx: tm.TaskContext) -> None:
        tries[ctx.task_id] = tries.get(ctx.task_id, 0) + 1
        if tries[ctx.task_id] == 1:
            raise RuntimeError("first try fails")

    def bad(ctx: tm.TaskContext) -> None:
        raise RuntimeError("always")

    executors = {"ok": lambda ctx: None, "bad": bad, "flaky": flaky}
    async with tm.Scheduler(location, executors=executors, max_retries=0, **FAST) as sched:
        before = sched.metrics()
        assert before["tasks_completed_total"] == 0 and before["claim_seconds_count"] == 0
        for i in range(5):
            await sched.submit(tm.TaskSubmission("ok", dedup_key=f"ok{i}", group="eu"))
        for i in range(2):
            await sched.submit(tm.TaskSubmission("bad", dedup_key=f"bad{i}"))
        await sched.submit(tm.TaskSubmission("flaky", max_retries=1))
        # "idle" has no executor here: those stay pending
        idle = [
            (await sched.submit(tm.TaskSubmission("idle", dedup_key=f"i{i}", group=g))).task_id
            for i, g in enumerate(["us", "us", "us", None])
        ]
        assert await sched.cancel(idle[0])
        await sched.submit(tm.TaskSubmission("idle", dedup_key="k", group="us"))
        again = tm.TaskSubmission("idle", dedup_key="k", group="us", on_duplicate="supersede")
        assert (await sched.submit(again)).action == "superseded"
        await sched.wait_idle(timeout=60)
        m = sched.metrics()

    assert m["tasks_submitted_total"] == 14
    assert m["tasks_dispatched_total"] == 9  # 5 ok, 2 bad, flaky twice
    assert m["tasks_completed_total"] == 6
    assert m["tasks_failed_total"] == 2
    assert m["tasks_retried_total"] == 1
    assert m["tasks_cancelled_total"] == 1
    assert m["tasks_superseded_total"] == 1
    assert m["tasks_expired_total"] == 0 and m["store_unavailable_total"] == 0
    assert m["task_seconds_count"] == 6
    assert m["claim_seconds_count"] >= 1
    assert 0 < m["claim_seconds_sum"] < 10 * m["claim_seconds_count"]
    # the store's active tasks: us has two left of i0..i2 plus k's replacement
    assert m["tasks_pending"] == 4
    assert m["tasks_running"] == 0 and m["attempts_running"] == 0
    assert m["tasks_blocked"] == 0 and m["tasks_paused"] == 0 and m["tasks_waiting"] == 0
    assert m['queue_depth{group="us"}'] == 3
    assert m['queue_depth{group=""}'] == 1
    assert not any(k.startswith('queue_depth{group="eu"') for k in m)  # nothing active left
    assert not any(k.endswith(("_created", "_bucket")) or "_bucket{" in k for k in m)
    # the queue read again at close, the counts kept: the same after it (claims aside: the
    # dispatch loop goes on polling until it stops)
    after = sched.metrics()
    assert {k: v for k, v in after.items() if not k.startswith("claim_")} == {
        k: v for k, v in m.items() if not k.startswith("claim_")
    }
    with tm.TaskStore.open(location) as store:
        assert store.counts()["pending"] == 4
        assert store.group_counts() == {
            "us": {"pending": 3, "running": 0, "paused": 0, "blocked": 0, "waiting": 0},
            None: {"pending": 1, "running": 0, "paused": 0, "blocked": 0, "waiting": 0},
        }


async def test_running_tasks_and_queue_depth_while_they_run(location: str | Path) -> None:
    release = threading.Event()

    def hold(ctx: tm.TaskContext) -> None:
        release.wait(30)

    async with tm.Scheduler(location, executors={"hold": hold}, max_concurrency=2, **FAST) as s:
        await s.submit_batch([tm.TaskSubmission("hold", group="g") for _ in range(3)])
        deadline = time.monotonic() + 30
        while len(s.running) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        m = await asyncio.to_thread(s.metrics)  # from another thread, as a scrape is
        assert m["tasks_running"] == 2 and m["attempts_running"] == 2
        assert m["tasks_pending"] == 1 and m['queue_depth{group="g"}'] == 1
        assert m["tasks_submitted_total"] == 3  # one batch of 3
        release.set()
        await s.wait_idle(timeout=30)
        m = s.metrics()
    assert m["tasks_completed_total"] == 3 and m["tasks_running"] == 0
    assert m["tasks_pending"] == 0 and not any(k.startswith("queue_depth") for k in m)


async def test_two_schedulers_in_one_process_count_apart(location: str | Path) -> None:
    """Each scheduler has its registry: what one ran is not counted by the other, nor in
    prometheus_client's global registry; the store's queue is the same for both."""
    with tm.TaskStore.open(location) as store:
        store.submit_batch([tm.TaskSubmission("a") for _ in range(3)])
        store.submit_batch([tm.TaskSubmission("b") for _ in range(2)])
        store.submit(tm.TaskSubmission("c", group="later"))
    async with (
        tm.Scheduler(location, executors={"a": lambda ctx: None}, **FAST) as one,
        tm.Scheduler(location, executors={"b": lambda ctx: None}, **FAST) as two,
    ):
        await one.wait_idle(timeout=30)
        await two.wait_idle(timeout=30)
        m1, m2 = one.metrics(), two.metrics()
        assert one.metrics_registry is not two.metrics_registry
    assert (m1["tasks_completed_total"], m2["tasks_completed_total"]) == (3, 2)
    assert (m1["tasks_dispatched_total"], m2["tasks_dispatched_total"]) == (3, 2)
    assert m1["tasks_pending"] == m2["tasks_pending"] == 1
    assert m1['queue_depth{group="later"}'] == m2['queue_depth{group="later"}'] == 1
    assert prometheus_client.REGISTRY.get_sample_value("tasks_completed_total") is None


async def test_served_metrics_are_the_snapshot_in_the_text_format(location: str | Path) -> None:
    async with tm.Scheduler(location, executors={"ok": lambda ctx: None}, **FAST) as sched:
        await sched.submit_batch(
            [tm.TaskSubmission("ok", group="eu") for _ in range(4)]
            + [tm.TaskSubmission("later", group="eu") for _ in range(2)]
        )
        await sched.wait_idle(timeout=30)
        port = sched.serve_metrics()
        served = await asyncio.to_thread(scrape, port)
        snapshot = sched.metrics()
    assert served["tasks_completed_total"] == snapshot["tasks_completed_total"] == 4
    assert served["tasks_pending"] == 2 and served['queue_depth{group="eu"}'] == 2
    assert served["claim_seconds_count"] >= 1
    claims = buckets(served, "claim_seconds")
    assert sorted(claims) == sorted(CLAIM_BUCKETS)
    assert claims[float("inf")] == served["claim_seconds_count"]
    assert list(claims.values()) == sorted(claims.values())  # cumulative
    assert buckets(served, "task_seconds")[float("inf")] == 4
    for name, value in snapshot.items():  # every sample; claims go on meanwhile
        assert name in served, name
        if not name.startswith("claim_"):
            assert served[name] == value, name
    # closed with its scheduler
    with pytest.raises(urllib.error.URLError):
        scrape(port)


async def test_a_port_in_use_is_refused(location: str | Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        async with tm.Scheduler(location, executors={}) as sched:
            with pytest.raises(tm.SchedulerError) as caught:
                sched.serve_metrics(port)
    assert caught.value.kind == "invalid_argument"
    assert f"127.0.0.1:{port}" in str(caught.value)


def test_the_worker_option_is_checked() -> None:
    done = CliRunner().invoke(cli, ["worker", "--demo-executors", "--metrics-port", "70000"])
    assert done.exit_code == 2 and "--metrics-port" in done.output


def test_a_worker_serves_its_metrics_over_http(tmp_path: Path, location: str | Path) -> None:
    """A real ``taskmill worker --metrics-port N``: 5 tasks complete, 2 fail (no retry), 3
    wait in two groups for a type it has no executor for."""
    with tm.TaskStore.open(location) as store:
        store.submit_batch(
            [tm.TaskSubmission("ok", group="eu") for _ in range(5)]
            + [tm.TaskSubmission("bad") for _ in range(2)]
            + [tm.TaskSubmission("other", group=g) for g in ("eu", "us", "us")]
        )
    (tmp_path / "metricexec.py").write_text(
        "def ok(ctx):\n    pass\n\ndef bad(ctx):\n    raise RuntimeError('no')\n"
    )
    port = free_port()
    proc = worker_process(
        location,
        tmp_path,
        "--executor=ok=metricexec:ok",
        "--executor=bad=metricexec:bad",
        "--max-retries=0",
        "--poll-interval=0.1",
        f"--metrics-port={port}",
        stdout=subprocess.PIPE,
    )
    try:
        values: dict[str, float] = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                values = scrape(port)
            except (urllib.error.URLError, ConnectionError):
                values = {}
            if values.get("tasks_completed_total", 0) + values.get("tasks_failed_total", 0) == 7:
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1]
        assert values["tasks_completed_total"] == 5
        assert values["tasks_failed_total"] == 2
        assert values["tasks_retried_total"] == 0
        assert values["tasks_dispatched_total"] == 7
        assert values["tasks_pending"] == 3 and values["tasks_running"] == 0
        assert values['queue_depth{group="eu"}'] == 1
        assert values['queue_depth{group="us"}'] == 2
        assert values["claim_seconds_count"] >= 1 and values["claim_seconds_sum"] > 0
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert f"worker: metrics at http://127.0.0.1:{port}/metrics" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_read_that_fails_or_lags_answers_with_the_last_counts(
    location: str | Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scrape always answers: a store that cannot be read (closed here) or that answers
    late leaves the last counts in place, counted in ``queue_read_errors_total``; a slow
    read is never started twice at once."""
    from taskmill.scheduler.metrics import SchedulerMetrics

    store = tm.TaskStore.open(location)
    store.submit(tm.TaskSubmission("t", group="g"))
    metrics = SchedulerMetrics(lambda: store, lambda: 0)
    assert metrics.snapshot()['queue_depth{group="g"}'] == 1
    calls: list[float] = []
    real = store.group_counts

    def slow() -> dict[str | None, dict[str, int]]:
        calls.append(time.monotonic())
        time.sleep(0.5)
        return real()

    monkeypatch.setattr(store, "group_counts", slow)
    store.submit(tm.TaskSubmission("t", group="g"))
    assert metrics.queue(timeout=0.05)["g"]["pending"] == 1  # the last counts
    assert metrics.queue(timeout=5)["g"]["pending"] == 2  # the same read, finished
    assert len(calls) == 1
    monkeypatch.undo()
    store.close()
    m = metrics.snapshot()
    assert m["tasks_pending"] == 2 and m["queue_read_errors_total"] == 2
    metrics.close()
