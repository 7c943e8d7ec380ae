"""``ui``: the dashboard in the browser, over any store, with or without workers."""

from __future__ import annotations

import click

from .common import DB_OPTION, _existing, _shown


@click.command()
@DB_OPTION
@click.option(
    "--host",
    default="127.0.0.1",
    help="The address to listen on; anything beyond loopback needs --token.",
)
@click.option("--port", default=8765, type=click.IntRange(0, 65535), help="The port (0: any free).")
@click.option(
    "--token",
    envvar="TASKMILL_UI_TOKEN",
    show_envvar=True,
    help="Every request must carry it: 'Authorization: Bearer TOKEN', or ?token=TOKEN once "
    "(then a session cookie). 'auto' makes one and prints it in the address.",
)
@click.option("--read-only", is_flag=True, help="Offer no action; refuse every change.")
@click.option(
    "--refresh",
    default=2.0,
    type=click.FloatRange(min=0),
    help="Seconds between readings of the queue page's live part (0: none).",
)
def ui(db: str, host: str, port: int, token: str | None, read_only: bool, refresh: float) -> None:
    """Serve the queue's dashboard in the browser until Ctrl-C: tasks by status, group and
    type, what each group waits on, what ended per minute, batches, every task with its
    payload and attempts, schedules and workers; and, unless --read-only, cancel, retry
    and pause or resume a task, a group or a schedule, each after a confirmation.

    No scheduler is needed: it reads the store, whoever runs its tasks. It listens on
    127.0.0.1 unless told otherwise; beyond this machine it needs --token."""
    from ..web.serve import new_token, serve

    if token == "auto":
        token = new_token()
    store = _existing(db)
    try:

        def started(url: str) -> None:
            mode = " (read-only)" if read_only else ""
            click.echo(f"taskmill ui: {_shown(db)}{mode} at {url}  (Ctrl-C stops)", err=True)

        serve(
            store,
            host=host,
            port=port,
            token=token,
            read_only=read_only,
            refresh=refresh,
            started=started,
        )
    finally:
        store.close()
