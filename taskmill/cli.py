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


def _int_list(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip().lower().replace("_", "")
        scale = {"k": 1_000, "m": 1_000_000}.get(part[-1:], 1)
        out.append(int(float(part.rstrip("km")) * scale))
    return out


@cli.command()
@click.option(
    "--sizes",
    default="10k,100k",
    show_default=True,
    help="Batch sizes, comma-separated (10k, 100k, 1m …).",
)
@click.option(
    "--existing",
    default="0",
    show_default=True,
    help="Store sizes to load into, comma-separated; half of each batch overlaps.",
)
@click.option(
    "--cases",
    default=",".join(
        ("one_by_one", "executemany", "list", "polars", "parquet", "ceiling", "dispatch")
    ),
    show_default=True,
    help="Which loaders to measure.",
)
@click.option("--repeat", default=3, show_default=True, help="Runs per measurement (median).")
@click.option(
    "--full", is_flag=True, help="The long form: sizes 10k,100k,1m into stores of 0 and 1m tasks."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def bench(sizes: str, existing: str, cases: str, repeat: int, full: bool, as_json: bool) -> None:
    """Measure one-by-one submit, executemany, submit_batch and the engine's ceiling."""
    from . import bench as b

    if full:
        sizes, existing = "10k,100k,1m", "0,1m"
    chosen = [c.strip() for c in cases.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(b.CASES))
    if unknown:
        raise click.BadParameter(f"unknown case(s): {', '.join(unknown)}", param_hint="--cases")
    results = b.run(_int_list(sizes), _int_list(existing), chosen, repeat, echo=click.echo)
    if as_json:
        click.echo(b.to_json(results))
    else:
        click.echo(f"machine: {b.machine()}")
        click.echo(b.table(results))


def main() -> None:
    cli()
