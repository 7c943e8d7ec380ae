"""Running tasks: ``worker`` (a scheduler in the foreground) and ``demo``."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import re
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..model import SchedulerError
from ..scheduler import Scheduler
from .common import DB_OPTION, JSON_OPTION, Duration, _console, _echo_json, _pairs


def _load_executor(spec: str, what: str = "executor") -> Callable[..., Any]:
    module_name, sep, attr = spec.partition(":")
    if not sep:
        raise click.BadParameter(f"{spec!r} is not module:function", param_hint=f"--{what}")
    try:
        module = importlib.import_module(module_name)
        fn = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise SchedulerError(f"cannot load {what} {spec}: {exc}", kind="invalid") from exc
    if not callable(fn):
        raise SchedulerError(f"{what} {spec} is not callable", kind="invalid")
    return fn


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_SIZE_UNITS.update({"kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40})


def _bytes(text: str, option: str) -> int:
    """A size: a number of bytes, or with a unit (500MB, 2GiB)."""
    found = _SIZE.fullmatch(text.strip())
    if found is None:
        raise click.BadParameter(
            f"{text!r} is not a size: bytes, or a number with kB, MB, GB, KiB, MiB, GiB…",
            param_hint=option,
        )
    return int(float(found.group(1)) * _SIZE_UNITS[(found.group(2) or "").lower()])


def _rate_pairs(values: tuple[str, ...]) -> list[tuple[str, str]]:
    """``KEY=RATE[/BURST]`` pairs; the key (group:…, type:…) may itself hold ``=``: the
    value is what follows the last one."""
    pairs = []
    for value in values:
        key, sep, rate = value.rpartition("=")
        if not sep or not key:
            raise click.BadParameter(
                f"{value!r} is not KEY=RATE[/BURST]", param_hint="--rate-limit"
            )
        pairs.append((key, rate))
    return pairs


def _rate(text: str) -> Any:
    from ..model import RateLimit

    rate, _, burst = text.partition("/")
    try:
        numbers = float(rate), float(burst) if burst else None
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: give tasks a second, and optionally a burst: 50 or 50/100",
            param_hint="--rate-limit",
        ) from None
    try:
        return RateLimit(numbers[0], burst=numbers[1])
    except SchedulerError as exc:
        raise click.BadParameter(f"{text!r}: {exc}", param_hint="--rate-limit") from None


async def run_worker(
    db: str,
    executors: dict[str, Callable[..., Any]],
    *,
    until_idle: bool,
    live: bool,
    status_every: float | None = None,
    metrics_port: int | None = None,
    metrics_host: str = "127.0.0.1",
    **settings: Any,
) -> Counter[str]:
    """Run a scheduler in the foreground until idle (with ``until_idle``) or a signal.

    On a terminal (``live``) a status line is redrawn in place; otherwise, with
    ``status_every``, the same line is printed every that many seconds (a log).  With
    ``metrics_port``, its metrics are served in the Prometheus text format while it runs
    (the URL printed to stderr first)."""
    from rich.live import Live

    from ..render import tally

    seen: Counter[str] = Counter()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not the main thread
            loop.add_signal_handler(sig, stop.set)
    started = time.monotonic()
    async with Scheduler(db, executors=executors, **settings) as sched:
        events = sched.subscribe()
        if metrics_port is not None:
            port = sched.serve_metrics(metrics_port, metrics_host)
            host = f"[{metrics_host}]" if ":" in metrics_host else metrics_host
            click.echo(f"worker: metrics at http://{host}:{port}/metrics", err=True)

        async def consume() -> None:
            async for event in events:
                tally(seen, event)

        def status() -> str:
            rate = seen["completed"] / max(time.monotonic() - started, 1e-9)
            return (
                f"running {len(sched.running)} · completed {seen['completed']:,} · "
                f"retried {seen['retried']:,} · failed {seen['failed']:,} · "
                f"{rate:,.0f} tasks/s"
            )

        consumer = asyncio.create_task(consume())
        idle = asyncio.create_task(sched.wait_idle()) if until_idle else None
        with (
            Live(status(), console=_console(stderr=True), refresh_per_second=4, transient=False)
            if live
            else _Null() as display
        ):
            waiters = [asyncio.create_task(stop.wait())] + ([idle] if idle else [])
            last_line = time.monotonic()
            while not any(w.done() for w in waiters):
                await asyncio.wait(waiters, timeout=0.25)
                if live:
                    display.update(status())
                elif status_every and time.monotonic() - last_line >= status_every:
                    last_line = time.monotonic()
                    click.echo(f"worker: {status()}", err=True)
            for w in waiters:
                w.cancel()
        await asyncio.sleep(0)  # let the last events arrive
    consumer.cancel()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.remove_signal_handler(sig)
    return seen


#: The defaults of the Scheduler's settings: ``worker``'s options that set one show and
#: use the Scheduler's own.
_DEFAULTS = {name: p.default for name, p in inspect.signature(Scheduler).parameters.items()}


def _setting(name: str, **attrs: Any) -> Callable[[Any], Any]:
    """The option that sets the Scheduler's argument ``name`` (``--poll-interval`` for
    ``poll_interval``), with the Scheduler's default."""
    return click.option("--" + name.replace("_", "-"), default=_DEFAULTS[name], **attrs)


class _Null:
    def __enter__(self) -> _Null:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, *args: object) -> None:
        return None


