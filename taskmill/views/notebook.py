"""Jupyter views of taskmill: the :class:`BatchOutcome` widget, a batch followed to its
end (:class:`BatchWidget`) and a live queue view.

Imported lazily (``import taskmill`` does not import ipywidgets).  Nothing here ships a
whole outcome to the browser: tables are rendered one page at a time on the kernel side.
"""

from __future__ import annotations

import html
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import ipywidgets as w
import polars as pl

from ..batch.outcome import ACTIONS, VIEWS, view_frame  # data, not widgets: kept importable here
from ..model import (
    ACTIVE_STATUSES,
    FINAL_STATUSES,
    Aging,
    StoreClosed,
    StoreRecovered,
    StoreUnavailable,
    TaskCancelled,
    TaskCompleted,
    TaskFailed,
    TaskSuperseded,
)
from .waits import group_waits, queue_now, reported

if TYPE_CHECKING:
    from ..batch.outcome import BatchOutcome
    from ..batch.status import BatchStatus
    from ..scheduler import Scheduler

__all__ = ["VIEWS", "BatchWidget", "OutcomeWidget", "QueueWidget", "page_html"]
_COLOURS = {
    "submitted": "#2e7d32",
    "deduplicated": "#757575",
    "superseded": "#ef6c00",
    "upgraded": "#1565c0",
    "failed": "#c62828",
}
PAGE_SIZE = 20


def _shown(value: object, thousands: bool) -> str:
    if value is None:
        return "–" if thousands else ""
    if thousands and isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return html.escape(str(value))


def page_html(
    frame: pl.DataFrame,
    css_class: str = "taskmill-page",
    *,
    thousands: bool = False,
    aligned: bool = False,
) -> str:
    """One page of a table as HTML (values escaped; counts with thousands separators
    when ``thousands``).  ``aligned``: each header is aligned as its column's values
    are, numbers to the right and text to the left (a browser centres a header
    otherwise, whatever its column holds)."""
    pad = "padding:2px 10px"  # columns apart, so a header reads as its column's
    styles = [
        (
            f" style='text-align:{'right' if dtype.is_numeric() else 'left'};{pad}'"
            if aligned
            else ""
        )
        for dtype in frame.dtypes
    ]
    cells = list(zip(frame.columns, styles, strict=True))
    head = "".join(f"<th{style}>{html.escape(c)}</th>" for c, style in cells)
    body = "".join(
        "<tr>"
        + "".join(f"<td{s}>{_shown(v, thousands)}</td>" for v, s in zip(row, styles, strict=True))
        + "</tr>"
        for row in frame.iter_rows()
    )
    return f"<table class='{css_class}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _without_zero(summary: pl.DataFrame) -> pl.DataFrame:
    """A breakdown without the actions no row took (they would only widen it)."""
    zero = [a for a in ACTIONS if a in summary.columns and summary[a].fill_null(0).eq(0).all()]
    return summary.drop(zero)


