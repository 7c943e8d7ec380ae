"""``store.widget()``: a store's queue, live in a notebook, from the store alone — no
scheduler in the kernel; workers anywhere run the tasks."""

from __future__ import annotations

import time

import pytest

import taskmill as tm
from taskmill.views.notebook import StoreWidget

pytestmark = pytest.mark.backends("sqlite", "postgres")


def test_the_store_widget_shows_what_the_store_says(store: tm.TaskStore) -> None:
    store.submit_batch(
        [tm.TaskSubmission("copy", dedup_key=f"eu{i}", group="s3://eu") for i in range(4)]
        + [tm.TaskSubmission("copy", dedup_key=f"us{i}", group="gcs://us") for i in range(3)]
        + [tm.TaskSubmission("copy", dedup_key="after", group="gcs://us", depends_on=["us0"])]
    )
    store.pause_group("s3://eu")
    view = store.widget(refresh=None)
    assert isinstance(view, StoreWidget)
    assert view.counts["pending"] == 7 and view.counts["blocked"] == 1
    assert "paused <b>0</b> (1 group)" in view.status.value
    assert "tasks/s" not in view.status.value  # one reading: no rate yet
    assert "dependencies (1 blocked)" in view.groups.value and "paused" in view.groups.value
    # a worker elsewhere ends three tasks: the next reading counts them, and their rate
    owner = store.new_owner()
    done = [t.id for t in store.claim(3, task_types=["copy"], owner=owner)]
    store.record_progress({done[0]: (1, 0.5, "half")}, owner=owner)
    view.refresh()
    assert view.counts["running"] == 3 and "50% half" in view.progress.value
    store.complete_many(done, owner=owner)
    time.sleep(0.05)
    view.refresh()
    assert view.counts["completed"] == 3 and view.updates == 3
    assert "tasks/s ended" in view.status.value


def test_the_store_widget_stops_with_its_store(location: str) -> None:
    store = tm.TaskStore.open(location)
    view = store.widget(refresh=0.05)
    time.sleep(0.2)
    assert view.updates >= 2
    store.close()
    deadline = time.monotonic() + 10
    while "the store was closed" not in view.status.value and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "the store was closed" in view.status.value
