"""A scheduler's event bus: every subscriber gets every event, in a bounded buffer.

:class:`EventBus` hands each published event to every :class:`Subscription`; a
subscription that lags loses its oldest events and counts them.  Events are published on
the event loop; :meth:`EventBus.publish_threadsafe` brings one there from another thread
(an executor's progress report).  :func:`wait_set` is how the scheduler's loops sleep
until woken.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Callable

from ..model import Event

__all__ = ["EventBus", "Subscription", "wait_set"]


async def wait_set(flag: asyncio.Event, timeout: float) -> None:
    """Wait for ``flag`` to be set, at most ``timeout`` seconds (cancellation is never
    swallowed, unlike ``asyncio.wait_for`` on Python 3.11): the scheduler's loops sleep
    so, woken early by whoever sets it."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await flag.wait()


class Subscription:
    """An async iterator of scheduler events with a bounded buffer.

    When the buffer is full the oldest event is dropped and :attr:`dropped` counts
    it, so a slow subscriber can tell it lost events.  Iteration ends when the
    scheduler closes (after the buffered events) or on :meth:`close`.
    """

    def __init__(self, bus: EventBus, maxsize: int) -> None:
        self._bus = bus
        self._buffer: collections.deque[Event] = collections.deque(maxlen=maxsize)
        self._ready = asyncio.Event()
        self._closed = False
        self.dropped = 0

    def _push(self, event: Event) -> None:
        if self._closed:
            return
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
        self._buffer.append(event)
        self._ready.set()

    def _end(self) -> None:
        self._closed = True
        self._ready.set()

    def close(self) -> None:
        """Stop receiving events."""
        self._bus.unsubscribe(self)
        self._end()

    def drain(self) -> list[Event]:
        """Every buffered event, without waiting."""
        items = list(self._buffer)
        self._buffer.clear()
        return items

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while not self._buffer:
            if self._closed:
                raise StopAsyncIteration
            self._ready.clear()
            await self._ready.wait()
        return self._buffer.popleft()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    """The subscriptions of one scheduler and the event loop their events are handed on."""

    def __init__(self) -> None:
        self._subscribers: set[Subscription] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The scheduler's own parts that follow events (called on the loop, first).
        self.listeners: list[Callable[[Event], None]] = []

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Publish events from other threads on ``loop`` (the scheduler's, once started)."""
        self._loop = loop

    def subscribe(self, maxsize: int) -> Subscription:
        """A new subscription buffering at most ``maxsize`` events."""
        sub = Subscription(self, maxsize)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        """Publish nothing more to ``sub``."""
        self._subscribers.discard(sub)

    def publish(self, event: Event) -> None:
        """Hand ``event`` to every listener and subscription (on the event loop)."""
        for listener in self.listeners:
            listener(event)
        for sub in list(self._subscribers):
            sub._push(event)

    def publish_threadsafe(self, event: Event) -> None:
        """:meth:`publish` from any thread: on the bound loop (dropped once it closed)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self.publish(event)
        else:
            loop.call_soon_threadsafe(self.publish, event)

    def end(self) -> None:
        """End every subscription: each iteration stops after its buffered events."""
        for sub in list(self._subscribers):
            sub._end()
        self._subscribers.clear()
