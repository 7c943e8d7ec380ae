"""Loads the store's SQL: ``schema.sql`` whole and ``queries.sql`` by ``-- name:`` header."""

from __future__ import annotations

import re
import sqlite3
from functools import cache
from importlib import resources

SCHEMA_VERSION = 1
APPLICATION_ID = "taskmill"

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def _read(name: str) -> str:
    return resources.files(__package__).joinpath(name).read_text(encoding="utf-8")


@cache
def schema() -> str:
    """The whole current schema."""
    return _read("schema.sql")


@cache
def queries() -> dict[str, str]:
    """Every named query of ``queries.sql``."""
    text = _read("queries.sql")
    parts = _HEADER.split(text)
    named: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in named:
            raise RuntimeError(f"queries.sql names {name!r} twice")
        named[name] = body.strip()
    return named


def statements(script: str) -> list[str]:
    """Split a script into whole statements (``executescript`` would commit first)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def q(name: str) -> str:
    """One named query."""
    return queries()[name]
