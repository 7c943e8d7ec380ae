"""Dependencies in the store: what every way of ending a task does to the tasks that wait
for it, and the edges a batch's transaction inserts — once, for every driver.

A blocked task waits for the tasks its edges (``task_deps``) name.  When tasks end, in
the transaction that ends them (:func:`settle`):

- *completed*: their edges go; a blocked task left with none becomes pending, in its
  original queue place;
- *superseded*: their edges name the task that replaced them instead;
- *failed, cancelled, expired*: each task waiting for one follows its
  ``on_dependency_failure`` — ``ignore`` drops that edge, ``cancel`` (the default) ends
  it cancelled and ``fail`` ends it failed (error kind ``dependency_failed``), and those in
  turn settle their own dependents, level by level;
- a task that ends forgets its own edges.

Each level is a handful of set-based statements over all the tasks that ended together
(one completion batch: one release), never one per dependent; the same levels settle
parents and children (:mod:`taskmill.backends.family`).  A driver provides the
statements (:class:`DependencyOps`) and calls :func:`settle` from its one way of moving
tasks to history.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import polars as pl

from .calls import Ended, Ending
from .family import FamilyOps, settle_family

__all__ = [
    "DEPENDENCY_FAILED",
    "BatchDependencies",
    "DependencyOps",
    "EdgeOps",
    "batch_edges",
    "drop_unmerged",
    "id_states",
    "lookup_dependencies",
    "settle",
    "store_dependencies",
]

#: The error kind a task fails with when a dependency of its ended without completing.
DEPENDENCY_FAILED = "dependency_failed"

#: Statuses a dependency may end with that count as a failure for its dependents.
_FAILURES = ("failed", "cancelled", "expired")


class DependencyOps(FamilyOps, Protocol):
    """The statements :func:`settle` runs, on the driver's write connection ``conn`` (those
    of :class:`~taskmill.backends.family.FamilyOps` too)."""

    def lock_dependents(self, conn: Any, ids: list[int]) -> list[tuple[int, int, str | None]]:
        """The edges on ``ids`` as ``(task_id, depends_on, policy)``, each dependent's row
        locked against a concurrent settle (in id order)."""
        ...

    def drop_edges(self, conn: Any, pairs: list[tuple[int, int]]) -> None:
        """Delete the edges ``(task_id, depends_on)``."""
        ...

    def forget_edges(self, conn: Any, task_ids: list[int]) -> None:
        """Delete the edges of tasks ``task_ids`` (they ended)."""
        ...

    def retarget_edges(self, conn: Any, pairs: list[tuple[int, int]]) -> None:
        """Edges on ``old`` name ``new`` instead, for each ``(old, new)``."""
        ...

    def release_blocked(self, conn: Any, task_ids: list[int]) -> None:
        """Tasks ``task_ids`` still blocked and left with no edge become pending (waking
        the watchers at commit)."""
        ...


class EdgeOps(DependencyOps, Protocol):
    """What a batch transaction runs to store its edges (beside :class:`DependencyOps`)."""

    def active_types(self, conn: Any) -> list[str]:
        """The task types of the active tasks (a scan: read once per batch)."""
        ...

    def by_keys(self, conn: Any, triples: list[tuple[int, str, str]]) -> list[tuple[int, str]]:
        """``(id, dedup_key)`` of the active tasks of ``(key hash, task type, key)``."""
        ...

    def states(self, conn: Any, ids: list[int]) -> list[tuple[int, str | None, int | None]]:
        """``(id, status, replaced_by)`` of the tasks ``ids`` the store holds (``None``
        status while active)."""
        ...

    def insert_edges(
        self, conn: Any, edges: list[tuple[int, int | None, int | None]], batch_id: int | None
    ) -> None:
        """Insert ``(task_id, depends_on, on_row)`` edges of batch ``batch_id``."""
        ...

    def resolve_rows(self, conn: Any, pairs: list[tuple[int, int]], batch_id: int) -> None:
        """Edges of batch ``batch_id`` on rows ``(row, task id)`` merged now name them."""
        ...

    def unmerged(self, conn: Any, batch_id: int) -> list[tuple[int, str | None]]:
        """Delete the edges of batch ``batch_id`` still on rows it never merged; ``(task_id,
        policy)`` of each, the dependents' rows locked."""
        ...


