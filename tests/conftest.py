from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import taskmill as tm

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "tasks.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[tm.TaskStore]:
    with tm.TaskStore.open(db_path) as s:
        yield s


PYTHON = sys.executable
