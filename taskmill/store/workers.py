"""Worker identities and liveness, the same for every backend.

A worker (one scheduler) is ``"host:pid:token"``.  Owners alive in this process are kept
in a registry, so a running task whose owner is this process but not registered was left
behind.  :func:`stale_owners` decides, from what a store reads, whose running tasks go
back to pending; each store only runs the SQL.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid
from collections.abc import Iterable

__all__ = [
    "DEFAULT_LEASE_TIMEOUT",
    "HOST",
    "forget_owner",
    "new_owner_id",
    "owner_dead",
    "pid_alive",
    "stale_owners",
]

HOST = socket.gethostname()
#: Seconds a worker's lease on its running tasks lasts without renewal.
DEFAULT_LEASE_TIMEOUT = 30.0

_LIVE_OWNERS: set[str] = set()
_LIVE_LOCK = threading.Lock()


def new_owner_id() -> str:
    """A fresh worker identity, registered as alive in this process."""
    owner = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
    with _LIVE_LOCK:
        _LIVE_OWNERS.add(owner)
    return owner


def forget_owner(owner: str) -> None:
    """``owner`` is no longer alive in this process."""
    with _LIVE_LOCK:
        _LIVE_OWNERS.discard(owner)


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


def owner_dead(owner: str | None) -> bool:
    """Whether the worker that marked a task running is gone (so the task can be recovered)."""
    if owner is None:
        return True
    host, _, rest = owner.partition(":")
    pid_text, _, _token = rest.partition(":")
    if host != HOST or not pid_text.isdigit():
        return False  # another machine's worker: we cannot tell
    pid = int(pid_text)
    if pid == os.getpid():
        with _LIVE_LOCK:
            return owner not in _LIVE_OWNERS
    return not pid_alive(pid)


def stale_owners(
    running: Iterable[tuple[str | None, float | None]],
    expired: Iterable[str],
    now: float,
) -> tuple[set[str | None], set[str]]:
    """Whose running tasks go back to pending: ``(dead, expired)``.

    ``running``: each running task's owner and the end of its lease (``None``: no lease,
    a worker of the 0.1 schema); ``expired``: workers whose lease ran out.  Dead owners
    (gone from this host, or no lease on another host) are released at once; expired ones
    only if they have not renewed meanwhile.  A worker alive in this process is never
    reaped here."""
    with _LIVE_LOCK:
        live = set(_LIVE_OWNERS)
    dead: set[str | None] = set()
    late: set[str] = set(expired) - live
    for owner, lease_end in running:
        if owner in live:
            continue
        if owner is None or owner_dead(owner):
            dead.add(owner)
        elif lease_end is None:
            if owner.partition(":")[0] != HOST:  # a 0.1 worker elsewhere: no lease to wait for
                dead.add(owner)
        elif lease_end < now:
            late.add(owner)
    late -= {o for o in dead if o is not None}
    return dead, late
