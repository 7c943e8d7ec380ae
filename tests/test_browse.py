"""The dashboard's reads on real stores of both engines: ``browse()`` (every task page by
page, active and finished together, newest first, with the filters of ``tasks()`` and
``history()`` and ``key_prefix``), ``throughput()`` (tasks ended per minute by the store's
clock), ``workers()`` (the registered workers, their leases and running tasks), and
``retry_failed(ids=…)``.

The oracle of ``browse()`` is the store's own full listing: ``tasks()`` and ``history()``
read whole, in the page's columns, by id descending."""

from __future__ import annotations

import asyncio
import datetime as dt
import math
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskmill as tm
from taskmill.model import ACTIVE_STATUSES, FINAL_STATUSES
from taskmill.store.browse import WORKER_COLUMNS, page_of
from taskmill.store.common import BROWSE_COLUMNS

from conftest import fail_now, is_postgres, run_sql, table

pytestmark = pytest.mark.backends("sqlite", "postgres")

UTC = pl.Datetime("us", "UTC")
#: Text that must reach the store and come back as it was: quotes, SQL, LIKE's and JSON's
#: special characters, a line break, a backslash, letters and an emoji beyond ASCII.
HOSTILE = [
    "'; DROP TABLE tasks; --",
    'quo"te',
    "back\\slash",
    "new\nline",
    "100%_sure",
    "<b>&amp;</b>",
    "ÿ∂ƒ-ñ",
    "emoji🙂",
]
#: Keys whose prefixes tell LIKE's wildcards, case and letters beyond ASCII apart.
KEYS = ["a%b", "a_b", "aXb", "A%b", "ab", "ünï/é", "ünï/ê", "ü", "user/001", "user/012"]
#: The prefixes the filters try.
PREFIXES = ["", "a", "a%", "a_", "A", "ab", "ü", "ünï/", "user/0", "user/01", "zzz", "'", *HOSTILE]


# --------------------------------------------------------------------------- the store


def fill(store: tm.TaskStore) -> dict[str, Any]:
    """A store holding tasks of every kind: two batches and single submits; pending,
    running (one with progress), paused, blocked, completed, failed, cancelled, superseded
    and expired tasks; keys, groups, tags and task types of :data:`KEYS` and
    :data:`HOSTILE`.  Returns what the tests need to know of it."""
    first = store.submit_batch(
        [
            tm.TaskSubmission(
                "sync.up" if i % 2 else "sync.down",
                dedup_key=key,
                group=["g1", "g2", None][i % 3],
                tags={"env": "prod" if i % 2 else "dev", **({"team": "x"} if i % 3 else {})},
            )
            for i, key in enumerate(KEYS)
        ]
    )
    hostile = store.submit_batch(
        [
            tm.TaskSubmission(text, dedup_key=text, group=text, label=text, tags={text: text})
            for text in HOSTILE
        ]
    )
    singles = [
        store.submit(tm.TaskSubmission("sync.up", group="g3", tags={"env": "prod"})).task_id
        for _ in range(4)
    ]
    blocked = store.submit(
        tm.TaskSubmission("sync.up", dedup_key="later", depends_on=[HOSTILE[-1]])
    )
    owner = store.new_owner()
    claimed = store.claim(8, task_types=["sync.up", "sync.down"], owner=owner)
    ids = [t.id for t in claimed]
    store.complete_many(ids[:3], owner=owner)
    store.fail(ids[3], owner=owner, error="boom", retry_at=None)
    store.record_progress({ids[4]: (claimed[4].attempt, 0.25, "a quarter")}, owner=owner)
    store.cancel(singles[0])
    store.pause(singles[1])
    store.submit(
        tm.TaskSubmission(
            HOSTILE[0], dedup_key=HOSTILE[0], on_duplicate=tm.DuplicateStrategy.SUPERSEDE
        )
    )
    store.submit(tm.TaskSubmission("sync.gone", dedup_key="gone", expires_at=1.0))
    store.expire_due()
    return {
        "batches": [first.batch_id, hostile.batch_id],
        "owner": owner,
        "running": ids[4:],
        "blocked": blocked.task_id,
    }


