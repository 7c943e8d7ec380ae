"""The ``taskmill`` command: a thin layer over TaskStore and Scheduler."""

from __future__ import annotations

import asyncio
import json
import sys

import click

from .model import SchedulerError
from .store import TaskStore

DB_OPTION = click.option(
    "--db",
    default="tasks.db",
    show_default=True,
    envvar="TASKMILL_DB",
    type=click.Path(dir_okay=False),
    help="The task store (a SQLite file). Env: TASKMILL_DB.",
)


class _Group(click.Group):
    """Maps taskmill's errors to one clear line on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except SchedulerError as exc:
            click.echo(f"taskmill: error: {exc}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.version_option(package_name="taskmill")
def cli() -> None:
    """taskmill: a persistent, priority-aware task queue on SQLite."""


@cli.command()
@DB_OPTION
@click.option("--tasks", "n", default=60, show_default=True, help="Size of the sample plan.")
def demo(db: str, n: int) -> None:
    """Submit a sample sync plan to a local store and run it with demo executors."""
    from .demo import run_demo

    asyncio.run(run_demo(db, n, echo=click.echo))


@cli.command()
@DB_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def stats(db: str, as_json: bool) -> None:
    """Queue counts by status."""
    with TaskStore.open(db) as store:
        counts = store.counts()
    if as_json:
        click.echo(json.dumps(counts))
    else:
        for status, n in counts.items():
            click.echo(f"{status:<11}{n:>10,}")


def main() -> None:
    cli()
