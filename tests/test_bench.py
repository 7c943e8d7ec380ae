"""``taskmill bench`` itself: every case it reports was measured at the store size it names,
with a ceiling for each store size and the pre-filled stores it promises."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import polars as pl
import pytest

import taskmill as tm
from taskmill import bench
from taskmill.bench import runner  # the driver and the SQLite cases, private helpers too

from conftest import ENV, PYTHON, ROOT, assert_store_consistent


def _bench(args: str) -> dict:
    """``taskmill bench ARGS --json``, run as a user would; its report."""
    done = subprocess.run(
        [PYTHON, "-m", "taskmill", "bench", *args.split(), "--json"],
        capture_output=True,
        text=True,
        env=ENV,
        cwd=ROOT,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_small_run_reports_every_case_at_every_store_size() -> None:
    report = _bench("--sizes 1k --existing 0,2k --cases polars,ceiling,dispatch --repeat 1")
    got = {(r["case"], r["existing"]): r for r in report["results"]}
    assert set(got) == {
        (case, existing) for case in ("polars", "ceiling", "dispatch") for existing in (0, 2000)
    }
    for r in got.values():
        assert r["rows"] == 1000 and r["seconds"] > 0 and r["peak_mb"] > 0
    results = [
        bench.Result(**{k: v for k, v in r.items() if k != "rows_per_s"}) for r in got.values()
    ]
    table = bench.table(results)
    assert "× empty store" in table
    polars_row = next(
        line for line in table.splitlines() if line.startswith("| polars | 1,000 | 2,000")
    )
    cells = [c.strip() for c in polars_row.strip("|").split("|")]
    ceiling = got[("ceiling", 2000)]["seconds"]
    assert cells[5] == f"{got[('polars', 2000)]['seconds'] / ceiling:.2f}"  # its own size's


def test_the_pre_filled_stores(tmp_path: Path) -> None:
    loaded = runner._template(tmp_path, 3000)
    dispatch = runner._dispatch_template(tmp_path, 3000)
    assert loaded is not None and dispatch is not None
    with tm.TaskStore.open(loaded) as store:
        assert store.counts()["pending"] == 3000
        tasks, _ = assert_store_consistent(store)
        # random, bucket-like prefixes: the keys are not in insertion order
        keys = tasks.sort("id")["dedup_key"]
        assert keys.str.contains(r"/data/\d+/\d+/part-\d+\.parquet$").all()
        assert not keys.is_sorted()
    with tm.TaskStore.open(dispatch) as store:
        counts = store.counts()
        assert counts["pending"] == 3000 and counts["completed"] == 3000
        tasks, history = assert_store_consistent(store)
        assert set(tasks["task_type"]) == {"noop"}
        assert tasks["id"].min() > history["id"].max()  # the older half finished
        assert history.filter(pl.col("status") != "completed").height == 0


def test_key_bytes_pads_the_plan_and_the_store_and_is_reported(tmp_path: Path) -> None:
    [result] = _bench("--sizes 1k --cases reader --repeat 1 --key-bytes 200")["results"]
    assert (result["case"], result["rows"], result["key_bytes"]) == ("reader", 1000, 200)
    table = bench.table([bench.Result(**{k: v for k, v in result.items() if k != "rows_per_s"})])
    assert "| reader (200-byte keys) | 1,000 |" in table
    plan = runner._plan(500, 1000, key_bytes=200)
    assert plan["dedup_key"].str.len_bytes().unique().to_list() == [200]
    loaded = runner._template(tmp_path, 1000, key_bytes=200)
    assert loaded is not None
    with tm.TaskStore.open(loaded) as store:
        tasks, _ = assert_store_consistent(store)
        assert tasks["dedup_key"].str.len_bytes().unique().to_list() == [200]
        # half the batch overlaps the store, padded keys included
        assert plan["dedup_key"].is_in(tasks["dedup_key"].implode()).sum() == 250


def test_a_case_reports_its_own_peak_not_its_parents() -> None:
    """ru_maxrss survives fork and exec: a worker started by a process that once held
    300 MB reported 300 MB whatever it used itself."""
    code = (
        "import subprocess, sys\n"
        "x = bytearray(300 * 2**20)\n"
        "for i in range(0, len(x), 4096): x[i] = 1\n"
        "del x\n"
        "child = 'from taskmill.bench import peak_mb; print(peak_mb())'\n"
        "print(subprocess.run([sys.executable, '-c', child], capture_output=True, text=True,"
        " check=True).stdout)\n"
    )
    done = subprocess.run(
        [PYTHON, "-c", code], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert float(done.stdout.strip()) < 200  # taskmill's imports, not the parent's 300 MB


def _row(table: str, name: str) -> list[str]:
    """The cells of the table's row named ``name``."""
    line = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_postgres_every_case_on_a_throwaway_server() -> None:
    """``--db postgres``: every PostgreSQL case at its size, ratios to PostgreSQL's own
    ceiling, the peers, dispatch per worker count; the server gone afterwards."""
    report = _bench("--db postgres --sizes 1k --repeat 1")
    got = {(r["case"], r["workers"]): r for r in report["results"]}
    loaders = ("polars", "depends", "parquet", "ceiling", "pgqueuer", "procrastinate")
    controls = {(c, 1) for c in bench.CONTROLS}
    assert "dispatch_schedules" in bench.CONTROLS
    assert set(got) == {(c, 0) for c in loaders} | {("dispatch", n) for n in (1, 2, 4)} | controls
    for r in got.values():
        assert r["backend"] == "postgres" and r["rows"] == 1000 and r["existing"] == 0
        assert r["seconds"] > 0 and r["peak_mb"] > 0
    server = report["postgres"]
    assert server["throwaway"] and server["version"]
    assert not Path(server["folder"]).exists()  # the server's folder is removed
    import psycopg

    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(server["url"], connect_timeout=2).close()

    # a SQLite ceiling of the same size in the same table must not be the one used
    results = [
        bench.Result(**{k: v for k, v in r.items() if k != "rows_per_s"}) for r in got.values()
    ]
    sqlite_ceiling = bench.Result("ceiling", 1000, 0, 1e-6, [1e-6], 1.0)
    table = bench.table([sqlite_ceiling, *results])
    ceiling = got[("ceiling", 0)]["seconds"]
    for case in ("polars", "parquet", "pgqueuer", "procrastinate"):
        cells = _row(table, f"{case} [postgres]")
        assert cells[5] == f"{got[(case, 0)]['seconds'] / ceiling:.2f}"
    pgqueuer = got[("pgqueuer", 0)]["seconds"]
    for case in ("polars", "parquet", "procrastinate"):
        assert _row(table, f"{case} [postgres]")[8] == f"{pgqueuer / got[(case, 0)]['seconds']:.1f}"
    for n in (1, 2, 4):
        cells = _row(table, f"dispatch [postgres, {n} worker{'s' if n > 1 else ''}]")
        assert cells[4] == f"{1000 / got[('dispatch', n)]['seconds']:,.0f}"  # tasks/s


