"""Bulk controls called concurrently, on both backends: two ``retry_failed`` calls never
resubmit a key twice, and ``prune_history``'s export is exactly the rows that prune
removed — across concurrent prunes and across a prune killed (SIGKILL) mid-way."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from polars.testing import assert_frame_equal

import taskmill as tm

from conftest import ENV, PYTHON, assert_store_consistent, run_sql, table

pytestmark = pytest.mark.backends("sqlite", "postgres")


# ---------------------------------------------------------------- retry_failed


def fail_all(store: tm.TaskStore, keys: list[str | None], task_type: str = "t") -> list[int]:
    """Submit one task per key (``None``: no key), run and fail each for good; returns
    their ids."""
    out = store.submit_batch([tm.TaskSubmission(task_type, dedup_key=k) for k in keys])
    assert len(out.submitted) == len(keys)
    owner = store.new_owner()
    claimed = store.claim(len(keys), task_types=[task_type], owner=owner)
    assert sorted(t.id for t in claimed) == sorted(out.submitted)
    for task in claimed:
        assert store.fail(task.id, owner=owner, error="boom", retry_at=None) == "failed"
    store.release_owner(owner)
    return out.submitted


def complete_all(store: tm.TaskStore, ids: list[int], task_type: str = "t") -> None:
    """Claim and complete exactly the tasks ``ids`` (the only pending ones)."""
    owner = store.new_owner()
    claimed = store.claim(len(ids) + 10, task_types=[task_type], owner=owner)
    assert sorted(t.id for t in claimed) == sorted(ids)
    assert store.complete_many(ids, owner=owner) == set(ids)
    store.release_owner(owner)


def hold_after_read(store: tm.TaskStore) -> tuple[threading.Event, threading.Event]:
    """Wrap ``store``'s read of the failures to retry (its real query runs): once it has
    read, it signals the first event and waits for the second before going on to submit
    — the gap between reading and submitting that a slow caller has."""
    read, go = threading.Event(), threading.Event()
    real = store._failed_rows

    def read_then_wait(*args: Any) -> Any:
        rows = real(*args)
        read.set()
        assert go.wait(60), "the test never let the held retry go on"
        return rows

    store._failed_rows = read_then_wait  # type: ignore[method-assign]
    return read, go


def in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start ``call`` on a thread; the list receives its result or its exception."""
    got: list[Any] = []

    def run() -> None:
        try:
            got.append(call())
        except BaseException as exc:  # handed to the test
            got.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, got


def completed_per_key(store: tm.TaskStore) -> dict[str, int]:
    done = store.history(status="completed")
    counts = done.group_by("dedup_key").len()
    return dict(zip(counts["dedup_key"].to_list(), counts["len"].to_list(), strict=True))


def test_two_retry_calls_with_a_gap_retry_each_key_once(location: str | Path) -> None:
    """Call B reads the failures, then waits; call A retries them and its retries run
    to completion; then B submits.  Each key was retried once, by A: B passes every key
    over (deduplicated, naming A's finished retry) and nothing is pending again.  The
    keyless failure has nothing tying it to its retry and is resubmitted by each call
    (documented)."""
    keys = [f"k{i}" for i in range(300)]
    with tm.TaskStore.open(location) as a, tm.TaskStore.open(location) as b:
        failed = fail_all(a, [*keys, None])
        read, go = hold_after_read(b)
        thread, got_b = in_thread(b.retry_failed)
        assert read.wait(60)

        out_a = a.retry_failed()
        assert out_a.counts()["submitted"] == 301 and len(out_a) == 301
        retries = dict(
            zip(
                out_a.to_polars()["dedup_key"].to_list(),
                out_a.to_polars()["task_id"].to_list(),
                strict=True,
            )
        )
        complete_all(a, out_a.submitted)  # A's retries ran and finished
        go.set()
        thread.join(120)
        [out_b] = got_b
        assert not isinstance(out_b, BaseException), out_b

        rows = out_b.to_polars().select("dedup_key", "action", "reason", "task_id").rows()
        assert rows == [(k, "deduplicated", "existing", retries[k]) for k in keys] + [
            (None, "submitted", None, out_b.submitted[0])
        ]
        assert out_b.deduplicated == keys
        assert completed_per_key(a) == {**dict.fromkeys(keys, 1), None: 1}
        tasks, history = assert_store_consistent(a)
        assert tasks.select("id", "dedup_key", "status").rows() == [
            (out_b.submitted[0], None, "pending")
        ]
        assert history.height == 2 * 301
        assert sorted(history.filter(pl.col("status") == "failed")["id"].to_list()) == failed


