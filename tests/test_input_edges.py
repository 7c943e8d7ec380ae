"""Input at the edges (issue 21, defects 6, 9, 10, 11 and 12), on both backends: byte figures
whose sums pass 64 bits, NUL characters in text, passwords in store locations, ``pd.NaT``
and dates as times, and wrong-typed arguments.  Every test here failed before its fix for
the defect it names."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import taskmill as tm
from taskmill.cli import cli

from conftest import assert_store_consistent, run_sql

pytestmark = pytest.mark.backends("sqlite", "postgres")

MAX = 2**63 - 1


def ids(claimed: list[Any]) -> list[int]:
    return [c.id for c in claimed]


def outcome_rows(out: tm.BatchOutcome) -> list[tuple[Any, ...]]:
    return out.to_polars().select("index", "action", "reason", "error").rows()


# ---------------------------------------------------------------- 6: byte sums past 64 bits


def test_a_task_expecting_the_largest_figures_never_stops_a_counted_claim(
    store: tm.TaskStore,
) -> None:
    """Before: every counted claim on PostgreSQL failed, "bigint out of range" (the four
    figures were added as bigints), so nothing dispatched, limited or not."""
    huge = dict.fromkeys(
        (
            "expected_read_bytes",
            "expected_write_bytes",
            "expected_net_rx_bytes",
            "expected_net_tx_bytes",
        ),
        MAX,
    )
    store.submit(tm.TaskSubmission("t", dedup_key="huge", group="g", **huge))
    store.submit(tm.TaskSubmission("t", dedup_key="next", group="g", expected_read_bytes=1))
    store.submit(tm.TaskSubmission("t", dedup_key="other", group="h"))
    owner = store.new_owner()
    budgets = {"g": 100}
    # the huge task runs alone (it is over the budget); the other group goes on
    first = store.claim(10, task_types=["t"], owner=owner, byte_budgets=budgets)
    assert ids(first) == [1, 3]
    assert first.held == {"g": "byte budget"}  # type: ignore[attr-defined]
    # with the huge one running (4 × (2^63 - 1) bytes counted exactly), g is held
    again = store.claim(10, task_types=["t"], owner=owner, byte_budgets=budgets)
    assert ids(again) == [] and again.held == {"g": "byte budget"}  # type: ignore[attr-defined]
    limited = store.claim(10, task_types=["t"], owner=owner, group_limits={"g": 5})
    assert ids(limited) == [2]
    assert store.tasks()["status"].to_list() == ["running"] * 3


def test_running_bytes_are_summed_exactly_past_64_bits(store: tm.TaskStore) -> None:
    """Before: on SQLite, two running tasks of 2^62 bytes each made SUM() overflow ("integer
    overflow"), and every counted claim failed — other groups stalled too; on PostgreSQL
    the per-task sums overflowed.  The budget here is 2^63 + 1: exactly one more byte fits
    beside the two, two more do not (a sum in floating point could not tell them apart)."""
    for i in range(2):
        store.submit(tm.TaskSubmission("t", dedup_key=f"big{i}", group="g", **_split(2**62)))
    store.submit(tm.TaskSubmission("t", dedup_key="two", group="g", expected_read_bytes=2))
    store.submit(tm.TaskSubmission("t", dedup_key="other", group="h"))
    owner = store.new_owner()
    budgets = {"g": 2**63 + 1}
    assert ids(store.claim(2, task_types=["t"], owner=owner, byte_budgets=budgets)) == [1, 2]
    held = store.claim(10, task_types=["t"], owner=owner, byte_budgets=budgets)
    assert ids(held) == [4]  # 2^63 + 2 is over the budget: g waits, h goes on
    assert held.held == {"g": "byte budget"}  # type: ignore[attr-defined]
    store.submit(tm.TaskSubmission("t", dedup_key="one", group="h2"))
    store.cancel(3)
    store.submit(tm.TaskSubmission("t", dedup_key="fits", group="g", expected_net_tx_bytes=1))
    assert ids(store.claim(10, task_types=["t"], owner=owner, byte_budgets=budgets)) == [5, 6]


def _split(total: int) -> dict[str, int]:
    """``total`` bytes spread over the four expected figures."""
    quarter = total // 4
    return {
        "expected_read_bytes": quarter,
        "expected_write_bytes": quarter,
        "expected_net_rx_bytes": quarter,
        "expected_net_tx_bytes": total - 3 * quarter,
    }


# ---------------------------------------------------------------- 9: NUL characters

TEXT_FIELDS = ("task_type", "dedup_key", "group", "label")


def _with_nul(field: str) -> dict[str, Any]:
    """The fields of a submission whose ``field`` holds a NUL character."""
    values: dict[str, Any] = {"task_type": "t", "dedup_key": "b", "group": "g", "label": "l"}
    values[field] = values[field] + "\x00x"
    return values


@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_a_nul_character_fails_its_row_in_a_list_and_a_table_alike(
    store: tm.TaskStore, field: str
) -> None:
    """Before: PostgreSQL refused the whole batch ("Postgres does not support NULL-bytes"),
    nothing written; SQLite stored the row."""
    bad = _with_nul(field)
    rows = [
        {"task_type": "t", "dedup_key": "a", "group": "g", "label": "l"},
        bad,
        {"task_type": "t", "dedup_key": "c", "group": "g", "label": "l"},
    ]
    message = f"{field} holds a NUL character (\\x00), which the store cannot keep in text"
    expected = [
        (0, "submitted", None, None),
        (1, "failed", "invalid_encoding", message),
        (2, "submitted", None, None),
    ]
    listed = store.submit_batch(
        [tm.TaskSubmission(r.pop("task_type"), **r) for r in [dict(r) for r in rows]]
    )
    assert outcome_rows(listed) == expected
    [(index, err)] = listed.failed
    assert index == 1 and isinstance(err, tm.InvalidSubmission) and err.field == field
    store.cancel_where(status="pending")
    streamed = store.plan_batch(pa.Table.from_pylist(rows).to_reader())
    assert outcome_rows(streamed) == expected
    tabled = store.submit_batch(pl.DataFrame(rows))
    assert outcome_rows(tabled) == expected
    assert tabled.failed[0][1].field == field  # type: ignore[attr-defined]
    active, history = assert_store_consistent(store)
    assert active["dedup_key"].to_list() == ["a", "c"]
    assert history["dedup_key"].to_list() == ["a", "c"]


@pytest.mark.parametrize("field", TEXT_FIELDS)
def test_a_single_submit_with_a_nul_character_raises_invalid_submission(
    store: tm.TaskStore, field: str
) -> None:
    """Before: StoreError from PostgreSQL ("text fields cannot contain NUL"); SQLite stored it."""
    values = _with_nul(field)
    with pytest.raises(tm.InvalidSubmission) as caught:
        store.submit(tm.TaskSubmission(values.pop("task_type"), **values))
    assert caught.value.kind == "invalid_encoding" and caught.value.field == field
    assert field in str(caught.value)
    assert store.tasks().height == 0


def test_nul_bytes_in_payloads_are_kept_as_they_are(store: tm.TaskStore) -> None:
    """A payload is bytes: NUL is a byte like any other (a JSON payload escapes it)."""
    out = store.submit_batch(
        [
            tm.TaskSubmission("t", dedup_key="raw", payload=b"a\x00b"),
            tm.TaskSubmission("t", dedup_key="json", payload={"text": "a\x00b"}),
        ]
    )
    assert out.submitted == [1, 2]
    tabled = store.submit_batch(
        pl.DataFrame({"task_type": ["t"], "dedup_key": ["text"], "payload": ["a\x00b"]})
    )
    assert tabled.submitted == [3]
    assert store.tasks()["payload"].to_list() == [b"a\x00b", b'{"text":"a\\u0000b"}', b"a\x00b"]


def test_the_cli_fails_the_row_holding_a_nul_character(
    location: str | Path, tmp_path: Path
) -> None:
    """Before: on PostgreSQL the CLI exited 1, nothing written."""
    plan = tmp_path / "plan.parquet"
    pq.write_table(pa.table({"task_type": ["t", "t"], "dedup_key": ["a", "b\x00"]}), plan)
    done = CliRunner().invoke(cli, ["submit", str(plan), "--db", str(location), "--json"])
    assert done.exit_code == 0, done.output
    with tm.TaskStore.open(location) as store:
        assert store.tasks()["dedup_key"].to_list() == ["a"]


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda s: s.tasks(group="g\x00"), "group"),
        (lambda s: s.history(task_type=["t", "\x00"]), "task_type"),
        (lambda s: s.cancel_where(dedup_keys=["k\x00"]), "dedup_keys"),
        (lambda s: s.pause_group("g\x00"), "group"),
        (lambda s: s.resume_group("g\x00"), "group"),
    ],
)
def test_a_nul_character_in_an_argument_is_refused_by_name(
    store: tm.TaskStore, call: Any, argument: str
) -> None:
    """Before: StoreError on PostgreSQL, an answer on SQLite."""
    with pytest.raises(tm.SchedulerError) as caught:
        call(store)
    assert caught.value.kind == "invalid_argument"
    assert argument in str(caught.value) and "NUL" in str(caught.value)


# ---------------------------------------------------------------- 10: passwords


def _with_password(url: str, password: str) -> str:
    return url.replace("taskmill@", f"taskmill:{password}@", 1)


def test_a_batch_that_cannot_connect_never_shows_the_password(
    pg_url: str, pg_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: "DuckDB cannot connect (… Unable to connect to Postgres at
    "postgresql://taskmill:hunter2@…")"."""
    url = _with_password(pg_url, "hunter2")
    name = pg_url.rsplit("/", 1)[1]
    caplog.set_level(logging.DEBUG, logger="taskmill")
    with tm.TaskStore.open(url) as store:
        run_sql(pg_server.url(), f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        try:
            with pytest.raises(tm.StoreError) as caught:
                store.submit_batch([tm.TaskSubmission("t", dedup_key="a")])
        finally:
            run_sql(pg_server.url(), f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
    message = str(caught.value)
    assert "cannot stage a batch" in message and "not currently accepting" in message
    assert "hunter2" not in message and "hunter2" not in caplog.text
    assert "taskmill:***@" in message  # the location, redacted


def test_a_password_holding_an_at_sign_is_never_shown(pg_url: str) -> None:
    """Before: ``postgresql://u:p@ss@host/db`` was read as the host ``ss@host``: the tail
    of the password was in every message (and the store could not be reached)."""
    url = _with_password(pg_url, "p@ss")
    with tm.TaskStore.open(url) as store:  # the last '@' ends the password
        store.submit(tm.TaskSubmission("t", dedup_key="a"))
        assert "ss@" not in store.driver.where and "127.0.0.1" in store.driver.where
        assert "p@ss" not in repr(store)
    unreachable = url.rsplit(":", 1)[0] + ":1/nowhere"
    with pytest.raises(tm.StoreError) as caught:
        tm.TaskStore.open(unreachable, busy_timeout=1)
    assert "ss@" not in str(caught.value) and "p@ss" not in str(caught.value)
    assert "127.0.0.1:1" in str(caught.value)


def test_the_cli_never_prints_a_password(pg_url: str, tmp_path: Path) -> None:
    """Before: the CLI echoed ``--db`` as given (``… rows into postgresql://u:hunter2@…``)."""
    url = _with_password(pg_url, "hunter2")
    plan = tmp_path / "plan.parquet"
    pq.write_table(pa.table({"task_type": ["t"], "dedup_key": ["a"]}), plan)
    runs = [
        ["submit", str(plan), "--db", url],
        ["submit", str(plan), "--db", url, "--json"],
        ["stats", "--db", url],
        ["stats", "--db", url, "--json"],
        ["cancel", "--db", url, "--type", "t"],
        ["pause-group", "g", "--db", url],
        ["submit", str(plan), "--db", url.rsplit(":", 1)[0] + ":1/nowhere"],
    ]
    for args in runs:
        done = CliRunner().invoke(cli, args)
        shown = done.output + (done.stderr if done.stderr_bytes is not None else "")
        assert "hunter2" not in shown, (args, shown)
        assert "taskmill:***@" in shown or "PostgreSQL database" in shown, (args, shown)


@pytest.mark.parametrize(
    ("given", "shown", "secret"),
    [
        ("postgresql://u:hunter2@h:5432/db", "postgresql://u:***@h:5432/db", "hunter2"),
        ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db", "p@ss"),
        (
            "postgres://u:se%40cret@h/db?sslmode=require",
            "postgres://u:***@h/db?sslmode=require",
            "se@cret",
        ),
        (
            "postgresql://h/db?password=hunter2&sslmode=require",
            "postgresql://h/db?password=***&sslmode=require",
            "hunter2",
        ),
        ("host=h password=hunter2 dbname=db", "host=h password=*** dbname=db", "hunter2"),
        ("host=h password='hunter 2' dbname=db", "host=h password=*** dbname=db", "hunter 2"),
        ("postgresql://u@h/db", "postgresql://u@h/db", None),
        ("/data/a@b/tasks.db", "/data/a@b/tasks.db", None),
    ],
)
def test_every_spelling_of_a_password_is_redacted(
    given: str, shown: str, secret: str | None
) -> None:
    """What every message shows of a location, and of another library's error quoting it
    (or quoting the password alone)."""
    from taskmill.store.location import redact, scrub

    assert redact(given) == shown
    said = scrub(f'cannot connect to "{given}": no ({secret})', given)
    assert said == f'cannot connect to "{shown}": no ({"***" if secret else None})'


# ---------------------------------------------------------------- 11: NaT and dates


def test_nat_is_an_unset_time_in_a_submission(store: tm.TaskStore) -> None:
    """Before: a raw ValueError ("NaTType does not support timestamp")."""
    out = store.submit(tm.TaskSubmission("t", dedup_key="a", run_after=pd.NaT, expires_at=pd.NaT))
    assert out.action == "submitted"
    row = store.tasks().row(0, named=True)
    assert row["run_after"] is None and row["expires_at"] is None


def test_nat_in_a_list_and_in_a_pandas_frame_give_the_same_outcome(store: tm.TaskStore) -> None:
    """Before: the 3-row list was refused whole ("the batch input cannot be read")."""
    later = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    subs = [
        tm.TaskSubmission("t", dedup_key="a", run_after=later),
        tm.TaskSubmission("t", dedup_key="b", run_after=pd.NaT, expires_at=pd.NaT),
        tm.TaskSubmission("t", dedup_key="c", expires_at=later),
    ]
    frame = pd.DataFrame(
        {
            "task_type": ["t"] * 3,
            "dedup_key": ["a", "b", "c"],
            "run_after": [later, pd.NaT, pd.NaT],
            "expires_at": [pd.NaT, pd.NaT, later],
        }
    )
    listed = store.plan_batch(subs)
    assert outcome_rows(listed) == [(i, "submitted", None, None) for i in range(3)]
    assert outcome_rows(store.plan_batch(frame)) == outcome_rows(listed)
    assert store.submit_batch(subs).submitted == [1, 2, 3]
    got = store.tasks().select("dedup_key", "run_after", "expires_at").rows()
    assert got == [("a", later, None), ("b", None, None), ("c", None, later)]


def test_a_date_is_midnight_utc_in_a_submission_as_in_a_table(store: tm.TaskStore) -> None:
    """Before: a date was refused in a TaskSubmission ("got date") but taken in a Date column."""
    day, next_day = dt.date(2030, 1, 1), dt.date(2030, 1, 2)
    store.submit(tm.TaskSubmission("t", dedup_key="one", run_after=day, expires_at=next_day))
    store.submit_batch([tm.TaskSubmission("t", dedup_key="list", run_after=day)])
    store.submit_batch(
        pl.DataFrame({"task_type": ["t"], "dedup_key": ["table"], "run_after": [day]})
    )
    midnight = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    got = store.tasks().select("dedup_key", "run_after", "expires_at").rows()
    assert got == [
        ("one", midnight, midnight + dt.timedelta(days=1)),
        ("list", midnight, None),
        ("table", midnight, None),
    ]
    store.pause_group("g", until=day)
    assert store.paused_groups(now=0) == {"g": midnight.timestamp()}


# ---------------------------------------------------------------- 12: argument types


@pytest.mark.parametrize(
    ("call", "argument"),
    [
        (lambda s: s.tasks(limit="x"), "limit"),
        (lambda s: s.tasks(limit=2**70), "limit"),
        (lambda s: s.tasks(limit=1.5), "limit"),
        (lambda s: s.history(limit=True), "limit"),
        (lambda s: s.history(status=123), "status"),
        (lambda s: s.tasks(task_type=b"t"), "task_type"),
        (lambda s: s.tasks(group=[1]), "group"),
        (lambda s: s.cancel(2**70), "task_id"),
        (lambda s: s.cancel("1"), "task_id"),
        (lambda s: s.pause(2**70), "task_id"),
        (lambda s: s.resume(None), "task_id"),
        (lambda s: s.complete(2**64, owner="w"), "task_id"),
        (lambda s: s.prune_history(keep_last=2**70), "keep_last"),
        (lambda s: s.stats(by=3), "by"),
        (lambda s: s.resume_group(3), "group"),
        (lambda s: s.claim("x", task_types=["t"], owner="w"), "limit"),
        (lambda s: s.claim(2**70, task_types=["t"], owner="w"), "limit"),
        (lambda s: s.claim(1, task_types=3, owner="w"), "task_types"),
        (lambda s: s.claim(1, task_types=None, owner="w"), "task_types"),
        (lambda s: s.paused_groups(now="now"), "now"),
        (lambda s: s.expire_due(now=float("nan")), "now"),
        (lambda s: s.waiting_for_start(now=[]), "now"),
    ],
)
def test_a_wrong_argument_raises_a_scheduler_error_naming_it(
    store: tm.TaskStore, call: Any, argument: str
) -> None:
    """Before: ValueError, TypeError or OverflowError from the driver or from Python (or a
    StoreError "bigint out of range" on PostgreSQL, or an answer to the wrong question)."""
    store.submit(tm.TaskSubmission("t", dedup_key="a"))
    with pytest.raises(tm.SchedulerError) as caught:
        call(store)
    assert caught.value.kind == "invalid_argument", caught.value
    assert str(caught.value).startswith(f"{argument}"), caught.value
    assert store.tasks()["dedup_key"].to_list() == ["a"]
    assert store.counts()["pending"] == 1  # the store still answers


def test_numpy_integers_are_whole_numbers(store: tm.TaskStore) -> None:
    """A task id read from a pandas frame (a numpy integer) is an id like any other."""
    import numpy as np

    store.submit(tm.TaskSubmission("t", dedup_key="a"))
    store.submit(tm.TaskSubmission("t", dedup_key="b"))
    assert store.cancel(np.int64(1)) == "pending"
    assert store.tasks(limit=np.int32(5))["dedup_key"].to_list() == ["b"]
    assert store.prune_history(keep_last=np.uint8(0), older_than=dt.timedelta(0)) == 1
