"""Which candidates a claim may start: group limits, byte budgets and rate limits,
decided once for both stores.

A store's claim reads the running tasks per group (count and expected bytes) and the rate
buckets inside its claim transaction — serialised against every other claim on the
store — then walks candidates in dispatch order and asks :meth:`Picker.take` of each.  A
candidate that may not start holds back its group (or, for a task type's rate limit, its
type) for the rest of the claim, so a later, smaller task of the same group never
overtakes it: order within a group is kept, and other groups go on.

Byte figures are Python ints here, summed exactly however large: each of the four
``expected_*_bytes`` may be up to 2^63 - 1, so a task's total, and a group's, can pass 64
bits.  The stores hand their sums over exactly too — PostgreSQL adds them as ``numeric``,
SQLite (64-bit integers only) as two sums of 32-bit halves, a candidate's four figures
added here — so no figure that passed validation can make a claim fail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..model import RateLimit, SchedulerError

__all__ = ["Claimed", "Limits", "Picker", "check_limits"]

#: What held a group back, as the live widget shows it.
HELD_BY_LIMIT = "group limit"
HELD_BY_BUDGET = "byte budget"
HELD_BY_RATE = "rate limit"
#: Seconds a stored bucket time may lie ahead of a claim's clock (readings of the store's
#: clock differ by a round trip); further ahead, it came from a wrong clock.
BUCKET_FUTURE_SLACK = 1.0


class Claimed(list[Any]):
    """The tasks a claim started (a list), with what the claim learned on the way:
    ``wait``, the seconds until a rate limit that held tasks back lets one more through
    (``None``: none did), and ``held``, the groups held back and by what."""

    wait: float | None
    held: dict[str, str]

    def __init__(
        self,
        tasks: Iterable[Any] = (),
        *,
        wait: float | None = None,
        held: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(tasks)
        self.wait = wait
        self.held = dict(held or {})


@dataclass(frozen=True)
class Limits:
    """Everything a claim counts besides the claim's own size."""

    group_limits: Mapping[str, int] = field(default_factory=dict)
    default_group_limit: int | None = None
    byte_budgets: Mapping[str, int] = field(default_factory=dict)
    rate_limits: Mapping[str, RateLimit] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        """Whether a claim must count anything (else it just takes the first tasks)."""
        return bool(
            self.group_limits
            or self.default_group_limit is not None
            or self.byte_budgets
            or self.rate_limits
        )

    @property
    def counts_running(self) -> bool:
        """Whether the running tasks per group must be read."""
        return bool(self.group_limits or self.default_group_limit is not None or self.byte_budgets)


def check_limits(
    group_limits: Mapping[str, int] | None,
    default_group_limit: int | None,
    byte_budgets: Mapping[str, int] | None,
    rate_limits: Mapping[str, RateLimit] | None,
) -> Limits:
    """The limits as one value; a bad one raises a ``SchedulerError`` naming it."""

    def whole(value: Any, what: str, low: int) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise SchedulerError(
                f"{what} must be a whole number >= {low}"
                + (" (0 holds the group)" if low == 0 else "")
                + f", not {value!r}",
                kind="invalid_argument",
            )
        return int(value)

    groups = {
        g: whole(n, f"the concurrency limit of group {g!r}", 0)
        for g, n in (group_limits or {}).items()
    }
    default = (
        None
        if default_group_limit is None
        else whole(default_group_limit, "the concurrency limit of default_group_concurrency", 0)
    )
    budgets = {
        g: whole(b, f"the byte budget of group {g!r}", 1) for g, b in (byte_budgets or {}).items()
    }
    rates: dict[str, RateLimit] = {}
    for key, limit in (rate_limits or {}).items():
        if not isinstance(key, str) or not key.startswith(("group:", "type:")) or key[-1] == ":":
            raise SchedulerError(
                f"rate limit key {key!r}: use 'group:NAME' or 'type:TASK_TYPE'",
                kind="invalid_argument",
            )
        if not isinstance(limit, RateLimit):
            raise SchedulerError(
                f"rate limit {key!r} must be a taskmill.RateLimit, not {type(limit).__name__}",
                kind="invalid_argument",
            )
        rates[key] = limit
    return Limits(groups, default, budgets, rates)


