"""Who may use the dashboard, and how a form proves it came from the dashboard.

- **The token.**  When the app has one, every request carries it: ``Authorization:
  Bearer T``, or ``?token=T`` once (a browser opening the printed address), which signs
  the session in and redirects to the same address without it.  The session lives in a
  cookie signed by Starlette's ``SessionMiddleware`` (itsdangerous); anything else is
  answered 401.
- **Forms.**  Every action is a POST whose form carries the session's CSRF token (made
  at random when the session starts; compared in constant time), from a page of this
  origin when the browser says where it came from.  A GET never changes the store.
- **Headers.**  A content security policy allowing this origin's scripts, styles and
  images only (no inline script, no frames), no MIME sniffing, no referrer beyond this
  origin (an address may carry the token).
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
import socket
from typing import Any
from urllib.parse import urlencode, urlsplit

from starlette.datastructures import URL, MutableHeaders
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSRF_FIELD",
    "HEADERS",
    "LOOPBACK_NAMES",
    "SecurityHeaders",
    "TokenGate",
    "csrf_token",
    "is_loopback",
    "same_origin",
    "valid_csrf",
]

#: The form field every action's POST carries.
CSRF_FIELD = "csrf"
#: The session keys: signed in with the token; the session's CSRF token.
_SIGNED_IN = "signed_in"
_CSRF = "csrf"

#: Sent with every response.
HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the dashboard on this machine: ``localhost``, an
    address of 127.0.0.0/8 or ``::1``, or a name every address of which is one of those
    (as ``/etc/hosts`` may give this machine's own name)."""
    name = host.strip().strip("[]")
    if name.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        pass
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(name, None)}
    except OSError:
        return False
    return bool(found) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in found)


#: The names a browser on this machine reaches a loopback dashboard by: any other ``Host``
#: (a page of another site whose name was pointed at 127.0.0.1, "DNS rebinding") is refused
#: when no token guards the dashboard.
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1", "[::1]")


def _same(given: str | None, expected: str) -> bool:
    """``given`` equals ``expected``, compared in constant time."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


class TokenGate:
    """ASGI middleware: with ``token`` set, a request without it (header, query once, or a
    signed-in session) is answered 401 — static files included."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.token:
            await self.app(scope, receive, send)
            return
        conn = HTTPConnection(scope)
        session: dict[str, Any] = scope.get("session", {})
        bearer = conn.headers.get("authorization", "")
        if bearer[:7].lower() == "bearer " and _same(bearer[7:].strip(), self.token):
            await self.app(scope, receive, send)
            return
        if "token" in conn.query_params:
            if _same(conn.query_params["token"], self.token):
                session[_SIGNED_IN] = True
                rest = [(k, v) for k, v in conn.query_params.multi_items() if k != "token"]
                target = URL(scope=scope).replace(query=urlencode(rest))
                where = target.path + (f"?{target.query}" if target.query else "")
                await RedirectResponse(where, status_code=303)(scope, receive, send)
                return
        elif session.get(_SIGNED_IN) is True:
            await self.app(scope, receive, send)
            return
        answer = PlainTextResponse(
            "401: this taskmill dashboard needs its token. Open the address `taskmill ui` "
            "printed (it ends in ?token=…), or send the header 'Authorization: Bearer <token>'.",
            status_code=401,
            headers={"www-authenticate": 'Bearer realm="taskmill"', **HEADERS},
        )
        await answer(scope, receive, send)


class SecurityHeaders:
    """ASGI middleware: :data:`HEADERS` on every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, with_headers)


def csrf_token(request: Request) -> str:
    """The session's CSRF token, made on first use."""
    token = request.session.get(_CSRF)
    if not isinstance(token, str):
        token = secrets.token_urlsafe(32)
        request.session[_CSRF] = token
    return token


def valid_csrf(request: Request, given: object) -> bool:
    """Whether ``given`` (a form's field) is this session's CSRF token."""
    expected = request.session.get(_CSRF)
    return isinstance(given, str) and isinstance(expected, str) and _same(given, expected)


def same_origin(request: Request) -> bool:
    """Whether the browser says the request came from a page of this dashboard.

    A browser's ``Sec-Fetch-Site`` (which no page can set) decides; without it, an
    ``Origin`` naming another host, or ``null`` (a sandboxed or privacy-stripped page),
    refuses.  A request that says neither, as from a script, passes: the CSRF token still
    guards it."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return urlsplit(origin).netloc == request.headers.get("host", "")
