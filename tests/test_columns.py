"""The drift test: ``taskmill/columns.py`` is the one declaration of a task's fields, and
the static SQL agrees with it — every schema's ``tasks`` and ``history`` (SQLite and
PostgreSQL: names, types, NOT NULL), both staging tables (in order: DuckDB copies by
position), every ``INSERT`` into ``tasks`` or ``history`` (the named queries, and any SQL
in the package's Python), and the select lists that fill the frames by position.  The
Python that cannot derive from the declaration (the submission and row dataclasses, the
limits of the table checks) is held to it here too.

That a migrated store's schema equals a fresh one is tested in ``test_migrations.py`` and
``test_postgres_schema.py``: checking the fresh schemas here covers both."""

from __future__ import annotations

import ast
import dataclasses
import re
import sqlite3
from pathlib import Path
from typing import Any, cast

import polars as pl
import pyarrow as pa
import pytest

import taskmill as tm
from taskmill import columns as C
from taskmill.model import TaskSubmission
from taskmill.plan import prepare
from taskmill.store import sql as sqlite_sql
from taskmill.store.batch import staging_frame
from taskmill.validation import Defaults, Row

from conftest import ROOT

TABLES = ("tasks", "history")
#: The bookkeeping columns a staging table holds around the staged canonical columns.
STAGE_HEAD = ("ord", "pos")
STAGE_TAIL = ("key_hash",)

#: How each polars type is stored: SQLite's declared type, PostgreSQL's ``data_type``.
SQLITE_TYPE = [(pl.Int64, {"INTEGER"}), (pl.String, {"TEXT"}), (pl.Binary, {"BLOB"})]
SQLITE_TYPE += [(pl.Float64, {"REAL"})]
PG_TYPE = [(pl.Int64, {"bigint", "integer", "smallint"}), (pl.String, {"text"})]
PG_TYPE += [(pl.Binary, {"bytea"}), (pl.Float64, {"double precision"})]


def _stored_type(dtype: pl.DataType, mapping: list[tuple[Any, set[str]]]) -> set[str]:
    return next(names for polars, names in mapping if dtype == polars)


def _declared(table: str) -> dict[str, C.Column]:
    """The columns of ``tasks`` or ``history`` by their stored names."""
    return {c.stored: c for c in C.columns_of(cast(C.Table, table))}


def _check_table(
    table: str,
    found: list[tuple[str, str, bool, str | None]],
    mapping: list[tuple[Any, set[str]]],
    declared: dict[str, C.Column],
) -> None:
    """``found``: the table's columns as (name, type, NOT NULL, DEFAULT as written)."""
    names = {name for name, *_ in found}
    assert names == set(declared), (
        f"{table}: not declared in columns.py: {sorted(names - set(declared))}; "
        f"declared but not in the table: {sorted(set(declared) - names)}"
    )
    for name, kind, not_null, default in found:
        col = declared[name]
        assert kind in _stored_type(col.polars, mapping), (table, name, kind, col.polars)
        assert not_null == (not col.nullable), (table, name, "NOT NULL" if not_null else "NULL")
        if default is not None and not default.startswith("nextval("):  # ids: a sequence
            value = re.sub(r"::[\w ]+$", "", default).strip("'")
            assert value == str(col.default), (table, name, default, col.default)
        elif table == "tasks" and not col.submitted:  # the insert of a task leaves it out
            assert col.default is None, (table, name, "no DEFAULT", col.default)


# --------------------------------------------------------------------------- the declaration


def test_the_declaration_is_consistent() -> None:
    names = [c.name for c in C.COLUMNS]
    assert len(set(names)) == len(names)
    stored = [c.stored for c in C.COLUMNS]
    assert len(set(stored)) == len(stored)
    for c in C.COLUMNS:
        assert c.tables, c.name
        # the Arrow type is the polars type's: an Arrow table of them reads as the frame
        assert pl.Series(pa.array([], type=c.arrow)).dtype == c.polars, c.name


def test_the_dataclasses_hold_the_canonical_columns_in_order() -> None:
    plan = [c.name for c in C.columns_of("plan")]
    assert list(C.frame_schema("plan")) == plan
    assert [f.name for f in dataclasses.fields(TaskSubmission)] == plan
    assert [f.name for f in dataclasses.fields(Row)] == plan


