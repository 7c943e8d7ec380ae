"""Each rule once: the checks of one :class:`TaskSubmission` and of a frame of them.

``check_submission`` checks one submission (``submit()``, and each item of a list batch);
``_check_table`` checks a frame of table input with vectorised expressions that give the
same kinds and messages, so a list and a table holding the same data fail the same rows the
same way.  Below them: the checks of the stores' method arguments.
"""

from __future__ import annotations

import contextlib
import math
import operator
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from datetime import time as clock
from typing import Any, TypeVar

import polars as pl

from ..columns import EXPECTED_FIELDS, MAX_INT64, MAX_TIME, column, frame_schema, int_limits
from ..model import (
    DEPENDENCY_POLICIES,
    MAX_DEPENDENCIES,
    MAX_GROUP_LENGTH,
    MAX_KEY_LENGTH,
    MAX_PAYLOAD_BYTES,
    MAX_TAG_KEY_LENGTH,
    MAX_TAG_VALUE_LENGTH,
    MAX_TAGS,
    NON_FINITE_PAYLOAD,
    PRIORITY_TIERS,
    DuplicateStrategy,
    InvalidSubmission,
    Priority,
    SchedulerError,
    TaskSubmission,
    encode_payload,
)

#: The message of text holding a NUL character (``{}``: the field): PostgreSQL's text cannot
#: hold one, so no store takes it, and a row holding one fails the same on either engine.
#: A ``{}`` template for ``str.format`` and ``polars.format`` alike.
NUL_MESSAGE = "{} holds a NUL character (\\x00), which the store cannot keep in text"


@dataclass(frozen=True, slots=True)
class Defaults:
    """Batch-wide defaults for fields a submission leaves unset."""

    group: str | None = None
    priority: int = int(Priority.NORMAL)
    on_duplicate: DuplicateStrategy = DuplicateStrategy.SKIP
    run_after: float | None = None  # Unix seconds
    expires_at: float | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """A validated submission, defaults applied, payload encoded."""

    task_type: str
    dedup_key: str | None
    group: str | None
    priority: int
    payload: bytes | None
    label: str | None
    expected_read_bytes: int
    expected_write_bytes: int
    expected_net_rx_bytes: int
    expected_net_tx_bytes: int
    on_duplicate: DuplicateStrategy
    max_retries: int | None
    run_after: float | None = None  # Unix seconds
    expires_at: float | None = None
    #: ``(task id, None)`` or ``(None, dedup key)`` per item; ``None``: none
    depends_on: tuple[tuple[int | None, str | None], ...] | None = None
    on_dependency_failure: str | None = None
    #: ``(key, value)`` per tag, in the order given; ``None``: none
    tags: tuple[tuple[str, str], ...] | None = None


def is_not_a_time(value: Any) -> bool:
    """Whether ``value`` is pandas' missing time, ``pd.NaT`` (a ``datetime`` that equals
    nothing, not even itself), told apart without importing pandas."""
    return isinstance(value, datetime) and value != value  # NaT != NaT


def to_seconds(value: Any, field: str, now: float) -> float | None:
    """A time field as Unix seconds: a ``datetime`` (naive means UTC), a ``date``
    (midnight UTC, as a Date column of a table), a ``timedelta`` from ``now``, or Unix
    seconds; ``None`` and ``pd.NaT`` (a table's null time) are no time: ``None``."""
    if value is None or is_not_a_time(value):
        return None
    kind = f"invalid_{field}"
    if isinstance(value, datetime):
        at = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        seconds = at.timestamp()
    elif isinstance(value, date):
        seconds = datetime.combine(value, clock(), tzinfo=UTC).timestamp()
    elif isinstance(value, timedelta):
        seconds = now + value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    else:
        raise _invalid(
            field,
            kind,
            f"{field} must be a datetime, a date, a timedelta or Unix seconds, got "
            f"{type(value).__name__}",
        )
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_TIME:
        raise _invalid(field, kind, f"{field} must be a time between 1970 and 9999, got {value}")
    return seconds


def check_times(run_after: float | None, expires_at: float | None) -> None:
    """A task that could never start is refused: it would expire before its start time."""
    if run_after is not None and expires_at is not None and expires_at <= run_after:
        raise _invalid(
            "expires_at",
            "invalid_expires_at",
            "expires_at must be later than run_after (the task could never start)",
        )


