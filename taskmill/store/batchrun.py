"""The batch orchestration shared by every store: prepare the input, cut it into
transactions (chunks), stage and merge each chunk through the store's
:class:`BatchBackend`, report progress and commits, and assemble the
:class:`~taskmill.outcome.BatchOutcome` — or raise :class:`BatchInterrupted` with the
committed part's outcome when a chunk cannot commit.

A store only says how to stage one transaction's rows, merge (or plan) a staged part and
discard it; everything else happens here, once, for SQLite and PostgreSQL alike.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import polars as pl

from ..backends.base import BatchBackend, CommitHook
from ..backends.calls import BatchTag
from ..backends.depends import BatchDependencies
from ..backends.staging import INSERTING
from ..batch.outcome import BatchOutcome, MergeResults, build_outcome
from ..batch.prepare import Prepared, fail_dependencies, prepare
from ..model import BatchInterrupted, SchedulerError

__all__ = ["BatchBackend", "run_batch"]

log = logging.getLogger("taskmill")

S = TypeVar("S")
Progress = Callable[[int, int], None]


def run_batch(
    backend: BatchBackend[Any],
    tasks: Any,
    *,
    dry_run: bool,
    on_commit: CommitHook | None,
    progress: Progress | None = None,
    record: bool = True,
    parent: int | None = None,
) -> BatchOutcome:
    """Submit (or plan) ``tasks`` through ``backend``; every input row gets an outcome.
    ``record``: record the batch in the store (``False`` for a single submission);
    ``parent``: the running task whose children the inserted tasks are."""
    started = time.perf_counter()
    phases = _Phases(backend)
    with phases.timed("prepare"):
        prepared = prepare(tasks)
        by_key = _check_dependencies(backend, prepared) if prepared.dependencies else None
    n = len(prepared)
    if n > prepared.transaction_limit:
        step = prepared.chunk_size
        bounds = [(lo, min(lo + step, n)) for lo in range(0, n, step)]
    else:
        bounds = [(0, n)]
    results = MergeResults(n)
    backend.tag = tag = BatchTag(name=prepared.name, record=record, parent=parent)
    if prepared.dependencies is not None and not dry_run:
        tag.dependencies = BatchDependencies(prepared.dependencies, by_key)
    try:
        try:
            with backend.batch_session(chunked=len(bounds) > 1, dry_run=dry_run):
                _run_chunks(
                    phases, prepared, bounds, results, dry_run, on_commit, started, progress
                )
        except BatchInterrupted as exc:
            exc.outcome.batch_id = tag.id
            _seal(backend, tag)
            raise
        except BaseException:
            _seal(backend, tag)
            raise
        finally:
            prepared.close()
        _seal(backend, tag)  # when the last transaction inserted nothing, or merged no rows
        with phases.timed("outcome"):
            outcome = build_outcome(
                prepared, results, planned=dry_run, elapsed=time.perf_counter() - started
            )
    finally:
        results.close()
    outcome.phases = phases.report()
    outcome.batch_id = tag.id
    outcome.elapsed = time.perf_counter() - started  # its own assembly included
    counts = outcome.counts()
    log.info(
        "taskmill %s of %d rows in %.3f s (%d transaction%s): %s",
        "plan" if dry_run else "batch",
        n,
        outcome.elapsed or 0.0,
        len(bounds),
        "" if len(bounds) == 1 else "s",
        ", ".join(f"{a}={c}" for a, c in counts.items()),
    )
    return outcome


#: The error kind of a row whose dependency names no task.
UNKNOWN_DEPENDENCY = "unknown_dependency"


def _check_dependencies(backend: BatchBackend[Any], prepared: Prepared) -> pl.DataFrame:
    """Look up what the rows' dependencies name in the store (one read): the active tasks
    their keys name (``index``, ``task_id``; returned), and which ids exist.  Fail the rows
    whose dependencies name nothing — a key naming no row of the batch and no active task,
    an id naming no task at all —; the plan is decided again, and so on while the new
    winners name unknown ones too."""
    found = pl.DataFrame(schema={"index": pl.Int64, "task_id": pl.Int64})
    while prepared.dependencies is not None:
        plan = prepared.dependencies
        by_key, found_ids = backend.dependency_lookup(
            plan.keys["key"].unique().to_list(), plan.ids["dep_id"].unique().to_list()
        )
        found = plan.keys.join(by_key, on="key").select("index", "task_id")
        missing_keys = (
            plan.keys.filter(~pl.col("in_batch"))
            .join(by_key, on="key", how="anti")
            .select(
                "index",
                pl.format(
                    "depends on {}, which names no task of this batch and no active task",
                    pl.col("key").map_elements(repr, return_dtype=pl.String),
                ).alias("error"),
            )
        )
        missing_ids = plan.ids.filter(~pl.col("dep_id").is_in(list(found_ids))).select(
            "index", pl.format("depends on task {}, which does not exist", "dep_id").alias("error")
        )
        unknown = (
            pl.concat([missing_keys, missing_ids])
            .group_by("index", maintain_order=True)
            .first()
            .with_columns(pl.lit(UNKNOWN_DEPENDENCY).alias("error_kind"))
            .select("index", "error_kind", "error")
        )
        if not unknown.height:
            break
        fail_dependencies(prepared, unknown)
    return found


def _seal(backend: BatchBackend[Any], tag: BatchTag) -> None:
    """Seal the batch ``tag`` recorded unless its last transaction did (a submission that
    stopped early, or whose last transaction inserted nothing); best effort: a store that
    cannot take it leaves the batch open, logged."""
    if tag.id is None or tag.sealed:
        return
    try:
        backend.seal()
    except SchedulerError as exc:
        log.warning("taskmill: batch %s could not be sealed: %s", tag.id, exc)


class _Phases:
    """The batch backend, its calls timed by phase (see ``BatchOutcome.phases``)."""

    def __init__(self, backend: BatchBackend[Any]) -> None:
        self.backend = backend
        self.seconds: dict[str, float] = dict.fromkeys(
            ("prepare", "stage", "merge", "outcome"), 0.0
        )

    @contextlib.contextmanager
    def timed(self, phase: str) -> Iterator[None]:
        began = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] += time.perf_counter() - began

    def stage(self, rows: Callable[[], pl.DataFrame]) -> Any:
        """Read a transaction's rows (``rows()``) and start staging them."""
        with self.timed("stage"):
            return self.backend.stage(rows())

    def ready(self, staged: Any) -> None:
        with self.timed("stage"):
            self.backend.ready(staged)

    def merge(self, staged: Any, *, dry_run: bool, base_offset: int) -> pl.DataFrame:
        with self.timed("merge"):
            return self.backend.merge(staged, dry_run=dry_run, base_offset=base_offset)

    def report(self) -> dict[str, float]:
        """The caller's phases, then the backend's own figures (``staging``,
        ``write_lock``); a wait for staging inside a merge counts as ``stage``."""
        own = dict(self.backend.phases)
        waited = own.pop("stage_wait", 0.0)
        out = dict(self.seconds)
        out["stage"] += waited
        out["merge"] -= waited
        return out | own


