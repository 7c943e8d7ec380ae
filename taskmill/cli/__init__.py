"""The ``taskmill`` command: a thin layer over :class:`TaskStore` and :class:`Scheduler`.

Every command opens a store, calls one or two library methods and prints the result;
taskmill's errors become one line on stderr and exit code 1 (usage errors exit 2).
Every option can also be set from the environment: ``TASKMILL_DB`` for ``--db``, and
``TASKMILL_<COMMAND>_<OPTION>`` for the rest (``TASKMILL_SUBMIT_CHUNK_SIZE=5000``).

One module per family of commands: ``submit`` (submit, plan, gen-plan), ``queue`` (stats,
paused, tasks, history, show), ``batches`` (batches, batch), ``controls`` (prune, cancel,
retry-failed, pause-group, resume-group), ``schedules`` (schedule, schedules, unschedule,
pause-schedule, resume-schedule), ``worker`` (worker, demo), ``server``, ``ui`` (the
dashboard in the browser), ``bench``;
``common`` holds what they share.  This module is the group that holds them, ``main`` and
the reference.
"""

from __future__ import annotations

import sys

import click

from ..model import SchedulerError
from . import batches, bench, controls, queue, schedules, server, submit, ui, worker
from .common import DB_OPTION, JSON_OPTION, Duration, When

__all__ = ["DB_OPTION", "JSON_OPTION", "Duration", "When", "cli", "main", "reference"]


class _Group(click.Group):
    """Maps taskmill's errors to one clear line on stderr and exit code 1; lists commands
    with their whole first sentence, wrapped rather than cut at the terminal's width."""

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command listing, each description whole (click cuts them with "...")."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SchedulerError as exc:
            from ..batch.inputs import NoTaskType, UnknownColumns

            advised = isinstance(exc, UnknownColumns | NoTaskType)
            message = exc.advice(cli=True) if advised else str(exc)
            # one line, whatever the driver said (libpq adds "\n\tIs the server running…")
            line = " ".join(message.split())
            click.echo(f"taskmill: error: {line}", err=True)
            sys.exit(1)


@click.group(
    cls=_Group,
    # every option's default is shown in --help (an option without one worth showing says
    # show_default=False)
    context_settings={
        "auto_envvar_prefix": "TASKMILL",
        "max_content_width": 100,
        "show_default": True,
    },
)
@click.version_option(package_name="taskmill")
def cli() -> None:
    """taskmill: a persistent, priority-aware task queue fed by sync plans, in a SQLite
    file or a PostgreSQL database shared by workers on many machines."""


#: Every command, by family (``--help`` lists them by name).
for _command in (
    submit.submit,
    submit.plan,
    submit.gen_plan,
    queue.stats,
    queue.paused,
    queue.tasks,
    queue.history,
    queue.show,
    batches.batches,
    batches.batch,
    controls.prune,
    controls.cancel,
    controls.retry_failed,
    controls.pause_group,
    controls.resume_group,
    schedules.schedule,
    schedules.schedules,
    schedules.unschedule,
    schedules.pause_schedule,
    schedules.resume_schedule,
    worker.worker,
    worker.demo,
    server.server,
    ui.ui,
    bench.bench,
):
    cli.add_command(_command)


def reference() -> str:
    """The CLI reference in Markdown, generated from ``--help`` (docs/cli.md embeds it)."""
    parts = []
    settings = cli.context_settings  # as --help formats it: defaults shown
    with click.Context(cli, info_name="taskmill", terminal_width=100, **settings) as ctx:
        parts.append("```\n$ taskmill --help\n" + cli.get_help(ctx) + "\n```")
        for name in cli.list_commands(ctx):
            command = cli.get_command(ctx, name)
            assert command is not None
            with click.Context(command, info_name=name, parent=ctx, terminal_width=100) as sub:
                parts.append(f"```\n$ taskmill {name} --help\n{command.get_help(sub)}\n```")
    return "\n\n".join(parts) + "\n"


def main() -> None:
    cli()
