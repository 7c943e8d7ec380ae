"""The dashboard: a Starlette application over one :class:`~taskmill.TaskStore`.

Pages are rendered on the server (Jinja2, every value HTML-escaped); the queue page
refreshes its live part with htmx, served from this package like every other asset.
Each action is a form: a GET shows what it will do and asks to confirm; only the POST
that confirmation sends (with the session's CSRF token) changes the store, and none
does when the app is read-only.
"""

from __future__ import annotations

import datetime as dt
import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from ..model import ACTIVE_STATUSES, SchedulerError
from ..store.schedules import every_text
from . import pages
from .security import (
    CSRF_FIELD,
    LOOPBACK_NAMES,
    SecurityHeaders,
    TokenGate,
    csrf_token,
    same_origin,
    valid_csrf,
)

if TYPE_CHECKING:
    from ..store import TaskStore

__all__ = ["ACTIONS", "create_app"]

_HERE = Path(__file__).parent


def _when(value: Any) -> str:
    """A time as the pages show it: UTC to the second ('' for none)."""
    if value is None:
        return ""
    if isinstance(value, int | float):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _short(value: Any) -> str:
    """A time in a listing: month, day and time of day, UTC ('' for none)."""
    full = _when(value)
    return full[5:] if len(full) == 19 else full


def _ago(value: Any, now: dt.datetime) -> str:
    """How long before ``now`` a time was ('in …' when it is ahead)."""
    if value is None:
        return ""
    if isinstance(value, int | float):
        value = dt.datetime.fromtimestamp(value, dt.UTC)
    seconds = (now - value).total_seconds()
    ahead = seconds < 0
    seconds = abs(seconds)
    if seconds < 90:
        text = f"{seconds:.0f} s"
    elif seconds < 5400:
        text = f"{seconds / 60:.0f} min"
    elif seconds < 172800:
        text = f"{seconds / 3600:.0f} h"
    else:
        text = f"{seconds / 86400:.0f} days"
    return f"in {text}" if ahead else f"{text} ago"


def _num(value: Any) -> str:
    """A count with thousands separators ('' for none)."""
    return "" if value is None else f"{int(value):,}"


def _bytes(value: Any) -> str:
    """A size in bytes, in the largest unit that keeps it at or above 1."""
    n = float(value or 0)
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "B" else f"{n:,.1f} {unit}"
        n /= 1000
    return f"{n:,.1f} PB"  # pragma: no cover - the loop returns at TB


def _templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(_HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, short=_short, ago=_ago, num=_num, bytes=_bytes, every=every_text)
    env.globals.update(
        statuses=pages.STATUSES, active_count=len(ACTIVE_STATUSES), urlencode=urlencode
    )
    return Jinja2Templates(env=env)


@dataclass(frozen=True)
class Action:
    """One thing the dashboard can do to the store: what the confirmation asks, what the
    button says, the form fields it takes, and the call (returning what to tell)."""

    question: str
    button: str
    fields: tuple[str, ...]
    run: Callable[[TaskStore, dict[str, str]], str]
    danger: bool = False


def _task_id(values: dict[str, str]) -> int:
    try:
        return int(values["task"])
    except (KeyError, ValueError):
        raise SchedulerError(
            f"task must be a task id, not {values.get('task')!r}", kind="invalid_argument"
        ) from None


def _on_task(
    call: Callable[[TaskStore, int], object], done: str, undone: str
) -> Callable[[TaskStore, dict[str, str]], str]:
    """An action on the task of the form's ``task``: ``call(store, id)``, then ``done`` or
    ``undone`` (by what it returned) with the id in place of ``{}``."""

    def run(store: TaskStore, values: dict[str, str]) -> str:
        tid = _task_id(values)
        return (done if call(store, tid) else undone).format(tid)

    return run


def _on_name(
    field: str, call: Callable[[TaskStore, str], object], done: str, undone: str
) -> Callable[[TaskStore, dict[str, str]], str]:
    """An action on the group or schedule the form's ``field`` names: as :func:`_on_task`
    (``call`` returning ``None``: always done)."""

    def run(store: TaskStore, values: dict[str, str]) -> str:
        name = values[field]
        return (undone if call(store, name) is False else done).format(name)

    return run


