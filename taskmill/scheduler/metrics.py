"""A scheduler's metrics: what it did, counted from its events, and the queue it works on,
read from the store when someone looks.

:class:`SchedulerMetrics` keeps one ``prometheus_client`` registry per scheduler (never
the library's global one, so two schedulers in one process count apart):

- counters, fed by the event bus (:meth:`SchedulerMetrics.notice` is one of its
  listeners): ``tasks_submitted_total``, ``tasks_dispatched_total``,
  ``tasks_completed_total``, ``tasks_failed_total`` (tasks that ended failed),
  ``tasks_retried_total`` (failed attempts that go back to the queue),
  ``tasks_cancelled_total``, ``tasks_superseded_total``, ``tasks_expired_total``,
  ``tasks_recovered_total`` (running tasks of stopped workers put back to pending) and
  ``store_unavailable_total`` (store calls that failed and were tried again);
- histograms: ``claim_seconds`` (each claim of the dispatch loop, as it waited for it) and
  ``task_seconds`` (how long each completed attempt's code ran);
- gauges read from the store at each scrape or snapshot, in one read of the active tasks
  (never history): ``tasks_pending``, ``tasks_running``, ``tasks_paused``,
  ``tasks_blocked``, ``tasks_waiting`` (every active status) over the whole store, whoever runs the
  tasks, and ``queue_depth{group="…"}``, the pending tasks of each group (``""``: no
  group); plus ``attempts_running``, this scheduler's own running attempts.

The store is read on a thread of the metrics' own (one connection, reused), at most one
read at a time; a read that fails, or takes longer than :data:`READ_TIMEOUT`, leaves the
last values in place (``queue_read_errors_total`` counts those).  ``prometheus_client``
is imported when the first scheduler is made, not with ``taskmill``.
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from ..model import (
    ACTIVE_STATUSES,
    BatchSubmitted,
    Event,
    SchedulerError,
    StoreUnavailable,
    TaskCancelled,
    TaskCompleted,
    TaskDispatched,
    TaskFailed,
    TasksExpired,
    TasksRecovered,
    TaskSubmitted,
    TaskSuperseded,
)
from ..store import TaskStore

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

__all__ = ["CLAIM_BUCKETS", "READ_TIMEOUT", "SchedulerMetrics"]

log = logging.getLogger("taskmill")

#: The longest a snapshot or scrape waits for the store's counts (seconds) before it
#: answers with the last ones read.
READ_TIMEOUT = 5.0

#: The buckets of ``claim_seconds``: a claim takes about a millisecond on an idle store,
#: much longer behind a busy writer.
CLAIM_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    math.inf,
)

#: Counts by group and status of the active tasks, as :meth:`TaskStore.group_counts`.
GroupCounts = dict[str | None, dict[str, int]]


class SchedulerMetrics:
    """The metrics of one scheduler (module docs).

    ``store()`` gives the scheduler's store while it is open (``None`` otherwise);
    ``attempts()`` the number of attempts running here now.
    """

    def __init__(self, store: Callable[[], TaskStore | None], attempts: Callable[[], int]) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self._store = store
        self._attempts = attempts
        #: This scheduler's registry: serve it, or hand it to your own exporter.
        self.registry: CollectorRegistry = CollectorRegistry()
        # first: a collection reads the store before it reads the counters (a failed read
        # is counted in the same scrape)
        self.registry.register(_QueueCollector(self.gauges, attempts))

        def counter(name: str, doc: str) -> Counter:
            return Counter(name, doc, registry=self.registry)

        self.submitted = counter("tasks_submitted", "Tasks inserted through this scheduler.")
        self.dispatched = counter("tasks_dispatched", "Attempts this scheduler started.")
        self.completed = counter("tasks_completed", "Tasks that completed here.")
        self.failed = counter("tasks_failed", "Tasks that ended failed here (no retry left).")
        self.retried = counter("tasks_retried", "Failed attempts here that will be retried.")
        self.cancelled = counter("tasks_cancelled", "Tasks cancelled, as this scheduler saw.")
        self.superseded = counter(
            "tasks_superseded", "Tasks superseded by a newer submission, as this scheduler saw."
        )
        self.expired = counter("tasks_expired", "Tasks not started in time, ended by this one.")
        self.recovered = counter(
            "tasks_recovered", "Running tasks of stopped workers put back to pending here."
        )
        self.store_unavailable = counter(
            "store_unavailable", "Store calls recording a result that failed and were retried."
        )
        self.read_errors = counter(
            "queue_read_errors", "Reads of the queue's counts that failed or timed out."
        )
        self.claim_seconds = Histogram(
            "claim_seconds",
            "Seconds each claim of the dispatch loop took.",
            buckets=CLAIM_BUCKETS,
            registry=self.registry,
        )
        self.task_seconds = Histogram(
            "task_seconds",
            "Seconds the code of each completed attempt ran.",
            registry=self.registry,
        )
        self._handlers: dict[type[Event], Callable[[Event], None]] = {
            TaskSubmitted: lambda e: self.submitted.inc(),
            BatchSubmitted: self._batch_submitted,
            TaskDispatched: lambda e: self.dispatched.inc(),
            TaskCompleted: self._task_completed,
            TaskFailed: self._task_failed,
            TaskCancelled: lambda e: self.cancelled.inc(),
            TaskSuperseded: lambda e: self.superseded.inc(),
            TasksExpired: self._tasks_expired,
            TasksRecovered: self._tasks_recovered,
            StoreUnavailable: lambda e: self.store_unavailable.inc(),
        }
        self._queue: GroupCounts = {}
        self._reading: concurrent.futures.Future[GroupCounts] | None = None
        self._reader: concurrent.futures.ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._servers: list[tuple[WSGIServer, threading.Thread]] = []

    # ------------------------------------------------------------------ counting

    def notice(self, event: Event) -> None:
        """Count ``event`` (an event bus listener, called on the loop for every event)."""
        handler = self._handlers.get(type(event))
        if handler is not None:
            handler(event)

    def claimed(self, seconds: float) -> None:
        """One claim of the dispatch loop took ``seconds``."""
        self.claim_seconds.observe(seconds)

    def _batch_submitted(self, event: Event) -> None:
        assert isinstance(event, BatchSubmitted)
        self.submitted.inc(event.count)

    def _task_completed(self, event: Event) -> None:
        assert isinstance(event, TaskCompleted)
        self.completed.inc()
        self.task_seconds.observe(event.duration)

    def _task_failed(self, event: Event) -> None:
        assert isinstance(event, TaskFailed)
        (self.retried if event.will_retry else self.failed).inc()

    def _tasks_expired(self, event: Event) -> None:
        assert isinstance(event, TasksExpired)
        self.expired.inc(event.count)

    def _tasks_recovered(self, event: Event) -> None:
        assert isinstance(event, TasksRecovered)
        self.recovered.inc(event.count)

    # ------------------------------------------------------------------ the queue

    def queue(self, timeout: float = READ_TIMEOUT) -> GroupCounts:
        """The active tasks per group and status, read from the store now (waiting at most
        ``timeout`` seconds, then the last counts read; those too while no store is open).
        Called from any thread; concurrent callers share one read."""
        with self._lock:
            store = self._store()
            if store is None:
                return self._queue
            reading = self._reading
            if reading is None or reading.done():
                if self._reader is None:
                    self._reader = concurrent.futures.ThreadPoolExecutor(
                        max_workers=1, thread_name_prefix="taskmill-metrics"
                    )
                reading = self._reading = self._reader.submit(store.group_counts)
        try:
            counts = reading.result(timeout=timeout)
        except Exception as exc:  # a scrape must answer: with the last counts
            self.read_errors.inc()
            log.warning("taskmill metrics: the queue's counts could not be read: %r", exc)
            return self._queue
        self._queue = counts
        return counts

    def gauges(self, timeout: float = READ_TIMEOUT) -> tuple[dict[str, int], dict[str, int]]:
        """The store's active tasks per status over every group (each active status
        present), and its pending tasks per group (``""``: no group)."""
        totals: dict[str, int] = dict.fromkeys(ACTIVE_STATUSES, 0)
        depth: dict[str, int] = {}
        for group, statuses in self.queue(timeout).items():
            for status, n in statuses.items():
                totals[status] = totals.get(status, 0) + n
            depth["" if group is None else group] = statuses.get("pending", 0)
        return totals, depth

    # ------------------------------------------------------------------ reading

    def snapshot(self) -> dict[str, float]:
        """Every metric without labels by its name in the text format
        (``tasks_completed_total``, ``claim_seconds_sum``…; no ``_created`` times and no
        histogram buckets), and the labelled gauges as ``queue_depth{group="eu"}``."""
        values: dict[str, float] = {}
        for family in self.registry.collect():
            for sample in family.samples:
                if sample.name.endswith(("_created", "_bucket")):
                    continue
                values[_key(sample.name, sample.labels)] = float(sample.value)
        return values

    # ------------------------------------------------------------------ serving

    def serve(self, port: int, host: str = "127.0.0.1") -> int:
        """Serve the registry in the Prometheus text format at
        ``http://host:port/metrics`` on a thread of its own, until :meth:`close`; the
        port it listens on (``0``: a free one)."""
        from prometheus_client import start_http_server

        try:
            server, thread = start_http_server(port, addr=host, registry=self.registry)
        except OSError as exc:
            raise SchedulerError(
                f"cannot serve metrics on {host}:{port}: {exc.strerror or exc}",
                kind="invalid_argument",
            ) from exc
        self._servers.append((server, thread))
        return int(server.server_port)

    def close(self) -> None:
        """Read the queue's counts one last time (a snapshot after close shows them), stop
        serving, end the reading thread.  Serving may start again later."""
        self.queue(timeout=1.0)
        servers, self._servers = self._servers, []
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5.0)
        with self._lock:
            reader, self._reader, self._reading = self._reader, None, None
        if reader is not None:
            reader.shutdown(wait=False, cancel_futures=True)


class _QueueCollector:
    """The gauges read from the store, made at each collection of the registry."""

    def __init__(
        self,
        gauges: Callable[[], tuple[dict[str, int], dict[str, int]]],
        attempts: Callable[[], int],
    ) -> None:
        self._gauges = gauges
        self._attempts = attempts

    def describe(self) -> list[Metric]:
        """The gauges' families, without values (the registry checks names with them)."""
        return list(self._families({}, {}, 0))

    def collect(self) -> list[Metric]:
        totals, depth = self._gauges()
        return list(self._families(totals, depth, self._attempts()))

    def _families(
        self, totals: dict[str, int], depth: dict[str, int], attempts: int
    ) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        for status in sorted({*ACTIVE_STATUSES, *totals}):
            yield GaugeMetricFamily(
                f"tasks_{status}",
                f"Active tasks of the store that are {status} now, whoever runs them.",
                value=totals.get(status, 0),
            )
        by_group = GaugeMetricFamily(
            "queue_depth", "Pending tasks of the store per group.", labels=["group"]
        )
        for group, n in sorted(depth.items()):
            by_group.add_metric([group], n)
        yield by_group
        yield GaugeMetricFamily(
            "attempts_running", "Attempts running on this scheduler now.", value=attempts
        )


def _key(name: str, labels: dict[str, str]) -> str:
    """A sample's key in a snapshot: its name, with its labels as the text format writes
    them (``queue_depth{group="eu"}``)."""
    if not labels:
        return name
    pairs = ",".join(f'{k}="{_escaped(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{pairs}}}"


def _escaped(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
