"""Loads the store's SQL: ``schema.sql`` whole, ``queries.sql`` by ``-- name:`` header and
the schema migrations in ``migrations/``.

Migrations: ``migrations/NNN_what.sql`` brings a store from schema ``NNN - 1`` to ``NNN``.
A new store gets ``schema.sql`` (the whole current schema) at once; an older store runs
every migration above its version, in order, in one transaction.  The newest
migration's number is :data:`SCHEMA_VERSION`, and a test checks that a migrated store's
schema equals a fresh one.
"""

from __future__ import annotations

import re
import sqlite3
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from typing import LiteralString, cast

APPLICATION_ID = "taskmill"

_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)
#: A line ``-- include: part.sql``, its line end with it (the part's text ends with its own).
_INCLUDE = re.compile(r"^--[ \t]*include:[ \t]*([\w.]+\.sql)[ \t]*(?:\n|\Z)", re.MULTILINE)
_MIGRATION = re.compile(r"^(\d{3})_\w+\.sql$")


def _read(name: str) -> str:
    return resources.files("taskmill.backends.sqlite").joinpath(name).read_text(encoding="utf-8")


@cache
def migrations() -> dict[int, str]:
    """Every migration script by the schema version it brings a store to."""
    package = resources.files("taskmill.backends.sqlite")
    return load_migrations(package.joinpath("migrations"), first=2, parts=package)


def with_includes(text: str, folder: Traversable) -> str:
    """``text`` with each line ``-- include: part.sql`` replaced by that file of ``folder``:
    a part of the schema that a migration adds is written once, in its own file, and both
    ``schema.sql`` and the migration include it.

    The whole line goes, its line end too, and the part's text (ending with a line end of
    its own) stands in its place: an include may stand anywhere in a script, and a
    migration written as includes expands to the very text it had before."""
    return _INCLUDE.sub(lambda m: folder.joinpath(m.group(1)).read_text(encoding="utf-8"), text)


def load_migrations(folder: Traversable, *, first: int, parts: Traversable) -> dict[int, str]:
    """The ``NNN_what.sql`` scripts of ``folder`` by version, numbered from ``first``
    without gaps (each backend keeps its own folder; the runner is the same idea); an
    ``-- include:`` line names a file of ``parts`` (see :func:`with_includes`)."""
    found: dict[int, str] = {}
    if not folder.is_dir():  # no migrations yet
        return found
    for entry in folder.iterdir():
        match = _MIGRATION.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise RuntimeError(f"two migrations to schema version {version}")
        found[version] = with_includes(entry.read_text(encoding="utf-8"), parts)
    versions = sorted(found)
    if versions != list(range(first, first + len(versions))):
        raise RuntimeError(
            f"migrations in {folder} must be numbered from {first:03d} without gaps: {versions}"
        )
    return {v: found[v] for v in versions}


#: The schema version this taskmill writes (1 was taskmill 0.1).
SCHEMA_VERSION = max(migrations(), default=1)


@cache
def schema() -> str:
    """The whole current schema."""
    return with_includes(_read("schema.sql"), resources.files("taskmill.backends.sqlite"))


@cache
def queries() -> dict[str, str]:
    """Every named query of ``queries.sql``."""
    return named_queries(_read("queries.sql"), "queries.sql")


def named_queries(text: str, source: str) -> dict[str, str]:
    """The statements of a query file by their ``-- name:`` header (each backend keeps a
    file of its own; ``source`` names it in errors), each ``{fragment_…}`` in them replaced
    by the fragment of that name."""
    parts = _HEADER.split(text)
    named: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        if name in named:
            raise RuntimeError(f"{source} names {name!r} twice")
        named[name] = body.strip()
    # a fragment (named ``fragment_…``, not a statement) written once, where others say
    # ``{fragment_…}``
    fragments = {n: body.rstrip(";") for n, body in named.items() if n.startswith("fragment_")}
    for name, body in named.items():
        for _ in range(len(fragments)):  # a fragment may say another's name
            before = body
            for fragment, text in fragments.items():
                body = body.replace("{" + fragment + "}", text)
            if body == before:
                break
        named[name] = body
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


def q(name: str) -> LiteralString:
    """One named SQLite query: static text of ``queries.sql``, never built from data (typed
    ``LiteralString``, as a driver's query text must be)."""
    return cast(LiteralString, queries()[name])


def at_level(claim: str, param: str = ":level") -> str:
    """A claim's candidate query narrowed to one priority level (bound as ``param``): what
    aging reads level by level, each walk a seek of the queue index at its level."""
    head = "WHERE status = 'pending'"
    if head not in claim:
        raise ValueError("not a claim candidates query")
    return claim.replace(head, f"{head} AND priority = {param}", 1)