def _run_chunks(
    backend: _Phases,
    prepared: Prepared,
    bounds: list[tuple[int, int]],
    results: MergeResults,
    dry_run: bool,
    on_commit: CommitHook | None,
    started: float,
    progress: Progress | None,
) -> None:
    """The chunks in order, each in its own transaction.  While chunk k merges, chunk
    k + 1 is read and staged (a backend that stages in the background overlaps them)."""
    base_offset = 0  # for plans: ids the earlier chunks would have taken
    ahead: Any = None

    def stage(lo: int, hi: int) -> Any:
        try:
            return backend.stage(lambda: prepared.rows(lo, hi).filter(pl.col("winner")))
        except (SchedulerError, OSError) as exc:  # raised when that chunk's turn comes
            return exc

    try:
        for k, (lo, hi) in enumerate(bounds):
            current = ahead if ahead is not None else stage(lo, hi)
            ahead = None
            if not isinstance(current, BaseException):
                try:  # this chunk's staging first, then the next chunk's, during the merge
                    backend.ready(current)
                except SchedulerError as exc:
                    backend.backend.discard(current)
                    current = exc
            ahead = stage(*bounds[k + 1]) if k + 1 < len(bounds) else None
            inserted = _one_chunk(
                backend,
                k,
                bounds,
                current,
                prepared,
                results,
                dry_run,
                on_commit,
                started,
                progress,
                base_offset,
            )
            if dry_run:
                base_offset += inserted
    finally:
        if ahead is not None and not isinstance(ahead, BaseException):
            backend.backend.discard(ahead)


def _one_chunk(
    backend: _Phases,
    k: int,
    bounds: list[tuple[int, int]],
    current: Any,
    prepared: Prepared,
    results: MergeResults,
    dry_run: bool,
    on_commit: CommitHook | None,
    started: float,
    progress: Progress | None,
    base_offset: int,
) -> int:
    """Merge chunk ``k`` (staged, or the error its staging met); ``BatchInterrupted``
    with the committed part when it cannot commit.  Returns how many rows it inserted
    (would insert, for a plan)."""
    lo, hi = bounds[k]
    try:
        if isinstance(current, BaseException):
            raise current
        backend.backend.tag.last = k == len(bounds) - 1
        result = backend.merge(current, dry_run=dry_run, base_offset=base_offset)
    except (SchedulerError, OSError) as exc:
        if len(bounds) == 1:
            if isinstance(exc, OSError):
                raise backend.backend.read_error(exc) from exc
            raise
        partial = build_outcome(
            prepared,
            results,
            rows=lo,
            planned=dry_run,
            elapsed=time.perf_counter() - started,
            interrupted=(
                f"the last row with this key (row {{}}) was in chunk {k + 1}, "
                "which did not commit; submit the batch again"
            ),
        )
        raise BatchInterrupted(
            f"chunk {k + 1} of {len(bounds)} (rows {lo}..{hi - 1}) could not commit; "
            f"the {k} chunk(s) before it (rows 0..{lo - 1}) are in the store. "
            f"Submit the same batch again with SKIP to complete it. Cause: {exc}",
            outcome=partial,
        ) from exc
    results.append(result)  # kept until the batch ends (on disk for a large batch)
    inserted = result.filter(pl.col("action").is_in(INSERTING))
    if not dry_run and on_commit is not None and inserted.height:
        sup = result.filter(pl.col("action") == "superseded")
        pairs = zip(sup["task_id"].to_list(), sup["replaced_task_id"].to_list(), strict=True)
        on_commit(inserted["task_id"].to_list(), list(pairs))
    if progress is not None:
        progress(hi, len(prepared))
    return inserted.height