def listing(store: tm.TaskStore) -> pl.DataFrame:
    """Every task, active and finished, in the columns of a page of ``browse()`` (and its
    tags), by id descending: read whole through ``tasks()`` and ``history()``."""
    columns = [*BROWSE_COLUMNS, "tags"]
    active = store.tasks().with_columns(active=pl.lit(True), finished_at=pl.lit(None, dtype=UTC))
    done = store.history().with_columns(active=pl.lit(False), progress=pl.lit(None, pl.Float64))
    whole = pl.concat([active.select(columns), done.select(columns)])
    return whole.sort("id", descending=True)


def matching(rows: pl.DataFrame, **filters: Any) -> list[int]:
    """The ids of ``rows`` (a :func:`listing`) that ``browse(**filters)`` selects, in order."""

    def listed(value: Any) -> list[Any] | None:
        return None if value is None else [value] if isinstance(value, str | int) else value

    wanted = {name: listed(filters.get(name)) for name in ("status", "task_type", "group")}
    batches = listed(filters.get("batch_id"))
    tags = filters.get("tags") or {}
    prefix = filters.get("key_prefix")
    before = filters.get("before")
    ids = []
    for row in rows.iter_rows(named=True):
        carried = {t["key"]: t["value"] for t in row["tags"]}
        key = row["dedup_key"]
        if (
            all(v is None or row[name] in v for name, v in wanted.items())
            and (batches is None or row["batch_id"] in batches)
            and tags.items() <= carried.items()
            and (prefix is None or (key is not None and key.startswith(prefix)))
            and (before is None or row["id"] < before)
        ):
            ids.append(row["id"])
    return ids


def pages(store: tm.TaskStore, limit: int, **filters: Any) -> list[pl.DataFrame]:
    """Every page of ``browse(**filters)`` of ``limit`` rows, each from the last id of the
    one before, until a page is not full."""
    found = []
    before = None
    while True:
        page = store.browse(**filters, before=before, limit=limit)
        found.append(page)
        if page.height < limit:
            return found
        before = page["id"][-1]


# --------------------------------------------------------------------------- browse


def test_the_pages_visit_every_task_once_newest_first(store: tm.TaskStore) -> None:
    made = fill(store)
    whole = listing(store)
    assert set(whole["status"]) == {*ACTIVE_STATUSES, *FINAL_STATUSES} - {"waiting"}
    got = pages(store, 7)
    assert [p.height for p in got[:-1]] == [7] * (len(got) - 1)
    joined = pl.concat(got)
    assert joined.schema == pl.Schema(
        {**BROWSE_COLUMNS, **{c: UTC for c in ("created_at", "started_at", "finished_at")}}
    )
    assert joined.equals(whole.drop("tags"))
    assert joined["id"].is_unique().all()
    # the active rows as tasks() shows them, with their progress; history without one
    running = joined.filter(pl.col("id") == made["running"][0]).row(0, named=True)
    assert (running["status"], running["progress"], running["active"]) == ("running", 0.25, True)
    assert running["finished_at"] is None and running["started_at"] is not None
    finished = joined.filter(~pl.col("active"))
    assert finished["finished_at"].null_count() == 0
    assert finished["progress"].null_count() == finished.height
    assert set(finished["status"]) == set(FINAL_STATUSES)
    assert store.browse(limit=1000).equals(joined)
    assert store.browse(before=1).height == 0 and store.browse(before=-5).height == 0


