"""Worker identities, liveness and the store's clock, the same for every backend.

A worker (one scheduler) is ``"host:pid:token"``, the token random per identity, so no
two processes ever share one — not two containers with one host name whose PID
namespaces both number them 1.  Its row in the store also records its *scope*
(:func:`local_scope`: the machine's boot id and the process's PID namespace); a pid says
whether a worker is alive only to a process of the same host name **and** scope.  Every
other worker waits for the lease, judged by the store's clock (:class:`StoreClock`).

Owners alive in this process are kept in a registry, so a running task whose owner is
this process but not registered was left behind.  :func:`stale_owners` decides, from what
a store reads, whose running tasks go back to pending; each store only runs the SQL.

A worker's row also says what held its groups back at its last claim (:func:`held_text`,
written with a lease renewal); :func:`merge_held` reads it over every live worker, so a
view with no scheduler of its own shows a group limit, a budget or a rate binding.
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "CLOCK_SKEW_MARGIN",
    "DEFAULT_LEASE_TIMEOUT",
    "HOST",
    "StoreClock",
    "forget_owner",
    "held_text",
    "last_renewed",
    "live_owners",
    "local_scope",
    "lost_reason",
    "merge_held",
    "new_owner_id",
    "note_renewed",
    "owner_dead",
    "owner_parts",
    "pid_alive",
    "stale_owners",
    "worker_row",
]

HOST = socket.gethostname()
#: Seconds a worker's lease on its running tasks lasts without renewal.
DEFAULT_LEASE_TIMEOUT = 30.0
#: Seconds by which this process's clock may differ from the store's before it is said
#: loudly (leases and rate limits never use this process's clock; times it shows do).
CLOCK_SKEW_MARGIN = 1.0

_LIVE_OWNERS: set[str] = set()
_LIVE_LOCK = threading.Lock()
#: Owner -> ``time.monotonic()`` just before the start of its last lease renewal that
#: landed by another way than its heartbeat (a batch transaction renews them last).
_RENEWED: dict[str, float] = {}


def _read_text(path: str) -> str:
    try:
        with open(path, encoding="ascii") as fh:
            return fh.read().strip()
    except OSError:
        return ""


@functools.cache
def _scope_of(pid: int) -> str | None:
    """:func:`local_scope` of process ``pid`` (cached per pid: a fork is a new process)."""
    del pid  # the cache key: a forked child has a pid, and maybe a namespace, of its own
    if not sys.platform.startswith("linux"):
        return "host"  # no PID namespaces: the host name is the whole scope
    boot = _read_text("/proc/sys/kernel/random/boot_id")
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None  # cannot tell: no pid of ours is proof of anything
    return f"{boot or 'unknown-boot'}/pid:{namespace}"


def local_scope() -> str | None:
    """Where this process's pids mean something: the boot id and the PID namespace
    (``/proc/sys/kernel/random/boot_id``, the inode of ``/proc/self/ns/pid``); ``None``
    when Linux does not let us read them (then no pid is judged, only leases)."""
    return _scope_of(os.getpid())


def new_owner_id() -> str:
    """A fresh worker identity, registered as alive in this process."""
    owner = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:16]}"
    with _LIVE_LOCK:
        _LIVE_OWNERS.add(owner)
    return owner


def forget_owner(owner: str) -> None:
    """``owner`` is no longer alive in this process."""
    with _LIVE_LOCK:
        _LIVE_OWNERS.discard(owner)
        _RENEWED.pop(owner, None)


def note_renewed(owners: Iterable[str], sent: float) -> None:
    """The leases of ``owners`` were renewed by a statement begun at monotonic ``sent``."""
    with _LIVE_LOCK:
        for owner in owners:
            if owner in _LIVE_OWNERS:
                _RENEWED[owner] = max(sent, _RENEWED.get(owner, sent))


def last_renewed(owner: str) -> float | None:
    """When :func:`note_renewed` last renewed ``owner`` (monotonic), if ever."""
    with _LIVE_LOCK:
        return _RENEWED.get(owner)


def live_owners() -> list[str]:
    """The worker identities alive in this process."""
    with _LIVE_LOCK:
        return sorted(_LIVE_OWNERS)


def owner_parts(owner: str) -> tuple[str, int]:
    """The host name and pid of ``"host:pid:token"`` (pid 0 when it has none)."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    return host, int(pid) if pid.isdigit() else 0


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host runs (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is dead for our purpose
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def owner_dead(owner: str | None, scope: str | None = None, *, leased: bool = True) -> bool:
    """Whether the worker that marked a task running is provably gone.

    A pid is proof only where it means the same process: the same host name and the same
    ``scope`` (boot and PID namespace) as this process.  ``leased=False``: the owner holds
    no lease row (a worker of the 0.1 schema, which recorded no scope): its host name
    alone decides, as 0.1 did."""
    if owner is None:
        return True
    host, pid = owner_parts(owner)
    if host != HOST or not pid:
        return False  # another machine's worker: we cannot tell
    if leased and (scope is None or scope != local_scope()):
        return False  # another container, boot or PID namespace: only the lease decides
    if pid == os.getpid():
        with _LIVE_LOCK:
            return owner not in _LIVE_OWNERS
    return not pid_alive(pid)


class StoreClock:
    """The store's clock as this process sees it: the last reading of the store's time,
    carried forward by ``time.monotonic()`` (which no change of the wall clock moves).

    :meth:`now` is the store's time now, within half the round trip of the reading;
    :attr:`offset` is how far the store's clock is ahead of this process's
    ``time.time()`` (negative: behind)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._at: tuple[float, float] | None = None  # (store time, monotonic of it)
        #: Seconds the store's clock is ahead of this process's (at the last reading).
        self.offset = 0.0

    def set(self, store_time: float, sent: float, received: float) -> None:
        """A reading: the store said ``store_time`` between monotonic ``sent`` and
        ``received``."""
        middle = (sent + received) / 2
        wall = time.time() - (time.monotonic() - middle)
        with self._lock:
            self._at = (float(store_time), middle)
            self.offset = float(store_time) - wall

    def age(self) -> float:
        """Seconds since the last reading (infinite: none yet)."""
        with self._lock:
            return float("inf") if self._at is None else time.monotonic() - self._at[1]

    def now(self) -> float | None:
        """The store's time now, or ``None`` before the first reading."""
        with self._lock:
            if self._at is None:
                return None
            at, mono = self._at
        return at + (time.monotonic() - mono)


def worker_row(owner: str, lease_timeout: float) -> dict[str, Any]:
    """The parameters of a driver's ``register_worker`` query: the worker ``owner`` (its
    host and PID beside it), its lease in seconds and this process's scope."""
    host, pid = owner_parts(owner)
    return {
        "owner": owner,
        "host": host,
        "pid": pid,
        "lease": float(lease_timeout),
        "scope": local_scope(),
    }


def lost_reason(owner: str | None, *, expired: bool) -> str:
    """What a recovery records as the error of an attempt it takes from ``owner``."""
    if owner is None:
        return "no worker held it (a running task without an owner)"
    if expired:
        return f"the lease of worker {owner} ran out"
    return f"worker {owner} is gone (its process ended, or it never held a lease)"


def stale_owners(
    running: Iterable[tuple[str | None, bool | None, str | None]],
    expired: Iterable[str],
) -> tuple[set[str | None], set[str]]:
    """Whose running tasks go back to pending: ``(dead, expired)``.

    ``running``: each running task's owner, whether its lease ran out by the store's
    clock (``None``: it holds no lease, a worker of the 0.1 schema) and its scope;
    ``expired``: workers whose lease ran out.  Dead owners (provably gone: see
    :func:`owner_dead`; or no lease on another host) are released at once; expired ones
    only if they have not renewed meanwhile.  A worker alive in this process is never
    reaped here."""
    with _LIVE_LOCK:
        live = set(_LIVE_OWNERS)
    dead: set[str | None] = set()
    late: set[str] = set(expired) - live
    for owner, lease_out, scope in running:
        if owner in live:
            continue
        if owner is None or owner_dead(owner, scope, leased=lease_out is not None):
            dead.add(owner)
        elif lease_out is None:
            if owner_parts(owner)[0] != HOST:  # a 0.1 worker elsewhere: no lease to wait for
                dead.add(owner)
        elif lease_out:
            late.add(owner)
    late -= {o for o in dead if o is not None}
    return dead, late


def held_text(held: Mapping[str, str]) -> str:
    """What held a worker's groups back (group, or ``type:T``, -> reason) as its row's
    ``held`` is written by a renewal: a JSON object, keys sorted; ``""`` (the column
    cleared) when nothing was held back."""
    return json.dumps(dict(held), sort_keys=True, separators=(",", ":")) if held else ""


def merge_held(texts: Iterable[str | None]) -> dict[str, str]:
    """The ``held`` of several workers' rows (:func:`held_text`) as one: for each group
    (or ``type:T``), by name, the distinct reasons, sorted, joined by ``"; "``.  A row
    that is not such an object (written by hand, cut short) is passed over."""
    reasons: dict[str, set[str]] = {}
    for text in texts:
        try:
            held = json.loads(text) if text else None
        except ValueError:
            continue
        if not isinstance(held, dict):
            continue
        for key, why in held.items():
            if isinstance(why, str) and why:
                reasons.setdefault(key, set()).add(why)
    return {key: "; ".join(sorted(reasons[key])) for key in sorted(reasons)}


class RenewingConnection:
    """What both stores' heartbeats share: a connection of the heartbeat's own (``_conn``,
    opened by the backend's ``_connection()``) renewing leases by the store's clock.  A
    backend gives :meth:`_renew_rows` (the rows of its query ``renew_worker``: the store's
    time of the renewal, none when the lease was taken away)."""

    clock: StoreClock
    _conn: Any = None

    def _renew_rows(self, owner: str, held: str | None) -> Sequence[Sequence[Any]]:
        raise NotImplementedError

    def renew(self, owner: str, held: str | None = None) -> float | None:
        """Renew ``owner``'s lease, writing ``held`` (:func:`held_text`; ``None``: keep
        what was written) in the same statement: the store's time of the renewal, or
        ``None`` when the lease had been taken away.  Raises :class:`StoreError` when it
        cannot."""
        sent = time.monotonic()
        rows = self._renew_rows(owner, held)
        if not rows:
            return None
        at = float(rows[0][0])
        self.clock.set(at, sent, time.monotonic())
        return at

    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
