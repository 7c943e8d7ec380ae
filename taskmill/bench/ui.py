"""``python -m taskmill.bench.ui [--db URL|postgres] [--tasks N] [--repeat R]``: what the
dashboard's pages cost on a large store, as a browser gets them.

The store is :mod:`taskmill.bench.browse`'s (1M tasks by default: 95% finished over two
days, eight workers running 100 tasks each, tags, one key prefix).  ``taskmill ui``'s
application is served by uvicorn on loopback in this process, and each page is fetched
``--repeat`` times (5) over one kept-alive HTTP connection, from the request sent to the
last byte read: the median and the best are printed, with the page's size.
"""

from __future__ import annotations

import http.client
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn

from ..store import TaskStore
from ..web import create_app
from .browse import run

__all__ = ["main", "measure_pages"]


def pages(store: TaskStore) -> list[tuple[str, str]]:
    """The pages timed, by name, on the loaded ``store``: ``(name, path)``."""
    last = int(store.browse(limit=1)["id"][0])
    middle = last // 2
    finished = int(store.browse(status="completed", before=middle, limit=1)["id"][0])
    batch = store.batches()["batch_id"].to_list()[-1]
    return [
        ("queue page (whole)", "/"),
        ("queue page, live part (every 2 s)", "/?fragment=1"),
        ("tasks: first page", "/tasks"),
        (f"tasks: deep page (before {middle:,})", f"/tasks?before={middle}"),
        ("tasks: status=failed (1 in 1,000)", "/tasks?status=failed"),
        ("tasks: key prefix user/0001 (1%, deep)", "/tasks?key=user/0001"),
        ("tasks: tag shard=42 (1 in 1,000)", "/tasks?tag=shard%3D42"),
        ("tasks: group g3 and status pending", "/tasks?group=g3&status=pending"),
        ("one task (finished, with attempts)", f"/tasks/{finished}"),
        ("batches", "/batches"),
        (f"one batch ({batch}, 250k tasks)", f"/batches/{batch}"),
        ("workers", "/workers"),
        ("schedules", "/schedules"),
    ]


def measure_pages(
    location: str | Path, repeat: int = 5, echo: Callable[[str], None] = print
) -> dict[str, float]:
    """Serve the dashboard over the loaded store at ``location`` and time each page of
    :func:`pages` ``repeat`` times; print a line each; the median seconds by name."""
    medians: dict[str, float] = {}
    with TaskStore.open(location) as store:
        app = create_app(store, refresh=0)
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off")
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        web = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            for name, path in pages(store):
                times: list[float] = []
                size = status = 0
                for _ in range(repeat):
                    started = time.perf_counter()
                    web.request("GET", path)
                    answer = web.getresponse()
                    size, status = len(answer.read()), answer.status
                    times.append(time.perf_counter() - started)
                medians[name] = statistics.median(times)
                echo(
                    f"{name:<44} {status} {size / 1000:7.1f} kB  median "
                    f"{medians[name] * 1000:8.2f} ms  best {min(times) * 1000:8.2f} ms"
                )
        finally:
            web.close()
            server.should_exit = True
            thread.join(10)
    return medians


def main(argv: list[str] | None = None) -> None:
    """Load a store and time the pages (see the module's docstring)."""
    run(argv, "python -m taskmill.bench.ui", measure_pages)


if __name__ == "__main__":
    main()
