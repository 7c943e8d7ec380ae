"""The notebook widgets in a real browser: JupyterLab on localhost, Debian's Chromium,
driven by Playwright.  Screenshots of every check go to test-output/browser/."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

import taskmill as tm

from conftest import CHROMIUM, FLAGS, ROOT, need

SHOTS = ROOT / "test-output" / "browser"

CELLS = [
    # a known batch: 25 new keys repeated (35 in-batch duplicates), 2 bad rows
    "import asyncio, pathlib, tempfile\nimport polars as pl\nimport taskmill as tm\n"
    "folder = pathlib.Path(tempfile.mkdtemp())\n"
    "store = tm.TaskStore.open(folder / 'batch.db')\n"
    "frame = pl.DataFrame({'task_type': ['t'] * 60 + ['', 't'],\n"
    "                      'dedup_key': [f'k{i % 25}' for i in range(60)] + ['bad', 'x'],\n"
    "                      'priority': [5] * 61 + [300]})\n"
    "out = store.submit_batch(frame)\nout",
    # a live view of a running scheduler
    # (every 400th task fails for good: the recent failures open onto their tracebacks)
    "async def slow(ctx):\n    await asyncio.sleep(0.05)\n"
    "    if ctx.task_id % 400 == 0:\n"
    "        raise OSError(f'endpoint refused task {ctx.task_id}')\n"
    "sched = tm.Scheduler(folder / 'live.db', executors={'t': slow}, max_concurrency=2,\n"
    "                     rate_limits={'group:s3://eu': tm.RateLimit(2, burst=1)},\n"
    "                     max_retries=0)\n"
    "await sched.start()\nview = sched.widget(refresh=10)\nview",
    # every 4th task goes to an endpoint held to 2 starts a second; the rest run freely
    "live_out = await sched.submit_batch(pl.DataFrame({'task_type': ['t'] * 2000,\n"
    "    'group': ['s3://eu' if i % 4 == 0 else 'gcs://us' for i in range(2000)]}))\n"
    "'submitted'",
    # that batch followed to its end, from the store alone
    "batch_view = sched.store.batch(live_out.batch_id).widget(refresh=0.5)\nbatch_view",
    # a batch whose 1,300 rows are all queued already, over long endpoint names
    "big = pl.DataFrame({'task_type': ['t'] * 1300,\n"
    "                    'dedup_key': [f'big-{i}' for i in range(1300)],\n"
    "                    'group': [f's3://bucket-{i % 7}.a-rather-long-endpoint.amazonaws.com'\n"
    "                              for i in range(1300)]})\n"
    "store.submit_batch(big)\nagain = store.submit_batch(big)\nagain",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    need(
        Path(CHROMIUM).exists(),
        "Debian's Chromium at /usr/bin/chromium",
        "install it with 'apt-get install chromium' (.ci/run does)",
    )
    root = tmp_path_factory.mktemp("lab")
    nbformat.write(
        new_notebook(
            cells=[new_code_cell(c) for c in CELLS],
            metadata={
                "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
            },
        ),
        root / "widget.ipynb",
    )
    # the workflow notebook, run as a user opens it (notebooks/ runs in a kernel too)
    shutil.copy(ROOT / "notebooks" / "05-workflows.ipynb", root / "05-workflows.ipynb")
    settings = root / "settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False})
    )
    port = free_port()
    log = (root / "server.log").open("w")
    env = {
        **os.environ,
        "JUPYTER_CONFIG_DIR": str(root / "config"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(root / "settings"),
        "PYTHONPATH": str(ROOT),
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--ServerApp.token=",
            "--ServerApp.password=",
            "--allow-root",
            f"--ServerApp.root_dir={root}",
            "--LabApp.expose_app_in_browser=True",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/api/status", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise AssertionError((root / "server.log").read_text()) from None
                time.sleep(0.3)
        yield port, root
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def open_notebook(browser: Any, local: str, name: str, *, height: int) -> Any:
    """A page of JupyterLab at ``local`` (nothing else reachable) with notebook ``name``
    open and its kernel idle."""
    page = browser.new_page(viewport={"width": 1024, "height": height})
    page.route(
        "**/*",
        lambda route: route.continue_() if route.request.url.startswith(local) else route.abort(),
    )
    page.goto(f"{local}/lab/tree/{name}?reset")
    page.wait_for_function(
        "name => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
        " return !!(w && w.context && w.context.path === name"
        " && w.sessionContext.session && w.sessionContext.session.kernel"
        " && w.sessionContext.session.kernel.status === 'idle'); }",
        arg=name,
        timeout=90_000,
    )
    return page


def test_widgets_render_and_respond_in_jupyterlab(lab: tuple[int, Path]) -> None:
    from playwright.sync_api import sync_playwright

    port, _ = lab
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True)
    local = f"http://127.0.0.1:{port}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = open_notebook(browser, local, "widget.ipynb", height=1100)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")

        widget = page.locator(".jp-OutputArea-output .taskmill-outcome-widget").first
        widget.wait_for(timeout=90_000)
        counts = widget.locator(".taskmill-counts")
        for action, n in {
            "submitted": 25,
            "deduplicated": 35,
            "superseded": 0,
            "upgraded": 0,
            "failed": 2,
        }.items():
            assert re.search(
                rf"\b{n}\b", counts.locator(f"tr.taskmill-action-{action}").inner_text()
            ), action
        assert "62" in widget.locator(".taskmill-headline").inner_text()
        widget.screenshot(path=str(SHOTS / "1-outcome.png"))

        # paging in the first tab (35 in-batch duplicates, 20 a page)
        first = widget.locator(".taskmill-view-in-batch")
        assert first.locator("tbody tr").count() == 20
        widget.get_by_role("button", name="next ▶").first.click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('.taskmill-outcome-widget .widget-html')]"
            ".some(e => e.innerText.includes('page 2 of 2'))",
            timeout=30_000,
        )
        assert first.locator("tbody tr").count() == 15
        widget.screenshot(path=str(SHOTS / "2-paging.png"))

        # the failed tab shows the failed rows with their messages
        widget.locator(".lm-TabBar-tab", has_text="failed (2)").click()
        failed = widget.locator(".taskmill-view-failed")
        failed.wait_for(state="visible", timeout=30_000)
        text = failed.inner_text()
        assert "task_type is an empty string" in text
        assert "priority must be within 0..255, got 300" in text
        widget.screenshot(path=str(SHOTS / "3-failed-tab.png"))

        # layout at a 1024-px viewport: nothing wider than its box, no label cut short
        big = page.locator(".jp-OutputArea-output .taskmill-outcome-widget").nth(1)
        big.wait_for(timeout=90_000)
        big.scroll_into_view_if_needed()
        assert "already queued (1,300)" in big.locator(".lm-TabBar").inner_text()
        big.screenshot(path=str(SHOTS / "6-layout-1024.png"))
        overflowing = big.evaluate(
            """w => [...w.querySelectorAll('*')]
                 .filter(e => e.getBoundingClientRect().right
                              > w.getBoundingClientRect().right + 1)
                 .map(e => e.className || e.tagName)"""
        )
        assert overflowing == [], overflowing
        cut = big.evaluate(
            """w => [...w.querySelectorAll('.lm-TabBar-tabLabel, button')]
                 .filter(e => e.scrollWidth > e.clientWidth + 1)
                 .map(e => e.innerText)"""
        )
        assert cut == [], cut
        breakdowns = big.locator(".taskmill-breakdowns").inner_text()
        assert "1,300" in breakdowns  # counts with thousands separators
        for name in ("by group", "by priority"):
            assert name in breakdowns
        big.get_by_role("button", name="take this view out").click()
        page.wait_for_function(
            "() => [...document.querySelectorAll('.taskmill-outcome-widget')]"
            ".some(e => e.innerText.includes('in out.exported'))",
            timeout=30_000,
        )
        cut = big.evaluate(  # the note beside the button must not squeeze its label
            """w => [...w.querySelectorAll('.lm-TabBar-tabLabel, button')]
                 .filter(e => e.scrollWidth > e.clientWidth + 1)
                 .map(e => e.innerText)"""
        )
        assert cut == [], cut
        big.screenshot(path=str(SHOTS / "6-layout-1024.png"))

        # the live view's counts move while tasks run
        live = page.locator(".taskmill-queue-widget .taskmill-live")
        live.wait_for(timeout=60_000)

        def completed() -> int:
            match = re.search(r"completed\s+([\d,]+)", live.inner_text())
            return int(match.group(1).replace(",", "")) if match else -1

        page.wait_for_function(
            "() => /completed\\s+[1-9]/.test(document.querySelector("
            "'.taskmill-queue-widget .taskmill-live').innerText)",
            timeout=60_000,
        )
        before = completed()
        page.locator(".taskmill-queue-widget").screenshot(path=str(SHOTS / "4-live-a.png"))
        time.sleep(1.5)
        after = completed()
        page.locator(".taskmill-queue-widget").screenshot(path=str(SHOTS / "5-live-b.png"))
        assert 0 < before < after <= 2000
        # the group held by its rate limit says so in its row of the live view
        page.wait_for_function(
            "() => [...document.querySelectorAll('.taskmill-queue-widget tr')]"
            ".some(r => r.innerText.includes('s3://eu') && r.innerText.includes('rate limit'))",
            timeout=60_000,
        )
        page.locator(".taskmill-queue-widget").screenshot(path=str(SHOTS / "7-live-held.png"))
        # a failure of the live view opens onto its attempt's traceback, kept by the store
        failure = page.locator(".taskmill-queue-widget details.taskmill-failure").first
        failure.wait_for(timeout=60_000)
        summary = failure.locator("summary")
        assert re.search(
            r"#\d+ \(attempt 1\): OSError: endpoint refused task \d+", summary.inner_text()
        )
        trace = failure.locator("pre")
        assert not trace.is_visible()
        summary.click()
        trace.wait_for(state="visible", timeout=10_000)
        text = trace.inner_text()
        assert text.startswith("Traceback (most recent call last):"), text
        assert "in slow" in text, text
        assert re.search(r"\nOSError: endpoint refused task \d+$", text.rstrip()), text
        page.locator(".taskmill-queue-widget").screenshot(path=str(SHOTS / "9-live-failure.png"))
        # the batch widget follows the 2,000 tasks: its bar and counts move, and the task
        # that failed for good is listed with its error
        batch = page.locator(".jp-OutputArea-output .taskmill-batch-widget").first
        batch.wait_for(timeout=60_000)
        batch.scroll_into_view_if_needed()

        def ended() -> int:
            match = re.search(r"([\d,]+) of 2,000 ended", batch.inner_text())
            return int(match.group(1).replace(",", "")) if match else -1

        first_seen = ended()
        assert "in progress" in batch.inner_text()
        page.wait_for_function(
            "() => !!document.querySelector('.taskmill-batch-widget .taskmill-batch-failures')",
            timeout=60_000,
        )
        assert "endpoint refused task" in batch.locator(".taskmill-batch-failures").inner_text()
        assert re.search(r"failed\s+[1-9]", batch.locator(".taskmill-batch-counts").inner_text())
        page.wait_for_function(  # it refreshes itself (every 0.5 s): the count moves on
            "n => { const m = document.querySelector('.taskmill-batch-widget').innerText"
            ".match(/([\\d,]+) of 2,000 ended/);"
            " return m && Number(m[1].replaceAll(',', '')) > n; }",
            arg=first_seen,
            timeout=60_000,
        )
        assert 0 <= first_seen < ended() < 2000
        width = batch.locator(".progress-bar").evaluate("e => e.style.width")
        assert re.fullmatch(r"\d+(\.\d+)?%", width) and float(width[:-1]) > 0, width
        batch.screenshot(path=str(SHOTS / "10-batch.png"))
        # the scheduler closes: the view draws its final state, "scheduler closed" on the
        # status line, and its output is updated in place (issue 22)
        page.evaluate(
            "() => { const nb = window.jupyterapp.shell.currentWidget.content;"
            " nb.activeCellIndex = nb.widgets.length - 1; }"
        )
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:insert-cell-below')")
        page.evaluate(
            "() => window.jupyterapp.shell.currentWidget.content.activeCell.model"
            ".sharedModel.setSource('await sched.close()')"
        )
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-cell')")
        page.wait_for_function(
            "() => [...document.querySelectorAll('.taskmill-queue-widget .taskmill-live')]"
            ".some(e => e.innerText.includes('scheduler closed'))",
            timeout=60_000,
        )
        closed = page.locator(".taskmill-queue-widget").first
        line = closed.locator(".taskmill-live")
        box, last = line.bounding_box(), line.locator(".taskmill-rate").bounding_box()
        assert box and last and last["height"] < 30  # "· scheduler closed" not alone
        closed.screenshot(path=str(SHOTS / "8-live-closed.png"))
        browser.close()


def test_the_workflow_notebook_follows_its_batch_to_the_end(lab: tuple[int, Path]) -> None:
    """notebooks/05-workflows.ipynb in JupyterLab: the batch widget of the move plan
    refreshes itself until the batch is done, with the copy that failed and the two
    tasks cancelled after it."""
    from playwright.sync_api import sync_playwright

    port, _ = lab
    SHOTS.mkdir(parents=True, exist_ok=True)
    local = f"http://127.0.0.1:{port}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = open_notebook(browser, local, "05-workflows.ipynb", height=1400)
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
        batch = page.locator(".jp-OutputArea-output .taskmill-batch-widget").first
        batch.wait_for(timeout=90_000)
        page.wait_for_function(
            "() => [...document.querySelectorAll('.taskmill-batch-widget')]"
            ".some(e => e.innerText.includes('done'))",
            timeout=60_000,
        )
        batch.scroll_into_view_if_needed()
        text = batch.inner_text()
        assert "121 of 121 ended (100.0%)" in text, text
        counts = batch.locator(".taskmill-batch-counts").inner_text()
        assert re.search(r"completed\s+118", counts) and re.search(r"cancelled\s+2", counts)
        failures = batch.locator(".taskmill-batch-failures").inner_text()
        assert "endpoint refused photos/042.jpg" in failures
        assert batch.locator(".progress-bar").evaluate("e => e.style.width") == "100%"
        batch.screenshot(path=str(SHOTS / "11-workflow-batch.png"))
        browser.close()


def test_progress_bars_render_in_a_browser(tmp_path: Path) -> None:
    """The live view's progress section (what running tasks reported, read from a real
    store) drawn by Chromium: a bar per task, as wide as its progress, the most advanced
    first, names and messages escaped."""
    from playwright.sync_api import sync_playwright

    from taskmill.views.notebook import progress_html

    with tm.TaskStore.open(tmp_path / "progress.db") as store:
        store.submit_batch(
            [
                tm.TaskSubmission("sync.upload", dedup_key=key)
                for key in ("photos/2026/a.jpg", "photos/2026/<b>.jpg", "videos/long.mp4")
            ]
        )
        owner = store.new_owner()
        a, b, c = (t.id for t in store.claim(3, task_types=["sync.upload"], owner=owner))
        store.record_progress(
            {a: (1, 0.25, "part 1 of 4"), b: (1, 0.9, "almost <done>"), c: (1, 0.6, None)},
            owner=owner,
        )
        page_html = progress_html(store.tasks(status="running"))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 640, "height": 200})
        page.set_content(f"<body style='font-family:sans-serif'>{page_html}</body>")
        rows = page.locator(".taskmill-progress-row")
        assert rows.count() == 3
        texts = [rows.nth(i).inner_text() for i in range(3)]
        assert texts[0].startswith(f"#{b} photos/2026/<b>.jpg") and "90% almost <done>" in texts[0]
        assert texts[2].startswith(f"#{a} photos/2026/a.jpg") and "25% part 1 of 4" in texts[2]
        widths = rows.locator("span > span").evaluate_all("els => els.map(e => e.offsetWidth)")
        assert widths == [108, 72, 30]  # 90%, 60%, 25% of 120 px
        page.locator(".taskmill-progress").screenshot(path=str(SHOTS / "12-progress.png"))
        browser.close()
