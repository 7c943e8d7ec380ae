"""The one declaration of a task's fields: each column's name, its polars and Arrow types,
its default, its limits, the name it is stored under and which tables hold it.

The Python lists of columns (a plan's canonical columns, the frames of ``tasks()``,
``history()`` and ``retry_failed``, the staging tables' columns, the time columns) derive
from :data:`COLUMNS`.  The SQL stays static and named (``queries.sql``, ``schema.sql`` of
each store): ``tests/test_columns.py`` checks every schema's ``tasks`` and ``history``
and every ``INSERT`` into them against this declaration rather than generating them.

"Tables" here are ``plan`` (the canonical columns of batch input, one per field of
:class:`~taskmill.model.TaskSubmission`, in its order), ``tasks`` (active tasks) and
``history`` (finished tasks).  A bottom layer: imports polars, pyarrow and the model's
constants, nothing else of taskmill.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import polars as pl
import pyarrow as pa

from .model import MAX_GROUP_LENGTH, MAX_KEY_LENGTH, MAX_PAYLOAD_BYTES, DuplicateStrategy, Priority

__all__ = [
    "BROWSED",
    "COLUMNS",
    "EXPECTED_FIELDS",
    "MAX_INT64",
    "MAX_TIME",
    "STAGED",
    "TAG",
    "TIME_COLUMNS",
    "Column",
    "Table",
    "column",
    "columns_of",
    "frame_schema",
    "insert_columns",
    "int_limits",
]

#: The largest value of a 64-bit integer column.
MAX_INT64: Final = (1 << 63) - 1
#: The latest time taskmill accepts (year 9999, the end of ``datetime``).
MAX_TIME: Final = 253402300799.0

#: Where a column lives: batch input, active tasks, finished tasks.
Table = Literal["plan", "tasks", "history"]

_PLAN: frozenset[Table] = frozenset({"plan"})
_TASKS: frozenset[Table] = frozenset({"tasks"})
_HISTORY: frozenset[Table] = frozenset({"history"})
_STORED = _TASKS | _HISTORY
_EVERYWHERE = _PLAN | _STORED


@dataclass(frozen=True, slots=True)
class Column:
    """One field of a task.

    ``stored_as``: its name in the stores' tables and staging tables when that differs
    (``group`` is ``group_name``, a word SQL reserves; a plan's ``on_duplicate`` is
    staged as ``strategy``).  ``nullable``: whether the stores' tables (and staging
    tables) take NULL.  ``default``: what a task gets when its submission leaves it unset
    (a batch's own defaults override the group, priority, strategy and times).  Limits:
    ``low..high`` for numbers, ``max_length`` in characters for text and in bytes for the
    payload, ``empty`` whether text may be ``""``.  ``shown``: in the frames of
    ``tasks()`` and ``history()`` (not the store's own bookkeeping: worker, key hash).
    ``on_insert``: the store sets it when it inserts a new task (a submission's own
    fields are always set).  ``staged``: a batch's staging tables hold it (a plan column
    that is not staged travels apart: ``depends_on`` becomes edges)."""

    name: str
    polars: pl.DataType
    arrow: pa.DataType
    tables: frozenset[Table]
    stored_as: str | None = None
    nullable: bool = True
    default: Any = None
    low: int | float | None = None
    high: int | float | None = None
    max_length: int | None = None
    empty: bool = True
    shown: bool = True
    on_insert: bool = False
    staged: bool = True
    #: Unix seconds, shown as UTC datetimes in frames.
    time: bool = False

    @property
    def stored(self) -> str:
        """The column's name in the stores' tables."""
        return self.stored_as or self.name

    @property
    def submitted(self) -> bool:
        """Whether a submission sets it: a canonical column of batch input."""
        return "plan" in self.tables


_INT = (pl.Int64(), pa.int64())
_TEXT = (pl.String(), pa.string())
_BYTES = (pl.Binary(), pa.binary())
_TIME = (pl.Float64(), pa.float64())  # Unix seconds; frames show UTC datetimes
#: One item of ``depends_on``: a task id or a dedup key (the other null).
_DEPENDENCY = pl.Struct({"id": pl.Int64(), "key": pl.String()})
_DEPENDENCY_ARROW = pa.struct([("id", pa.int64()), ("key", pa.string())])
#: One tag of ``tags``: a key and its value (a plan's struct or map of strings becomes a
#: list of these, batch/inputs.py).
TAG = pl.Struct({"key": pl.String(), "value": pl.String()})
_TAG_ARROW = pa.struct([("key", pa.string()), ("value", pa.string())])


def _expected(name: str) -> Column:
    return Column(name, *_INT, _EVERYWHERE, nullable=False, default=0, low=0, high=MAX_INT64)


#: Every column of a task, in the order of the frames that show them.
COLUMNS: tuple[Column, ...] = (
    Column("id", *_INT, _STORED, nullable=False, on_insert=True),
    Column(
        "task_type", *_TEXT, _EVERYWHERE, nullable=False, max_length=MAX_KEY_LENGTH, empty=False
    ),
    Column("dedup_key", *_TEXT, _EVERYWHERE, max_length=MAX_KEY_LENGTH, empty=False),
    Column("group", *_TEXT, _EVERYWHERE, stored_as="group_name", max_length=MAX_GROUP_LENGTH),
    Column(
        "priority",
        *_INT,
        _EVERYWHERE,
        nullable=False,
        default=int(Priority.NORMAL),
        low=0,
        high=255,
    ),
    # a new task is pending, or blocked when it waits for others (schema 8)
    Column("status", *_TEXT, _STORED, nullable=False, default="pending", on_insert=True),
    Column("queue_pos", *_INT, _TASKS, nullable=False, on_insert=True),
    Column("payload", *_BYTES, _EVERYWHERE, max_length=MAX_PAYLOAD_BYTES),
    Column("label", *_TEXT, _EVERYWHERE, max_length=MAX_GROUP_LENGTH),
    _expected("expected_read_bytes"),
    _expected("expected_write_bytes"),
    _expected("expected_net_rx_bytes"),
    _expected("expected_net_tx_bytes"),
    Column(
        "on_duplicate",
        *_TEXT,
        _PLAN,
        stored_as="strategy",
        nullable=False,
        default=DuplicateStrategy.SKIP.value,
    ),
    Column("max_retries", *_INT, _EVERYWHERE, low=0, high=1000),
    Column("attempts", *_INT, _STORED, nullable=False, default=0),
    Column("last_error", *_TEXT, _STORED),
    Column("replaced_by", *_INT, _HISTORY),  # for 'superseded': the task that replaced it
    Column("run_after", *_TIME, _PLAN | _TASKS, low=0, high=MAX_TIME, time=True),
    Column("expires_at", *_TIME, _PLAN | _TASKS, low=0, high=MAX_TIME, time=True),
    Column("created_at", *_TIME, _STORED, nullable=False, on_insert=True, time=True),
    Column("started_at", *_TIME, _STORED, time=True),
    # what a running attempt last reported through ctx.progress(): 0..1, and a message
    Column("progress", pl.Float64(), pa.float64(), _TASKS),
    Column("progress_message", *_TEXT, _TASKS),
    # paused to make room for more urgent work (Scheduler(preempt_priority=…)), at this time
    Column("preempted_at", *_TIME, _TASKS, time=True),
    Column("finished_at", *_TIME, _HISTORY, nullable=False, time=True),
    # the batch that inserted the task (store.batch(id)); None for a single submit
    Column("batch_id", *_INT, _STORED, on_insert=True),
    # the running task whose executor spawned it (ctx.spawn); None for a top-level task
    Column("parent_id", *_INT, _STORED, on_insert=True),
    # what a task waits for (batch/depends.py): items of a task id or a dedup key each; the
    # store keeps them as edges (task_deps), tasks() shows the ids still awaited
    Column("depends_on", pl.List(_DEPENDENCY), pa.list_(_DEPENDENCY_ARROW), _PLAN, staged=False),
    # what a task does when a dependency ends failed, cancelled or expired (NULL: cancel)
    Column("on_dependency_failure", *_TEXT, _PLAN | _TASKS),
    # labels to find a task by (schema 12): key/value pairs; the store keeps them as rows of
    # task_tags, for active and finished tasks alike, and tasks()/history() show them
    Column("tags", pl.List(TAG), pa.list_(_TAG_ARROW), _PLAN, staged=False),
    # a waiting parent's finalizer: 'wanted' (runs once its children end), 'due' (they
    # did: the claim runs it); None: none
    Column("finalizer", *_TEXT, _TASKS, shown=False),
    Column("owner", *_TEXT, _TASKS, shown=False),  # the worker running it: 'host:pid:token'
    Column("key_hash", *_INT, _TASKS, shown=False, on_insert=True),  # store/keys.py
)

_BY_NAME = {c.name: c for c in COLUMNS}


def column(name: str) -> Column:
    """The column named ``name`` (its Python name: ``group``, not ``group_name``)."""
    return _BY_NAME[name]


def int_limits(name: str) -> tuple[int, int]:
    """The limits ``low..high`` of the integer column ``name``."""
    col = column(name)
    if not (isinstance(col.low, int) and isinstance(col.high, int)):
        raise ValueError(f"the column {name!r} has no integer limits")
    return col.low, col.high


def columns_of(table: Table) -> tuple[Column, ...]:
    """The columns ``table`` holds, in declaration order."""
    return tuple(c for c in COLUMNS if table in c.tables)


def frame_schema(table: Table) -> dict[str, pl.DataType]:
    """The columns a frame of ``table`` shows, by name, with their polars types: for
    ``plan`` the canonical columns of batch input, for ``tasks`` and ``history`` the
    frames of ``tasks()`` and ``history()``."""
    return {c.name: c.polars for c in columns_of(table) if c.shown}


def insert_columns() -> frozenset[str]:
    """The stored columns the insert of a new task sets: the submission's own and the
    store's (id, queue position, creation time, key hash); the rest take their defaults."""
    return frozenset(c.stored for c in columns_of("tasks") if c.submitted or c.on_insert)


def _staged() -> tuple[Column, ...]:
    plan = [c for c in columns_of("plan") if c.staged]
    strategy = column("on_duplicate")
    plan.remove(strategy)  # the staging tables keep it after max_retries
    plan.insert(plan.index(column("max_retries")) + 1, strategy)
    return tuple(plan)


#: The canonical columns a batch part stages (by their stored names), in the staging
#: tables' order (queries ``staging_schema`` and ``batch_stage_create``), between the
#: row's ``ord``/``pos`` and the ``key_hash`` DuckDB fills in.
STAGED: tuple[Column, ...] = _staged()
#: The four expected-bytes figures, in order.
EXPECTED_FIELDS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.name.startswith("expected_"))
#: Columns stored as Unix seconds and shown as UTC datetimes.
TIME_COLUMNS: tuple[str, ...] = tuple(c.name for c in COLUMNS if c.time)

#: The fields of a page of ``browse()`` (active and finished tasks side by side), in its
#: order: each a column of ``tasks`` or ``history`` or both (null on the rows of the table
#: without it), before the page's own ``active`` flag.
BROWSED: tuple[str, ...] = (
    "id",
    "status",
    "task_type",
    "dedup_key",
    "group",
    "priority",
    "attempts",
    "label",
    "last_error",
    "created_at",
    "started_at",
    "finished_at",
    "progress",
    "batch_id",
    "parent_id",
)