def _retry(store: TaskStore, v: dict[str, str]) -> str:
    tid = _task_id(v)
    rows = store.retry_failed(ids=[tid]).to_polars()
    if not rows.height:
        return f"Task {tid} is not a failure in history: nothing submitted."
    row = rows.row(0, named=True)
    if row["action"] == "failed":
        return f"Task {tid} could not be retried: {row['error']}"
    return f"Task {tid} retried: task {row['task_id']} ({row['action']})."


#: Every action, by the name its URL carries.
ACTIONS: dict[str, Action] = {
    "cancel-task": Action(
        "Cancel task {task}? It moves to history as cancelled; tasks that depend on it "
        "follow their failure policy, and its child tasks are cancelled too.",
        "Cancel the task",
        ("task",),
        _on_task(
            lambda s, t: s.cancel(t),
            "Task {} cancelled.",
            "Task {} was not active: nothing cancelled.",
        ),
        danger=True,
    ),
    "retry-task": Action(
        "Retry failed task {task}? It is submitted again as a new task, with its type, key, "
        "group, priority and payload (deduplicated if its key is active again).",
        "Retry the task",
        ("task",),
        _retry,
    ),
    "pause-task": Action(
        "Pause task {task}? It stays in the queue, held back from dispatch until resumed.",
        "Pause the task",
        ("task",),
        _on_task(
            lambda s, t: s.pause(t), "Task {} paused.", "Task {} was not pending: not paused."
        ),
    ),
    "resume-task": Action(
        "Resume task {task}? It goes back to pending, in its place in the queue.",
        "Resume the task",
        ("task",),
        _on_task(
            lambda s, t: s.resume(t),
            "Task {} resumed.",
            "Task {} was not paused: nothing resumed.",
        ),
    ),
    "pause-group": Action(
        "Pause group {group}? No task of it is dispatched by any worker until it is "
        "resumed; its running tasks go on.",
        "Pause the group",
        ("group",),
        _on_name("group", lambda s, g: s.pause_group(g), "Group {} paused.", ""),
        danger=True,
    ),
    "resume-group": Action(
        "Resume group {group}? Its pending tasks are dispatched again.",
        "Resume the group",
        ("group",),
        _on_name(
            "group", lambda s, g: s.resume_group(g), "Group {} resumed.", "Group {} was not paused."
        ),
    ),
    "pause-schedule": Action(
        "Pause schedule {schedule}? It submits nothing until resumed.",
        "Pause the schedule",
        ("schedule",),
        _on_name(
            "schedule", lambda s, n: s.pause_schedule(n), "Schedule {} paused.", "No schedule {}."
        ),
        danger=True,
    ),
    "resume-schedule": Action(
        "Resume schedule {schedule}? Its next occurrence is the next one from now; the "
        "ones missed while paused are not replayed.",
        "Resume the schedule",
        ("schedule",),
        _on_name(
            "schedule",
            lambda s, n: s.resume_schedule(n),
            "Schedule {} resumed.",
            "No schedule {}.",
        ),
    ),
}


def _quoted(values: dict[str, str]) -> dict[str, str]:
    """A confirmation's values as its question shows them: a task id as it is, a name
    between quotation marks, exactly as given (never Python's ``repr``)."""
    return {k: v if k == "task" else f"“{pages.shown(v)}”" for k, v in values.items()}