def settle(
    ops: DependencyOps, conn: Any, ended: Sequence[Ended], now: float, *, ran: bool = False
) -> None:
    """What ``ended`` (tasks just moved to history in ``conn``'s transaction) does to the
    tasks waiting for them, to their children and to their parents (see the module
    docstring and :mod:`taskmill.backends.family`), level by level.  ``ran``: the tasks
    of ``ended`` were running (an attempt's end) — a task released to run waits for
    nothing, so it has no edge of its own to forget (one statement saved per
    completion)."""
    level = list(ended)
    forget = not ran
    while level:
        level = _settle_dependents(ops, conn, level, now, forget) + settle_family(
            ops, conn, level, now
        )
        forget = True


def _settle_dependents(
    ops: DependencyOps, conn: Any, level: list[Ended], now: float, forget: bool = True
) -> list[Ended]:
    """One level of :func:`settle` for the tasks waiting for ``level``'s (``forget``: drop
    their own edges first); the dependents that ended in turn."""
    if forget:
        ops.forget_edges(conn, [e.id for e in level])
    moved = [(e.id, e.replaced_by) for e in level if e.status == "superseded"]
    if any(new is not None for _, new in moved):
        ops.retarget_edges(conn, [(old, new) for old, new in moved if new is not None])
    waiting = ops.lock_dependents(
        conn, [e.id for e in level if e.status == "completed" or e.status in _FAILURES]
    )
    if not waiting:
        return []
    status_of = {e.id: e.status for e in level}
    edges = pl.DataFrame(
        waiting,
        schema={"task_id": pl.Int64, "depends_on": pl.Int64, "policy": pl.String},
        orient="row",
    ).with_columns(
        pl.col("depends_on").replace_strict(status_of, default=None).alias("status"),
        pl.col("policy").fill_null("cancel"),
    )
    cleared = edges.filter((pl.col("status") == "completed") | (pl.col("policy") == "ignore"))
    if cleared.height:
        ops.drop_edges(conn, cleared.select("task_id", "depends_on").rows())
    broken = edges.filter(pl.col("status").is_in(_FAILURES) & (pl.col("policy") != "ignore"))
    ending = broken.group_by("task_id").agg(
        pl.col("policy").first(), pl.col("depends_on").min(), pl.col("status").first()
    )
    gone = set(ending["task_id"].to_list())
    ops.release_blocked(conn, sorted(set(cleared["task_id"].to_list()) - gone))
    ended: list[Ended] = []
    for policy, status in (("cancel", "cancelled"), ("fail", "failed")):
        these = ending.filter(pl.col("policy") == policy)
        if not these.height:
            continue
        for (dep_status,), group in these.group_by(["status"], maintain_order=True):
            ids = sorted(group["task_id"].to_list())
            error = f"{DEPENDENCY_FAILED}: a task it depends on ended {dep_status}"
            ended += ops.end_tasks(conn, ids, Ending(status, now, error=error))
    return ended


@dataclass(frozen=True, slots=True)
class BatchEdges:
    """What one transaction of a batch stores of its rows' dependencies.

    ``edges``: ``(task_id, depends_on, on_row)`` — ``depends_on`` ``None`` for a row of the
    batch merged by a later transaction (``on_row`` its index); ``blocked``: the new tasks
    that wait for something; ``ended``: the dependencies found in history already (settled
    right after the edges are in)."""

    edges: list[tuple[int, int | None, int | None]]
    blocked: list[int]
    ended: list[Ended]


