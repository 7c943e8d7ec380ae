"""Serving the dashboard: uvicorn on one address, refusing to listen beyond this machine
without a token."""

from __future__ import annotations

import secrets
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING
from urllib.parse import quote

from ..model import SchedulerError
from .app import create_app
from .security import is_loopback

if TYPE_CHECKING:
    from ..store import TaskStore

__all__ = ["TOKEN_ENV", "address", "serve"]

#: The environment variable ``taskmill ui`` reads its token from.
TOKEN_ENV = "TASKMILL_UI_TOKEN"


def address(host: str, port: int, token: str | None) -> str:
    """The address to open: ``http://host:port/``, with ``?token=`` when there is one."""
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    return url + (f"?token={quote(token, safe='')}" if token else "")


def serve(
    store: TaskStore,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    read_only: bool = False,
    refresh: float = 2.0,
    started: Callable[[str], None] | None = None,
) -> None:
    """Serve the dashboard over ``store`` until interrupted (Ctrl-C ends it cleanly, after
    the requests under way).

    ``host`` other than a loopback address needs a ``token``: without one this raises
    ``SchedulerError(kind="invalid_argument")`` before listening.  ``started`` is called
    with the address to open once the server listens."""
    import uvicorn

    if not token and not is_loopback(host):
        raise SchedulerError(
            f"the dashboard would listen on {host}, beyond this machine, with no token: give "
            f"--token (or set {TOKEN_ENV}); every request must then carry it",
            kind="invalid_argument",
        )
    app = create_app(store, read_only=read_only, token=token or None, refresh=refresh)
    config = uvicorn.Config(
        app, host=host, port=port, log_level="warning", access_log=False, lifespan="off"
    )

    class Server(uvicorn.Server):
        """uvicorn's server, saying where it listens once it does."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.should_exit or started is None:
                return
            bound = [s.getsockname()[1] for srv in self.servers for s in srv.sockets]
            started(address(host, bound[0] if bound else port, token))

    server = Server(config)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn stopped cleanly, then raised Ctrl-C again: done
        return
    if not server.started:  # the address was taken, or not ours: uvicorn said why
        raise SchedulerError(f"cannot listen on {host}:{port}", kind="invalid_argument")


def new_token() -> str:
    """A token hard to guess (for ``--token auto``)."""
    return secrets.token_urlsafe(24)
