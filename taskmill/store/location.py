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

__all__ = ["Location", "parse_location"]

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
        return Location("postgres", url=text)
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