def test_a_page_starts_below_before(store: tm.TaskStore) -> None:
    fill(store)
    whole = listing(store)
    ids = whole["id"].to_list()
    middle = ids[len(ids) // 2]
    assert (
        store.browse(before=middle, limit=5)["id"].to_list() == [i for i in ids if i < middle][:5]
    )
    assert store.browse(before=middle + 1, limit=1)["id"].to_list() == [middle]
    assert store.browse(before=ids[0] + 100)["id"].to_list() == ids[:50]


@pytest.mark.parametrize(
    "filters",
    [
        {"status": "completed"},
        {"status": ["pending", "failed"]},
        {"status": ["running", "paused", "blocked"]},
        {"status": "bogus"},
        {"status": []},
        {"task_type": "sync.up"},
        {"task_type": ["sync.down", HOSTILE[0]]},
        {"group": "g1", "status": ["completed", "pending"]},
        {"group": ["g2", "g3"]},
        {"tags": {"env": "prod"}},
        {"tags": {"env": "prod", "team": "x"}},
        {"tags": {"team": "nobody"}},
        {"tags": {}},
        {"task_type": "sync.up", "group": "g3", "tags": {"env": "prod"}},
    ],
    ids=repr,
)
def test_each_filter_selects_what_tasks_and_history_hold(
    store: tm.TaskStore, filters: dict[str, Any]
) -> None:
    fill(store)
    want = matching(listing(store), **filters)
    assert store.browse(**filters, limit=1000)["id"].to_list() == want
    assert pl.concat(pages(store, 3, **filters))["id"].to_list() == want


def test_the_batch_filter(store: tm.TaskStore) -> None:
    made = fill(store)
    whole = listing(store)
    first, hostile = made["batches"]
    for batch in (first, [first, hostile], hostile, 999):
        assert store.browse(batch_id=batch)["id"].to_list() == matching(whole, batch_id=batch)
    assert store.browse(batch_id=hostile).height == len(HOSTILE)
    assert store.browse(batch_id=[]).height == 0


@pytest.mark.parametrize("prefix", PREFIXES, ids=repr)
def test_key_prefix_is_the_keys_start_character_for_character(
    store: tm.TaskStore, prefix: str
) -> None:
    fill(store)
    whole = listing(store)
    got = store.browse(key_prefix=prefix, limit=1000)
    assert got["id"].to_list() == matching(whole, key_prefix=prefix)
    assert all(k.startswith(prefix) for k in got["dedup_key"])


def test_key_prefix_takes_wildcards_and_case_literally(store: tm.TaskStore) -> None:
    fill(store)

    def keys(prefix: str) -> list[str]:
        return sorted(store.browse(key_prefix=prefix)["dedup_key"])

    assert keys("a%") == ["a%b"]
    assert keys("a_") == ["a_b"]
    assert keys("A") == ["A%b"]
    assert keys("a") == ["a%b", "aXb", "a_b", "ab"]
    assert keys("ünï/") == ["ünï/é", "ünï/ê"]
    assert keys("ü") == ["ü", "ünï/é", "ünï/ê"]
    assert keys("100%") == ["100%_sure"]
    assert keys("user/01") == ["user/012"]
    assert keys("ab") == ["ab"]


def test_hostile_text_is_matched_exactly_and_the_store_is_intact(store: tm.TaskStore) -> None:
    fill(store)
    whole = listing(store)
    for text in HOSTILE:
        for filters in (
            {"group": text},
            {"task_type": text},
            {"key_prefix": text},
            {"tags": {text: text}},
        ):
            got = store.browse(**filters)
            assert got["id"].to_list() == matching(whole, **filters), filters
            assert set(got["dedup_key"]) == {text}, filters
        assert text in store.browse(group=text)["label"].to_list()
    # the superseded task and the one that replaced it
    assert store.browse(task_type=HOSTILE[0])["status"].to_list() == ["pending", "superseded"]
    assert store.browse(group="'", limit=1000).height == 0
    assert store.integrity_check() == "ok"
    assert store.browse(limit=1000).height == whole.height


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"limit": 0}, "limit must be a whole number >= 1"),
        ({"limit": 1001}, "limit must be a whole number <= 1,000"),
        ({"limit": 2.5}, "limit must be a whole number"),
        ({"limit": True}, "limit must be a whole number"),
        ({"limit": "10"}, "limit must be a whole number"),
        ({"limit": None}, "limit must be a whole number"),
        ({"before": "12"}, "before must be a whole number"),
        ({"before": 1.5}, "before must be a whole number"),
        ({"before": 2**63}, "before must be a whole number <="),
        ({"key_prefix": 5}, "key_prefix= takes a string"),
        ({"key_prefix": b"a"}, "key_prefix= takes a string"),
        ({"key_prefix": "a\x00"}, "NUL"),
        ({"status": 5}, "status= takes a string or a sequence of strings"),
        ({"group": [None]}, "group= holds None"),
        ({"batch_id": "x"}, "batch_id must be a whole number"),
        ({"tags": ["env"]}, "tags must be a dict"),
    ],
    ids=repr,
)
def test_bad_arguments_are_refused_clearly(
    store: tm.TaskStore, arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(tm.SchedulerError, match=message) as caught:
        store.browse(**arguments)
    assert caught.value.kind == "invalid_argument"


def test_the_largest_page(store: tm.TaskStore) -> None:
    store.submit_batch([tm.TaskSubmission("t") for _ in range(1_005)])
    page = store.browse(limit=1000)
    assert page["id"].to_list() == list(range(1_005, 5, -1))
    assert store.browse(before=6, limit=1000)["id"].to_list() == [5, 4, 3, 2, 1]


def page(store: tm.TaskStore, **filters: Any) -> Any:
    """The page ``browse(**filters)`` asks the driver for."""
    given = dict.fromkeys(("status", "task_type", "group", "batch_id", "tags", "key_prefix"))
    return page_of(store.driver, **(given | filters), before=None, limit=50)


def test_a_status_filter_reads_only_the_tables_it_can_match(store: tm.TaskStore) -> None:
    def tables(**filters: Any) -> tuple[bool, bool]:
        made = page(store, **filters)
        return made.active, made.finished

    assert tables() == (True, True)
    assert tables(status="pending") == (True, False)
    assert tables(status=["completed", "expired"]) == (False, True)
    assert tables(status=["blocked", "failed"]) == (True, True)
    assert tables(status=["bogus"]) == (False, False)
    assert tables(status=[]) == (False, False)


def test_a_common_tag_is_checked_task_by_task(store: tm.TaskStore) -> None:
    """A pair 10,000 tasks or more carry is checked as the walk meets each task (the rare
    pair's tasks are not read first): the same rows either way."""
    index = pl.int_range(0, 10_050, eager=True)
    env = pl.when(index < 10_000).then(pl.lit("prod")).otherwise(pl.lit("dev"))
    tags = pl.select(tags=pl.struct(env=env, n=(index % 7).cast(pl.String)))
    store.submit_batch(tags.with_columns(task_type=pl.lit("t")))
    owner = store.new_owner()
    done = [t.id for t in store.claim(40, task_types=["t"], owner=owner)]
    store.complete_many(done, owner=owner)
    assert page(store, tags={"env": "prod"}).tags_common
    assert not page(store, tags={"env": "prod", "n": "3"}).tags_common  # n=3: 1,436 tasks
    assert not page(store, tags={"env": "dev"}).tags_common
    whole = listing(store)
    for pairs in ({"env": "prod"}, {"env": "prod", "n": "3"}, {"env": "dev"}, {"n": "1"}):
        want = matching(whole, tags=pairs)
        assert store.browse(tags=pairs, limit=1000)["id"].to_list() == want[:1000], pairs
        deep = store.browse(tags=pairs, before=want[20], limit=7)["id"].to_list()
        assert deep == want[21:28], pairs
    completed = store.browse(tags={"env": "prod"}, status="completed")
    assert completed["id"].to_list() == sorted(done, reverse=True)


#: The stores the property below browses, one per location, filled once.
_FILLED: dict[str, pl.DataFrame] = {}

STATUSES = [*ACTIVE_STATUSES, *FINAL_STATUSES, "bogus"]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    status=st.none() | st.lists(st.sampled_from(STATUSES), max_size=3),
    task_type=st.none()
    | st.lists(st.sampled_from(["sync.up", "sync.down", HOSTILE[1]]), max_size=2),
    group=st.none() | st.lists(st.sampled_from(["g1", "g2", "g3", HOSTILE[2]]), max_size=2),
    batch_id=st.none() | st.sampled_from([1, 2, 999]),
    tags=st.none()
    | st.dictionaries(
        st.sampled_from(["env", "team"]), st.sampled_from(["prod", "dev", "x"]), max_size=2
    ),
    key_prefix=st.none() | st.sampled_from(PREFIXES),
    limit=st.integers(1, 9),
)
def test_the_pages_together_are_the_filtered_listing(
    location: str | Path, limit: int, **filters: Any
) -> None:
    key = str(location)
    with tm.TaskStore.open(location) as store:
        if key not in _FILLED:
            fill(store)
            _FILLED[key] = listing(store)
        want = matching(_FILLED[key], **filters)
        got = pages(store, limit, **filters)
        assert pl.concat(got)["id"].to_list() == want
        assert all(p.height == limit for p in got[:-1]) and got[-1].height < limit


