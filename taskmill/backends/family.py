"""Child tasks in the store: what the end of a task does to its parent and to its own
children — once, for every driver.

A task an executor spawns (``ctx.spawn``) keeps its parent in ``parent_id``.  A parent
whose code returned while any child was active is ``waiting``: active, never claimed,
holding no slot (:func:`park`).  In the transaction that ends tasks
(:func:`~taskmill.backends.depends.settle` calls :func:`settle_family` level by level):

- a task that ended otherwise than *completed* takes its active children with it: they
  end ``cancelled`` (and theirs, in turn);
- a *superseded* child hands its parent to the task that replaced it (unless that task
  has a parent of its own);
- a ``waiting`` parent whose last child ended ends too: ``completed`` when every child
  completed (a superseded one does not count), otherwise ``failed`` with the error kind
  ``child_failed`` — or, when the scheduler that parked it has a finalizer for its type
  (``finalizer = 'wanted'``), it goes back to ``pending`` as ``'due'``, and the scheduler
  that claims it runs the finalizer before it ends.

On PostgreSQL the parent's row is locked before its children are counted, by the end of a
child and by :func:`park` alike, so of two transactions that race (the last child ending
while its parent's code returns) the later always sees the earlier's commit: a parent is
never left waiting for children that are gone.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Protocol

from ..model import SchedulerError
from .calls import Ended, Ending

__all__ = ["CHILD_FAILED", "FamilyOps", "child_verdict", "parent_gone", "park", "settle_family"]

#: The error kind a parent fails with when any of its children did not complete.
CHILD_FAILED = "child_failed"


class FamilyOps(Protocol):
    """The statements of :func:`settle_family` and :func:`park`, on the driver's write
    connection ``conn``."""

    def active_children(self, conn: Any, parents: list[int]) -> list[tuple[int, int]]:
        """``(child, parent)`` of the active children of ``parents``."""
        ...

    def adopt(self, conn: Any, pairs: list[tuple[int, int]]) -> None:
        """For each ``(task, parent)``: ``task`` becomes ``parent``'s child unless it has a
        parent already."""
        ...

    def lock_parents(self, conn: Any, ids: list[int]) -> list[tuple[int, str, str | None]]:
        """``(id, status, finalizer)`` of the active tasks ``ids``, each row locked against
        a concurrent settle or park (in id order)."""
        ...

    def busy_parents(self, conn: Any, ids: list[int]) -> set[int]:
        """Which of ``ids`` have an active child (read after :meth:`lock_parents`)."""
        ...

    def child_tallies(self, conn: Any, ids: list[int]) -> list[tuple[int, str, int]]:
        """``(parent, status, count)`` of the finished children of ``ids``."""
        ...

    def make_due(self, conn: Any, ids: list[int]) -> None:
        """The waiting parents ``ids`` are pending again, their finalizer ``'due'``
        (waking the workers at commit)."""
        ...

    def wait_for_children(self, conn: Any, task_id: int, finalizer: str | None) -> None:
        """The running task ``task_id`` is ``waiting``, its finalizer ``finalizer``."""
        ...

    def end_tasks(self, conn: Any, ids: list[int], ending: Ending) -> list[Ended]:
        """Move the active tasks ``ids`` to history as ``ending`` says, *without* settling
        what waits on them; the tasks moved."""
        ...


def parent_gone(parent: int) -> SchedulerError:
    """What ``ctx.spawn`` raises when its task stopped running before its children were
    inserted (cancelled, superseded, or its lease lost): none of them was."""
    return SchedulerError(
        f"task {parent} is no longer running (cancelled, superseded or taken back): "
        "the child tasks it spawned were not submitted",
        kind="parent_not_running",
    )


def child_verdict(counts: dict[str, int]) -> str | None:
    """How a parent whose children all ended ends, from their ``counts`` by status:
    ``None`` — completed (every child completed; a superseded one handed its place on) —
    or the error it fails with (kind :data:`CHILD_FAILED`)."""
    counted = {s: n for s, n in counts.items() if s != "superseded" and n}
    missed = {s: n for s, n in counted.items() if s != "completed"}
    if not missed:
        return None
    total = sum(counted.values())
    detail = ", ".join(f"{n} {s}" for s, n in sorted(missed.items()))
    return (
        f"{CHILD_FAILED}: {sum(missed.values())} of {total} child task(s) did not "
        f"complete ({detail})"
    )


def settle_family(ops: FamilyOps, conn: Any, level: Sequence[Ended], now: float) -> list[Ended]:
    """What the tasks of ``level`` (just moved to history in ``conn``'s transaction) do to
    their children and parents (module docs); the tasks that ended in turn."""
    ended: list[Ended] = []
    status_of = {e.id: e.status for e in level}
    gone = [e.id for e in level if e.status != "completed"]  # a completed one has none left
    if gone:
        by_status: dict[str, list[int]] = defaultdict(list)
        for child, parent in ops.active_children(conn, gone):
            by_status[status_of[parent]].append(child)
        for status, children in sorted(by_status.items()):
            error = f"cancelled: its parent task ended {status}"
            ended += ops.end_tasks(conn, sorted(children), Ending("cancelled", now, error=error))
    adopted = [
        (e.replaced_by, e.parent)
        for e in level
        if e.status == "superseded" and e.parent is not None and e.replaced_by is not None
    ]
    if adopted:
        ops.adopt(conn, adopted)
    parents = sorted({e.parent for e in level if e.parent is not None} - set(status_of))
    if parents:
        ended += _end_parents(ops, conn, parents, now)
    return ended


def _end_parents(ops: FamilyOps, conn: Any, parents: list[int], now: float) -> list[Ended]:
    """End the waiting ones of ``parents`` that have no active child left."""
    waiting = [(p, f) for p, status, f in ops.lock_parents(conn, parents) if status == "waiting"]
    if not waiting:
        return []
    busy = ops.busy_parents(conn, [p for p, _ in waiting])
    done = [(p, f) for p, f in waiting if p not in busy]
    due = [p for p, f in done if f == "wanted"]
    if due:
        ops.make_due(conn, due)
    closing = [p for p, f in done if f != "wanted"]
    if not closing:
        return []
    ended: list[Ended] = []
    by_error: dict[str | None, list[int]] = defaultdict(list)
    for parent, counts in tallies(ops, conn, closing).items():
        by_error[child_verdict(counts)].append(parent)
    for error, ids in by_error.items():
        ending = Ending("completed", now) if error is None else Ending("failed", now, error=error)
        ended += ops.end_tasks(conn, sorted(ids), ending)
    return ended


def tallies(ops: FamilyOps, conn: Any, parents: list[int]) -> dict[int, dict[str, int]]:
    """The finished children of each of ``parents`` by status (every parent listed)."""
    counts: dict[int, dict[str, int]] = {p: {} for p in parents}
    for parent, status, n in ops.child_tallies(conn, parents):
        counts[int(parent)][str(status)] = int(n)
    return counts


def park(ops: FamilyOps, conn: Any, task_id: int, finalizer: str | None) -> dict[str, int] | None:
    """The running task ``task_id`` (its attempt checked by the caller) returned having
    spawned children: ``waiting`` while any is active (``None``), else its children's
    counts by status — its code's attempt then ends it as their verdict says."""
    ops.lock_parents(conn, [task_id])
    if ops.busy_parents(conn, [task_id]):
        ops.wait_for_children(conn, task_id, finalizer)
        return None
    return tallies(ops, conn, [task_id])[task_id]
