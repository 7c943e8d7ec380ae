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


def test_readme_python_blocks_run_in_order(tmp_path: Path) -> None:
    script = "\n\n".join(BLOCKS)
    (tmp_path / "example.py").write_text(script, encoding="utf-8")
    env = ENV
    proc = subprocess.run(
        [PYTHON, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "TaskCompleted" in proc.stdout
    assert "'completed': 1" in proc.stdout


@pytest.mark.parametrize("command", re.findall(r"^(python3 -m venv .*)$", README, re.M))
def test_quick_start_commands_use_a_venv(command: str) -> None:
    assert command.startswith('python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && ')


def test_readme_command_line_walkthrough_runs(tmp_path: Path) -> None:
    """The README's shell walkthrough, line by line, from a copy of the checkout's data/."""
    block = re.search(r"## Command line.*?```sh\n(.*?)```", README, re.DOTALL)
    assert block
    lines = [ln.split("#")[0].strip() for ln in block.group(1).splitlines() if ln.strip()]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sample-plan.parquet").write_bytes(
        (ROOT / "data" / "sample-plan.parquet").read_bytes()
    )
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