# --------------------------------------------------------------------------- throughput


def set_finished(location: str | Path, times: dict[int, float]) -> None:
    """Give the history rows of ``times`` those finish times (Unix seconds)."""
    mark = "%s" if is_postgres(location) else "?"
    for task_id, at in times.items():
        run_sql(
            location,
            f"UPDATE {table(location, 'history')} SET finished_at = {mark} WHERE id = {mark}",
            (at, task_id),
        )


def ended(store: tm.TaskStore) -> dict[str, list[int]]:
    """Tasks ended in every final status: 3 completed, 2 failed, 2 cancelled, 1
    superseded, 1 expired; their ids by status."""
    ids = store.submit_batch(
        [tm.TaskSubmission("t", dedup_key=f"k{i}") for i in range(8)]
    ).submitted
    owner = store.new_owner()
    store.claim(5, task_types=["t"], owner=owner)
    store.complete_many(ids[:3], owner=owner)
    for task_id in ids[3:5]:
        store.fail(task_id, owner=owner, error="boom", retry_at=None)
    store.cancel(ids[5])
    store.cancel(ids[6])
    store.submit(
        tm.TaskSubmission("t", dedup_key="k7", on_duplicate=tm.DuplicateStrategy.SUPERSEDE)
    )
    store.submit(tm.TaskSubmission("t", dedup_key="old", expires_at=1.0))
    store.expire_due()
    status = dict(store.history().select("id", "status").iter_rows())
    found: dict[str, list[int]] = {s: [] for s in FINAL_STATUSES}
    for task_id, st_ in sorted(status.items()):
        found[st_].append(task_id)
    return found


