"""Every notebook in notebooks/ runs top to bottom in a fresh kernel."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from conftest import ROOT

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert len(NOTEBOOKS) >= 3


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the kernel imports this checkout's taskmill (it imported the one installed in the
    # venv, whatever checkout the tests ran from)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    errors = [
        o
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
        if o.get("output_type") == "error"
    ]
    assert not errors
    # the outcome cells show the widget, with an HTML fallback for frontends without one
    bundles = [
        o.get("data", {})
        for cell in nb.cells
        if cell.cell_type == "code"
        for o in cell.get("outputs", [])
    ]
    if path.name in ("03-live-scheduler.ipynb", "04-controls.ipynb"):
        # the live view's HTML copy is replaced by its final state when the scheduler
        # closes: a saved notebook shows the numbers (it showed a repr before, issue 22)
        live = [b for b in bundles if "taskmill-live" in b.get("text/html", "")]
        assert live and "application/vnd.jupyter.widget-view+json" in live[0]
        assert "scheduler closed" in live[0]["text/html"]
    if path.name == "04-controls.ipynb":  # a group held by its rate limit, and said so
        _held_groups_shown(bundles)
    if "submit" in path.name or "plan" in path.name:
        assert any(
            "application/vnd.jupyter.widget-view+json" in b and "text/html" in b for b in bundles
        )


def _held_groups_shown(shown: list[dict]) -> None:
    held = [d["text/plain"] for d in shown if "rate limit" in d.get("text/plain", "")]
    assert held and "'s3://eu': 'rate limit'" in held[0]
    # the group table the notebook shows mid-run (not the live view's final HTML copy)
    table = next(
        d["text/html"]
        for d in shown
        if "waiting on" in d.get("text/html", "") and "taskmill-live" not in d["text/html"]
    )
    for group, reason in [
        ("s3://eu", "rate limit"),
        ("azure://westeurope", "paused"),
        ("gcs://archive", "start time (1)"),
    ]:
        row = table.split(f">{group}<", 1)[1].split("</tr>", 1)[0]
        assert f">{reason}<" in row, (group, row)
