"""The values a driver's operations take (:class:`~taskmill.backends.base.Driver`): each
group of parameters that travels together from the store's face to a driver, declared
once instead of in the protocol, in both drivers and at every call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from ..batch.validate import Row

__all__ = [
    "BatchTag",
    "Browse",
    "CancelSlice",
    "Dead",
    "Ended",
    "Ending",
    "Expired",
    "NewTask",
    "Owned",
    "Selection",
]


@dataclass(frozen=True, slots=True)
class Selection:
    """What :meth:`~taskmill.backends.base.Driver.select` reads: the rows of ``table``
    matching every filter given (``None``: no filter on that column), at most ``limit``
    (``None`` or negative: no limit)."""

    table: Literal["tasks", "history"]
    status: list[str] | None = None
    task_type: list[str] | None = None
    group: list[str] | None = None
    limit: int | None = None
    ids: list[int] | None = None
    batch_ids: list[int] | None = None
    #: ``(key, value)`` pairs: the tasks carrying every one (``None``: no filter).
    tags: list[tuple[str, str]] | None = None


@dataclass(frozen=True, slots=True)
class Browse:
    """What :meth:`~taskmill.backends.base.Driver.browse` reads: one page of tasks, active
    and finished together, newest first — the ``limit`` highest ids below ``before``
    among the tasks matching every filter given (``None``: no filter on that column).
    ``active`` / ``finished``: whether to read the active tasks / history at all (a status
    filter may rule one out)."""

    before: int
    limit: int
    active: bool = True
    finished: bool = True
    status: list[str] | None = None
    task_type: list[str] | None = None
    group: list[str] | None = None
    batch_ids: list[int] | None = None
    #: ``(key, value)`` pairs: the tasks carrying every one, the rarest pair first.
    tags: list[tuple[str, str]] | None = None
    #: Even the rarest pair is common (:data:`~taskmill.store.common.TAG_COUNT_CAP` tasks or
    #: more carry it): check each task's tags as the walk meets it, rather than reading
    #: every task of the rarest pair first.
    tags_common: bool = False
    #: The tasks whose dedup key starts with this text, character for character (``%``
    #: and ``_`` are themselves, case counts).
    key_prefix: str | None = None
    #: The child tasks of this task (all newer than it: the walk stops at its id).
    parent_id: int | None = None


#: Owners :meth:`~taskmill.backends.base.Driver.give_back` takes tasks from at once, each
#: beside the reason recorded with its lost attempts (``None``: the running tasks of no
#: owner).
Dead = list[tuple[str | None, str]]
#: Owners whose lease ran out, each beside the reason recorded with its lost attempts.
Expired = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class CancelSlice:
    """One transaction's share of a cancel: the tasks with ids in ``(after, last]``, at
    most ``limit`` by id; with ``keyed``, those of the ``(key hash, task type, key)``
    triples instead (the three lists side by side), any id up to ``last``."""

    after: int
    last: int
    limit: int
    keyed: tuple[list[int], list[str], list[str]] | None = None


@dataclass(frozen=True, slots=True)
class NewTask:
    """A task :meth:`~taskmill.backends.base.Driver.insert` stores as pending: ``row`` as
    task ``id`` at ``queue_pos``, its key hash ``hashed`` (``None``: no key), created at
    ``now``, child of ``parent``."""

    id: int
    queue_pos: int
    row: Row
    hashed: int | None
    now: float
    #: Its parent: a task superseding a child takes that child's parent on.
    parent: int | None = None


@dataclass(frozen=True, slots=True)
class Owned:
    """Running attempts of one worker: the tasks ``ids`` running for ``owner``, each as
    the attempt beside it in ``tries`` (``None``: whichever attempt runs)."""

    ids: list[int]
    tries: list[int | None]
    owner: str


@dataclass(frozen=True, slots=True)
class Ending:
    """How tasks end: their final ``status`` at ``now``; ``error`` their last error,
    ``replaced_by`` the task that supersedes them (``None``: none)."""

    status: str
    now: float
    error: str | None = None
    replaced_by: int | None = None


@dataclass(frozen=True, slots=True)
class Ended:
    """Task ``id`` ended as ``status`` (for ``superseded``: replaced by ``replaced_by``);
    ``parent``: the task that spawned it (``None``: none) — what the settling of its end
    (:func:`~taskmill.backends.depends.settle`) starts from."""

    id: int
    status: str
    replaced_by: int | None = None
    parent: int | None = None


@dataclass(slots=True)
class BatchTag:
    """The batch record a submission's transactions add their tasks to (schema 7).

    The first transaction that inserts tasks records the batch (its ``name``) and tags
    its tasks with the new id; each later one tags its own with that id.  ``last``: the
    transaction under way is the submission's last (it seals the batch).  A driver calls
    :meth:`begin` at the start of each try of a transaction's body, :meth:`id_for` when it
    knows how many tasks it inserts, and :meth:`commit` once the transaction committed:
    so a body run again, or rolled back, never keeps an id whose row is gone."""

    name: str | None = None
    #: The batch's id once a committed transaction recorded it (``None``: none yet).
    id: int | None = None
    last: bool = True
    #: Whether to record the batch at all (a single ``submit()`` that goes through the
    #: batch path for its dependencies records none).
    record: bool = True
    #: Whether a committed transaction sealed the batch (its submission's last).
    sealed: bool = False
    #: The batch's dependencies (a :class:`~taskmill.backends.depends.BatchDependencies`;
    #: ``None``: no row names any).
    dependencies: Any = None
    #: The running task whose executor submits the batch (``ctx.spawn``): every task it
    #: inserts is that task's child (``None``: a top-level batch).
    parent: int | None = None
    _open: int | None = field(default=None, repr=False)

    @property
    def current(self) -> int | None:
        """The id the transaction under way tags its tasks with (``None``: none yet)."""
        return self._open

    def begin(self) -> None:
        """A try of a transaction's body starts (with what is committed)."""
        self._open = self.id

    def id_for(self, inserting: int, record: Callable[[], int]) -> int | None:
        """The batch id to tag ``inserting`` new tasks with: ``record()`` records the batch
        in the transaction under way when this is its first task (``None``: no task)."""
        if inserting and self._open is None and self.record:
            self._open = record()
        return self._open

    def commit(self) -> None:
        """The transaction under way committed (it sealed the batch if it was the last
        and the batch is recorded)."""
        self.id = self._open
        self.sealed = self.sealed or (self.last and self.id is not None)
