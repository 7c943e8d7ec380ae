"""Tags: ``TaskSubmission(tags=…)`` and the plan column ``tags`` (a struct or a map of
strings), checked per row; the filters of ``tasks()``, ``history()`` and
``cancel_where()`` (every pair given), tags kept in history and pruned with it; the CLI's
``--tag KEY=VALUE``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import polars as pl
import pyarrow as pa
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import taskmill as tm
from taskmill.cli import cli

pytestmark = pytest.mark.backends("sqlite", "postgres")


def _tags(frame: pl.DataFrame) -> dict[int, dict[str, str]]:
    return {
        row["id"]: {t["key"]: t["value"] for t in row["tags"]}
        for row in frame.select("id", "tags").iter_rows(named=True)
    }


def test_a_submission_carries_its_tags_and_the_filters_select_every_pair(
    store: tm.TaskStore,
) -> None:
    a = store.submit(tm.TaskSubmission("t", tags={"env": "prod", "team": "x"})).task_id
    b = store.submit(tm.TaskSubmission("t", tags={"env": "prod", "team": None})).task_id
    c = store.submit(tm.TaskSubmission("t", tags={"env": "dev", "team": "x"})).task_id
    d = store.submit(tm.TaskSubmission("t")).task_id
    assert _tags(store.tasks()) == {
        a: {"env": "prod", "team": "x"},
        b: {"env": "prod"},
        c: {"env": "dev", "team": "x"},
        d: {},
    }
    assert store.tasks(tags={"env": "prod"})["id"].to_list() == [a, b]
    assert store.tasks(tags={"team": "x"})["id"].to_list() == [a, c]
    assert store.tasks(tags={"team": "x", "env": "prod"})["id"].to_list() == [a]
    assert store.tasks(tags={"env": "staging"}).height == 0
    assert store.tasks(tags={})["id"].to_list() == [a, b, c, d]


@pytest.mark.parametrize("form", ["struct", "map", "list", "pandas", "submissions"])
def test_plan_forms_give_the_same_tags(store: tm.TaskStore, form: str) -> None:
    given = [{"env": "prod", "team": "x"}, {"env": "dev"}, None]
    types = ["a", "b", "c"]
    if form == "struct":
        plan: object = pl.DataFrame({"task_type": types, "tags": given})
    elif form == "map":
        pairs = [None if g is None else list(g.items()) for g in given]
        plan = pa.table(
            {"task_type": types, "tags": pa.array(pairs, type=pa.map_(pa.string(), pa.string()))}
        )
    elif form == "list":
        items = [
            None if g is None else [{"key": k, "value": v} for k, v in g.items()] for g in given
        ]
        plan = pl.DataFrame({"task_type": types, "tags": items})
    elif form == "pandas":
        plan = pd.DataFrame({"task_type": types, "tags": given})
    else:
        plan = [tm.TaskSubmission(t, tags=g) for t, g in zip(types, given, strict=True)]
    out = store.submit_batch(plan)
    assert out.counts()["submitted"] == 3
    ids = out.to_polars()["task_id"].to_list()
    assert _tags(store.tasks()) == {
        ids[0]: {"env": "prod", "team": "x"},
        ids[1]: {"env": "dev"},
        ids[2]: {},
    }
    assert store.tasks(tags={"env": "dev"})["id"].to_list() == [ids[1]]


def test_bad_rows_fail_with_their_index_and_the_rest_go_on(store: tm.TaskStore) -> None:
    rows = [
        {"k": "v"},
        {str(i): "v" for i in range(33)},
        {"": "v"},
        {"k": "a\x00b"},
        {"k" * 257: "v"},
        {"k": "v" * 1025},
        {"ok": "yes"},
    ]
    expected = {
        1: "tags has 33 pairs, over the 32 limit",
        2: "tags has an empty key",
        3: "tags holds a NUL character (\\x00), which the store cannot keep in text",
        4: "tags has a key longer than 256 characters",
        5: "tags['k'] is longer than 1,024 characters",
    }
    for plan in (
        [tm.TaskSubmission("s", dedup_key=str(i), tags=r) for i, r in enumerate(rows)],
        pl.DataFrame(
            {
                "task_type": ["t"] * len(rows),
                "dedup_key": [str(i) for i in range(len(rows))],
                "tags": [[{"key": k, "value": v} for k, v in r.items()] for r in rows],
            }
        ),
    ):
        out = store.submit_batch(plan)
        frame = out.to_polars().sort("index")
        failed = frame.filter(pl.col("action") == "failed")
        assert dict(zip(failed["index"], failed["error"], strict=True)) == expected
        assert {(i, e.kind, e.field) for i, e in out.failed} == {
            (i, "invalid_tags", "tags") for i in expected
        }
        assert frame.filter(pl.col("action") != "failed")["index"].to_list() == [0, 6]
    twice = pl.DataFrame(
        {
            "task_type": ["t", "t"],
            "tags": [[{"key": "k", "value": "1"}, {"key": "k", "value": "2"}], None],
        }
    )
    frame = store.submit_batch(twice).to_polars().sort("index")
    assert frame["error"].to_list() == ["tags has the key 'k' twice", None]
    with pytest.raises(tm.SchedulerError, match="tags must be a dict"):
        store.submit(tm.TaskSubmission("t", tags=["k", "v"]))


def test_history_keeps_tags_a_superseding_task_carries_its_own_and_prune_takes_them(
    store: tm.TaskStore,
) -> None:
    old = store.submit(tm.TaskSubmission("t", dedup_key="k", tags={"v": "1"})).task_id
    new = store.submit(
        tm.TaskSubmission("t", dedup_key="k", tags={"v": "2"}, on_duplicate="supersede")
    ).task_id
    assert _tags(store.tasks()) == {new: {"v": "2"}}
    assert _tags(store.history(tags={"v": "1"})) == {old: {"v": "1"}}
    assert store.history(tags={"v": "2"}).height == 0
    assert store.cancel_where(tags={"v": "2"}) == 1
    assert _tags(store.history()) == {old: {"v": "1"}, new: {"v": "2"}}
    assert store.prune_history(older_than=dt.timedelta(0)) == 2
    assert store.history(tags={"v": "1"}).height == 0
    again = store.submit(tm.TaskSubmission("t", tags={"v": "3"})).task_id
    assert _tags(store.tasks()) == {again: {"v": "3"}}


def test_cancel_where_takes_exactly_the_tagged_tasks(store: tm.TaskStore) -> None:
    out = store.submit_batch(
        pl.DataFrame(
            {
                "task_type": ["t"] * 6,
                "dedup_key": list("abcdef"),
                "tags": [{"run": str(i % 2), "x": "y"} for i in range(6)],
            }
        )
    )
    ids = out.to_polars().sort("index")["task_id"].to_list()
    assert store.cancel_where(tags={"run": "1"}, dedup_keys=["b", "c", "d"]) == 2
    assert sorted(store.history()["id"].to_list()) == [ids[1], ids[3]]
    assert store.cancel_where(tags={"run": "0", "x": "y"}) == 3
    assert store.tasks()["id"].to_list() == [ids[5]]
    with pytest.raises(tm.SchedulerError, match="at least one filter"):
        store.cancel_where(tags={})


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.lists(
        st.dictionaries(st.sampled_from("abc"), st.sampled_from("xy"), max_size=3), max_size=12
    ),
    st.dictionaries(st.sampled_from("abc"), st.sampled_from("xy"), max_size=2),
)
def test_the_filter_returns_exactly_the_supersets(
    location: object, tag_sets: list[dict[str, str]], query: dict[str, str]
) -> None:
    with tm.TaskStore.open(location) as store:  # type: ignore[arg-type]
        store.cancel_where(status=["pending", "running", "paused"])
        base = store.submit_batch([tm.TaskSubmission("t", tags=t or None) for t in tag_sets])
        ids = base.to_polars().sort("index")["task_id"].to_list()
        want = [i for i, t in zip(ids, tag_sets, strict=True) if query.items() <= t.items()]
        assert store.tasks(tags=query)["id"].to_list() == want
        assert store.cancel_where(status="pending", tags=query) == (
            len(want) if query else len(ids)
        )


def test_cli_tag_flags(location: object, tmp_path: Path) -> None:
    db = str(location)
    with tm.TaskStore.open(location) as store:  # type: ignore[arg-type]
        a = store.submit(tm.TaskSubmission("t", tags={"env": "prod", "team": "x"})).task_id
        store.submit(tm.TaskSubmission("t", tags={"env": "dev"}))
    runner = CliRunner()
    out = tmp_path / "t.parquet"
    done = runner.invoke(
        cli, ["tasks", "--db", db, "--tag", "env=prod", "--tag", "team=x", "-o", str(out)]
    )
    assert done.exit_code == 0, done.output
    assert pl.read_parquet(out)["id"].to_list() == [a]
    csv = tmp_path / "t.csv"
    done = runner.invoke(cli, ["tasks", "--db", db, "--tag", "env=prod", "-o", str(csv)])
    assert done.exit_code == 0, done.output
    assert pl.read_csv(csv)["tags"].to_list() == ["env=prod team=x"]
    bad = runner.invoke(cli, ["tasks", "--db", db, "--tag", "env"])
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.output
    done = runner.invoke(cli, ["cancel", "--db", db, "--tag", "env=dev", "--json"])
    assert done.exit_code == 0, done.output
    assert '"cancelled": 1' in done.output
    done = runner.invoke(cli, ["history", "--db", db, "--tag", "env=dev", "-o", str(out)])
    assert done.exit_code == 0, done.output
    assert pl.read_parquet(out)["status"].to_list() == ["cancelled"]