def batch_edges(
    new: pl.DataFrame,
    in_batch: pl.DataFrame,
    by_id: pl.DataFrame,
    merged: pl.DataFrame,
) -> BatchEdges:
    """The edges of the tasks a transaction inserted.

    ``new``: ``index``, ``task_id`` of the rows it inserted.  ``in_batch``: ``index`` ->
    ``target`` edges between rows of the batch
    (:class:`~taskmill.batch.depends.DependencyPlan`); ``merged``: ``target``, ``dep`` —
    the task id of each target row merged so far, this transaction's included (a row
    that was deduplicated names the task it matched).  ``by_id``: ``index``, ``dep_id``,
    ``status`` (``None`` while active; else its end) of the tasks the rows name in the
    store, by id or by key."""
    inner = (
        in_batch.join(new, on="index")
        .join(merged, on="target", how="left")
        .select(
            "task_id",
            pl.col("dep").alias("depends_on"),
            pl.when(pl.col("dep").is_null()).then(pl.col("target")).alias("on_row"),
        )
    )
    outer = by_id.join(new, on="index").select(
        "task_id",
        pl.col("dep_id").alias("depends_on"),
        pl.lit(None, dtype=pl.Int64).alias("on_row"),
    )
    edges = (
        pl.concat([inner, outer])
        .filter(pl.col("task_id") != pl.col("depends_on").fill_null(-1))  # never on itself
        .unique(maintain_order=True)
    )
    ended = by_id.filter(pl.col("status").is_not_null()).unique("dep_id", maintain_order=True)
    return BatchEdges(
        edges.rows(),
        sorted(set(edges["task_id"].to_list())),
        [Ended(d, st) for d, st in ended.select("dep_id", "status").iter_rows()],
    )


