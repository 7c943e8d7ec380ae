"""The dashboard served for real in tests: uvicorn on a free loopback port, in a thread,
over a store the test made; and a store filled with what every page shows (hostile
names included)."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn

import taskmill as tm
from taskmill.web import create_app

#: Names a user may give that a page must show as text, never as markup.
HOSTILE_GROUP = "<script>alert('group')</script>"
HOSTILE_KEY = "s3://b/\"><img src=x onerror=alert('key')>"
HOSTILE_TYPE = "copy<b>bold</b>"
HOSTILE_ERROR = "<iframe src=javascript:alert('error')></iframe> & more"
HOSTILE_SCHEDULE = "nightly <u>sync</u> & 'scan'"
HOSTILE_TAG = ("team<i>", "<data & eng>")
HOSTILE_BATCH = "plan <em>of</em> 'today'"


@contextlib.contextmanager
def served(store: tm.TaskStore, **options: Any) -> Iterator[str]:
    """The dashboard over ``store`` (``create_app``'s options) at the address yielded,
    until the block ends."""
    app = create_app(store, **options)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the dashboard did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@dataclass
class Filled:
    """What :func:`fill` made: the ids a test looks for."""

    batch_id: int
    completed: list[int]
    failed: int
    blocked: int
    parent: int
    children: list[int]
    hostile: int


def fill(store: tm.TaskStore) -> Filled:
    """A store with every page's matter: a named batch of 12 tasks in three groups (one
    hostile), tags, payloads, a dependency; three completed, one failed for good with a
    hostile error, a parent waiting for two children; a paused group; a schedule."""
    subs = [
        tm.TaskSubmission(
            "copy",
            dedup_key=f"s3://eu/photos/{i:03d}.jpg",
            group="s3://eu",
            payload={"src": f"s3://eu/photos/{i:03d}.jpg", "bytes": 1000 * i},
            tags={"team": "data"} if i % 2 else {},
        )
        for i in range(6)
    ]
    subs += [
        tm.TaskSubmission("delete", dedup_key=f"gcs://us/old/{i}", group="gcs://us")
        for i in range(3)
    ]
    subs.append(
        tm.TaskSubmission(
            HOSTILE_TYPE,
            dedup_key=HOSTILE_KEY,
            group=HOSTILE_GROUP,
            tags={HOSTILE_TAG[0]: HOSTILE_TAG[1]},
            payload={"note": "<script>alert('payload')</script>"},
        )
    )
    subs.append(tm.TaskSubmission("manifest", dedup_key="manifest", depends_on=["gcs://us/old/0"]))
    subs.append(tm.TaskSubmission("list", dedup_key="list-folder", group="s3://eu"))
    out = store.submit_batch(tm.BatchSubmission().name(HOSTILE_BATCH).tasks(subs))
    ids = dict(zip([s.dedup_key for s in subs], out.submitted, strict=True))
    owner = store.new_owner()
    claimed = [t.id for t in store.claim(4, task_types=["copy"], owner=owner)]
    store.complete_many(claimed[:3], owner=owner)
    failed = claimed[3]
    store.fail(failed, owner=owner, error=HOSTILE_ERROR, retry_at=None, traceback="Trace\n  x")
    parent = ids["list-folder"]
    assert [t.id for t in store.claim(1, task_types=["list"], owner=owner)] == [parent]
    kids = store.spawn(
        parent,
        [tm.TaskSubmission("copy", dedup_key=f"s3://eu/folder/{i}") for i in range(2)],
    ).submitted
    assert store.park(parent, owner=owner) is None
    store.pause_group("gcs://us")
    import datetime as dt

    store.schedule(HOSTILE_SCHEDULE, tm.TaskSubmission("scan"), every=dt.timedelta(hours=1))
    return Filled(
        batch_id=int(out.batch_id or 0),
        completed=claimed[:3],
        failed=failed,
        blocked=ids["manifest"],
        parent=parent,
        children=list(kids),
        hostile=ids[HOSTILE_KEY],
    )


def csrf_of(page: str) -> str:
    """The CSRF token of a confirmation page's form."""
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, "no CSRF field on the page"
    return found.group(1)