def test_the_declared_defaults_are_the_ones_applied() -> None:
    sub = {f.name: f.default for f in dataclasses.fields(TaskSubmission)}
    defaults = Defaults()
    for c in C.columns_of("plan"):
        if c.name in C.EXPECTED_FIELDS:
            assert sub[c.name] == c.default == 0
        elif c.name == "on_duplicate":
            assert defaults.on_duplicate.value == c.default
        elif hasattr(defaults, c.name):
            assert getattr(defaults, c.name) == c.default, c.name
        elif c.name == "task_type":  # required: no default
            assert c.default is None and sub[c.name] is dataclasses.MISSING
        else:
            assert c.default is None and sub[c.name] is None, c.name
    for source in ([TaskSubmission("t")], pl.DataFrame({"task_type": ["t"]})):
        row = prepare(source).frame.row(0, named=True)
        for c in C.columns_of("plan"):
            if c.name != "task_type":
                assert row[c.name] == c.default, (c.name, type(source))


# --------------------------------------------------------------------------- schemas


def test_the_sqlite_schema_holds_the_declared_columns(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    tm.TaskStore.open(path).close()
    conn = sqlite3.connect(path)
    try:
        for table in TABLES:
            info = conn.execute(f"PRAGMA table_info({table})").fetchall()
            # (cid, name, type, notnull, default, pk): the primary key never holds NULL
            found = [(r[1], r[2], bool(r[3] or r[5]), r[4]) for r in info]
            _check_table(table, found, SQLITE_TYPE, _declared(table))
    finally:
        conn.close()


def _sqlite_staging_columns() -> list[tuple[str, str, bool, str | None]]:
    conn = sqlite3.connect(":memory:")
    try:
        conn.execute(sqlite_sql.q("staging_schema"))
        info = conn.execute("PRAGMA table_info(s)").fetchall()
        return [(r[1], r[2], bool(r[3] or r[5]), r[4]) for r in info]
    finally:
        conn.close()


def _check_staging(found: list[tuple[str, str, bool, str | None]], mapping: list[Any]) -> None:
    """A staging table: ``ord``, ``pos``, the staged columns, ``key_hash``, in this order
    (DuckDB copies the staging frame into it by position)."""
    staged = [c.stored for c in C.STAGED]
    assert [name for name, *_ in found] == [*STAGE_HEAD, *staged, *STAGE_TAIL]
    frame = prepare([TaskSubmission("t")]).frame
    assert staging_frame(frame).columns == [*STAGE_HEAD, *staged]
    inner = [f for f in found if f[0] in staged]
    _check_table("staging", inner, mapping, {c.stored: c for c in C.STAGED})


def test_the_sqlite_staging_table_holds_the_staged_columns_in_order() -> None:
    _check_staging(_sqlite_staging_columns(), SQLITE_TYPE)


def test_the_postgres_schema_holds_the_declared_columns(pg_url: str) -> None:
    import psycopg

    from taskmill.store.postgres.migrate import ensure_schema
    from taskmill.store.postgres.store import queries

    def columns(conn: psycopg.Connection, table: str) -> list[tuple[str, str, bool, str | None]]:
        rows = conn.execute(
            "SELECT column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns WHERE table_schema = 'taskmill' "
            "AND table_name = %s ORDER BY ordinal_position",
            (table,),
        ).fetchall()
        return [(name, kind, nullable == "NO", default) for name, kind, nullable, default in rows]

    with psycopg.connect(pg_url, autocommit=True) as conn:
        ensure_schema(conn)
        for table in TABLES:
            _check_table(table, columns(conn, table), PG_TYPE, _declared(table))
        create = queries()["batch_stage_create"].replace("{stage}", "stage_drift")
        conn.execute(create)  # type: ignore[arg-type]  # a test's own fixed name
        _check_staging(columns(conn, "stage_drift"), PG_TYPE)


# --------------------------------------------------------------------------- statements

_INTO = re.compile(r"\bINTO\s+(?:\w+\.)?(tasks|history)\b(\s*\()?", re.IGNORECASE)


def _inserts(text: str) -> list[tuple[str, list[str] | None]]:
    """Every ``INSERT … INTO tasks|history`` of ``text``: the table and its column list
    (``None``: the statement lists none)."""
    found: list[tuple[str, list[str] | None]] = []
    for match in _INTO.finditer(text):
        if not re.search(r"\bINSERT\b[^;]*$", text[: match.start()], re.IGNORECASE):
            continue  # not an insert's target (`SELECT … INTO`, a comment's words)
        table = match.group(1).lower()
        if match.group(2) is None:
            found.append((table, None))
            continue
        end = text.index(")", match.end())
        found.append((table, [n.strip() for n in text[match.end() : end].split(",")]))
    return found


def _named_queries() -> dict[str, dict[str, str]]:
    from taskmill.store.postgres.store import queries as postgres_queries

    return {"sqlite": sqlite_sql.queries(), "postgres": postgres_queries()}


def _strip_comments(sql: str) -> str:
    return re.sub(r"--[^\n]*", "", sql)


def test_every_named_insert_lists_declared_columns() -> None:
    seen: dict[str, set[str]] = {}
    for engine, named in _named_queries().items():
        for name, sql in named.items():
            for table, listed in _inserts(_strip_comments(sql)):
                where = f"{engine} query {name}: INSERT INTO {table}"
                assert listed is not None, f"{where} names no columns"
                declared = _declared(table)
                unknown = sorted(set(listed) - set(declared))
                assert not unknown, f"{where} lists undeclared columns {unknown}"
                assert len(set(listed)) == len(listed), f"{where} lists a column twice"
                if table == "tasks":  # a new task: what the submission and the store set
                    missing = sorted(C.insert_columns() - set(listed))
                    extra = sorted(set(listed) - C.insert_columns())
                    assert not missing and not extra, f"{where}: missing {missing}, extra {extra}"
                else:  # a task moves to history whole
                    assert set(listed) == set(declared), f"{where}: {set(declared) - set(listed)}"
                seen.setdefault(engine, set()).add(f"{table}:{name}")
    for engine in ("sqlite", "postgres"):
        assert {"tasks:insert_task", "tasks:batch_insert"} <= seen[engine], seen
        assert any(s.startswith("history:") for s in seen[engine]), seen


def test_every_insert_in_the_packages_python_lists_declared_columns() -> None:
    """SQL written in Python (the benchmarks' shortcuts): declared columns only."""
    found = 0
    for path in sorted((ROOT / "taskmill").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):  # adjacent literals are one constant
            if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
                continue
            for table, listed in _inserts(node.value):
                where = f"{path.relative_to(ROOT)}:{node.lineno}: INSERT INTO {table}"
                assert listed is not None, f"{where} names no columns"
                unknown = sorted(set(listed) - set(_declared(table)))
                assert not unknown, f"{where} lists undeclared columns {unknown}"
                found += 1
    assert found  # the parser sees them


def _select_list(sql: str) -> list[str]:
    """The columns of the outermost final ``SELECT`` (one that starts a line), aliases,
    table prefixes and casts removed."""
    sql = _strip_comments(sql)
    last = [m.end() for m in re.finditer(r"^SELECT\b", sql, re.MULTILINE)][-1]
    end = re.search(r"^FROM\b", sql[last:], re.MULTILINE)
    assert end is not None
    body = sql[last : last + end.start()]
    names = []
    for item in body.split(","):
        item = re.sub(r"\s+AS\s+\"?\w+\"?\s*$", "", item.strip(), flags=re.IGNORECASE)
        item = re.sub(r"::\w+$", "", item)
        names.append(item.split(".")[-1])
    return names


@pytest.mark.parametrize(
    ("engine", "query", "table"),
    [
        ("postgres", "select_tasks", "tasks"),
        ("postgres", "select_history", "history"),
        ("postgres", "prune_rows", "history"),
        ("sqlite", "prune_rows", "history"),
    ],
)
def test_the_queries_that_fill_frames_select_their_columns_in_order(
    engine: str, query: str, table: C.Table
) -> None:
    expected = [C.column(n).stored for n in C.frame_schema(table)]
    assert _select_list(_named_queries()[engine][query]) == expected


@pytest.mark.parametrize(
    ("engine", "query"),
    [
        ("sqlite", "failed_to_retry"),
        ("sqlite", "failed_to_retry_ids"),
        ("postgres", "failed_to_retry"),
    ],
)
def test_failed_to_retry_selects_the_id_and_the_retried_columns(engine: str, query: str) -> None:
    from taskmill.store.common import RETRY_COLUMNS

    expected = ["id", *(C.column(n).stored for n in RETRY_COLUMNS)]
    assert _select_list(_named_queries()[engine][query]) == expected


def test_the_browse_branches_select_the_page_fields_in_order() -> None:
    """Each table's branch of PostgreSQL's ``browse`` lists the fields of
    :data:`~taskmill.columns.BROWSED` by their stored names — ``NULL AS name`` where the
    table has no such column — then ``active`` (SQLite's branches are built from the
    declaration itself)."""
    sql = _strip_comments(_named_queries()["postgres"]["browse"])
    branch = r"\(SELECT\s+([^()]*?)\s+FROM taskmill\.(tasks|history) AS t\b"
    branches = re.findall(branch, sql, re.DOTALL)
    assert [name for _, name in branches] == ["tasks", "history"]
    for body, name in branches:
        listed = []
        for item in (i.strip() for i in body.split(",")):
            null = re.fullmatch(r"NULL(?:::[\w ]+)? AS (\w+)", item)
            listed.append(f"NULL {null.group(1)}" if null else item)
        expected = [
            C.column(n).stored if name in C.column(n).tables else f"NULL {n}" for n in C.BROWSED
        ]
        active = "true" if name == "tasks" else "false"
        assert listed == [*expected, f"{active} AS active"]


def test_the_frames_derive_from_the_declaration() -> None:
    from taskmill.plan import CANONICAL
    from taskmill.store.common import HISTORY_COLUMNS, RETRY_COLUMNS, TASK_COLUMNS

    assert C.frame_schema("plan") == CANONICAL
    assert C.frame_schema("tasks") == TASK_COLUMNS
    assert C.frame_schema("history") == HISTORY_COLUMNS
    assert list(RETRY_COLUMNS) == [n for n in HISTORY_COLUMNS if n in CANONICAL]


# --------------------------------------------------------------------------- limits


def _cases() -> list[tuple[str, Any, bool]]:
    """(column, value, accepted) at and just past each declared limit."""
    cases: list[tuple[str, Any, bool]] = []
    for c in C.columns_of("plan"):
        if c.max_length is not None and c.polars == pl.String:
            cases += [(c.name, "x" * c.max_length, True), (c.name, "x" * (c.max_length + 1), False)]
            cases.append((c.name, "", c.empty))
        elif c.max_length is not None:  # the payload, in bytes
            cases += [
                (c.name, b"x" * c.max_length, True),
                (c.name, b"x" * (c.max_length + 1), False),
            ]
        if c.low is not None and c.high is not None:
            step = 1 if c.polars == pl.Int64 else 1.0
            cases += [(c.name, c.low, True), (c.name, c.high, True)]
            cases += [(c.name, c.low - step, False), (c.name, c.high + step, False)]
        if not c.nullable and c.default is None:
            cases.append((c.name, None, False))
    return cases


CASES = _cases()


@pytest.mark.parametrize("form", ["list", "table"])
def test_both_validation_paths_keep_the_declared_limits(form: str) -> None:
    assert {name for name, _, _ in CASES} >= {"task_type", "priority", "payload", "max_retries"}
    for name, value, accepted in CASES:
        fields = {"task_type": "t", name: value}
        if form == "list":
            task_type = fields.pop("task_type")
            source: Any = [TaskSubmission(task_type, **fields)]
        else:
            source = pl.DataFrame({k: [v] for k, v in fields.items()})
        row = prepare(source).frame.row(0, named=True)
        shown = f"{name}={str(value)[:20]!r} ({form})"
        if accepted:
            assert row["error"] is None, f"{shown} refused: {row['error']}"
        else:
            assert row["error_field"] == name, f"{shown} accepted ({row['error']})"
