"""Serving the dashboard: uvicorn on one address, refusing to listen beyond this machine
without a token."""

from __future__ import annotations

import errno
import secrets
import signal
import socket
import threading
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
    """Serve the dashboard over ``store`` until interrupted (Ctrl-C or SIGTERM end it
    cleanly, after the requests under way).

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
    app = create_app(store, read_only=read_only, token=token, refresh=refresh, hosts=[host])
    listening = _listen(host, port)
    shown = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")

    class Server(uvicorn.Server):
        """uvicorn's server, saying where it listens once it serves."""

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if not self.should_exit and started is not None:
                started(address(shown, listening.getsockname()[1], token))

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM as Ctrl-C: uvicorn raises it again once stopped

    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, stop) if main else None
    try:
        Server(config).run(sockets=[listening])
    except KeyboardInterrupt:  # uvicorn stopped cleanly, then raised the signal again: done
        return
    finally:
        listening.close()
        if main:
            signal.signal(signal.SIGTERM, previous)


def _listen(host: str, port: int) -> socket.socket:
    """A socket bound to ``host``:``port`` (0: any free port), ready for uvicorn; a clear
    ``SchedulerError`` when the address is taken or not this machine's."""
    try:
        family, kind, proto, _, where = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except OSError as exc:
        raise SchedulerError(
            f"cannot listen on {host!r}: {exc.strerror or exc}", kind="invalid_argument"
        ) from None
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(where)
    except OSError as exc:
        sock.close()
        taken = " (another taskmill ui? give --port, or 0 for any free one)"
        hint = taken if exc.errno == errno.EADDRINUSE else ""
        raise SchedulerError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}{hint}",
            kind="invalid_argument",
        ) from None
    return sock


def new_token() -> str:
    """A token hard to guess (for ``--token auto``)."""
    return secrets.token_urlsafe(24)
