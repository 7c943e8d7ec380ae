"""This scheduler's lease: its identity in the store, renewed on threads of its own, and
what it does when renewals fail or the lease is taken away.

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

:class:`WorkerLease` is the scheduler's side: it registers the identity, keeps a
:class:`LeaseKeeper` running and acts on its calls on the event loop (attempts told to
stop, claiming held back, a new identity once the old one was lost); its
:meth:`~WorkerLease.upkeep` loop also puts back the tasks of stopped workers and expires
tasks not started in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from ..model import TasksExpired, TasksRecovered
from ..store import TaskStore
from ..store.workers import CLOCK_SKEW_MARGIN, StoreClock, held_text, last_renewed
from .attempts import Attempt
from .events import EventBus, wait_set

__all__ = ["FENCE_FRACTION", "Heartbeat", "LeaseKeeper", "WorkerLease", "renew_interval"]

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

    def renew(self, owner: str, held: str | None = None) -> float | None:
        """The store's time of the renewal, which writes ``held`` too (what held this
        worker's groups back; ``None``: keep it); ``None`` when the lease was taken away."""
        ...

    def close(self) -> None: ...


class _RenewThroughStore:
    """A heartbeat for a store without one of its own (its ``renew`` call, which writes
    nothing of what is held back)."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.clock = StoreClock()

    def renew(self, owner: str, held: str | None = None) -> float | None:
        del held  # such a store keeps no record of it
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

    Each renewal also writes what held the worker's groups back at its last claim
    (:meth:`note_held`) to its row, for views with no scheduler of their own; a change
    brings the next renewal forward (to at most four renewals an interval), so no claim
    pays a statement for it.

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
        # what the renewals write of what is held back (None: nothing said yet, keep it);
        # set: it changed, renew soon
        self._held: str | None = None
        self._soon = threading.Event()
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
        self._soon.set()
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

    def note_held(self, held: Mapping[str, str]) -> None:
        """What held groups back at the last claim changed to ``held``: the next renewal,
        brought forward, writes it to the worker's row."""
        self._held = held_text(held)
        self._soon.set()

    def since_renewal(self) -> float:
        """Seconds since the last renewal that landed was sent."""
        with self._lock:
            return time.monotonic() - self._last_ok

    # ------------------------------------------------------------------ threads

    def _renew_loop(self) -> None:
        sent = time.monotonic()  # registered just now
        while not self._stop.is_set():
            # due an interval after the last renewal; brought forward by a change of
            # what is held back, to a quarter of an interval after it at the soonest
            self._soon.wait(max(0.0, sent + self.interval - time.monotonic()))
            if self._soon.is_set():
                self._stop.wait(max(0.0, sent + self.interval / 4 - time.monotonic()))
                self._soon.clear()
            if self._stop.is_set():
                return
            sent = time.monotonic()
            with self._lock:
                owner = self._owner
            if owner is None:
                continue
            try:
                at = self.heartbeat.renew(owner, self._held)
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


