"""A scheduler's lease, kept on threads of its own.

:class:`LeaseKeeper` renews the lease every :func:`renew_interval` seconds on a
heartbeat of the store (a connection used for nothing else: see ``store.heartbeat()``),
from a thread used for nothing else — never through the event loop's default thread
pool, which executors doing ``await asyncio.to_thread(io)`` may fill, nor behind a batch
holding the store's write connection.

A second thread, the watchdog, *fences*: when no renewal has landed for
``lease_timeout / 2`` seconds (counted from the moment the last successful renewal was
sent, on this machine's monotonic clock), it calls ``on_fence`` — the scheduler tells
every running attempt to stop — while the lease still has at least ``lease_timeout / 2``
seconds to run by the store's clock, so before any other worker may take the tasks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, cast

from .store.workers import CLOCK_SKEW_MARGIN, StoreClock, last_renewed

__all__ = ["FENCE_FRACTION", "Heartbeat", "LeaseKeeper", "renew_interval"]

log = logging.getLogger("taskmill")

#: The part of ``lease_timeout`` without a renewal after which running attempts are
#: told to stop (the rest is the margin before anyone may take the tasks over).
FENCE_FRACTION = 0.5


def renew_interval(lease_timeout: float) -> float:
    """Seconds between two renewals: six a lease (three before fencing), at most 2 s."""
    return max(0.02, min(lease_timeout / 6, 2.0))


class Heartbeat(Protocol):
    """What a store's ``heartbeat()`` gives: renewals on a connection of their own."""

    clock: StoreClock

    def renew(self, owner: str) -> float | None:
        """The store's time of the renewal; ``None`` when the lease was taken away."""
        ...

    def close(self) -> None: ...


class _RenewThroughStore:
    """A heartbeat for a store without one of its own (its ``renew`` call)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.clock = StoreClock()

    def renew(self, owner: str) -> float | None:
        sent = time.monotonic()
        if not self.store.renew(owner):
            return None
        at = time.time()
        self.clock.set(at, sent, time.monotonic())
        return at

    def close(self) -> None:
        return None


class LeaseKeeper:
    """Renews ``owner``'s lease and fences its attempts when it cannot (module docs).

    Callbacks run on the keeper's threads: ``on_fence()`` once when renewals have failed
    for ``lease_timeout * FENCE_FRACTION``; ``on_unfence()`` when one lands again;
    ``on_lost(owner)`` when the store says the lease was taken away (then renewals stop
    until :meth:`replace` gives a new identity)."""

    def __init__(
        self,
        store: Any,
        owner: str,
        lease_timeout: float,
        *,
        on_fence: Callable[[], None],
        on_unfence: Callable[[], None],
        on_lost: Callable[[str], None],
    ) -> None:
        self.lease_timeout = lease_timeout
        self.interval = renew_interval(lease_timeout)
        self.fence_after = lease_timeout * FENCE_FRACTION
        make = getattr(store, "heartbeat", None)
        self.heartbeat: Heartbeat = (
            cast(Heartbeat, make(timeout=self.interval))
            if callable(make)
            else _RenewThroughStore(store)
        )
        self.clock = self.heartbeat.clock
        self._owner: str | None = owner
        self._last_ok = time.monotonic()  # registered just now
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.fenced = False
        self._on_fence, self._on_unfence, self._on_lost = on_fence, on_unfence, on_lost
        self._warned_offset: float | None = None
        self._failures = 0
        self._threads = [
            threading.Thread(target=self._renew_loop, name="taskmill-heartbeat", daemon=True),
            threading.Thread(target=self._watch_loop, name="taskmill-fence", daemon=True),
        ]

    def start(self) -> LeaseKeeper:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        """Stop renewing (the scheduler releases its owner next) and close the heartbeat."""
        self._stop.set()
        for thread in self._threads:
            if thread.is_alive() and thread is not threading.current_thread():
                thread.join(timeout=10)
        self.heartbeat.close()

    def replace(self, owner: str, sent: float) -> None:
        """Keep ``owner``'s lease from now on (registered at monotonic ``sent``)."""
        with self._lock:
            self._owner = owner
            self._last_ok = sent
            was_fenced, self.fenced = self.fenced, False
        if was_fenced:
            self._on_unfence()

    def since_renewal(self) -> float:
        """Seconds since the last renewal that landed was sent."""
        with self._lock:
            return time.monotonic() - self._last_ok

    # ------------------------------------------------------------------ threads

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.interval):
            with self._lock:
                owner = self._owner
            if owner is None:
                continue
            sent = time.monotonic()
            try:
                at = self.heartbeat.renew(owner)
            except Exception as exc:  # the store is away: try again, the watchdog fences
                self._failures += 1
                if self._failures in (1, 10) or self._failures % 100 == 0:
                    log.warning(
                        "taskmill: cannot renew this worker's lease (%d failure(s) in a row; "
                        "its attempts are told to stop after %g s without one): %s",
                        self._failures,
                        self.fence_after,
                        exc,
                    )
                continue
            self._failures = 0
            if at is None:
                with self._lock:
                    if self._owner == owner:
                        self._owner = None
                self._on_lost(owner)
                continue
            with self._lock:
                if self._owner != owner:
                    continue
                self._last_ok = max(self._last_ok, sent)
                was_fenced = self.fenced and not self._late()
                if was_fenced:
                    self.fenced = False
            if was_fenced:
                log.warning("taskmill: this worker's lease is renewed again; dispatching")
                self._on_unfence()
            self._check_clock()

    def _late(self) -> bool:
        """Whether no renewal landed for ``fence_after`` (hold ``_lock``)."""
        owner = self._owner
        last = self._last_ok
        if owner is not None:
            other = last_renewed(owner)  # a batch transaction renewed it
            if other is not None and other > last:
                last = self._last_ok = other
        return time.monotonic() - last > self.fence_after

    def _watch_loop(self) -> None:
        while not self._stop.wait(self.interval / 4):
            with self._lock:
                fire = self._owner is not None and not self.fenced and self._late()
                if fire:
                    self.fenced = True
            if fire:
                log.warning(
                    "taskmill: no lease renewal for %.1f s (half the %g s lease): telling "
                    "this worker's running attempts to stop before another worker may "
                    "take them over",
                    self.since_renewal(),
                    self.lease_timeout,
                )
                self._on_fence()

    def _check_clock(self) -> None:
        """Say loudly when this machine's clock differs from the store's."""
        offset = self.clock.offset
        if abs(offset) <= CLOCK_SKEW_MARGIN:
            self._warned_offset = None
            return
        if self._warned_offset is not None and abs(offset - self._warned_offset) < 1.0:
            return
        self._warned_offset = offset
        log.warning(
            "taskmill: this machine's clock differs from the store's by %+.1f s: leases, "
            "rate limits, start and expiry times go by the store's clock; times shown "
            "by this machine's do not. Fix its time synchronisation (NTP)",
            offset,
        )