@click.command()
@DB_OPTION
@click.option(
    "--executor",
    "executor_specs",
    multiple=True,
    metavar="TYPE=module:function",
    help="Run tasks of TYPE with this function (repeatable).",
)
@click.option(
    "--finalizer",
    "finalizer_specs",
    multiple=True,
    metavar="TYPE=module:function",
    help="Once every child task a TYPE task spawned has ended, run this (repeatable).",
)
@click.option("--demo-executors", is_flag=True, help="Use the demo executors (sync.*).")
@_setting("max_concurrency", type=click.IntRange(min=1))
@click.option("--group-limit", multiple=True, metavar="GROUP=N", help="Cap a group (repeatable).")
@click.option("--default-group-limit", type=click.IntRange(min=1), help="Cap every other group.")
@click.option(
    "--byte-budget",
    multiple=True,
    metavar="GROUP=BYTES",
    help="Most expected bytes a group may have in flight (repeatable); 2GiB, 500MB or a number.",
)
@click.option(
    "--rate-limit",
    multiple=True,
    metavar="KEY=RATE[/BURST]",
    help="Tasks a second for group:NAME or type:TASK_TYPE, with an optional burst "
    "(repeatable), e.g. group:s3://eu=50/100.",
)
@_setting("max_retries", type=click.IntRange(min=0))
@_setting("retry_delay", help="First backoff, seconds.")
@_setting("poll_interval", help="Seconds between polls.")
@_setting(
    "close_timeout", help="On stop, seconds running attempts get before going back to pending."
)
@_setting(
    "lease_timeout",
    help="Seconds without renewal after which other workers take this one's tasks back.",
)
@_setting(
    "history_retention",
    type=Duration(),
    help="Remove finished tasks older than this from history as the worker runs (30d, 12h…).",
)
@click.option("--until-idle", is_flag=True, help="Exit once nothing is left to run.")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    metavar="N",
    help="Serve the worker's metrics in the Prometheus text format at "
    "http://127.0.0.1:N/metrics (0: a free port, printed to stderr).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    metavar="HOST",
    help="The address --metrics-port listens on (0.0.0.0: every interface).",
)
@click.option(
    "--status-every",
    default=5.0,
    help="When not on a terminal: print a status line to stderr every this many seconds.",
)
@JSON_OPTION
def worker(
    db: str,
    executor_specs: tuple[str, ...],
    finalizer_specs: tuple[str, ...],
    demo_executors: bool,
    group_limit: tuple[str, ...],
    default_group_limit: int | None,
    byte_budget: tuple[str, ...],
    rate_limit: tuple[str, ...],
    until_idle: bool,
    metrics_port: int | None,
    metrics_host: str,
    status_every: float,
    as_json: bool,
    **settings: Any,
) -> None:
    """Run a scheduler in the foreground; Ctrl-C or SIGTERM stops it gracefully.

    Running attempts get --close-timeout seconds to finish; the rest go back to pending.
    """
    # ``settings``: the options named after a Scheduler argument, passed on as they are
    executors: dict[str, Callable[..., Any]] = {}
    if demo_executors:
        from ..demo import DEMO_EXECUTORS

        executors.update(DEMO_EXECUTORS)
    for task_type, spec in _pairs(executor_specs, "--executor"):
        executors[task_type] = _load_executor(spec)
    finalizers = {
        task_type: _load_executor(spec, "finalizer")
        for task_type, spec in _pairs(finalizer_specs, "--finalizer")
    }
    if finalizers:
        settings["finalizers"] = finalizers
    if not executors:
        raise click.UsageError(
            "give at least one --executor TYPE=module:function, or --demo-executors to run "
            "the demo's sync.* tasks"
        )
    limits = {}
    for group, n in _pairs(group_limit, "--group-limit"):
        try:
            limits[group] = int(n)
        except ValueError:
            raise click.BadParameter(f"{n!r} is not a number", param_hint="--group-limit") from None
    budgets = {
        group: _bytes(n, "--byte-budget") for group, n in _pairs(byte_budget, "--byte-budget")
    }
    rates = {key: _rate(value) for key, value in _rate_pairs(rate_limit)}
    live = _console(stderr=True).is_terminal and not as_json
    every = None if live or as_json else status_every
    seen = asyncio.run(
        run_worker(
            db,
            executors,
            until_idle=until_idle,
            live=live,
            group_concurrency=limits,
            default_group_concurrency=default_group_limit,
            byte_budgets=budgets,
            rate_limits=rates,
            status_every=every,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            **settings,
        )
    )
    from ..store import TaskStore

    with TaskStore.open(db) as store:
        counts = store.counts()
    if as_json:
        _echo_json(db, ran=dict(seen), counts=counts)
    else:
        click.echo(
            f"worker stopped: {seen['completed']:,} completed, {seen['retried']:,} "
            f"retried, {seen['failed']:,} failed; store: "
            + ", ".join(f"{k} {v:,}" for k, v in counts.items() if v)
        )


# --------------------------------------------------------------------------- demo, plans


@click.command()
@DB_OPTION
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(path_type=Path),
    help="The sync plan (default: the sample plan shipped with taskmill).",
)
def demo(db: str, plan_path: Path | None) -> None:
    """The main job on a local store: submit the sample sync plan, run it with demo
    executors (some attempts fail and are retried), show what happened.

    Rerunning it is idempotent: the plan's tasks are deduplicated or already done."""
    from ..demo import run_demo

    asyncio.run(run_demo(db, plan_path, console=_console()))
