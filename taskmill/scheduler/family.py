"""Child tasks on the scheduler's side: an attempt whose code spawned children parks its
task, and a parent whose children all ended runs its type's finalizer before it ends.

The store decides what happens when a child ends (:mod:`taskmill.backends.family`); here
an attempt of a parent ends in one of three ways once its code returned:

- some child is still active: the task is ``waiting`` and the attempt is over, with
  nothing more to record (:func:`after_code` returns ``True``);
- every child had ended already: the finalizer runs at once, here, and the attempt ends
  the task as the children's verdict says;
- an attempt claimed for a parent whose children ended while it waited
  (``ClaimedTask.finalizing``) runs the finalizer instead of the task's code
  (:func:`finalize`).

A parent that fails that way (a child did not complete, or the finalizer raised) raises
:class:`ParentFailed`: the attempt fails for good, never retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..backends.family import child_verdict
from ..model import ACTIVE_STATUSES, FINAL_STATUSES
from ..store import TaskStore
from .attempts import Attempt, Executor

__all__ = ["FINALIZER_FAILED", "ParentFailed", "after_code", "finalize"]

#: The error kind a parent fails with when its finalizer raised.
FINALIZER_FAILED = "finalizer_failed"

Persist = Callable[..., Awaitable[Any]]


class ParentFailed(Exception):
    """A parent ends ``failed`` for good: a child did not complete (``child_failed``) or
    its finalizer raised (``finalizer_failed``); the message is the error recorded."""


async def after_code(
    attempt: Attempt,
    store: TaskStore,
    persist: Persist,
    finalizers: Mapping[str, Executor],
    loop: asyncio.AbstractEventLoop,
    pool: ThreadPoolExecutor,
) -> bool:
    """The code of ``attempt`` returned having spawned children: park its task (``persist``
    retries the write until it lands).  ``True`` when the task is ``waiting`` now (the
    attempt is over); otherwise the attempt goes on to record its end — after the
    finalizer, when every child had ended already (raises :class:`ParentFailed`)."""
    task = attempt.task
    fn = finalizers.get(task.task_type)
    parked = await persist(
        f"the wait of task {task.id} for its children",
        store.park,
        task.id,
        owner=attempt.owner,
        attempt=task.attempt,
        finalizer=fn is not None,
    )
    if parked is None:
        return True
    if parked is False:  # no longer ours: recording its end finds out why
        return False
    await finalize(attempt, parked, fn, loop, pool)
    return False


async def finalize(
    attempt: Attempt,
    counts: Mapping[str, int],
    fn: Executor | None,
    loop: asyncio.AbstractEventLoop,
    pool: ThreadPoolExecutor,
) -> None:
    """Every child of ``attempt``'s task ended (``counts`` by status): run the finalizer
    ``fn`` (``None``: none) with ``ctx.children`` set, then raise :class:`ParentFailed`
    unless every child completed."""
    children: dict[str, int] = dict.fromkeys((*ACTIVE_STATUSES, *FINAL_STATUSES), 0)
    children.update(counts)
    attempt.ctx._children = children
    if fn is not None:
        try:
            await attempt.call(loop, pool, fn)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise ParentFailed(f"{FINALIZER_FAILED}: {type(exc).__name__}: {exc}") from exc
    verdict = child_verdict(children)
    if verdict is not None:
        raise ParentFailed(verdict)
