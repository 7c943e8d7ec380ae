"""The README's Python examples run as written."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import ENV, PYTHON, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


def test_readme_python_blocks_run_in_order(tmp_path: Path, pg_url: str) -> None:
    script = "\n\n".join(BLOCKS)
    (tmp_path / "example.py").write_text(script, encoding="utf-8")
    env = {**ENV, "TASKMILL_DB": pg_url}  # "Scaling out" runs on a real PostgreSQL server
    proc = subprocess.run(
        [PYTHON, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "TaskCompleted" in proc.stdout
    assert "'completed': 1" in proc.stdout
    # the scaling-out example submitted the plan to PostgreSQL: 3 new tasks, 1 in-batch dup
    assert "{'submitted': 3, 'deduplicated': 1, 'superseded': 0, 'upgraded': 0" in proc.stdout
    # controls: two tasks planned for later, one expired at once; the limited uploads ran
    assert "planned: 2" in proc.stdout
    assert "expired: 1" in proc.stdout and "limited: 20" in proc.stdout
    # history retention: nothing is 30 days old; then every finished task went to archive/
    assert "pruned 0; archive: None" in proc.stdout
    [archive] = (tmp_path / "archive").iterdir()
    assert archive.name.startswith("history-") and archive.suffix == ".parquet"


@pytest.mark.parametrize("command", re.findall(r"^(python3 -m venv .*)$", README, re.M))
def test_quick_start_commands_use_a_venv(command: str) -> None:
    assert command.startswith('python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && ')


def walkthrough() -> list[str]:
    """The commands of the README's command-line walkthrough, comments dropped."""
    block = re.search(r"## Command line.*?```sh\n(.*?)```", README, re.DOTALL)
    assert block
    return [ln.split("#")[0].strip() for ln in block.group(1).splitlines() if ln.strip()]


def test_readme_command_line_walkthrough_runs(tmp_path: Path) -> None:
    """The README's shell walkthrough, line by line, in an empty folder."""
    lines = walkthrough()
    env = ENV
    for line in lines:
        assert line.startswith("taskmill ")
        argv = [PYTHON, "-m", "taskmill", *line.split()[1:]]
        proc = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
        )
        assert proc.returncode == 0, (line, proc.stderr)
    assert (tmp_path / "outcome.parquet").exists() and (tmp_path / "failed.csv").exists()
    assert (tmp_path / "tasks.db").exists()  # the demo's default store


@pytest.mark.timeout(600)
def test_readme_walkthrough_runs_from_an_installed_wheel(tmp_path: Path) -> None:
    """0.1: the walkthrough submitted data/sample-plan.parquet, which exists only in a
    checkout.  Here: the built wheel in a fresh venv, run from a folder with nothing in it."""
    import os

    dist, venv, work = tmp_path / "dist", tmp_path / "venv", tmp_path / "elsewhere"
    work.mkdir()
    clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(argv: list[str], cwd: Path = tmp_path) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(argv, cwd=cwd, env=clean, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (argv, done.stderr[-3000:])
        return done

    run([PYTHON, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)])
    [wheel] = dist.glob("taskmill-*.whl")
    run([PYTHON, "-m", "venv", str(venv)])
    run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)])
    where = run(
        [str(venv / "bin" / "python"), "-c", "import taskmill; print(taskmill.__file__)"], work
    )
    assert str(venv) in where.stdout  # the installed copy, not this checkout
    for line in walkthrough():
        run([str(venv / "bin" / "taskmill"), *line.split()[1:]], work)
    assert (work / "sample-plan.parquet").exists() and (work / "failed.csv").exists()
    assert (work / "tasks.db").exists()