def test_throughput_counts_the_tasks_ended_each_minute(
    store: tm.TaskStore, location: str | Path
) -> None:
    by_status = ended(store)
    assert [len(by_status[s]) for s in FINAL_STATUSES] == [3, 2, 2, 1, 1]
    for _ in range(3):  # again if the minute turned between the set-up and the read
        minute = math.floor(store.now() / 60)
        completed, failed, cancelled = (by_status[s] for s in FINAL_STATUSES[:3])
        set_finished(
            location,
            {
                completed[0]: minute * 60,  # the current minute's first instant
                completed[1]: minute * 60 + 0.5,
                completed[2]: (minute - 1) * 60 + 59.999,  # the minute before's last
                failed[0]: (minute - 1) * 60,
                failed[1]: (minute - 29) * 60 + 1,  # the window's oldest minute
                cancelled[0]: (minute - 30) * 60 + 59,  # just before the window
                cancelled[1]: (minute + 1) * 60,  # ahead of the clock: not counted
                by_status["superseded"][0]: (minute - 7) * 60 + 30,
                by_status["expired"][0]: (minute - 7) * 60 + 31,
            },
        )
        got = store.throughput()
        if got["minute"][-1].timestamp() == minute * 60:
            break
    else:
        pytest.fail("the store's clock kept turning a minute between set-up and read")
    assert got.schema == pl.Schema({"minute": UTC, **dict.fromkeys(FINAL_STATUSES, pl.Int64)})
    assert got.height == 30
    assert [m.timestamp() for m in got["minute"]] == [(minute - 29 + i) * 60 for i in range(30)]
    rows = {
        int(r["minute"].timestamp()) // 60 - minute: tuple(r[s] for s in FINAL_STATUSES)
        for r in got.iter_rows(named=True)
        if any(r[s] for s in FINAL_STATUSES)
    }
    assert rows == {
        0: (2, 0, 0, 0, 0),
        -1: (1, 1, 0, 0, 0),
        -7: (0, 0, 0, 1, 1),
        -29: (0, 1, 0, 0, 0),
    }
    one = store.throughput(1)
    assert one.height == 1 and one.row(0)[1:] in ((2, 0, 0, 0, 0), (0, 0, 0, 0, 0))


def test_throughput_of_an_empty_store_is_every_minute_at_zero(store: tm.TaskStore) -> None:
    got = store.throughput(5)
    assert got.height == 5
    assert got.select(FINAL_STATUSES).sum().row(0) == (0,) * 5
    steps = got["minute"].diff().drop_nulls().dt.total_seconds().to_list()
    assert steps == [60] * 4
    assert store.throughput(7 * 24 * 60).height == 10_080


@pytest.mark.parametrize(
    ("read", "window", "said"),
    [
        *(
            ("throughput", m, "minutes must be a whole number")
            for m in [0, -1, 10_081, 2.5, "30", True, None]
        ),
        *(
            ("recent", w, "window must be a timedelta")
            for w in [timedelta(0), timedelta(days=8), 3600, None]
        ),
    ],
)
def test_the_windowed_reads_refuse_a_bad_window(
    store: tm.TaskStore, read: str, window: Any, said: str
) -> None:
    with pytest.raises(tm.SchedulerError, match=said) as caught:
        getattr(store, read)(window)
    assert caught.value.kind == "invalid_argument"


