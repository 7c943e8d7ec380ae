"""``bench``: the submit and dispatch benchmarks (taskmill.bench and its companions)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from .common import JSON_OPTION

#: ``taskmill bench``'s cases unless told (SQLite; ``--db`` runs its own set).
CASES_DEFAULT = (
    "one_by_one,executemany,list,polars,parquet,reader,lazy,ceiling,dispatch,"
    "dispatch_groups,dispatch_budgets,dispatch_rates,dispatch_preempt,dispatch_aging,"
    "dispatch_schedules,stall"
)


class _Counts(click.types.StringParamType):
    """Counts as text, comma-separated, each with an optional k or m (``10k,100k,1m``);
    the option's value is the list of numbers."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, list):
            return value
        out = []
        for part in str(super().convert(value, param, ctx)).split(","):
            part = part.strip().lower().replace("_", "")
            scale = {"k": 1_000, "m": 1_000_000}.get(part[-1:], 1)
            try:
                out.append(int(float(part.rstrip("km")) * scale))
            except ValueError:
                self.fail(f"{value!r} is not counts, comma-separated (10k,100k,1m)", param, ctx)
        return out


def _counts_option(name: str, default: str, help: str) -> Callable[[Any], Any]:
    """An option of counts (``--sizes 10k,100k``): its value is the list of numbers."""
    return click.option(name, default=default, type=_Counts(), help=help)


@click.command()
@_counts_option("--sizes", "10k,100k", "Batch sizes, comma-separated (10k, 100k, 1m …).")
@_counts_option(
    "--existing", "0", "Store sizes to load into, comma-separated; half of each batch overlaps."
)
@click.option(
    "--cases",
    default=CASES_DEFAULT,
    help="Which loaders to measure.",
)
@click.option("--repeat", default=3, help="Runs per measurement (median).")
@click.option(
    "--db",
    default="",
    show_default=False,
    metavar="URL|postgres",
    help="Run on PostgreSQL: a postgresql:// URL (each run in a database of its own, "
    "created and dropped), or 'postgres' for a throwaway durable server.  Cases: "
    "polars, parquet, ceiling, pgqueuer, procrastinate, dispatch (the default).",
)
@_counts_option(
    "--workers", "1,2,4", "With --db: worker processes of the dispatch case, comma-separated."
)
@click.option(
    "--full", is_flag=True, help="The long form: sizes 10k,100k,1m into stores of 0 and 1m tasks."
)
@click.option(
    "--key-bytes",
    default=0,
    help="Pad every key to this many bytes (long object paths; 0 keeps the plan's keys).",
)
@click.option(
    "--pace",
    is_flag=True,
    help="Dispatch as users run it, SQLite and PostgreSQL side by side (--db, default a "
    "throwaway server): 300 tasks of 20 ms at max_concurrency=4 with claim and completion "
    "latency, no-op tasks/s by --workers processes, and what each counted control costs.",
)
@JSON_OPTION
def bench(
    sizes: list[int],
    existing: list[int],
    cases: str,
    repeat: int,
    full: bool,
    db: str,
    workers: list[int],
    key_bytes: int,
    pace: bool,
    as_json: bool,
) -> None:
    """Measure one-by-one submit, executemany, submit_batch and the engine's ceiling
    (with --db: on PostgreSQL, next to pgqueuer and procrastinate; with --pace: dispatch
    on both backends)."""
    from .. import bench as b
    from .. import bench_pg

    if db and not bench_pg.is_url(db) and db.lower() not in bench_pg.THROWAWAY:
        raise click.BadParameter("a postgresql:// URL or 'postgres'", param_hint="--db")
    if pace:
        from .. import bench_pace

        server_info: dict[str, Any] = {}
        paced = bench_pace.run(
            db or "postgres",
            repeat=repeat,
            workers=tuple(workers),
            echo=click.echo,
            server_info=server_info,
        )
        if as_json:
            click.echo(bench_pace.to_json(paced, server_info))
        else:
            click.echo(f"machine: {b.machine()}")
            click.echo(f"PostgreSQL {server_info.get('version', '?')}")
            click.echo(bench_pace.table(paced))
        return
    if full:
        sizes, existing = [10_000, 100_000, 1_000_000], [0, 1_000_000]
    if db and cases == CASES_DEFAULT:
        cases = ",".join(bench_pg.PG_CASES)
    chosen = [c.strip() for c in cases.split(",") if c.strip()]
    unknown = sorted(set(chosen) - set(b.CASES))
    if unknown:
        raise click.BadParameter(f"unknown case(s): {', '.join(unknown)}", param_hint="--cases")
    on_pg = bench_pg.PG_CASES if db else tuple(c for c in b.CASES if c not in bench_pg.PEERS)
    wrong = sorted(set(chosen) - set(on_pg))
    if wrong:
        where = "on PostgreSQL" if db else "without --db (PostgreSQL only)"
        raise click.BadParameter(f"not measured {where}: {', '.join(wrong)}", param_hint="--cases")
    server: dict[str, Any] = {}
    results = b.run(
        sizes,
        existing,
        chosen,
        repeat,
        echo=click.echo,
        key_bytes=key_bytes,
        db=db,
        workers=tuple(workers),
        server_info=server,
    )
    if as_json:
        click.echo(b.to_json(results, server if db else None))
    else:
        click.echo(f"machine: {b.machine()}")
        if db:
            click.echo(f"PostgreSQL {server.get('version', '?')}")
        click.echo(b.table(results))
