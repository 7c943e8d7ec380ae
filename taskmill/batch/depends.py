"""Dependencies inside one batch, resolved set-based before any row is merged.

A row's ``depends_on`` names tasks by id (an ``int``) or by dedup key (a ``str``: every
task with that key among the batch's own rows and the store's active tasks, any task
type).  What the batch alone decides is decided here, on the whole plan at once:

- a key naming rows of the batch becomes an edge to each *winning* row of that key (the
  row that goes on for its ``(task_type, key)``; its earlier duplicates never become
  tasks);
- rows whose in-batch dependencies form a cycle (a row depending on itself included)
  fail with ``dependency_cycle``;
- a row that depends on a row of the batch that failed — for any reason: a bad value, a
  cycle, or in turn a failed dependency — fails with ``dependency_failed``, and so on down
  the graph; a key naming only failed rows of the batch counts as such a dependency;
- every key is also looked up among the store's active tasks when the row is merged, and
  every id in the store (:class:`DependencyPlan` says which to look up).

Strongly connected components and reachability come from ``scipy.sparse.csgraph`` (one
pass each, whatever the length of the chains), imported only for plans that have edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

__all__ = ["CYCLE", "FAILED_DEPENDENCY", "DependencyPlan", "plan_dependencies"]

#: The error kinds of rows failed by their in-batch dependencies.
CYCLE = "dependency_cycle"
FAILED_DEPENDENCY = "dependency_failed"

_EDGES = {"index": pl.Int64, "target": pl.Int64}


@dataclass(frozen=True)
class DependencyPlan:
    """What the batch decides about its rows' dependencies.

    ``failures``: ``index``, ``error_kind``, ``error`` of the rows that fail for their
    dependencies.  ``edges``: ``index`` -> ``target`` between rows that go on (a target
    is a winning row; its task id is known once its transaction merged).  ``keys``:
    ``index``, ``key``, ``in_batch`` of every key a row that goes on names (looked up among
    the store's active tasks too; ``in_batch``: it names rows of the batch).  ``ids``:
    ``index``, ``dep_id`` of every id it names."""

    failures: pl.DataFrame
    edges: pl.DataFrame
    keys: pl.DataFrame
    ids: pl.DataFrame
    #: ``index`` of the rows that go on naming any dependency (inserted blocked).
    waiting: pl.DataFrame


def plan_dependencies(rows: pl.DataFrame) -> DependencyPlan:
    """The in-batch dependency decisions for ``rows``: ``index`` (0..n-1 in order),
    ``dedup_key``, ``valid`` (checked without error), ``winner`` (the row goes on for its
    key) and ``dep_keys`` / ``dep_ids`` (lists; null or empty for none)."""
    n = rows.height
    keyed = rows.select("index", pl.col("dep_keys").alias("key"), "valid", "winner").filter(
        pl.col("winner") & pl.col("key").list.len().fill_null(0).gt(0)
    )
    wanted = keyed.explode("key").select("index", "key").unique(maintain_order=True)
    holders = rows.filter(pl.col("dedup_key").is_not_null()).select(
        pl.col("dedup_key").alias("key"), pl.col("index").alias("target"), "valid", "winner"
    )
    named = wanted.join(holders, on="key", how="left")
    in_batch = named.group_by("index", "key", maintain_order=True).agg(
        pl.col("target").is_not_null().any().alias("in_batch")
    )
    edges = named.filter(pl.col("winner")).select("index", "target")
    # a key naming rows of the batch of which none went on: they all failed
    on_failed = (
        named.filter(pl.col("target").is_not_null())
        .group_by("index", "key")
        .agg(pl.col("winner").any().alias("any_winner"))
        .filter(~pl.col("any_winner"))
        .select("index", "key")
    )
    failed_kind: dict[int, tuple[str, str]] = {}
    for index, key in on_failed.sort("index").iter_rows():
        failed_kind.setdefault(
            index, (FAILED_DEPENDENCY, f"depends on {key!r}, which failed in this batch")
        )
    edges = edges.cast(_EDGES)  # type: ignore[arg-type]
    if edges.height:
        _graph_failures(edges, n, failed_kind)
    failures = pl.DataFrame(
        {
            "index": list(failed_kind),
            "error_kind": [k for k, _ in failed_kind.values()],
            "error": [m for _, m in failed_kind.values()],
        },
        schema={"index": pl.Int64, "error_kind": pl.String, "error": pl.String},
    ).sort("index")
    gone = failures["index"]
    ids = (
        rows.filter(pl.col("winner") & pl.col("dep_ids").list.len().fill_null(0).gt(0))
        .select("index", pl.col("dep_ids").alias("dep_id"))
        .explode("dep_id")
        .unique(maintain_order=True)
        .filter(~pl.col("index").is_in(gone.implode()))
    )
    waiting = (
        rows.filter(
            pl.col("winner")
            & (
                pl.col("dep_keys").list.len().fill_null(0).gt(0)
                | pl.col("dep_ids").list.len().fill_null(0).gt(0)
            )
        )
        .select("index")
        .filter(~pl.col("index").is_in(gone.implode()))
    )
    return DependencyPlan(
        waiting=waiting,
        failures=failures,
        edges=edges.filter(~pl.col("index").is_in(gone.implode())),
        keys=in_batch.filter(~pl.col("index").is_in(gone.implode())),
        ids=ids,
    )


def _graph_failures(edges: pl.DataFrame, n: int, failed: dict[int, tuple[str, str]]) -> None:
    """Add to ``failed`` the rows on a cycle of ``edges`` and every row that depends,
    directly or not, on a failed one."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import breadth_first_order, connected_components

    src = edges["index"].to_numpy()
    dst = edges["target"].to_numpy()
    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)), shape=(n, n)).tocsr()
    _, labels = connected_components(graph, directed=True, connection="strong")
    sizes = np.bincount(labels, minlength=n)
    on_cycle = (sizes[labels] > 1) | np.isin(np.arange(n), src[src == dst])
    for index in np.flatnonzero(on_cycle).tolist():
        failed.setdefault(index, (CYCLE, "its dependencies inside this batch form a cycle"))
    if not failed:
        return
    # every row that reaches a failed one: a walk from a virtual node over reversed edges
    seeds = np.fromiter(failed, dtype=np.int64)
    reverse = coo_matrix(
        (
            np.ones(len(src) + len(seeds), dtype=np.int8),
            (np.concatenate([dst, np.full(len(seeds), n)]), np.concatenate([src, seeds])),
        ),
        shape=(n + 1, n + 1),
    ).tocsr()
    reached = breadth_first_order(reverse, n, directed=True, return_predecessors=False)
    new = [i for i in reached.tolist() if i != n and i not in failed]
    if not new:
        return
    failed_now = pl.Series(list(failed) + new, dtype=pl.Int64).implode()
    first = (  # each one's first dependency in the batch that failed, to name it
        edges.filter(
            pl.col("index").is_in(pl.Series(new, dtype=pl.Int64).implode())
            & pl.col("target").is_in(failed_now)
            & (pl.col("target") != pl.col("index"))
        )
        .group_by("index")
        .agg(pl.col("target").min())
    )
    named = dict(first.iter_rows())
    for index in new:
        target = named.get(index)
        failed[index] = (
            FAILED_DEPENDENCY,
            f"depends on row {target} of this batch, which failed"
            if target is not None
            else "depends on a row of this batch that failed",
        )