def test_postgres_runs_leave_no_database(pg_server: object, tmp_path: Path) -> None:
    """Against a server's URL, every run's database is created and dropped: nothing else
    on the server is touched."""
    import psycopg

    admin = pg_server.url()  # type: ignore[attr-defined]

    def databases() -> set[str]:
        with psycopg.connect(admin, autocommit=True) as conn:
            return {row[0] for row in conn.execute("SELECT datname FROM pg_database")}

    before = databases()
    for case in ("ceiling", "pgqueuer"):
        result = bench.measure(case, 1000, 500, tmp_path, 2, db=admin)
        assert (result.case, result.backend, len(result.runs)) == (case, "postgres", 2)
    assert databases() == before


def test_postgres_cases_are_refused_where_they_do_not_run() -> None:
    for args, message in (
        ("--cases pgqueuer", "PostgreSQL only"),
        ("--db postgres --cases one_by_one", "not measured on PostgreSQL"),
        ("--db mysql://x", "postgresql://"),
    ):
        done = subprocess.run(
            [PYTHON, "-m", "taskmill", "bench", *args.split()],
            capture_output=True,
            text=True,
            env=ENV,
            cwd=ROOT,
            timeout=120,
        )
        assert done.returncode == 2 and message in done.stderr, done.stderr


def test_the_pace_cases_run_on_both_backends_side_by_side(pg_server: object) -> None:
    """``taskmill bench --pace`` (small): every case on SQLite and PostgreSQL, the
    real-duration case with the latency of every claim and completion it made, and one
    table with both backends in each row."""
    from taskmill import bench_pace

    admin = pg_server.url()  # type: ignore[attr-defined]
    results = bench_pace.run(
        admin, repeat=1, workers=(1, 2), real_tasks=24, noop_tasks=400, echo=lambda *a, **k: None
    )
    got = {(r.case, r.backend, r.workers): r for r in results}
    expected = {
        (case, backend, n)
        for backend in ("sqlite", "postgres")
        for case, n in [("real", 1), ("noop", 1), ("noop", 2)]
        + [(c, 1) for c in bench_pace.CONTROLS]
    }
    assert set(got) == expected
    for backend in ("sqlite", "postgres"):
        real = got[("real", backend, 1)]
        # 24 tasks of 20 ms, 4 at a time: never faster than the ideal 0.12 s
        assert real.tasks == 24 and real.seconds >= 24 * bench_pace.REAL_SECONDS / 4
        # a claim per free slot at least: 24 tasks in claims of at most 4
        assert real.latency["claims"] >= 6 and real.latency["completions"] >= 6
        assert 0 < real.latency["claim_p50_ms"] <= real.latency["claim_p99_ms"]
        assert all(r.tasks == 400 and r.seconds > 0 for r in results if r.case != "real")
    table = bench_pace.table(results)
    rows = table.splitlines()
    assert rows[0] == "| dispatch case | SQLite | PostgreSQL | PostgreSQL ÷ SQLite |"
    assert rows[2].startswith("| 24 tasks × 20 ms, max_concurrency=4 (ideal 0.12 s) |")
    assert sum("worker process" in r for r in rows) == 2
    assert sum("× plain)" in r for r in rows) == len(bench_pace.CONTROLS)
    assert "–" not in table  # every cell measured


@pytest.mark.parametrize("module", ["browse", "ui"])
def test_the_dashboard_benches_run_on_a_small_store(
    module: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m taskmill.bench.browse`` and ``…bench.ui`` (their 1M-task figures are
    in docs/benchmarks.md) load a store and time every read and page: each answered."""
    import importlib

    bench = importlib.import_module(f"taskmill.bench.{module}")
    bench.main(["--tasks", "3000", "--repeat", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "SQLite, 3,000 tasks"
    timed = [line for line in lines if " median " in line]
    assert len(timed) == (17 if module == "browse" else 13)
    if module == "ui":
        assert all(" 200 " in line for line in timed), timed
