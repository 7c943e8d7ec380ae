"""A batch followed as a unit of work: :class:`BatchStatus`, what ``store.batch(id)``
returns (see ``TaskStore.batch`` and ``TaskStore.batches``)."""

from __future__ import annotations

import datetime as dt
import html
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from .. import display

__all__ = ["ACTIVE", "BATCH_STATUSES", "ENDED", "BatchStatus"]

#: The statuses a batch counts its tasks under, active ones first, then how they ended.
ACTIVE: Final = ("blocked", "pending", "running", "paused")
ENDED: Final = ("completed", "failed", "cancelled", "superseded", "expired")
BATCH_STATUSES: Final = ACTIVE + ENDED


class _Source(Protocol):
    """Where a status can be read again (a :class:`~taskmill.TaskStore`)."""

    def batch(self, batch_id: int) -> BatchStatus: ...


@dataclass(frozen=True, eq=False)
class BatchStatus:
    """One batch as the store holds it, read at one moment.

    ``counts`` has every status of :data:`BATCH_STATUSES` (zero counts included): the
    tasks the batch inserted, by where they are now — a superseded task counts under
    ``superseded`` in its own batch, its successor in the batch that inserted it; a parent
    waiting for its children counts as ``running`` (its work is not over).
    ``expected_bytes`` sums the four expected-bytes figures over all of them,
    ``completed_bytes`` over the completed ones.  ``done`` once the submission ended and
    none of its tasks is active; ``finished_at`` is then when the last one ended.

    :meth:`refresh` reads it again; in Jupyter it displays as a progress widget
    (:meth:`widget`), elsewhere as text or HTML.
    """

    batch_id: int
    name: str | None
    created_at: dt.datetime
    finished_at: dt.datetime | None
    done: bool
    total: int
    counts: dict[str, int]
    expected_bytes: int
    completed_bytes: int
    _source: _Source | None = field(default=None, repr=False)

    @property
    def active(self) -> int:
        """How many of its tasks are still active (blocked, pending, running, paused)."""
        return sum(self.counts[s] for s in ACTIVE)

    @property
    def ended(self) -> int:
        """How many of its tasks have ended, however they ended."""
        return sum(self.counts[s] for s in ENDED)

    @property
    def fraction(self) -> float:
        """The share of its tasks that have ended (1.0 for a batch of none)."""
        return 1.0 if self.total == 0 else self.ended / self.total

    def refresh(self) -> BatchStatus:
        """The batch as the store holds it now (a new status)."""
        if self._source is None:
            raise ValueError("this BatchStatus was not read from a store")
        return self._source.batch(self.batch_id)

    def widget(self, *, refresh: float | None = None) -> Any:
        """The notebook view (ipywidgets): a progress bar, the counts, the bytes and what
        failed.  ``refresh``: seconds between readings of the store while the batch is
        not done (``None``: only when its button is pressed)."""
        return display.batch_widget(self, refresh=refresh)

    # ------------------------------------------------------------------ display

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """In a Jupyter kernel: the widget, with HTML and text for other frontends."""
        if display.in_kernel():
            return display.batch_bundle(self)
        return {"text/plain": str(self), "text/html": self._repr_html_()}

    def _headline(self) -> str:
        name = f" {self.name!r}" if self.name else ""
        state = "done" if self.done else "in progress"
        return f"batch {self.batch_id}{name}: {state}, {self.ended:,} of {self.total:,} ended"

    def __str__(self) -> str:
        lines = [self._headline()]
        shown = [(s, n) for s, n in self.counts.items() if n]
        lines += [f"  {status:<11}{n:>10,}" for status, n in shown]
        if self.expected_bytes:  # only when its tasks declared any
            done, expected = self.completed_bytes, self.expected_bytes
            lines.append(f"  bytes       {done:,} of {expected:,} completed")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        size = (
            f"<div>bytes: {self.completed_bytes:,} of {self.expected_bytes:,} completed</div>"
            if self.expected_bytes
            else ""
        )
        rows = "".join(
            f"<tr><td>{s}</td><td style='text-align:right'>{n:,}</td></tr>"
            for s, n in self.counts.items()
            if n
        )
        return (
            f"<div><b>{html.escape(self._headline())}</b>"
            f"<progress value='{self.ended}' max='{max(self.total, 1)}'></progress>"
            f"<table>{rows}</table>{size}</div>"
        )