class PagedTable(w.VBox):
    """A sortable, paginated table of a polars frame; only the current page is rendered."""

    def __init__(
        self, frame: pl.DataFrame, *, page_size: int = PAGE_SIZE, css_class: str = "taskmill-table"
    ) -> None:
        self.frame = frame
        self.page_size = page_size
        self.page = 0
        self.sort_by = w.Dropdown(
            options=frame.columns,
            value=frame.columns[0],
            description="sort by",
            layout=w.Layout(width="220px"),
        )
        fit = w.Layout(width="auto", flex="0 0 auto")  # a label is never cut short
        self.descending = w.ToggleButton(
            value=False, description="descending", icon="sort-amount-desc", layout=fit
        )
        self.prev = w.Button(description="◀ previous", layout=fit)
        self.next = w.Button(description="next ▶", layout=fit)
        self.label = w.HTML()
        self.body = w.HTML()
        self.body.add_class(css_class)
        self.prev.on_click(lambda _: self.go(self.page - 1))
        self.next.on_click(lambda _: self.go(self.page + 1))
        self.sort_by.observe(lambda _: self.go(0), names="value")
        self.descending.observe(lambda _: self.go(0), names="value")
        controls = w.HBox(
            [self.sort_by, self.descending, self.prev, self.next, self.label],
            layout=w.Layout(flex_flow="row wrap"),
        )
        super().__init__([controls, self.body])
        self.go(0)

    @property
    def pages(self) -> int:
        return max(1, -(-self.frame.height // self.page_size))

    def current(self) -> pl.DataFrame:
        """The rows on screen."""
        ordered = self.frame.sort(
            self.sort_by.value,
            descending=self.descending.value,
            nulls_last=True,
            maintain_order=True,
        )
        return ordered.slice(self.page * self.page_size, self.page_size)

    def go(self, page: int) -> None:
        self.page = min(max(page, 0), self.pages - 1)
        self.body.value = page_html(self.current())
        self.label.value = f"page {self.page + 1} of {self.pages} · {self.frame.height:,} rows"
        self.prev.disabled = self.page == 0
        self.next.disabled = self.page >= self.pages - 1


def _bars(counts: dict[str, int], total: int) -> str:
    rows = []
    for action in ACTIONS:
        n = counts[action]
        width = 0 if total == 0 else max(1 if n else 0, round(300 * n / total))
        rows.append(
            f"<tr class='taskmill-action-{action}'><td>{action}</td>"
            f"<td style='text-align:right'><b>{n:,}</b></td>"
            f"<td><div style='background:{_COLOURS[action]};width:{width}px;height:12px'>"
            f"</div></td></tr>"
        )
    return "<table class='taskmill-counts'>" + "".join(rows) + "</table>"


class OutcomeWidget(w.VBox):
    """What a batch did: counts with bars, breakdowns, and paginated detail tabs.

    ``frame(view)`` takes any view out as a polars DataFrame; the export button puts
    the view on screen in the outcome's ``exported`` (``out.exported`` for a displayed
    ``out``), and in this widget's :attr:`exported`.
    """

    def __init__(self, outcome: BatchOutcome, *, page_size: int = PAGE_SIZE) -> None:
        self.outcome = outcome
        counts = outcome.counts()
        marker = (
            "<span class='taskmill-plan-marker' style='color:#ef6c00'><b>plan — "
            "nothing written</b></span> · "
            if outcome.planned
            else ""
        )
        took = f" in {outcome.elapsed:.2f} s" if outcome.elapsed is not None else ""
        headline = w.HTML(
            # tab labels at their full width ("already queued (1,300)" is longer than a
            # default tab): a style scoped to this widget's class
            "<style>.taskmill-outcome-widget .lm-TabBar-tab{flex:0 0 auto !important;"
            "min-width:fit-content !important;max-width:none !important}"
            ".taskmill-breakdowns td:first-child{overflow-wrap:anywhere}</style>"
            f"<div class='taskmill-headline'>{marker}<b>{len(outcome):,}"
            f"</b> rows{took}</div>" + _bars(counts, len(outcome))
        )
        headline.add_class("taskmill-outcome")
        # the two breakdowns sit side by side when they fit and wrap below when they do
        # not; a table wider than its box scrolls inside it instead of overflowing
        boxed = w.Layout(overflow="auto", max_width="100%", margin="0 24px 8px 0")
        by = w.Box(
            [
                w.HTML(
                    "<b>by group</b>"
                    + page_html(_without_zero(outcome.summary("group")), thousands=True),
                    layout=boxed,
                ),
                w.HTML(
                    "<b>by priority</b>"
                    + page_html(_without_zero(outcome.summary("priority")), thousands=True),
                    layout=boxed,
                ),
            ],
            layout=w.Layout(display="flex", flex_flow="row wrap", width="100%"),
        )
        by.add_class("taskmill-breakdowns")
        self.tables: dict[str, PagedTable] = {}
        children = []
        for view in VIEWS:
            table = PagedTable(
                view_frame(outcome, view),
                page_size=page_size,
                css_class=f"taskmill-view-{view.replace(' ', '-')}",
            )
            self.tables[view] = table
            children.append(w.VBox([w.HTML(f"<i>{VIEWS[view]}</i>"), table]))
        self.tabs = w.Tab(children=children)
        for i, view in enumerate(VIEWS):
            self.tabs.set_title(i, f"{view} ({self.tables[view].frame.height:,})")
        self.exported: pl.DataFrame | None = None
        export = w.Button(
            description="take this view out",
            icon="download",
            layout=w.Layout(width="auto", flex="0 0 auto"),  # never squeezed by the note
        )
        self.export_note = w.HTML()
        export.on_click(lambda _: self._export())
        super().__init__([headline, by, self.tabs, w.HBox([export, self.export_note])])
        self.add_class("taskmill-outcome-widget")

    def frame(self, view: str | None = None) -> pl.DataFrame:
        """A view as a DataFrame (the tab on screen when ``view`` is None)."""
        if view is None:
            view = list(VIEWS)[self.tabs.selected_index or 0]
        return view_frame(self.outcome, view)

    def _export(self) -> None:
        view = list(VIEWS)[self.tabs.selected_index or 0]
        self.exported = self.frame()
        self.outcome.exported = self.exported
        self.export_note.value = (
            f"{self.exported.height:,} rows of “{html.escape(view)}” in "
            "<code>out.exported</code> (a polars DataFrame; <code>out</code> being the "
            "outcome shown here)"
        )


class QueueWidget(w.VBox):
    """A live view of a running scheduler: counts by status, per group, throughput,
    recent failures and store trouble, redrawn from its events at most ``refresh``
    times a second (the last events of a burst are drawn too, at the end of the
    throttle window), and a last time when the scheduler closes, so that its final
    state is the store's.

    What it says is what is so: "running" counts attempts whose code runs (those whose
    result is still being written are "recording"), "paused" counts the tasks held by a
    paused group too, tasks/s is the rate of the last ``rate_window`` seconds, and the
    recent failures are tasks that failed for good or wait to be retried, never attempts
    that were retried and then completed.  Displayed, it carries a plain-HTML copy of
    itself (updated when the scheduler closes) for frontends and saved notebooks that
    cannot show a widget."""

    def __init__(
        self, sched: Scheduler, *, refresh: float = 2.0, rate_window: float = 15.0
    ) -> None:
        self.sched = sched
        self.min_interval = 1.0 / refresh
        self.rate_window = rate_window
        self.status = w.HTML()
        self.groups = w.HTML()
        self.progress = w.HTML()
        self.failures = w.HTML()
        self.counts: dict[str, int] = {}
        #: The counts as shown: running without those being recorded, paused groups'
        #: tasks as paused.
        self.shown: dict[str, int] = {}
        self.completed = 0
        #: Tasks whose last attempt failed, most recent first: id -> (error, will retry).
        self.failed: dict[int, tuple[str, bool]] = {}
        self.recent: list[str] = []
        self.trouble: str | None = None
        self.started = time.monotonic()
        self.finished: deque[float] = deque()  # when each recent task finished (monotonic)
        self.updates = 0
        self.stopped = False
        self.closed = False
        self._display_id: str | None = None
        super().__init__([self.status, self.groups, self.progress, self.failures])
        self.add_class("taskmill-queue-widget")
        self._task: Any = None

    def start(self) -> QueueWidget:
        """Begin following the scheduler's events (needs a running event loop)."""
        import asyncio

        self._events = self.sched.subscribe()
        self.sched._on_close(self._closing)
        self._task = asyncio.get_running_loop().create_task(self._follow())
        return self

    def _note(self, event: object) -> None:
        """Take one event into the view's state (drawn at the next refresh)."""
        if isinstance(event, TaskCompleted):
            self.completed += 1
            self.finished.append(time.monotonic())
            self.failed.pop(event.task_id, None)  # retried and then completed: no failure
        elif isinstance(event, TaskFailed):
            self.failed.pop(event.task_id, None)
            self.failed = {event.task_id: (event.error, event.will_retry), **self.failed}
            if not event.will_retry:
                self.finished.append(time.monotonic())
        elif isinstance(event, TaskCancelled | TaskSuperseded):
            if self.failed.get(event.task_id, ("", False))[1]:  # its retry will not come
                del self.failed[event.task_id]
        elif isinstance(event, StoreUnavailable):
            self.trouble = f"store unavailable for {event.operation}: {event.error}"
        elif isinstance(event, StoreRecovered):
            self.trouble = None
        if len(self.failed) > 100:  # only the most recent are shown
            self.failed = dict(list(self.failed.items())[:100])

    async def _follow(self) -> None:
        import asyncio

        events = self._events
        await self.refresh()
        last = time.monotonic()
        dirty = False
        while not self.stopped:
            wait = None if not dirty else max(0.0, last + self.min_interval - time.monotonic())
            try:
                event = await asyncio.wait_for(anext(events), wait)
            except TimeoutError:  # the end of a burst: draw what came in the window
                event = None
            except StopAsyncIteration:
                break
            if event is not None:
                self._note(event)
            dirty = dirty or event is not None
            now = time.monotonic()
            if dirty and now - last >= self.min_interval and not self.stopped:
                last = now
                dirty = False
                await self.refresh()

    async def _closing(self) -> None:
        """The scheduler is closing, every result recorded: draw the final state, and
        put it in the saved output's HTML copy too."""
        self.trouble = None if self.sched.store_error is None else self.trouble
        self.closed = True
        await self.refresh()
        self.stopped = True
        if self._display_id is not None:
            from IPython.display import update_display

            update_display(self._bundle(), raw=True, display_id=self._display_id)

    def rate(self) -> float:
        """Tasks finished per second over the last ``rate_window`` seconds (from the
        first of them, so a burst after a quiet spell shows its own rate)."""
        now = time.monotonic()
        while self.finished and self.finished[0] < now - self.rate_window:
            self.finished.popleft()
        if not self.finished:
            return 0.0
        return len(self.finished) / max(now - self.finished[0], 0.5)

    def _recording(self) -> dict[int, str | None]:
        """This scheduler's attempts whose code has returned and whose result is being
        written, with their group."""
        running = getattr(self.sched, "_running", {})
        return {tid: a.task.group for tid, a in list(running.items()) if a.settling}

    async def _tracebacks(self, task_ids: list[int]) -> dict[int, tuple[int, str | None]]:
        """The number and traceback of each task's last failed attempt, from the store
        (a store that keeps no attempts: none)."""
        import asyncio

        attempts = getattr(self.sched.store, "attempts", None)
        if not task_ids or attempts is None:
            return {}
        rows = await asyncio.to_thread(attempts, task_ids, outcome="failed")
        found: dict[int, tuple[int, str | None]] = {}
        for row in rows.iter_rows(named=True):  # oldest first: the last one stays
            found[row["task_id"]] = (row["attempt"], row["traceback"])
        return found

    async def refresh(self) -> None:
        """Re-read the store's counts and redraw."""
        import asyncio

        store = self.sched.store
        attempts = dict(getattr(self.sched, "_running", {}))
        recording = self._recording()
        groups = await asyncio.to_thread(store.stats, "group")
        paused_now = await asyncio.to_thread(store.tasks, status="paused", limit=_PROGRESS_READ)
        preempted = paused_now["preempted_at"].is_not_null().sum()
        paused = await asyncio.to_thread(getattr(store, "paused_groups", dict))
        later = await asyncio.to_thread(getattr(store, "waiting_for_start", dict))
        retry = await asyncio.to_thread(getattr(store, "waiting_for_retry", dict))
        held = dict(getattr(self.sched, "held", {}))
        # an attempt being recorded before or after the read, or gone (recorded) since,
        # may still be "running" in what was read: none of those runs code now
        gone = {tid: a.task.group for tid, a in attempts.items() if tid not in self.sched._running}
        recording = {**recording, **self._recording(), **gone}
        # one read for both the totals and the per-group table, so they always agree
        counts = {s: int(groups[s].sum()) for s in (*ACTIVE_STATUSES, *FINAL_STATUSES)}
        self.counts = counts
        names = groups["group"].to_list()
        by_group = [sum(1 for g in recording.values() if g == name) for name in names]
        store_running = groups["running"].to_list()
        running = [max(0, n - r) for n, r in zip(store_running, by_group, strict=True)]
        pending = zip(names, groups["pending"].to_list(), strict=True)
        held_by_pause = sum(n for g, n in pending if g is not None and g in paused)
        shown = dict(counts)
        shown["running"] = sum(running)
        shown["pending"] -= held_by_pause
        shown["paused"] += held_by_pause
        shown_recording = counts["running"] - shown["running"]
        self.shown = {**shown, "recording": shown_recording} if shown_recording else shown
        items = []
        for k, v in shown.items():
            if k in _WORKFLOW_ONLY and not v:
                continue  # statuses of dependencies and child tasks: shown once they occur
            item = f"{k} <b>{v:,}</b>"
            if k == "running" and counts["running"] > shown["running"]:
                item += (
                    f"</span> · <span class='taskmill-count-recording' style='white-space:"
                    f"nowrap'>recording <b>{counts['running'] - shown['running']:,}</b>"
                )
            if k == "paused" and paused:
                item += f" ({len(paused)} group{'s' if len(paused) > 1 else ''})"
            if k == "paused" and preempted:
                item += f" ({preempted:,} preempted)"
            items.append(
                f"<span class='taskmill-count-{k}' style='white-space:nowrap'>{item}</span>"
            )
        # a closed scheduler runs nothing: no rate, which would only decay from the last one
        rate = "<i>scheduler closed</i>" if self.closed else f"{self.rate():,.0f} tasks/s"
        items.append(f"<span class='taskmill-rate' style='white-space:nowrap'>{rate}</span>")
        trouble = (
            ""
            if self.trouble is None
            else f"<div class='taskmill-trouble' style='color:#c62828'>⚠ "
            f"{html.escape(self.trouble)} — retrying, nothing is lost</div>"
        )
        status = "<div class='taskmill-live'>" + " · ".join(items) + "</div>" + trouble
        waits = group_waits(groups, paused, held, later, retry)
        status += held_types_html(held)
        schedules = await asyncio.to_thread(getattr(store, "schedules", lambda: None))
        if schedules is not None and schedules.height:
            status += schedules_html(schedules)
        aging = await asyncio.to_thread(getattr(store, "aging", lambda: None))
        if aging is not None:
            status += aging_html(aging)
        self.status.value = status
        self.groups.value = page_html(
            groups.select("group", "pending", "completed", "failed")
            .insert_column(2, pl.Series("running", running, dtype=pl.Int64))
            .with_columns(pl.Series("waiting on", waits, dtype=pl.String)),
            aligned=True,
        )
        # what running attempts reported (ctx.progress), stored: any worker's
        busy = await asyncio.to_thread(store.tasks, status="running", limit=_PROGRESS_READ)
        self.progress.value = progress_html(busy)
        shown_failures = list(self.failed.items())[:5]
        traces = await self._tracebacks([tid for tid, _ in shown_failures])
        self.recent = []
        lines = []
        for tid, (error, again) in shown_failures:
            number, trace = traces.get(tid, (None, None))
            tried = "" if number is None else f" (attempt {number})"
            text = f"#{tid}{tried}: {error} — " + ("failed, will be retried" if again else "failed")
            self.recent.append(text)
            line = html.escape(text).replace("will be retried", "<i>retrying</i>")
            if trace:  # the last frames, one click away
                line = (
                    "<details class='taskmill-failure'><summary>"
                    f"{line}</summary><pre style='margin:0 0 0 1.5em;font-size:90%'>"
                    f"{html.escape(trace)}</pre></details>"
                )
            else:
                line = f"<div class='taskmill-failure'>{line}</div>"
            lines.append(line)
        self.failures.value = "<b>recent failures</b>" + "".join(lines) if lines else ""
        self.updates += 1

    def to_html(self) -> str:
        """What the view shows now, as plain HTML."""
        parts = (self.status.value, self.groups.value, self.progress.value, self.failures.value)
        return "<div class='taskmill-queue'>" + "".join(parts) + "</div>"

    def __repr__(self) -> str:
        counts = " · ".join(f"{k} {v:,}" for k, v in self.shown.items())
        counts += " · scheduler closed" if self.closed else ""
        return f"<taskmill live view: {counts or 'not drawn yet'}>"

    def _bundle(self) -> dict[str, Any]:
        """The widget's view with an HTML and a text copy of what it shows."""
        shown: Any = super()._repr_mimebundle_() or {}
        view: dict[str, Any] = dict(shown[0] if isinstance(shown, tuple) else shown)
        return {**view, "text/plain": repr(self), "text/html": self.to_html()}

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        """The MIME bundle: the widget view plus HTML and text fallbacks."""
        return self._bundle()

    def _ipython_display_(self) -> None:
        """Display under a display id, so that the final state replaces the HTML copy
        in the output when the scheduler closes (a saved notebook shows the numbers)."""
        from uuid import uuid4

        from IPython.display import display

        self._display_id = self._display_id or uuid4().hex
        display(self._bundle(), raw=True, display_id=self._display_id)


def held_types_html(held: dict[str, str]) -> str:
    """The task types held back (the ``type:T`` keys of ``held``) with why, as a line;
    ``""`` when none is."""
    by_type = ", ".join(f"{k[5:]} ({why})" for k, why in held.items() if k.startswith("type:"))
    if not by_type:
        return ""
    return f"<div class='taskmill-held-types'>held task types: {html.escape(by_type)}</div>"


def schedules_html(schedules: pl.DataFrame) -> str:
    """One line on the store's schedules (a ``store.schedules()`` frame): how many run and
    are paused, and which one comes next, when."""
    running = schedules.filter(~pl.col("paused") & pl.col("next_at").is_not_null())
    paused = schedules.height - schedules.filter(~pl.col("paused")).height
    text = f"schedules <b>{schedules.height:,}</b>"
    if paused:
        text += f" ({paused:,} paused)"
    if running.height:
        name, at = running.sort("next_at").select("name", "next_at").row(0)
        text += f" · next: {html.escape(str(name))} at {at:%Y-%m-%d %H:%M:%S} UTC"
    return f"<div class='taskmill-schedules'>{text}</div>"


def aging_html(aging: Aging) -> str:
    """One line on the store's aging policy: how fast a waiting task's effective priority
    improves, and how far."""
    every = aging.every.total_seconds()
    pace = (
        f"{every / 3600:g} h"
        if every >= 3600
        else (f"{every / 60:g} min" if every >= 60 else f"{every:g} s")
    )
    return (
        "<div class='taskmill-aging'>aging: a waiting task's priority improves by "
        f"<b>{aging.step}</b> every {pace}, down to <b>{aging.floor}</b> "
        "(<code>tasks()</code> shows each one's <code>effective_priority</code>)</div>"
    )


#: Running tasks the live view reads for their progress, and shows at most.
_PROGRESS_READ = 200
_PROGRESS_SHOWN = 8


def progress_html(running: pl.DataFrame, shown: int = _PROGRESS_SHOWN) -> str:
    """A bar per running task of ``running`` (a ``tasks()`` frame) that reported
    progress, most advanced first, at most ``shown`` of them; ``""`` when none did."""
    shown_first = reported(running)
    if not shown_first.height:
        return ""
    rows = []
    for row in shown_first.head(shown).iter_rows(named=True):
        share = 100 * float(row["progress"])
        name = html.escape(str(row["dedup_key"] or row["task_type"]))
        note = html.escape(row["progress_message"] or "")
        rows.append(
            "<div class='taskmill-progress-row' style='display:flex;gap:8px;"
            "align-items:center;white-space:nowrap'>"
            f"<span style='width:14em;overflow:hidden;text-overflow:ellipsis'>#{row['id']} "
            f"{name}</span>"
            "<span style='display:inline-block;width:120px;height:10px;background:#e0e0e0;"
            "border-radius:3px'><span style='display:block;height:10px;border-radius:3px;"
            f"background:#1565c0;width:{share:.0f}%'></span></span>"
            f"<span>{share:.0f}% {note}</span></div>"
        )
    more = shown_first.height - min(shown, shown_first.height)
    tail = f"<div><i>and {more:,} more</i></div>" if more else ""
    return "<div class='taskmill-progress'><b>progress</b>" + "".join(rows) + tail + "</div>"


#: Statuses only dependencies and child tasks give: the live view leaves them out at zero.
_WORKFLOW_ONLY = ("blocked", "waiting")


def _follow(
    stop: threading.Event,
    every: float,
    read: Callable[[], bool],
    line: w.HTML,
    closed: str,
    what: str,
) -> None:
    """A widget's refresh thread: ``read()`` every ``every`` seconds until it says it is
    done, ``stop`` is set, or the store is closed (``closed`` added to ``line``); any other
    error is said on ``line`` (cannot read ``what``) and tried again."""
    while not stop.wait(every):
        try:
            if read():
                return
        except StoreClosed:
            line.value += f"<div style='color:#757575'>{closed}</div>"
            return
        except Exception as exc:  # a store gone away: say so, try again later
            line.value = (
                f"<span style='color:#c62828'>cannot read {what}: {html.escape(str(exc))}</span>"
            )


def outcome_bundle(
    outcome: BatchOutcome,
    include: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """The MIME bundle of an outcome: the widget view plus HTML and text fallbacks."""
    bundle = {"text/plain": str(outcome), "text/html": outcome._repr_html_()}
    return _with_widget(OutcomeWidget(outcome), bundle)


def _with_widget(widget: w.Widget, bundle: dict[str, Any]) -> dict[str, Any]:
    """``bundle`` (HTML and text) with ``widget``'s view added."""
    # ipywidgets leaves _repr_mimebundle_ unannotated (inferred: dict[str, str] | None);
    # IPython's display protocol lets it return a bundle or a (bundle, metadata) pair
    widget_bundle = (
        cast(
            "dict[str, Any] | tuple[dict[str, Any], dict[str, Any]] | None",
            widget._repr_mimebundle_(),
        )
        or {}
    )
    if isinstance(widget_bundle, tuple):
        widget_bundle = widget_bundle[0]
    bundle.update({k: v for k, v in widget_bundle.items() if k != "text/plain"})
    return bundle


#: Colours of a batch's statuses in its widget (the outcome's palette where they meet).
_STATUS_COLOURS = {
    "blocked": "#8d6e63",
    "pending": "#90a4ae",
    "running": "#1565c0",
    "paused": "#f9a825",
    "completed": "#2e7d32",
    "failed": "#c62828",
    "cancelled": "#757575",
    "superseded": "#ef6c00",
    "expired": "#6a1b9a",
}

#: Failed tasks a batch widget lists.
BATCH_FAILURES_SHOWN = 5


class StoreWidget(w.VBox):
    """A store's queue, live, from the store alone (no scheduler in this kernel): its
    tasks by status, its groups (pending, running, ended, and what their tasks wait on:
    a pause, the limits that held them back at the live workers' last claims, start
    times, a retry's backoff, dependencies, children), the rate tasks ended at over the
    last minute, the progress running tasks reported, its schedules and aging.  Active
    tasks are all counted; ended ones over the last hour (``store.recent()``: history is
    read by finish time, never whole).  Whoever
    runs the tasks — workers on this machine or others — it shows what the store says.
    :meth:`refresh` reads it again; with ``refresh`` seconds a background thread does so
    until the store is closed or :meth:`stop`."""

    def __init__(self, store: Any, *, refresh: float | None = 2.0) -> None:
        self.store = store
        self.status = w.HTML()
        self.groups = w.HTML()
        self.progress = w.HTML()
        self.counts: dict[str, int] = {}
        self.updates = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        super().__init__([self.status, self.groups, self.progress])
        self.add_class("taskmill-store-widget")
        self.refresh()
        if refresh is not None:
            closed = "the store was closed: this is the last reading"
            self._thread = threading.Thread(
                target=_follow,
                args=(self._stop, refresh, self._read, self.status, closed, "the store"),
                name="taskmill-store-widget",
                daemon=True,
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop refreshing by itself."""
        self._stop.set()

    def _read(self) -> bool:
        """One reading of the refresh thread (never done: a store's queue goes on)."""
        self.refresh()
        return False

    def refresh(self) -> None:
        """Read the store again and redraw."""
        store = self.store
        now = queue_now(store)
        paused, groups = now.paused, now.groups
        counts = self.counts = now.counts
        # the rate: tasks that ended in the last full minute and this one so far, by the
        # store's clock (history's finish times: any worker's)
        minutes = store.throughput(2).select(pl.sum_horizontal(*FINAL_STATUSES)).to_series()
        rate = float(minutes.sum()) / (60 + store.now() % 60)
        items = [
            f"<span class='taskmill-count-{k}' style='white-space:nowrap'>{k} <b>{v:,}</b>"
            + (
                f" ({len(paused)} group{'s' if len(paused) > 1 else ''})"
                if k == "paused" and paused
                else ""
            )
            + "</span>"
            for k, v in counts.items()
            if not (k in _WORKFLOW_ONLY and not v)
        ]
        if rate:
            items.append(f"<span class='taskmill-rate'>{rate:,.1f} tasks/s ended</span>")
        shown_active = sum(1 for k in ACTIVE_STATUSES if counts[k] or k not in _WORKFLOW_ONLY)
        items[shown_active] = "<i>ended in the last hour:</i> " + items[shown_active]
        status = "<div class='taskmill-live'>" + " · ".join(items) + "</div>"
        status += held_types_html(now.held)
        schedules = store.schedules()
        if schedules.height:
            status += schedules_html(schedules)
        aging = store.aging()
        if aging is not None:
            status += aging_html(aging)
        self.status.value = status
        self.groups.value = page_html(
            groups.select("group", "pending", "running", "completed", "failed").with_columns(
                pl.Series("waiting on", now.waits, dtype=pl.String)
            ),
            aligned=True,
        )
        self.progress.value = progress_html(store.tasks(status="running", limit=_PROGRESS_READ))
        self.updates += 1


class BatchWidget(w.VBox):
    """A batch followed to its end: a progress bar (its tasks that ended, of all it
    inserted), its tasks by status, their bytes, and its first failures.

    :meth:`refresh` (or the button) reads the store again; with ``refresh`` seconds it
    does so by itself from a background thread until the batch is done (or
    :meth:`stop`), so a cell that displays it stays live while the notebook goes on."""

    def __init__(self, status: BatchStatus, *, refresh: float | None = None) -> None:
        self.status = status
        self.headline = w.HTML(layout=w.Layout(margin="0 12px 0 0"))
        self.bar = w.IntProgress(min=0, layout=w.Layout(width="300px", flex="0 0 auto"))
        # the share and the button keep their full width beside the bar, never wrapped
        self.fraction = w.HTML(layout=w.Layout(flex="0 0 auto", margin="0 12px 0 0"))
        self.counts = w.HTML()
        self.failures = w.HTML()
        self.button = w.Button(
            description="refresh", icon="refresh", layout=w.Layout(width="auto", flex="0 0 auto")
        )
        self.button.on_click(lambda _: self.refresh())
        self.updates = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        super().__init__(
            [
                w.HBox([self.headline, self.button], layout=w.Layout(align_items="center")),
                w.HBox([self.bar, self.fraction], layout=w.Layout(align_items="center")),
                self.counts,
                self.failures,
            ]
        )
        self.add_class("taskmill-batch-widget")
        self._draw()
        if refresh is not None and not status.done:
            closed = (
                "its store was closed: this is the last reading (display "
                "<code>store.batch(id)</code> again from an open store)"
            )
            self._thread = threading.Thread(
                target=_follow,
                args=(
                    self._stop,
                    refresh,
                    lambda: self.refresh().done,
                    self.headline,
                    closed,
                    "the batch",
                ),
                name="taskmill-batch-widget",
                daemon=True,
            )
            self._thread.start()

    def refresh(self) -> BatchStatus:
        """Read the batch again and redraw; the new status."""
        self.status = self.status.refresh()
        self._draw()
        return self.status

    def stop(self) -> None:
        """Stop refreshing by itself."""
        self._stop.set()

    def _draw(self) -> None:
        s = self.status
        self.updates += 1
        name = f" <i>{html.escape(s.name)}</i>" if s.name else ""
        if s.done:
            took = ""
            if s.finished_at is not None:
                took = f" in {(s.finished_at - s.created_at).total_seconds():,.1f} s"
            state = f"<span style='color:#2e7d32'>done</span>{took}"
        else:
            state = "<span style='color:#1565c0'>in progress</span>"
        created = s.created_at.strftime("%Y-%m-%d %H:%M:%S UTC")
        self.headline.value = (
            f"<div class='taskmill-batch-headline'><b>batch {s.batch_id}</b>{name} · {state}"
            f" · submitted {created}</div>"
        )
        self.bar.max = max(s.total, 1)
        self.bar.value = s.ended
        # blue while it runs; once done green, or amber when some of its tasks failed (they
        # are listed below): one failure in thousands must not paint the whole bar red
        self.bar.bar_style = (
            "info" if not s.done else "warning" if s.counts["failed"] else "success"
        )
        self.fraction.value = (
            f"&nbsp;<b>{s.ended:,}</b> of {s.total:,} ended ({100 * s.fraction:.1f}%)"
        )
        rows = []
        for status, n in s.counts.items():
            if not n:
                continue
            width = max(1, round(300 * n / max(s.total, 1)))
            colour = _STATUS_COLOURS.get(status, "#9e9e9e")
            rows.append(
                f"<tr class='taskmill-status-{status}'><td>{status}</td>"
                f"<td style='text-align:right'><b>{n:,}</b></td>"
                f"<td><div style='background:{colour};width:{width}px;height:12px'></div></td>"
                "</tr>"
            )
        size = (  # only when its tasks declared any (expected_*_bytes)
            f"<div class='taskmill-batch-bytes'>bytes: <b>{_bytes(s.completed_bytes)}</b> of "
            f"{_bytes(s.expected_bytes)} completed</div>"
            if s.expected_bytes
            else ""
        )
        self.counts.value = (
            "<table class='taskmill-batch-counts'>" + "".join(rows) + "</table>" + size
        )
        self.failures.value = self._failures_html()

    def _failures_html(self) -> str:
        s = self.status
        if not s.counts["failed"] or s._source is None:
            return ""
        history = getattr(s._source, "history", None)
        if history is None:
            return ""
        failed = history(batch_id=s.batch_id, status="failed", limit=BATCH_FAILURES_SHOWN)
        items = "".join(
            f"<li>task <code>{row['id']}</code> ({html.escape(row['task_type'])}"
            + (f", key <code>{html.escape(row['dedup_key'])}</code>" if row["dedup_key"] else "")
            + f"): <span style='color:#c62828'>{html.escape(row['last_error'] or '–')}</span></li>"
            for row in failed.iter_rows(named=True)
        )
        more = s.counts["failed"] - failed.height
        tail = (
            f"<div>… {more:,} more: <code>store.history(batch_id={s.batch_id}, "
            "status='failed')</code></div>"
            if more > 0
            else ""
        )
        return f"<b>failed for good</b><ul class='taskmill-batch-failures'>{items}</ul>{tail}"


def _bytes(n: int) -> str:
    """``n`` bytes in decimal units (``50.1 GB``)."""
    from rich.filesize import decimal

    return decimal(n)


def batch_bundle(status: BatchStatus) -> dict[str, Any]:
    """The MIME bundle of a batch's status: its widget view plus HTML and text."""
    return _with_widget(
        BatchWidget(status), {"text/plain": str(status), "text/html": status._repr_html_()}
    )
