"""What the commands share: the ``--db`` and ``--json`` options (and a way to group
options), opening a store that exists, the console, the duration and time parameters, and a
few ways of saying things."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import click

from ..model import SchedulerError

DB_OPTION = click.option(
    "--db",
    default="tasks.db",
    envvar="TASKMILL_DB",
    metavar="FILE|URL",
    help="The task store: a SQLite file, or a postgresql:// URL shared by workers on many "
    "machines (env TASKMILL_DB).",
)
JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


def options(*decorators: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Click options and arguments as one decorator, applied in the order given (the order
    ``--help`` lists them in): options that several commands share are declared once."""

    def apply(fn: Any) -> Any:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


def _shown(db: str) -> str:
    """The store location ``db`` fit to print: a PostgreSQL URL's password hidden."""
    from ..store.location import redact

    return redact(db)


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    # data is printed as data: no markup, no emoji codes (a group named "[/bold]" or
    # "[link=…]" is text, never an instruction to the terminal)
    return Console(stderr=stderr, highlight=False, soft_wrap=True, markup=False, emoji=False)


def _echo_json(db: str, **fields: Any) -> None:
    """Print a command's ``--json`` answer: the store it ran on (a password hidden), then
    ``fields``."""
    click.echo(json.dumps({"db": _shown(db), **fields}))


def _existing(db: str) -> Any:
    """The store at ``db`` opened for a command that reads (or changes only what is there):
    a SQLite file that does not exist is an error, never created empty."""
    from ..store import TaskStore
    from ..store.location import parse_location

    where = parse_location(db)
    if where.path is not None and not where.path.exists():
        raise SchedulerError(
            f"{_shown(db)} does not exist: no task store there (check --db; "
            "`taskmill submit` creates one)",
            kind="store",
        )
    return TaskStore.open(db)


def _pairs(values: tuple[str, ...], option: str) -> list[tuple[str, str]]:
    out = []
    for value in values:
        left, sep, right = value.partition("=")
        if not sep or not left or not right:
            raise click.BadParameter(f"{value!r} is not of the form A=B", param_hint=option)
        out.append((left, right))
    return out


def _tag_pairs(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict:
    """``--tag KEY=VALUE`` (repeatable) as the ``tags`` filter of the Python API (a value
    may hold ``=``; the same key twice is refused)."""
    tags: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{value!r} is not of the form KEY=VALUE", ctx, param)
        if key in tags:
            raise click.BadParameter(f"the key {key!r} is given twice", ctx, param)
        tags[key] = text
    return tags


#: ``--tag KEY=VALUE``: only the tasks carrying every pair given (``tasks``, ``history``,
#: ``cancel``).
TAG_OPTION = click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="KEY=VALUE",
    callback=_tag_pairs,
    help="Only tasks carrying this tag (repeatable: every pair given).",
)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)


class Duration(click.ParamType):
    """A length of time such as ``30s``, ``15m``, ``12h``, ``7d``, ``2w`` or ``1d12h``."""

    name = "DURATION"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta:
        if isinstance(value, timedelta):
            return value
        text = str(value).strip().replace(" ", "")
        parts = _DURATION.findall(text)
        if not text or "".join(n + u for n, u in parts).lower() != text.lower():
            self.fail(
                f"{value!r} is not a duration: a number and a unit, s, m, h, d or w "
                "(30s, 15m, 12h, 7d, 1d12h)",
                param,
                ctx,
            )
        return timedelta(seconds=sum(float(n) * _UNITS[u.lower()] for n, u in parts))


class When(click.ParamType):
    """A time: a duration (``2h``, ``1d12h``; what it is counted from is the option's
    business) or an ISO time (``2026-11-28T09:00``; naive means UTC)."""

    name = "WHEN"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> timedelta | dt.datetime:
        if isinstance(value, timedelta | dt.datetime):
            return value
        text = str(value).strip()
        if _DURATION.match(text):
            try:
                return Duration().convert(text, param, ctx)
            except click.BadParameter:
                pass
        try:
            return dt.datetime.fromisoformat(text)
        except ValueError:
            self.fail(
                f"{value!r} is neither a duration (30m, 2h, 1d) nor an ISO time "
                "(2026-11-28T09:00, naive means UTC)",
                param,
                ctx,
            )


def _summary(outcome: Any, db: str) -> dict[str, Any]:
    by_group = outcome.summary("group")
    return {
        "db": _shown(db),
        "planned": outcome.planned,
        "batch_id": outcome.batch_id,
        "rows": len(outcome),
        "elapsed_s": round(outcome.elapsed or 0.0, 4),
        "counts": outcome.counts(),
        "by_group": by_group.to_dicts(),
        "failed": [{"index": i, "kind": e.kind, "error": str(e)} for i, e in outcome.failed[:20]],
    }


def _json_value(value: Any) -> Any:
    """A value of a frame row as JSON takes it: a datetime as ISO text."""
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