@dataclass(eq=False)
class WorkerLease:
    """A scheduler's identity in ``store`` (:attr:`owner`) and its lease on the attempts
    in ``running`` (module docs).

    Claiming is allowed (:meth:`may_claim`) while the lease holds: not while it is
    :attr:`fenced` (no renewal for half of it: the attempts were told to stop) nor
    :attr:`stale` (the store took it away: the attempts lost their tasks; a new identity
    is being made).  ``poke()`` wakes the dispatch loop when claiming may go on; the
    keeper's calls are run on ``loop``."""

    store: TaskStore
    running: dict[int, Attempt]
    events: EventBus
    loop: asyncio.AbstractEventLoop
    lease_timeout: float
    poke: Callable[[], None]
    owner: str | None = field(default=None, init=False)
    stale: bool = field(default=False, init=False)  # lost; a new identity is being made
    fenced: bool = field(default=False, init=False)  # renewals fail: nothing claimed
    keeper: LeaseKeeper | None = field(default=None, init=False)
    _wake: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    async def register(self) -> str:
        """Make this worker's identity in the store and start renewing its lease."""
        self.owner = owner = await asyncio.to_thread(
            self.store.new_owner, lease_timeout=self.lease_timeout
        )
        self.keeper = LeaseKeeper(
            self.store,
            owner,
            self.lease_timeout,
            on_fence=self._fence_from_keeper,
            on_unfence=lambda: self._from_keeper(self._unfence),
            on_lost=lambda owner: self._from_keeper(self._gone, owner),
        ).start()
        return owner

    async def stop(self) -> None:
        """Stop renewing (the scheduler releases :attr:`owner` next)."""
        if self.keeper is not None:
            await asyncio.to_thread(self.keeper.stop)
            self.keeper = None

    def note_held(self, held: Mapping[str, str]) -> None:
        """What held groups back at the last claim changed: written to this worker's row
        with the next renewal, brought forward (:meth:`LeaseKeeper.note_held`)."""
        if self.keeper is not None:
            self.keeper.note_held(held)

    def may_claim(self) -> bool:
        """Whether the lease holds: neither fenced nor lost."""
        return not self.stale and not self.fenced

    def now(self) -> float:
        """The store's clock as last read by the lease keeper (this machine's before)."""
        keeper = self.keeper
        at = keeper.clock.now() if keeper is not None else None
        return time.time() if at is None else at

    @property
    def clock_offset(self) -> float:
        """Seconds the store's clock is ahead of this machine's, as last measured."""
        keeper = self.keeper
        return 0.0 if keeper is None else keeper.clock.offset

    async def upkeep(self) -> None:
        """Make a new identity when the lease was lost; put back the tasks of stopped
        workers and expire tasks not started in time.  Runs until cancelled."""
        tick = max(0.05, min(self.lease_timeout / 3, 2.0))
        while True:
            await wait_set(self._wake, tick)
            self._wake.clear()
            try:
                if self.stale:
                    await self._renew_identity()
                recovered = await asyncio.to_thread(self.store.recover)
                expired = await asyncio.to_thread(self.store.expire_due)
            except Exception as exc:
                log.warning("taskmill: could not look for stopped workers' tasks: %s", exc)
                continue
            if recovered:
                self.events.publish(TasksRecovered(count=recovered))
                self.poke()
            if expired:
                log.info("taskmill: %d task(s) not started in time expired", expired)
                self.events.publish(TasksExpired(count=expired))

    async def _renew_identity(self) -> None:
        """A new identity: results of the old one's attempts are refused, even for a
        task this scheduler claims again meanwhile."""
        old = self.owner
        assert old is not None
        sent = time.monotonic()
        owner = await asyncio.to_thread(self.store.new_owner, lease_timeout=self.lease_timeout)
        self.owner = owner
        if self.keeper is not None:
            self.keeper.replace(owner, sent)
        self.stale = False
        self.fenced = False
        await asyncio.to_thread(self.store.release_owner, old)
        self.poke()

    # ------------------------------------------------------------------ the keeper's calls

    def _from_keeper(self, fn: Callable[..., None], *args: Any) -> None:
        """Run ``fn(*args)`` on the event loop (called from the lease keeper's threads)."""
        loop = self.loop
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop has closed meanwhile
                loop.call_soon_threadsafe(fn, *args)

    def _fence_from_keeper(self) -> None:
        """No renewal for half the lease (the keeper's watchdog thread): every attempt's
        ``ctx.cancelled`` is set here at once — the event loop may be busy — then the
        loop stops them (:meth:`_fence`)."""
        for attempt in self.running.copy().values():
            if attempt.untold:
                attempt.ctx._cancelled = True
        self._from_keeper(self._fence)

    def _fence(self) -> None:
        """Stop every running attempt (async ones are cancelled) and claim nothing until
        a renewal lands: once they return, their tasks go back to pending if still ours."""
        self.fenced = True
        told = [a for a in self.running.values() if a.untold]
        log.warning(
            "taskmill: %d running attempt(s) told to stop: this worker cannot renew its "
            "lease, and after %g s without one other workers may take the tasks",
            len(told),
            self.lease_timeout,
        )
        for attempt in told:
            attempt.stop("fenced")

    def _unfence(self) -> None:
        self.fenced = False
        self.poke()

    def _gone(self, owner: str) -> None:
        """The store says ``owner``'s lease was taken away: our tasks went back to the
        queue, so every attempt here is told to stop (none may record a result) and a
        new identity is made."""
        if owner != self.owner or self.stale:
            return
        self.stale = True
        lost = [a for a in self.running.values() if a.stop_reason is None]
        log.warning(
            "taskmill: this worker's lease ran out (no renewal for %g s); %d running "
            "attempt(s) lost their tasks to the queue",
            self.lease_timeout,
            len(lost),
        )
        for attempt in lost:
            attempt.stop("lost")
        self._wake.set()