class Picker:
    """The bookkeeping of one claim (see the module docstring).

    ``running``: per group, ``(tasks, expected bytes)`` running now, whoever runs them;
    ``buckets``: per rate-limit key, ``(tokens, updated_at)`` as stored (a key with no
    row starts full); ``now``: the claim's clock.
    """

    def __init__(
        self,
        limits: Limits,
        running: Mapping[str, tuple[int, int]],
        buckets: Mapping[str, tuple[float, float]],
        now: float,
    ) -> None:
        self.limits = limits
        self.now = now
        self.count = {g: int(n) for g, (n, _) in running.items()}
        self.bytes = {g: int(b or 0) for g, (_, b) in running.items()}
        self.tokens: dict[str, float] = {}
        self._as_of: dict[str, float] = {}  # the time each bucket's count is for
        for key, rate in limits.rate_limits.items():
            held, at = buckets.get(key, (rate.capacity, now))
            if at > now + BUCKET_FUTURE_SLACK:
                # written by a clock far ahead (a worker of a taskmill before buckets
                # went by the store's clock): from now on, or the bucket stays frozen
                at = now
            # a claim whose reading of the store's clock is a little behind the bucket's
            # adds nothing, and never moves the bucket's time back (which would count a
            # refill twice)
            refill = max(0.0, now - at) * rate.per_second
            self.tokens[key] = min(rate.capacity, held + refill)
            self._as_of[key] = max(at, now)
        self.held: dict[str, str] = {}  # group -> what held it back
        self.held_types: set[str] = set()
        self._short: set[str] = set()  # rate keys that held a task back

    # ------------------------------------------------------------------ before the walk

    def _cap(self, group: str) -> int | None:
        return self.limits.group_limits.get(group, self.limits.default_group_limit)

    def blocked_groups(self) -> set[str]:
        """Groups none of whose tasks may start now: at their limit, over their budget,
        or with an empty bucket (a candidate query leaves them out).  They count as
        held back (a group with nothing pending is simply not waiting)."""
        for group, n in self.count.items():
            cap = self._cap(group)
            if cap is not None and n >= cap:
                self.held.setdefault(group, HELD_BY_LIMIT)
            budget = self.limits.byte_budgets.get(group)
            if budget is not None and n and self.bytes.get(group, 0) >= budget:
                self.held.setdefault(group, HELD_BY_BUDGET)
        for group, cap in self.limits.group_limits.items():
            if cap == 0:
                self.held.setdefault(group, HELD_BY_LIMIT)
        for key, tokens in self.tokens.items():
            if key.startswith("group:") and tokens < 1:
                self._short.add(key)
                self.held.setdefault(key[len("group:") :], HELD_BY_RATE)
        return set(self.held)

    def blocked_types(self) -> set[str]:
        """Task types whose bucket is empty (they count as held back)."""
        for key, tokens in self.tokens.items():
            if key.startswith("type:") and tokens < 1:
                self._short.add(key)
                self.held_types.add(key[len("type:") :])
        return set(self.held_types)

    # ------------------------------------------------------------------ the walk

    def take(self, task_type: str, group: str | None, size: int) -> bool:
        """Whether a candidate of ``task_type`` in ``group`` expecting ``size`` bytes may
        start; if so it is counted, else what held it back holds its group (or type)."""
        if group is not None and group in self.held:
            return False
        if task_type in self.held_types:
            return False
        if group is not None:
            cap = self._cap(group)
            if cap is not None and self.count.get(group, 0) >= cap:
                self.held[group] = HELD_BY_LIMIT
                return False
            budget = self.limits.byte_budgets.get(group)
            busy = self.count.get(group, 0) > 0  # a task over the budget runs alone
            if budget is not None and busy and self.bytes.get(group, 0) + size > budget:
                self.held[group] = HELD_BY_BUDGET
                return False
        keys = [k for k in (f"type:{task_type}", f"group:{group}") if k in self.tokens]
        if group is None:
            keys = [k for k in keys if k.startswith("type:")]
        for key in keys:
            if self.tokens[key] < 1:
                self._short.add(key)
                if key.startswith("type:"):
                    self.held_types.add(task_type)
                else:
                    self.held[key[len("group:") :]] = HELD_BY_RATE  # the group
                return False
        for key in keys:
            self.tokens[key] -= 1
        if group is not None:
            self.count[group] = self.count.get(group, 0) + 1
            self.bytes[group] = self.bytes.get(group, 0) + size
        return True

    # ------------------------------------------------------------------ after the walk

    def buckets(self) -> list[tuple[str, float, float]]:
        """Every bucket as ``(key, tokens, updated_at)`` to store."""
        return [(key, tokens, self._as_of[key]) for key, tokens in sorted(self.tokens.items())]

    def wait(self) -> float | None:
        """Seconds until every rate limit that held a task back has a token again."""
        waits = [
            (1 - self.tokens[key]) / self.limits.rate_limits[key].per_second for key in self._short
        ]
        return max(0.0, min(waits)) if waits else None

    def outcome(self, tasks: Iterable[Any]) -> Claimed:
        """The claim's result, with its wait and the groups held back."""
        held = dict(self.held)
        for key in self._short:
            if key.startswith("type:"):
                held.setdefault(key, HELD_BY_RATE)
        return Claimed(tasks, wait=self.wait(), held=held)