def test_a_retry_call_whose_keys_were_retried_meanwhile_and_still_run_dedups(
    location: str | Path,
) -> None:
    """The same gap, with A's retries still active (one of them running) when B
    submits: B deduplicates each key against them; nothing is doubled."""
    keys = [f"k{i}" for i in range(50)]
    with tm.TaskStore.open(location) as a, tm.TaskStore.open(location) as b:
        fail_all(a, keys)
        read, go = hold_after_read(b)
        thread, got_b = in_thread(b.retry_failed)
        assert read.wait(60)
        out_a = a.retry_failed()
        owner = a.new_owner()
        [running] = a.claim(1, task_types=["t"], owner=owner)
        go.set()
        thread.join(120)
        [out_b] = got_b
        assert not isinstance(out_b, BaseException), out_b
        assert out_b.deduplicated == keys and out_b.submitted == []
        assert out_b.to_polars()["task_id"].to_list() == out_a.submitted
        tasks, _ = assert_store_consistent(a)
        assert sorted(tasks["id"].to_list()) == out_a.submitted
        assert tasks.filter(pl.col("status") == "running")["id"].to_list() == [running.id]
        a.release_owner(owner)


RETRY_RACE = """
import sys
import time
import taskmill as tm
location, start = sys.argv[1], float(sys.argv[2])
with tm.TaskStore.open(location) as store:
    time.sleep(max(0.0, start - time.time()))
    out = store.retry_failed()
    print(len(out.submitted), len(out.deduplicated), flush=True)
"""


def test_concurrent_retry_processes_with_a_worker_running_complete_each_key_once(
    location: str | Path,
) -> None:
    """A natural run: two processes call retry_failed at the same moment, over and over,
    while a worker in this process completes whatever is pending as fast as it can.
    No key completes twice after its failure."""
    keys = [f"k{i}" for i in range(2000)]
    with tm.TaskStore.open(location) as store:
        fail_all(store, keys)
        stop = threading.Event()

        def worker() -> None:
            owner = store.new_owner()
            while not stop.is_set():
                claimed = store.claim(200, task_types=["t"], owner=owner)
                if claimed:
                    store.complete_many([t.id for t in claimed], owner=owner)
                else:
                    time.sleep(0.001)
            store.release_owner(owner)

        thread = threading.Thread(target=worker, daemon=True)
        thread.start()
        try:
            for _ in range(3):
                start = time.time() + 1.5
                procs = [
                    subprocess.Popen(
                        [PYTHON, "-c", RETRY_RACE, str(location), repr(start)],
                        env=ENV,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        text=True,
                    )
                    for _ in range(2)
                ]
                for proc in procs:
                    _, err = proc.communicate(timeout=120)
                    assert proc.returncode == 0, err
            deadline = time.monotonic() + 60
            while store.tasks().height and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join(30)
        assert store.tasks().height == 0
        assert completed_per_key(store) == dict.fromkeys(keys, 1)
        assert_store_consistent(store)


# ---------------------------------------------------------------- prune_history


def fill_history(store: tm.TaskStore, n: int) -> list[int]:
    """``n`` completed tasks (keys ``h0``…) with payloads; returns their ids."""
    out = store.submit_batch(
        [tm.TaskSubmission("t", dedup_key=f"h{i}", payload={"i": i}) for i in range(n)]
    )
    owner = store.new_owner()
    ids: list[int] = []
    while len(ids) < n:
        claimed = store.claim(5000, task_types=["t"], owner=owner)
        assert claimed
        store.complete_many([t.id for t in claimed], owner=owner)
        ids += [t.id for t in claimed]
    store.release_owner(owner)
    assert sorted(ids) == out.submitted
    return out.submitted


