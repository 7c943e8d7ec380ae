"""Where a store lives, told from its location alone.

- a file path, or ``sqlite:///relative.db`` / ``sqlite:////absolute/path.db`` (SQLAlchemy's
  spelling): a SQLite file — the embedded default;
- ``postgresql://user:password@host:port/dbname`` or ``postgres://…``: a PostgreSQL
  database shared by workers on any number of machines.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..model import StoreError

__all__ = ["Location", "parse_location", "redact", "scrub"]

_POSTGRES = ("postgresql://", "postgres://", "postgresql+psycopg://")
_SQLITE = "sqlite:///"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class Location:
    """A parsed store location: ``kind`` and either ``path`` (SQLite) or ``url``."""

    kind: Literal["sqlite", "postgres"]
    path: Path | None = None
    url: str | None = None


def parse_location(location: str | os.PathLike[str]) -> Location:
    """Tell a SQLite path from a PostgreSQL URL (see the module docstring).

    Raises :class:`StoreError` for a URL of another database (``mysql://…``): a path
    never contains ``://``, so such a location is a mistake, not a file name."""
    text = os.fspath(location)
    lowered = text.lower()
    if lowered.startswith(_POSTGRES):
        if lowered.startswith("postgresql+psycopg://"):
            text = "postgresql://" + text[len("postgresql+psycopg://") :]
        return Location("postgres", url=encode_userinfo(text))
    if lowered.startswith(_SQLITE):
        rest = text[len(_SQLITE) :]
        if not rest:
            raise StoreError(f"store location {text!r} names no file")
        return Location("sqlite", path=Path(rest))  # "/abs" after four slashes
    other = _SCHEME.match(text)
    if other is not None:
        scheme = other.group(1)
        raise StoreError(
            f"store location {text!r}: {scheme}:// is not a store taskmill can use; give a "
            "SQLite file path (or sqlite:///path) or a postgresql:// URL"
        )
    return Location("sqlite", path=Path(text))


#: What stands for a password in every message.
HIDDEN = "***"
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)([^&#]*)", re.IGNORECASE)


def _split_url(url: str) -> tuple[str, str, str, str] | None:
    """``(scheme://, userinfo, host part, rest)`` of a URL with a userinfo (``None``
    otherwise).  The authority ends at the first ``/``, ``?`` or ``#``; a host never
    holds an ``@``, so the *last* ``@`` in it ends the userinfo."""
    match = _SCHEME.match(url)
    if match is None:
        return None
    start = match.end()
    end = len(url)
    for stop in "/?#":
        found = url.find(stop, start)
        if found != -1:
            end = min(end, found)
    authority = url[start:end]
    userinfo, at, host = authority.rpartition("@")
    if not at:
        return None
    return url[:start], userinfo, host, url[end:]


def encode_userinfo(url: str) -> str:
    """``url`` with any ``@`` of its user name or password percent-encoded.

    ``postgresql://u:p@ss@host/db`` means the password ``p@ss`` (a host never holds an
    ``@``), but libpq splits at the first ``@`` and would take ``ss@host`` for the host:
    the connection fails, and the tail of the password shows in every message."""
    parts = _split_url(url)
    if parts is None or "@" not in parts[1]:
        return url
    scheme, userinfo, host, rest = parts
    return f"{scheme}{userinfo.replace('@', '%40')}@{host}{rest}"


def redact(location: str | os.PathLike[str]) -> str:
    """``location`` fit to show: a URL's password (in its userinfo or its query) and a
    connection string's ``password=`` replaced by ``***``; a file path as it is."""
    text = os.fspath(location)
    parts = _split_url(encode_userinfo(text))
    if parts is not None:
        scheme, userinfo, host, rest = parts
        user, colon, _password = userinfo.partition(":")
        text = f"{scheme}{user}{colon and ':' + HIDDEN}@{host}{rest}"
    if _SCHEME.match(text):
        return _QUERY_PASSWORD.sub(lambda m: m.group(1) + HIDDEN, text)
    return _KEYWORD_PASSWORD.sub(lambda m: m.group(1) + HIDDEN, text)


def scrub(message: str, location: str) -> str:
    """``message`` (another library's error, which may quote the connection string) with
    ``location`` shown redacted and its password, however written, hidden."""
    from urllib.parse import unquote

    secrets: set[str] = set()
    for form in {location, encode_userinfo(location)}:
        if form in message:
            message = message.replace(form, redact(form))
        parts = _split_url(form)
        if parts is not None and ":" in parts[1]:
            secrets.add(parts[1].partition(":")[2])
        pattern = _QUERY_PASSWORD if _SCHEME.match(form) else _KEYWORD_PASSWORD
        secrets.update(m.group(2).strip("'") for m in pattern.finditer(form))
    for secret in sorted(secrets, key=len, reverse=True):
        for shown in {secret, unquote(secret)}:
            if len(shown) >= 3:  # shorter would blank out ordinary words
                message = message.replace(shown, HIDDEN)
    return message