def _invalid(field: str, kind: str, message: str) -> InvalidSubmission:
    return InvalidSubmission(message, kind=kind, field=field)


def encodes(text: str) -> bool:
    """Whether ``text`` can be stored as UTF-8 (no lone surrogates, as ``os.listdir``
    returns for a file name that is not UTF-8)."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_text(value: Any, field: str, kind: str) -> str | None:
    """A text field within its column's limits (``taskmill/columns.py``): ``None`` where
    the column takes NULL, or a string of at most ``max_length`` characters."""
    col = column(field)
    if value is None:
        if not col.nullable:
            raise _invalid(field, kind, f"{field} is missing")
        return None
    if not isinstance(value, str):
        raise _invalid(field, kind, f"{field} must be a string, got {type(value).__name__}")
    if not encodes(value):
        raise _invalid(field, "invalid_encoding", f"{field} is not valid UTF-8")
    if "\x00" in value:
        raise _invalid(field, "invalid_encoding", NUL_MESSAGE.format(field))
    if value == "" and not col.empty:
        raise _invalid(field, kind, f"{field} is an empty string")
    limit = col.max_length
    if limit is not None and len(value) > limit:
        raise _invalid(field, kind, f"{field} is longer than {limit:,} characters")
    return value


def check_int(value: Any, field: str, kind: str) -> int:
    """An integer field within its column's ``low..high`` (bools are refused)."""
    low, high = int_limits(field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _invalid(field, kind, f"{field} must be an integer, got {type(value).__name__}")
    if not low <= value <= high:
        raise _invalid(field, kind, f"{field} must be within {low}..{high}, got {value}")
    return int(value)


def check_dependencies(value: Any) -> tuple[tuple[int | None, str | None], ...] | None:
    """``depends_on`` as ``(id, None)`` / ``(None, key)`` items (``None``: no dependency);
    raises ``InvalidSubmission(kind="invalid_dependency")`` naming the item."""
    field, kind = "depends_on", "invalid_dependency"
    if value is None:
        return None
    if isinstance(value, str | bytes | bytearray) or not isinstance(value, list | tuple):
        raise _invalid(
            field,
            kind,
            "depends_on must be a list of task ids (int) and dedup keys (str), got "
            f"{type(value).__name__}",
        )
    if len(value) > MAX_DEPENDENCIES:
        raise _invalid(
            field, kind, f"depends_on has {len(value):,} items, over the {MAX_DEPENDENCIES:,} limit"
        )
    items: list[tuple[int | None, str | None]] = []
    for i, item in enumerate(value):
        where = f"depends_on[{i}]"
        if item is None:
            raise _invalid(field, kind, f"{where} is null")
        if isinstance(item, int) and not isinstance(item, bool):
            if not 1 <= item <= MAX_INT64:
                raise _invalid(field, kind, f"{where} must be a task id of at least 1, got {item}")
            items.append((int(item), None))
        elif isinstance(item, str):
            if item == "":
                raise _invalid(field, kind, f"{where} is an empty string")
            if not encodes(item) or "\x00" in item:
                raise _invalid(field, kind, f"{where} is not valid UTF-8 text")
            if len(item) > MAX_KEY_LENGTH:
                raise _invalid(field, kind, f"{where} is longer than {MAX_KEY_LENGTH:,} characters")
            items.append((None, item))
        else:
            raise _invalid(
                field,
                kind,
                f"{where} must be a task id (int) or a dedup key (str), got {type(item).__name__}",
            )
    return tuple(items) or None


#: The error kind of a row whose ``tags`` break a rule.
INVALID_TAGS = "invalid_tags"


def check_tags(value: Any) -> tuple[tuple[str, str], ...] | None:
    """``tags`` as ``(key, value)`` pairs (``None``: no tags; a ``None`` value is no such
    tag); raises ``InvalidSubmission(kind="invalid_tags")`` saying which rule broke, with
    the messages of the frames' checks (:func:`_tag_checks`)."""
    field, kind = "tags", INVALID_TAGS
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _invalid(
            field, kind, f"tags must be a dict of strings to strings, got {type(value).__name__}"
        )
    pairs: list[tuple[str, str]] = []
    for key, text in value.items():
        if key is not None and not isinstance(key, str):
            raise _invalid(field, kind, f"tags keys must be strings, got {type(key).__name__}")
        if text is not None and not isinstance(text, str):
            raise _invalid(
                field, kind, f"tags[{key!r}] must be a string, got {type(text).__name__}"
            )
        if text is not None:
            pairs.append((key or "", text))  # a None key fails as an empty one
    if len(pairs) > MAX_TAGS:
        raise _invalid(field, kind, f"tags has {len(pairs):,} pairs, over the {MAX_TAGS} limit")
    # rule by rule over every pair, as the frames' checks go
    if any(not key for key, _ in pairs):
        raise _invalid(field, kind, "tags has an empty key")
    if not all(encodes(key) and encodes(text) for key, text in pairs):
        raise _invalid(field, kind, "tags is not valid UTF-8")
    if any("\x00" in key or "\x00" in text for key, text in pairs):
        raise _invalid(field, kind, NUL_MESSAGE.format(field))
    if any(len(key) > MAX_TAG_KEY_LENGTH for key, _ in pairs):
        raise _invalid(field, kind, f"tags has a key longer than {MAX_TAG_KEY_LENGTH:,} characters")
    for key, text in pairs:
        if len(text) > MAX_TAG_VALUE_LENGTH:
            raise _invalid(
                field, kind, f"tags['{key}'] is longer than {MAX_TAG_VALUE_LENGTH:,} characters"
            )
    return tuple(pairs) or None


def check_policy(value: Any) -> str | None:
    """``on_dependency_failure``: one of :data:`DEPENDENCY_POLICIES` (any case) or ``None``."""
    if value is None:
        return None
    text = value.strip().lower() if isinstance(value, str) else None
    if text not in DEPENDENCY_POLICIES:
        raise _invalid(
            "on_dependency_failure",
            "invalid_dependency_policy",
            f"on_dependency_failure must be one of {', '.join(DEPENDENCY_POLICIES)}; got {value!r}",
        )
    return text


def check_submission(sub: TaskSubmission, defaults: Defaults = Defaults()) -> Row:
    """Validate one submission; raise :class:`InvalidSubmission` naming the field."""
    if not isinstance(sub, TaskSubmission):
        raise InvalidSubmission(
            f"expected a TaskSubmission, got {type(sub).__name__}",
            kind="invalid_input",
        )
    task_type = check_text(sub.task_type, "task_type", "invalid_task_type")
    assert task_type is not None
    dedup_key = check_text(sub.dedup_key, "dedup_key", "invalid_dedup_key")
    group = check_text(sub.group, "group", "invalid_group")
    if group is None:
        group = defaults.group
    label = check_text(sub.label, "label", "invalid_label")
    if sub.priority is None:
        priority = defaults.priority
    elif isinstance(sub.priority, str):  # a tier name: "high", "IDLE" …
        priority = int(Priority.parse(sub.priority))
    else:
        priority = check_int(sub.priority, "priority", "invalid_priority")
    expected = [
        check_int(getattr(sub, f), f, "invalid_expected_bytes")
        if getattr(sub, f) is not None
        else 0
        for f in EXPECTED_FIELDS
    ]
    strategy = (
        defaults.on_duplicate
        if sub.on_duplicate is None
        else DuplicateStrategy.parse(sub.on_duplicate)
    )
    max_retries = (
        None
        if sub.max_retries is None
        else check_int(sub.max_retries, "max_retries", "invalid_max_retries")
    )
    now = time.time()
    run_after = to_seconds(sub.run_after, "run_after", now)
    if run_after is None:
        run_after = defaults.run_after
    expires_at = to_seconds(sub.expires_at, "expires_at", now)
    if expires_at is None:
        expires_at = defaults.expires_at
    check_times(run_after, expires_at)
    payload = encode_payload(sub.payload)
    depends_on = check_dependencies(sub.depends_on)
    policy = check_policy(sub.on_dependency_failure)
    tags = check_tags(sub.tags)
    read_bytes, write_bytes, net_rx_bytes, net_tx_bytes = expected  # EXPECTED_FIELDS' order
    return Row(
        task_type,
        dedup_key,
        group,
        priority,
        payload,
        label,
        read_bytes,
        write_bytes,
        net_rx_bytes,
        net_tx_bytes,
        strategy,
        max_retries,
        run_after,
        expires_at,
        depends_on,
        policy,
        tags,
    )


# --------------------------------------------------------------------------- frames


#: The canonical columns of table input and their types (times: Unix seconds, given as
#: datetimes or numbers).
CANONICAL: dict[str, pl.DataType] = frame_schema("plan")
_TEXT = tuple(name for name, dtype in CANONICAL.items() if dtype == pl.String)
_TIMES = tuple(name for name, dtype in CANONICAL.items() if dtype == pl.Float64)
_INTS = tuple(name for name, dtype in CANONICAL.items() if dtype == pl.Int64)
_STRATEGIES = tuple(s.value for s in DuplicateStrategy)


def _bad_input(message: str, column: str | None = None) -> InvalidSubmission:
    return InvalidSubmission(message, kind="invalid_input", field=column)


#: A hidden column of table input: per row, the first input column whose text is not
#: valid UTF-8 (that row fails with ``invalid_encoding``; its bad value never goes on).
BAD_TEXT = "__taskmill_bad_text"


def _from_submissions(subs: Iterable[Any], defaults: Defaults) -> pl.DataFrame:
    """Walk a list of submissions once, checking each and building columns."""
    cols: dict[str, list[Any]] = {name: [] for name in CANONICAL}
    kinds: list[str | None] = []
    fields: list[str | None] = []
    errors: list[str | None] = []

    def shown(value: Any, kind: type) -> Any:
        if not isinstance(value, kind) or isinstance(value, bool):
            return None
        if isinstance(value, str) and not encodes(value):  # shown escaped, never stored
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value

    task_types, keys, groups, priorities = (
        cols["task_type"],
        cols["dedup_key"],
        cols["group"],
        cols["priority"],
    )
    payloads, labels, strategies, retries = (
        cols["payload"],
        cols["label"],
        cols["on_duplicate"],
        cols["max_retries"],
    )
    rb, wb, rx, tx = (cols[f] for f in EXPECTED_FIELDS)
    starts, expiries = cols["run_after"], cols["expires_at"]
    depends, policies, tagged = cols["depends_on"], cols["on_dependency_failure"], cols["tags"]
    d_group, d_priority, d_strategy = defaults.group, defaults.priority, defaults.on_duplicate.value
    for sub in subs:
        # the common case, checked inline; anything unusual goes through check_submission
        if type(sub) is TaskSubmission:
            tt, key, group, prio, payload = (
                sub.task_type,
                sub.dedup_key,
                sub.group,
                sub.priority,
                sub.payload,
            )
            e1, e2, e3, e4 = (
                sub.expected_read_bytes,
                sub.expected_write_bytes,
                sub.expected_net_rx_bytes,
                sub.expected_net_tx_bytes,
            )
            if (
                type(tt) is str
                and 0 < len(tt) <= MAX_KEY_LENGTH
                and (tt.isascii() or encodes(tt))  # inline: the hot path
                and "\x00" not in tt
                and (
                    key is None
                    or (
                        type(key) is str
                        and 0 < len(key) <= MAX_KEY_LENGTH
                        and (key.isascii() or encodes(key))
                        and "\x00" not in key
                    )
                )
                and (
                    group is None
                    or (
                        type(group) is str
                        and len(group) <= MAX_GROUP_LENGTH
                        and (group.isascii() or encodes(group))
                        and "\x00" not in group
                    )
                )
                and (prio is None or (type(prio) is int and 0 <= prio <= 255))
                and type(e1) is int
                and type(e2) is int
                and type(e3) is int
                and type(e4) is int
                and 0 <= e1 <= MAX_INT64
                and 0 <= e2 <= MAX_INT64
                and 0 <= e3 <= MAX_INT64
                and 0 <= e4 <= MAX_INT64
                and sub.label is None
                and sub.on_duplicate is None
                and sub.max_retries is None
                and sub.run_after is None
                and sub.expires_at is None
                and sub.depends_on is None
                and sub.on_dependency_failure is None
                and sub.tags is None
                and (
                    payload is None
                    or (type(payload) is bytes and len(payload) <= MAX_PAYLOAD_BYTES)
                )
            ):
                task_types.append(tt)
                keys.append(key)
                groups.append(d_group if group is None else group)
                priorities.append(d_priority if prio is None else prio)
                payloads.append(payload)
                labels.append(None)
                rb.append(e1)
                wb.append(e2)
                rx.append(e3)
                tx.append(e4)
                strategies.append(d_strategy)
                retries.append(None)
                starts.append(defaults.run_after)
                expiries.append(defaults.expires_at)
                depends.append(None)
                policies.append(None)
                tagged.append(None)
                kinds.append(None)
                fields.append(None)
                errors.append(None)
                continue
        try:
            row = check_submission(sub, defaults)
        except InvalidSubmission as exc:
            kinds.append(exc.kind)
            fields.append(exc.field)
            errors.append(exc.message)
            ok = isinstance(sub, TaskSubmission)
            for name in CANONICAL:
                value = getattr(sub, name, None) if ok else None
                if name in ("payload", "depends_on", "tags", *_TIMES):  # times: shown once checked
                    value = None
                elif name in _INTS:
                    value = shown(value, int)
                    if value is not None and not -(2**63) <= value <= MAX_INT64:
                        value = None
                elif name == "on_duplicate":
                    value = (
                        value.value if isinstance(value, DuplicateStrategy) else shown(value, str)
                    )
                else:
                    value = shown(value, str)
                cols[name].append(value)
            if ok:
                if cols["group"][-1] is None:
                    cols["group"][-1] = defaults.group
                if sub.priority is None:
                    cols["priority"][-1] = defaults.priority
                if sub.on_duplicate is None:
                    cols["on_duplicate"][-1] = defaults.on_duplicate.value
            continue
        kinds.append(None)
        fields.append(None)
        errors.append(None)
        task_types.append(row.task_type)
        keys.append(row.dedup_key)
        groups.append(row.group)
        priorities.append(row.priority)
        payloads.append(row.payload)
        labels.append(row.label)
        rb.append(row.expected_read_bytes)
        wb.append(row.expected_write_bytes)
        rx.append(row.expected_net_rx_bytes)
        tx.append(row.expected_net_tx_bytes)
        strategies.append(row.on_duplicate.value)
        retries.append(row.max_retries)
        starts.append(row.run_after)
        expiries.append(row.expires_at)
        depends.append(
            None if row.depends_on is None else [{"id": i, "key": k} for i, k in row.depends_on]
        )
        policies.append(row.on_dependency_failure)
        tagged.append(None if row.tags is None else [{"key": k, "value": v} for k, v in row.tags])
    frame = pl.DataFrame(
        {**cols, "error_kind": kinds, "error_field": fields, "error": errors},
        schema={**CANONICAL, "error_kind": pl.String, "error_field": pl.String, "error": pl.String},
    )
    return frame.with_row_index("index").with_columns(pl.col("index").cast(pl.Int64))


Frame = TypeVar("Frame", pl.DataFrame, pl.LazyFrame)


#: A hidden column of table input: a priority given as text that is no tier name.
BAD_PRIORITY = "__taskmill_bad_priority"


#: A hidden column of table input packed with ``payload_columns()``: true where a packed
#: value is NaN or infinite (JSON has no such numbers; the row fails as ``submit()`` would).
BAD_PAYLOAD = "__taskmill_bad_payload"


def _check_table(df: Frame, defaults: Defaults, *, offset: int = 0) -> Frame:
    """Vectorised validation: the same kinds and messages as ``check_submission``.

    Pure expressions, so a LazyFrame stays lazy (each batch of a plan read from a file
    is checked in one query); rows are numbered from ``offset``."""
    df = df.with_columns(  # batch-wide times for the rows that set none
        pl.col("run_after").fill_null(pl.lit(defaults.run_after, dtype=pl.Float64)),
        pl.col("expires_at").fill_null(pl.lit(defaults.expires_at, dtype=pl.Float64)),
    )
    schema = df.collect_schema()
    float_ints = {n for n in _INTS if schema[n].is_float()}  # given as floats: must be whole
    checks: list[tuple[pl.Expr, str, str | pl.Expr, pl.Expr]] = []

    def text_checks(name: str, kind: str, limit: int, *, required: bool, empty_ok: bool) -> None:
        col = pl.col(name)
        if required:
            checks.append((col.is_null(), kind, name, pl.lit(f"{name} is missing")))
        nul = col.str.contains("\x00", literal=True)
        checks.append((nul, "invalid_encoding", name, pl.lit(NUL_MESSAGE.format(name))))
        if not empty_ok:
            checks.append((col == "", kind, name, pl.lit(f"{name} is an empty string")))
        checks.append(
            (
                col.str.len_chars() > limit,
                kind,
                name,
                pl.lit(f"{name} is longer than {limit:,} characters"),
            )
        )

    checks.append(
        (
            pl.col(BAD_TEXT).is_not_null(),
            "invalid_encoding",
            pl.col(BAD_TEXT),
            pl.format("{} is not valid UTF-8", pl.col(BAD_TEXT)),
        )
    )
    text_checks("task_type", "invalid_task_type", MAX_KEY_LENGTH, required=True, empty_ok=False)
    text_checks("dedup_key", "invalid_dedup_key", MAX_KEY_LENGTH, required=False, empty_ok=False)
    text_checks("group", "invalid_group", MAX_GROUP_LENGTH, required=False, empty_ok=True)
    text_checks("label", "invalid_label", MAX_GROUP_LENGTH, required=False, empty_ok=True)

    def int_checks(name: str, kind: str, low: int, high: int) -> None:
        col = pl.col(name)
        if name in float_ints:
            whole = col.is_finite() & (col == col.floor())
            checks.append(
                (
                    col.is_not_null() & ~whole,
                    kind,
                    name,
                    pl.lit(f"{name} must be an integer, got float"),
                )
            )
            col = pl.when(whole).then(col)
        checks.append(
            (
                (col < low) | (col > high),
                kind,
                name,
                pl.format(
                    f"{name} must be within {low}..{high}, got {{}}",
                    col.cast(pl.Int64, strict=False) if name in float_ints else col,
                ),
            )
        )

    checks.append(
        (
            pl.col(BAD_PRIORITY).is_not_null(),
            "invalid_priority",
            "priority",
            pl.format(
                "priority must be within 0..255 or a tier name "
                f"({', '.join(t.lower() for t in PRIORITY_TIERS)}), got '{{}}'",
                pl.col(BAD_PRIORITY),
            ),
        )
    )
    int_checks("priority", "invalid_priority", 0, 255)
    for name in EXPECTED_FIELDS:
        int_checks(name, "invalid_expected_bytes", 0, MAX_INT64)
    strategy = pl.col("on_duplicate").str.strip_chars().str.to_lowercase()
    checks.append(
        (
            pl.col("on_duplicate").is_not_null() & ~strategy.is_in(_STRATEGIES),
            "invalid_strategy",
            "on_duplicate",
            pl.format(
                "on_duplicate must be one of skip, supersede, reject; got '{}'",
                pl.col("on_duplicate"),
            ),
        )
    )
    int_checks("max_retries", "invalid_max_retries", 0, 1000)
    for name in _TIMES:
        col = pl.col(name)
        checks.append(
            (
                col.is_not_null() & ~(col.is_finite() & (col >= 0) & (col <= MAX_TIME)),
                f"invalid_{name}",
                name,
                pl.format(f"{name} must be a time between 1970 and 9999, got {{}}", col),
            )
        )
    checks.append(
        (
            pl.col("expires_at") <= pl.col("run_after"),
            "invalid_expires_at",
            "expires_at",
            pl.lit("expires_at must be later than run_after (the task could never start)"),
        )
    )
    _dependency_checks(checks)
    _tag_checks(checks)
    checks.append((pl.col(BAD_PAYLOAD), "invalid_payload", "payload", pl.lit(NON_FINITE_PAYLOAD)))
    size = pl.col("_payload_size") if "_payload_size" in schema else pl.col("payload").bin.size()
    checks.append(
        (
            size > MAX_PAYLOAD_BYTES,
            "payload_too_large",
            "payload",
            pl.format(
                f"payload is {{}} bytes, over the {MAX_PAYLOAD_BYTES:,}-byte limit",
                _thousands(size),
            ),
        )
    )

    kind = pl.lit(None, dtype=pl.String)
    fld = pl.lit(None, dtype=pl.String)
    msg = pl.lit(None, dtype=pl.String)
    for cond, k, f, m in reversed(checks):  # the first failing check wins
        cond = cond.fill_null(False)
        kind = pl.when(cond).then(pl.lit(k)).otherwise(kind)
        fld = pl.when(cond).then(pl.lit(f) if isinstance(f, str) else f).otherwise(fld)
        msg = pl.when(cond).then(m).otherwise(msg)
    # negative out-of-range expected bytes stay shown as given; ints are cast after checks
    int_cast = [
        pl.when(pl.col(n).is_finite() & (pl.col(n) == pl.col(n).floor()))
        .then(pl.col(n))
        .cast(pl.Int64, strict=False)
        .alias(n)
        if n in float_ints
        else pl.col(n).cast(pl.Int64, strict=False)  # past-range UInt64 rows have failed
        for n in _INTS
    ]
    out = df.with_columns(
        kind.alias("error_kind"), fld.alias("error_field"), msg.alias("error")
    ).drop(BAD_TEXT, BAD_PAYLOAD)
    out = out.with_columns(pl.col("on_dependency_failure").str.strip_chars().str.to_lowercase())
    out = out.with_columns(
        pl.col("group").fill_null(pl.lit(defaults.group, dtype=pl.String)),
        pl.when(pl.col(BAD_PRIORITY).is_null())  # a bad tier name shows as no priority
        .then(pl.col("priority").fill_null(defaults.priority))
        .alias("priority"),
        pl.col("on_duplicate")
        .str.strip_chars()
        .str.to_lowercase()
        .fill_null(defaults.on_duplicate.value),
        *(pl.col(n).fill_null(0) for n in EXPECTED_FIELDS),
    ).with_columns(int_cast)
    out = out.drop(BAD_PRIORITY)
    return out.with_row_index("index", offset=offset).with_columns(pl.col("index").cast(pl.Int64))


def _dependency_checks(checks: list[tuple[pl.Expr, str, str | pl.Expr, pl.Expr]]) -> None:
    """The checks of ``depends_on`` and ``on_dependency_failure`` (as
    :func:`check_dependencies` and :func:`check_policy`: the first bad item, by position)."""
    deps = pl.col("depends_on")
    ids = pl.element().struct.field("id")
    keys = pl.element().struct.field("key")
    kind = "invalid_dependency"

    def first(cond: pl.Expr) -> tuple[pl.Expr, pl.Expr]:
        found = deps.list.eval(cond.fill_null(False))
        return found.list.any(), found.list.arg_max()

    checks.append(
        (
            deps.list.len() > MAX_DEPENDENCIES,
            kind,
            "depends_on",
            pl.format(
                f"depends_on has {{}} items, over the {MAX_DEPENDENCIES:,} limit",
                _thousands(deps.list.len()),
            ),
        )
    )
    for cond, message in (
        (pl.element().is_null() | (ids.is_null() & keys.is_null()), "depends_on[{}] is null"),
        (keys == "", "depends_on[{}] is an empty string"),
        (keys.str.contains("\x00", literal=True), "depends_on[{}] is not valid UTF-8 text"),
        (
            keys.str.len_chars() > MAX_KEY_LENGTH,
            f"depends_on[{{}}] is longer than {MAX_KEY_LENGTH:,} characters",
        ),
    ):
        bad, at = first(cond)
        checks.append((bad, kind, "depends_on", pl.format(message, at)))
    bad, at = first(ids < 1)
    checks.append(
        (
            bad,
            kind,
            "depends_on",
            pl.format(
                "depends_on[{}] must be a task id of at least 1, got {}",
                at,
                deps.list.get(at, null_on_oob=True).struct.field("id"),
            ),
        )
    )
    policy = pl.col("on_dependency_failure")
    checks.append(
        (
            policy.is_not_null()
            & ~policy.str.strip_chars().str.to_lowercase().is_in(DEPENDENCY_POLICIES),
            "invalid_dependency_policy",
            "on_dependency_failure",
            pl.format(
                f"on_dependency_failure must be one of {', '.join(DEPENDENCY_POLICIES)}; "
                "got '{}'",
                policy,
            ),
        )
    )


def _tag_checks(checks: list[tuple[pl.Expr, str, str | pl.Expr, pl.Expr]]) -> None:
    """The checks of ``tags`` (as :func:`check_tags`, the same rules in the same order):
    its canonical form is a list of ``{key, value}`` (a null value already dropped)."""
    tags = pl.col("tags")
    keys = pl.element().struct.field("key")
    values = pl.element().struct.field("value")

    def anywhere(cond: pl.Expr) -> pl.Expr:
        return tags.list.eval(cond.fill_null(False)).list.any()

    count = tags.list.len()
    checks.append(
        (
            count > MAX_TAGS,
            INVALID_TAGS,
            "tags",
            pl.format(f"tags has {{}} pairs, over the {MAX_TAGS} limit", _thousands(count)),
        )
    )
    checks.append(
        (
            anywhere(keys.is_null() | (keys == "")),
            INVALID_TAGS,
            "tags",
            pl.lit("tags has an empty key"),
        )
    )
    nul = keys.str.contains("\x00", literal=True) | values.str.contains("\x00", literal=True)
    checks.append((anywhere(nul), INVALID_TAGS, "tags", pl.lit(NUL_MESSAGE.format("tags"))))
    checks.append(
        (
            anywhere(keys.str.len_chars() > MAX_TAG_KEY_LENGTH),
            INVALID_TAGS,
            "tags",
            pl.lit(f"tags has a key longer than {MAX_TAG_KEY_LENGTH:,} characters"),
        )
    )
    long_value = tags.list.eval((values.str.len_chars() > MAX_TAG_VALUE_LENGTH).fill_null(False))
    checks.append(
        (
            long_value.list.any(),
            INVALID_TAGS,
            "tags",
            pl.format(
                f"tags['{{}}'] is longer than {MAX_TAG_VALUE_LENGTH:,} characters",
                tags.list.get(long_value.list.arg_max(), null_on_oob=True).struct.field("key"),
            ),
        )
    )
    twice = tags.list.eval(keys.is_duplicated())
    checks.append(
        (
            twice.list.any(),
            INVALID_TAGS,
            "tags",
            pl.format(
                "tags has the key '{}' twice",
                tags.list.get(twice.list.arg_max(), null_on_oob=True).struct.field("key"),
            ),
        )
    )


def _thousands(expr: pl.Expr) -> pl.Expr:
    """An integer expression formatted with thousands separators (as ``f"{n:,}"``)."""
    s = expr.cast(pl.String)
    rev = s.str.reverse()
    grouped = rev.str.replace_all(r"(\d{3})", "$1,").str.strip_suffix(",").str.reverse()
    return grouped


# --------------------------------------------------------------------------- arguments
# The arguments of the stores' public methods: a bad one raises
# ``SchedulerError(kind="invalid_argument")`` whose message begins with its name.


def _bad_argument(message: str) -> SchedulerError:
    return SchedulerError(message, kind="invalid_argument")


def whole_number(value: Any, name: str, *, low: int, high: int = MAX_INT64) -> int:
    """``value`` as an ``int`` within ``low..high`` (what a 64-bit column holds, by
    default): a Python or numpy integer, never a bool."""
    number: int | None = None
    if not isinstance(value, bool) and type(value).__name__ != "bool_":
        with contextlib.suppress(TypeError):
            number = operator.index(value)
    if number is None:
        raise _bad_argument(f"{name} must be a whole number, not {type(value).__name__} {value!r}")
    if number < low:
        raise _bad_argument(f"{name} must be a whole number >= {low}, not {number}")
    if number > high:
        raise _bad_argument(f"{name} must be a whole number <= {high:,}, not {number:,}")
    return number


def tags_argument(value: Any) -> list[tuple[str, str]] | None:
    """A filter on tags: a ``dict`` of string keys to string values, as ``(key, value)``
    pairs sorted by key (``None`` and ``{}``: no filter)."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise _bad_argument(
            f"tags must be a dict of strings to strings, got {type(value).__name__}"
        )
    pairs: list[tuple[str, str]] = []
    for key, text in value.items():
        if not (isinstance(key, str) and isinstance(text, str)):
            raise _bad_argument(f"tags must be a dict of strings to strings, got {key!r}: {text!r}")
        pairs.append((key, text))
    return sorted(pairs) or None


def task_id_argument(value: Any, name: str = "task_id") -> int:
    """A task id: a whole number a store's id column can hold (an id that names no task
    is not an error: the method says it found none)."""
    return whole_number(value, name, low=-MAX_INT64 - 1)


def text_argument(value: Any, name: str) -> str:
    """A non-empty string naming something in the store (a group, an owner)."""
    if not isinstance(value, str) or not value:
        raise _bad_argument(f"{name} must be a non-empty string, not {value!r}")
    if "\x00" in value:
        raise _bad_argument(NUL_MESSAGE.format(name))
    return value


def clock_argument(value: Any, name: str = "now") -> float:
    """A time given to a store method, as Unix seconds (``None``: the clock now)."""
    if value is None:
        return time.time()
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 <= value <= MAX_TIME
    ):
        raise _bad_argument(
            f"{name} must be Unix seconds (a finite number, 1970 to 9999), not {value!r}"
        )
    return float(value)