def exported_rows(*folders: Path) -> pl.DataFrame:
    """Every row of every export file in ``folders`` (published files only)."""
    files = sorted(p for f in folders if f.exists() for p in f.glob("history-*.parquet"))
    if not files:
        return pl.DataFrame({"id": []}, schema={"id": pl.Int64})
    return pl.concat([pl.read_parquet(p) for p in files])


def slow_deletes(store: tm.TaskStore, seconds: float) -> None:
    """Each delete transaction of ``store``'s prunes takes ``seconds`` longer (after it
    committed): concurrent prunes overlap for sure."""
    real = store._prune_delete

    def delete_then_wait(ids: list[int]) -> int:
        n = real(ids)
        time.sleep(seconds)
        return n

    store._prune_delete = delete_then_wait  # type: ignore[method-assign]


def test_concurrent_prunes_each_export_exactly_what_they_removed(
    location: str | Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two stores prune the whole history at the same moment, each into its own folder:
    every removed row is in exactly one export, the one of the prune that removed it, and
    the counts they return add up to the rows removed."""
    from taskmill.store import retention

    monkeypatch.setattr(retention, "PRUNE_BATCH", 500)
    with tm.TaskStore.open(location) as one, tm.TaskStore.open(location) as two:
        ids = fill_history(one, 6000)
        before = one.history().sort("id")
        slow_deletes(one, 0.02)
        slow_deletes(two, 0.02)
        barrier = threading.Barrier(2)
        folders = [tmp_path / "one", tmp_path / "two"]

        def prune(store: tm.TaskStore, folder: Path) -> Callable[[], int]:
            def call() -> int:
                barrier.wait(30)
                return store.prune_history(keep_last=0, export=folder)

            return call

        threads = [in_thread(prune(s, f)) for s, f in zip((one, two), folders, strict=True)]
        for thread, _ in threads:
            thread.join(120)
        counts = [got[0] for _, got in threads]
        assert not any(isinstance(c, BaseException) for c in counts), counts
        assert sum(counts) == len(ids)
        for store, folder, count in zip((one, two), folders, counts, strict=True):
            rows = exported_rows(folder)
            assert rows.height == count  # what it removed, no more
            if count:
                assert store.last_export is not None and store.last_export.parent == folder
        every = exported_rows(*folders).sort("id")
        assert every["id"].to_list() == ids  # each row once
        assert_frame_equal(every, before)
        assert one.history().height == 0
        assert_store_consistent(one)


PRUNE_KILLED = """
import sys
import taskmill as tm
from taskmill.store import retention
location, folder, kill_after = sys.argv[1], sys.argv[2], int(sys.argv[3])
retention.PRUNE_BATCH = 1000
with tm.TaskStore.open(location) as store:
    real = store._prune_delete
    done = [0]

    def delete_and_tell(ids):
        if done[0] == kill_after:
            print("killing", flush=True)
            sys.stdin.readline()  # waits here to be killed
        done[0] += 1
        return real(ids)

    store._prune_delete = delete_and_tell
    store.prune_history(keep_last=0, export=folder)
    print("finished", flush=True)
"""


def prune_and_kill(location: str | Path, folder: Path, kill_after: int) -> None:
    """Run a prune of the whole history into ``folder`` in another process and kill it
    (SIGKILL) once ``kill_after`` of its delete transactions have committed."""
    with subprocess.Popen(
        [PYTHON, "-c", PRUNE_KILLED, str(location), str(folder), str(kill_after)],
        env=ENV,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None and proc.stderr is not None
            line = proc.stdout.readline().strip()
            assert line == "killing", proc.stderr.read()
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("kill_after", [3, 0])
def test_a_prune_killed_mid_way_then_run_again_exports_each_removed_row_once(
    location: str | Path, tmp_path: Path, kill_after: int
) -> None:
    """A prune process is killed (SIGKILL) after ``kill_after`` of its 10 delete
    transactions (0: its export written, nothing deleted yet); a prune run again, into
    another folder, completes it: the exports together hold every removed row exactly
    once, and nothing removed is missing from them."""
    with tm.TaskStore.open(location) as store:
        ids = fill_history(store, 10_000)
        before = store.history().sort("id")
        first, second = tmp_path / "first", tmp_path / "second"
        prune_and_kill(location, first, kill_after)
        [(left,)] = run_sql(location, f"SELECT count(*) FROM {table(location, 'history')}")
        assert left == 10_000 - 1000 * kill_after  # the transactions that committed

        removed = store.prune_history(keep_last=0, export=second)

        assert removed == left and store.history().height == 0
        every = exported_rows(first, second).sort("id")
        assert every["id"].to_list() == ids  # each removed row exactly once
        assert_frame_equal(every, before)
        assert not [p.name for p in first.iterdir() if p.name.startswith(".")]  # no leftovers
        assert_store_consistent(store)
        # nothing is left to complete: another prune finds nothing to do
        assert store.prune_history(keep_last=0, export=second) == 0
        assert exported_rows(first, second).height == len(ids)


def test_a_prune_whose_delete_fails_mid_way_is_completed_by_the_next(
    location: str | Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The third delete transaction fails (the store refuses it): the call raises, the
    two committed transactions stay, and no file is published — its rows wait under the
    hidden name.  The next prune (no export of its own) completes it: the file is
    published in its folder, holding every removed row once."""
    from taskmill.store import retention

    monkeypatch.setattr(retention, "PRUNE_BATCH", 100)
    with tm.TaskStore.open(location) as store:
        ids = fill_history(store, 500)
        before = store.history().sort("id")
        real = store._prune_delete
        calls: list[int] = []

        def refuse_the_third(batch: list[int]) -> int:
            calls.append(len(batch))
            if len(calls) == 3:
                raise tm.SchedulerError("the disk says no", kind="store")
            return real(batch)

        store._prune_delete = refuse_the_third  # type: ignore[method-assign]
        folder = tmp_path / "archive"
        with pytest.raises(tm.SchedulerError, match="the disk says no"):
            store.prune_history(keep_last=0, export=folder)
        assert store.history().height == 300 and store.last_export is None
        assert exported_rows(folder).height == 0  # nothing published yet
        [hidden] = folder.iterdir()
        assert hidden.name.startswith(".history-")

        store._prune_delete = real  # type: ignore[method-assign]
        assert store.prune_history(older_than=timedelta(days=365)) == 300
        assert store.history().height == 0 and store.last_export is None
        [published] = folder.iterdir()
        assert published.name.startswith("history-")
        assert_frame_equal(pl.read_parquet(published).sort("id"), before)
        assert sorted(pl.read_parquet(published)["id"].to_list()) == ids


def test_a_prune_that_died_between_its_two_names_is_only_forgotten(
    location: str | Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The export got its final name but the process stopped before the hidden one went
    (the fault injected after the real link): the next prune removes the hidden name and
    publishes nothing twice."""
    from taskmill.store import retention

    with tm.TaskStore.open(location) as store:
        ids = fill_history(store, 50)
        real = retention.ExportFolder.publish

        def link_then_die(self: retention.ExportFolder, tmp: Path, stamp: str) -> Path:
            self._publish(tmp, stamp)  # the final name exists; the hidden one too
            raise tm.SchedulerError("the process stopped here", kind="export")

        monkeypatch.setattr(retention.ExportFolder, "publish", link_then_die)
        folder = tmp_path / "archive"
        with pytest.raises(tm.SchedulerError, match="stopped here"):
            store.prune_history(keep_last=0, export=folder)
        assert len(list(folder.iterdir())) == 2
        monkeypatch.setattr(retention.ExportFolder, "publish", real)

        assert store.history().height == 0
        assert store.prune_history(keep_last=0, export=tmp_path / "other") == 0
        [published] = folder.iterdir()
        assert published.name.startswith("history-")
        assert sorted(pl.read_parquet(published)["id"].to_list()) == ids
        assert not (tmp_path / "other").exists()