class BatchDependencies:
    """A batch's dependencies as its transactions store them: the plan the batch decided
    (:class:`~taskmill.batch.depends.DependencyPlan`) and the task id of every row other
    rows of the batch wait for, once merged."""

    def __init__(self, plan: Any, by_key: pl.DataFrame | None = None) -> None:
        self.plan = plan
        #: ``index``, ``task_id``: the active tasks of the store the rows' keys named when
        #: the batch was checked (its own rows are in-batch edges).
        self.by_key = (
            by_key
            if by_key is not None
            else pl.DataFrame(schema={"index": pl.Int64, "task_id": pl.Int64})
        )
        #: Whether a transaction stored edges on rows of a later one.
        self.forward = False
        self.targets = plan.edges["target"].unique().implode()
        #: ``target``, ``dep``: the task each row others wait for became (or matched).
        self.merged = pl.DataFrame(schema={"target": pl.Int64, "dep": pl.Int64})

    def merge(self, result: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Note what one transaction's ``result`` did: the rows it inserted (``index``,
        ``task_id``), and the rows others wait for that it merged (``target``, ``dep``)."""
        from .staging import INSERTING

        new = result.filter(pl.col("action").is_in(INSERTING)).select("index", "task_id")
        named = result.filter(
            pl.col("index").is_in(self.targets) & pl.col("task_id").is_not_null()
        ).select(pl.col("index").alias("target"), pl.col("task_id").alias("dep"))
        self.merged = pl.concat([self.merged, named])
        return new, named

    def waiting_of(self, new: pl.DataFrame) -> list[int]:
        """The task ids of the new rows that name any dependency (inserted blocked)."""
        return new.join(self.plan.waiting, on="index", how="semi")["task_id"].to_list()

    def ids_of(self, new: pl.DataFrame) -> pl.DataFrame:
        """``index``, ``dep_id`` of the ids the new rows name."""
        return self.plan.ids.join(new.select("index"), on="index", how="semi")


def store_dependencies(
    ops: EdgeOps,
    conn: Any,
    deps: BatchDependencies,
    result: pl.DataFrame,
    batch_id: int | None,
    now: float,
) -> None:
    """In a batch transaction, after its inserts (its rows with dependencies inserted as
    blocked): the edges of its new tasks, the edges of earlier transactions that named
    rows merged now, and the settling of what is not blocked after all (dependencies
    found ended, or gone)."""
    new, merged = deps.merge(result)
    if merged.height and batch_id is not None and deps.forward:
        ops.resolve_rows(conn, merged.rows(), batch_id)
    if not new.height:
        return
    by_id = id_states(
        ops,
        conn,
        pl.concat(
            [
                deps.ids_of(new),
                deps.by_key.join(new.select("index"), on="index", how="semi").rename(
                    {"task_id": "dep_id"}
                ),
            ]
        ),
    )
    edges = batch_edges(new, deps.plan.edges, by_id, deps.merged)
    if edges.edges:
        ops.insert_edges(conn, edges.edges, batch_id)
        deps.forward = deps.forward or any(e[1] is None for e in edges.edges)
    waiting = deps.waiting_of(new)
    released = sorted(set(waiting) - set(edges.blocked))
    if released:  # nothing left to wait for (what a key named is gone)
        ops.release_blocked(conn, released)
    if edges.ended:
        settle(ops, conn, edges.ended, now)


def drop_unmerged(ops: EdgeOps, conn: Any, batch_id: int, now: float) -> None:
    """A batch that stopped before its last transaction is sealed: the rows it never merged
    never will be, so the tasks of its earlier transactions waiting for them follow their
    ``on_dependency_failure`` as for a dependency that failed (``ignore`` stops waiting),
    and whatever waited for those in turn after them."""
    waiting = ops.unmerged(conn, batch_id)
    if not waiting:
        return
    policy = {int(t): p or "cancel" for t, p in waiting}
    ops.release_blocked(conn, sorted(t for t, p in policy.items() if p == "ignore"))
    ended: list[Ended] = []
    error = f"{DEPENDENCY_FAILED}: a task it depends on was never submitted (its batch stopped)"
    for kind, status in (("cancel", "cancelled"), ("fail", "failed")):
        ids = sorted(t for t, p in policy.items() if p == kind)
        if ids:
            ended += ops.end_tasks(conn, ids, Ending(status, now, error=error))
    settle(ops, conn, ended, now)


def id_states(ops: EdgeOps, conn: Any, ids: pl.DataFrame) -> pl.DataFrame:
    """``index``, ``dep_id``, ``status`` of the ids ``ids`` names (``index``, ``dep_id``)
    that the store holds: ``None`` while active, else how it ended — a superseded one
    followed to the task that replaced it."""
    schema = {"index": pl.Int64, "dep_id": pl.Int64, "status": pl.String}
    if not ids.height:
        return pl.DataFrame(schema=schema)
    final: dict[int, tuple[int, str | None]] = {}
    look = {i: i for i in ids["dep_id"].unique().to_list()}  # looked up -> asked for
    for _ in range(100):  # supersede chains are short; never loop for ever
        follow: dict[int, int] = {}
        for task, status, replaced_by in ops.states(conn, list(look)):
            asked = look[int(task)]
            if status == "superseded" and replaced_by is not None:
                follow[int(replaced_by)] = asked
            else:
                final[asked] = (int(task), status)
        if not follow:
            break
        look = follow
    states = pl.DataFrame(
        [(asked, task, status) for asked, (task, status) in final.items()],
        schema={"asked": pl.Int64, "task": pl.Int64, "status": pl.String},
        orient="row",
    )
    return ids.join(states, left_on="dep_id", right_on="asked").select(
        "index", pl.col("task").alias("dep_id"), "status"
    )


def lookup_dependencies(
    ops: EdgeOps, conn: Any, keys: list[str], ids: list[int]
) -> tuple[pl.DataFrame, set[int]]:
    """In a read: the active tasks ``keys`` name (``key``, ``task_id``; any task type), and
    which of ``ids`` name a task the store holds."""
    from .staging import key_hashes

    found = pl.DataFrame(schema={"task_id": pl.Int64, "key": pl.String})
    types = ops.active_types(conn) if keys else []
    if types:
        pairs = pl.DataFrame({"task_type": types}).join(
            pl.DataFrame({"dedup_key": keys}, schema={"dedup_key": pl.String}), how="cross"
        )
        pairs = pairs.with_columns(key_hashes(pairs).alias("key_hash"))
        triples = pairs.select("key_hash", "task_type", "dedup_key").rows()
        found = pl.DataFrame(
            ops.by_keys(conn, triples), schema={"task_id": pl.Int64, "key": pl.String}, orient="row"
        )
    found_ids = {int(r[0]) for r in ops.states(conn, ids)} if ids else set()
    return found.select("key", "task_id"), found_ids