# --------------------------------------------------------------------------- recent


def test_recent_counts_every_active_task_and_the_window_of_history(
    store: tm.TaskStore, location: str | Path
) -> None:
    by_status = ended(store)
    store.submit_batch(
        [tm.TaskSubmission("u", dedup_key=f"a{i}", group="g") for i in range(3)]
        + [tm.TaskSubmission("u", dedup_key="b", group="<h>", depends_on=["a0"])]
    )
    now = store.now()
    completed, failed = by_status["completed"], by_status["failed"]
    set_finished(
        location,
        {
            completed[0]: now - 10,
            completed[1]: now - 3599,  # inside an hour
            completed[2]: now - 3700,  # outside
            failed[0]: now - 7200,  # outside
            failed[1]: now - 6 * 86_400,  # six days ago
        },
    )
    rows = {
        (r["group"], r["task_type"], r["status"]): r["tasks"]
        for r in store.recent().iter_rows(named=True)
    }
    assert rows == {
        ("g", "u", "pending"): 3,
        ("<h>", "u", "blocked"): 1,
        (None, "t", "pending"): 1,  # k7's successor (its first superseded)
        (None, "t", "completed"): 2,
        (None, "t", "cancelled"): 2,
        (None, "t", "superseded"): 1,
        (None, "t", "expired"): 1,
    }
    wider = store.recent(timedelta(days=7)).filter(pl.col("status") == "failed")
    assert wider["tasks"].to_list() == [2]
    assert store.recent().schema == pl.Schema(
        {"group": pl.String, "task_type": pl.String, "status": pl.String, "tasks": pl.Int64}
    )


# --------------------------------------------------------------------------- workers


def test_workers_show_leases_liveness_and_running_tasks(
    store: tm.TaskStore, location: str | Path
) -> None:
    assert store.workers().schema == pl.Schema(WORKER_COLUMNS)
    assert store.workers().height == 0
    store.submit_batch([tm.TaskSubmission("t") for _ in range(5)])
    mine = store.new_owner(lease_timeout=30)
    store.claim(3, task_types=["t"], owner=mine)
    store.register("zz-other-host:77:abc", lease_timeout=5)
    store.register("aa-host:12:def", lease_timeout=10)
    store.claim(1, task_types=["t"], owner="aa-host:12:def")
    gone_at = store.now() - 60  # aa-host's lease ran out 50 s ago
    mark = "%s" if is_postgres(location) else "?"
    run_sql(
        location,
        f"UPDATE {table(location, 'workers')} SET heartbeat_at = {mark} WHERE owner = {mark}",
        (gone_at, "aa-host:12:def"),
    )
    now = store.now()
    got = store.workers()
    assert got.schema == pl.Schema(WORKER_COLUMNS)
    host, pid = mine.split(":")[:2]
    assert got.select("owner", "host", "pid", "lease_timeout", "alive", "running").rows() == sorted(
        [
            ("aa-host:12:def", "aa-host", 12, 10.0, False, 1),
            (mine, host, int(pid), 30.0, True, 3),
            ("zz-other-host:77:abc", "zz-other-host", 77, 5.0, True, 0),
        ],
        key=lambda r: (r[1], r[2]),
    )
    for row in got.iter_rows(named=True):
        lease = dt.timedelta(seconds=row["lease_timeout"])
        assert row["lease_expires_at"] == row["heartbeat_at"] + lease
        assert abs(row["started_at"].timestamp() - now) < 30
    gone = got.filter(pl.col("host") == "aa-host").row(0, named=True)
    assert gone["heartbeat_at"].timestamp() == pytest.approx(gone_at, abs=1e-3)
    store.release_owner(mine)
    assert mine not in store.workers()["owner"].to_list()


