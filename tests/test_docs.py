"""The README's Python examples run as written."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from conftest import PYTHON, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.DOTALL)


def test_readme_has_examples() -> None:
    assert len(BLOCKS) >= 2


def test_readme_python_blocks_run_in_order(tmp_path: Path) -> None:
    script = "\n\n".join(BLOCKS)
    (tmp_path / "example.py").write_text(script, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [PYTHON, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "TaskCompleted" in proc.stdout
    assert "'completed': 1" in proc.stdout


@pytest.mark.parametrize("command", re.findall(r"^(python3 -m venv .*)$", README, re.M))
def test_quick_start_commands_use_a_venv(command: str) -> None:
    assert command.startswith('python3 -m venv .venv && .venv/bin/pip install -e ".[dev]" && ')