def _local(target: str | None, fallback: str = "/") -> str:
    """``target`` when it is a path of this site (never another host), else ``fallback``."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return fallback
    return target


class Dashboard:
    """The routes of one app, over ``store``."""

    def __init__(self, store: TaskStore, *, read_only: bool, refresh: float) -> None:
        self.store = store
        self.read_only = read_only
        self.refresh = refresh
        self.templates = _templates()

    def render(
        self, request: Request, name: str, context: dict[str, Any], status_code: int = 200
    ) -> HTMLResponse:
        flash = request.session.pop("flash", None)
        base = {
            "request": request,
            "read_only": self.read_only,
            "refresh": self.refresh,
            "store_name": self.store.driver.describe(),
            "flash": flash,
            "csrf": csrf_token(request),
            "csrf_field": CSRF_FIELD,
            "here": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
        }
        return self.templates.TemplateResponse(
            request, name, {**base, **context}, status_code=status_code
        )

    def _failure(self, request: Request, exc: SchedulerError, status_code: int) -> HTMLResponse:
        return self.render(request, "error.html", {"message": str(exc)}, status_code)

    # ------------------------------------------------------------------ pages

    def queue(self, request: Request) -> Response:
        fragment = request.query_params.get("fragment") == "1"
        try:
            snap = pages.queue_snapshot(self.store)
        except SchedulerError as exc:
            if fragment:
                return self.render(request, "_unreachable.html", {"message": str(exc)})
            return self._failure(request, exc, 503)
        return self.render(request, "_queue.html" if fragment else "queue.html", {"q": snap})

    def tasks(self, request: Request) -> Response:
        filters = pages.Filters.of(request.query_params)
        page = pages.tasks_page(self.store, filters)
        return self.render(
            request,
            "tasks.html",
            {"f": filters, "page": page, "rows_per_page": pages.PAGE_ROWS},
            status_code=400 if filters.errors else 200,
        )

    def _missing(self, request: Request, what: str, text: str) -> HTMLResponse:
        message = (
            f"No {what} {pages.shown(text)} in this store"
            + (" (never submitted, or pruned from history)." if what == "task" else ".")
            + ("" if pages.whole_id(text) else f" A {what} id is a whole number from 1.")
        )
        return self.render(request, "error.html", {"message": message}, 404)

    def task(self, request: Request) -> Response:
        text = request.path_params["task_id"]
        tid = pages.whole_id(text)
        detail = None if tid is None else pages.task_detail(self.store, tid)
        if detail is None:
            return self._missing(request, "task", text)
        return self.render(request, "task.html", detail)

    def batches(self, request: Request) -> Response:
        frame = self.store.batches(limit=200)
        return self.render(request, "batches.html", {"batches": frame.to_dicts()})

    def batch(self, request: Request) -> Response:
        text = request.path_params["batch_id"]
        bid = pages.whole_id(text)
        try:
            status = None if bid is None else self.store.batch(bid)
        except SchedulerError as exc:
            if exc.kind != "unknown_batch":
                raise
            status = None
        if bid is None or status is None:
            return self._missing(request, "batch", text)
        failed = self.store.browse(batch_id=bid, status=["failed", "expired"], limit=20)
        return self.render(request, "batch.html", {"b": status, "failures": failed.to_dicts()})

    def schedules(self, request: Request) -> Response:
        frame = self.store.schedules(details=True)
        return self.render(request, "schedules.html", {"schedules": frame.to_dicts()})

    def workers(self, request: Request) -> Response:
        frame = self.store.workers()
        now = dt.datetime.fromtimestamp(self.store.now(), dt.UTC)
        return self.render(request, "workers.html", {"workers": frame.to_dicts(), "now": now})

    # ------------------------------------------------------------------ actions

    def _action(self, request: Request) -> tuple[str, Action] | None:
        name = request.path_params["name"]
        found = ACTIONS.get(name)
        return None if found is None else (name, found)

    def confirm(self, request: Request) -> Response:
        """GET: what the action will do, and the form that does it."""
        found = self._action(request)
        if found is None:
            return self.render(request, "error.html", {"message": "No such action."}, 404)
        name, action = found
        values = {f: request.query_params.get(f, "") for f in action.fields}
        nxt = _local(request.query_params.get("next"))
        missing = [f for f, v in values.items() if not v]
        if missing:
            message = f"Which {missing[0]}? This action needs one (?{missing[0]}=…)."
            return self.render(request, "error.html", {"message": message}, 400)
        return self.render(
            request,
            "confirm.html",
            {
                "name": name,
                "action": action,
                "question": action.question.format(**_quoted(values)),
                "values": values,
                "next": nxt,
            },
            status_code=403 if self.read_only else 200,
        )

    async def act(self, request: Request) -> Response:
        """POST: the action, once its form proved it came from this dashboard."""
        found = self._action(request)
        if found is None:
            return self.render(request, "error.html", {"message": "No such action."}, 404)
        action = found[1]
        if self.read_only:
            message = "This dashboard is read-only (taskmill ui --read-only): nothing was changed."
            return self.render(request, "error.html", {"message": message}, 403)
        form = await request.form()
        if not same_origin(request):
            message = (
                "This form was sent from another site, not from this dashboard's pages: "
                "nothing was changed."
            )
            return self.render(request, "error.html", {"message": message}, 403)
        if not valid_csrf(request, form.get(CSRF_FIELD)):
            message = (
                "This form did not come from this dashboard's session (a missing or stale "
                "CSRF token): nothing was changed. Reload the page and try again."
            )
            return self.render(request, "error.html", {"message": message}, 403)
        values = {f: str(form.get(f, "")) for f in action.fields}
        try:
            said = await run_in_threadpool(action.run, self.store, values)
        except SchedulerError as exc:
            return self._failure(request, exc, 400)
        request.session["flash"] = said
        return RedirectResponse(_local(str(form.get("next", "")) or None), status_code=303)


def create_app(
    store: TaskStore,
    *,
    read_only: bool = False,
    token: str | None = None,
    refresh: float = 2.0,
    secret_key: str | None = None,
    hosts: Sequence[str] | None = None,
) -> Starlette:
    """The dashboard over ``store`` as an ASGI application (serve it with uvicorn, or
    ``taskmill ui``).

    ``read_only``: no action is offered and every POST is refused (403).  ``token``:
    every request must carry it (``Authorization: Bearer``, or ``?token=`` once, then
    the session cookie), else 401.  ``refresh``: seconds between readings of the queue
    page's live part (0: no refresh).  ``secret_key`` signs the session cookie (default:
    a random one, so sessions end with the process).  Without a token, a request must
    name the dashboard's host as this machine does (127.0.0.1, localhost, ``[::1]``, or
    one of ``hosts``), else 400: a page of another site whose name was pointed at
    127.0.0.1 (DNS rebinding) reaches nothing."""
    if not (isinstance(refresh, int | float) and math.isfinite(refresh) and refresh >= 0):
        raise SchedulerError(
            f"refresh must be a number of seconds, 0 or more, not {refresh!r}",
            kind="invalid_argument",
        )
    if token is not None and not token.strip():
        raise SchedulerError("a token must not be blank", kind="invalid_argument")
    board = Dashboard(store, read_only=read_only, refresh=refresh)
    routes = [
        Route("/", board.queue, name="queue"),
        Route("/tasks", board.tasks, name="tasks"),
        Route("/tasks/{task_id}", board.task, name="task"),
        Route("/batches", board.batches, name="batches"),
        Route("/batches/{batch_id}", board.batch, name="batch"),
        Route("/schedules", board.schedules, name="schedules"),
        Route("/workers", board.workers, name="workers"),
        Route("/actions/{name}", board.confirm, methods=["GET"], name="confirm"),
        Route("/actions/{name}", board.act, methods=["POST"], name="act"),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    names = ["*"] if token else [*LOOPBACK_NAMES, *(hosts or ())]
    middleware = [
        Middleware(SecurityHeaders),
        Middleware(TrustedHostMiddleware, allowed_hosts=names, www_redirect=False),
        Middleware(
            SessionMiddleware,
            secret_key=secret_key or secrets.token_urlsafe(32),
            session_cookie="taskmill_ui",
            max_age=None,
            same_site="strict",
        ),
        Middleware(TokenGate, token=token),
    ]
    app = Starlette(routes=routes, middleware=middleware)
    app.state.dashboard = board
    return app