async def test_a_scheduler_is_a_live_worker_while_it_runs(location: str | Path) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(ctx: tm.TaskContext) -> None:
        started.set()
        await release.wait()

    with tm.TaskStore.open(location) as store:
        store.submit(tm.TaskSubmission("slow"))
        async with tm.Scheduler(location, executors={"slow": slow}) as sched:
            await asyncio.wait_for(started.wait(), 30)
            [row] = store.workers().filter(pl.col("owner") == sched.worker).rows(named=True)
            assert (row["alive"], row["running"]) == (True, 1)
            release.set()
            await sched.wait_idle(timeout=30)
            [row] = store.workers().filter(pl.col("owner") == sched.worker).rows(named=True)
            assert (row["alive"], row["running"]) == (True, 0)
        assert store.history()["status"].to_list() == ["completed"]
        assert sched.worker not in store.workers()["owner"].to_list()


# --------------------------------------------------------------------------- retry_failed(ids=)


def test_retry_failed_by_id_resubmits_exactly_that_task_once(store: tm.TaskStore) -> None:
    a, b, c, bare = fail_now(
        store,
        tm.TaskSubmission("t", dedup_key="a", group="g", payload=b"pa", label="A", priority=7),
        tm.TaskSubmission("t", dedup_key="b"),
        tm.TaskSubmission("u", dedup_key="c"),
        tm.TaskSubmission("t"),
    )
    out = store.retry_failed(ids=b)
    assert out.to_polars().select("dedup_key", "action").rows() == [("b", "submitted")]
    [retry] = out.submitted
    assert store.tasks().select("id", "task_type", "dedup_key").rows() == [(retry, "t", "b")]
    again = store.retry_failed(ids=[b])
    assert again.deduplicated == ["b"] and again.submitted == []
    assert store.tasks()["id"].to_list() == [retry]
    # several ids, other filters narrowing them; ids that are not failures pass over
    out = store.retry_failed(ids=[a, c, retry, 999], task_type="t")
    assert out.to_polars().select("dedup_key", "action").rows() == [("a", "submitted")]
    resubmitted = store.tasks().filter(pl.col("dedup_key") == "a").row(0, named=True)
    assert (resubmitted["group"], resubmitted["priority"], resubmitted["label"]) == ("g", 7, "A")
    assert store.retry_failed(ids=[]).submitted == []
    assert store.retry_failed(ids=c, group="g").submitted == []
    # a task without a key is resubmitted by every call (nothing ties it to its retry)
    assert len(store.retry_failed(ids=bare).submitted) == 1
    assert len(store.retry_failed(ids=bare).submitted) == 1
    # once the retry of b ended, its failure is no longer its key's latest record
    owner = store.new_owner()
    assert retry in [t.id for t in store.claim(10, task_types=["t"], owner=owner)]
    assert store.complete(retry, owner=owner)
    assert len(store.retry_failed(ids=b)) == 0
    with pytest.raises(tm.SchedulerError, match="ids must be a whole number") as caught:
        store.retry_failed(ids="b")
    assert caught.value.kind == "invalid_argument"


# --------------------------------------------------------------------------- the bench


def test_the_bench_loads_a_store_and_times_every_read(location: str | Path) -> None:
    """``python -m taskmill.bench.browse`` on a small store: the load it describes, every
    read timed with the rows it returned."""
    from taskmill.bench.browse import cases, load, measure

    lines: list[str] = []
    load(location, 2_000, echo=lines.append)
    assert lines[0].startswith("loaded 2,000 tasks")
    counts = {"running": 100, "completed": 1_858, "failed": 2, "cancelled": 40}
    assert lines[1].endswith(str(counts))
    timed = measure(location, repeat=1, echo=lines.append)
    with tm.TaskStore.open(location) as store:
        names = [name for name, _ in cases(store)]
    assert list(timed) == names and all(t > 0 for t in timed.values())
    shown = dict(zip(names, lines[2:], strict=True))
    assert " 50 rows " in shown["browse() first page"]
    assert " 0 rows " in shown["browse(status='expired') none: all history"]
    assert " 8 rows " in shown["workers()"]


async def test_a_scheduler_retries_the_failures_it_is_given(location: str | Path) -> None:
    ran: list[str | None] = []

    def run(ctx: tm.TaskContext) -> None:
        ran.append(ctx.dedup_key)

    async with tm.Scheduler(location, executors={"t": run}) as sched:
        _, b = fail_now(
            sched.store,
            tm.TaskSubmission("t", dedup_key="a"),
            tm.TaskSubmission("t", dedup_key="b"),
        )
        out = await sched.retry_failed(ids=[b])
        assert out.to_polars().select("dedup_key", "action").rows() == [("b", "submitted")]
        await sched.wait_idle()
    assert ran == ["b"]
