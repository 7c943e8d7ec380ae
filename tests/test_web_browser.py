"""``taskmill ui`` in a real Chromium (Playwright), on both engines: every page as a user
sees it (screenshots in test-output/ui/), the queue page refreshing by itself while a
worker elsewhere ends tasks, the filters and the pager, an action confirmed by clicks
and its effect in the store, and not one error in the browser's console (a blocked
inline script or style would be one: the pages keep to their content security policy)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard import HOSTILE_GROUP, HOSTILE_KEY, fill, served

import taskmill as tm

from conftest import CHROMIUM, FLAGS, ROOT, need

pytestmark = pytest.mark.backends("sqlite", "postgres")

SHOTS = ROOT / "test-output" / "ui"


@pytest.fixture
def browser() -> Iterator[Any]:
    need(
        Path(CHROMIUM).exists(),
        "Debian's Chromium at /usr/bin/chromium",
        "install it with 'apt-get install chromium' (.ci/run does)",
    )
    from playwright.sync_api import sync_playwright

    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()


def _engine(store: tm.TaskStore) -> str:
    return "postgres" if "postgresql" in store.driver.describe().lower() else "sqlite"


def test_the_dashboard_in_a_browser(store: tm.TaskStore, browser: Any) -> None:
    filled = fill(store)
    engine = _engine(store)
    # a worker elsewhere: two tasks running, one reported progress
    owner = store.new_owner()
    store.register(owner, lease_timeout=60)
    running = [t.id for t in store.claim(2, task_types=["copy"], owner=owner)]
    store.record_progress({running[0]: (1, 0.4, "copying 40 of 100 MB")}, owner=owner)
    problems: list[str] = []
    with served(store, refresh=0.5) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))

        page.goto(url + "/")
        counts = page.locator("div.counts")
        assert re.search(r"running\s+2", counts.inner_text())
        assert page.locator("table.progress").inner_text().count("40%") == 1
        assert page.get_by_text(HOSTILE_GROUP).count() == 1  # shown as text, run as nothing
        page.screenshot(path=str(SHOTS / f"ui-queue-{engine}.png"), full_page=True)

        # the live part refreshes by itself: the worker ends its two tasks
        store.complete_many(running, owner=owner)
        page.wait_for_function(
            "() => /completed\\s+5/.test(document.querySelector('.counts').innerText)",
            timeout=15_000,
        )
        assert re.search(r"running\s+0", counts.inner_text())

        # tasks: the filters, then the pager
        page.click("header nav >> text=Tasks")
        page.fill("input[name=key]", "s3://eu/photos/00")
        page.select_option("select[name=status]", "completed")
        page.click("form.filters button")
        listed = page.locator("table.tasks tbody tr")
        assert listed.count() == 5
        assert "status=completed" in page.url and "key=s3%3A%2F%2Feu%2Fphotos%2F00" in page.url
        page.screenshot(path=str(SHOTS / f"ui-tasks-{engine}.png"), full_page=True)

        # one task: its payload, its attempt and its error (hostile, shown as text)
        page.goto(url + f"/tasks/{filled.failed}")
        assert "failed" in page.locator("h1").inner_text()
        assert page.locator("table.attempts tbody tr").count() == 1
        assert "<iframe" in page.locator("table.attempts").inner_text()
        page.screenshot(path=str(SHOTS / f"ui-task-{engine}.png"), full_page=True)

        # an action: the button asks, the confirmation does it
        target = filled.hostile
        page.goto(url + f"/tasks/{target}")
        assert HOSTILE_KEY in page.locator("dd.key").inner_text()
        page.click("a.action >> text=Cancel")
        assert "Cancel task" in page.locator("p.question").inner_text()
        assert store.task(target)["status"] == "pending"  # asking changed nothing
        page.screenshot(path=str(SHOTS / f"ui-confirm-{engine}.png"), full_page=True)
        page.click("form.confirm button")
        assert page.locator("p.flash").inner_text() == f"Task {target} cancelled."
        assert store.task(target)["status"] == "cancelled"
        assert "cancelled" in page.locator("h1").inner_text()

        # a group paused from the queue page
        page.goto(url + "/")
        row = page.locator("table.grid tr", has_text="s3://eu").first
        row.locator("a.action", has_text="pause").click()
        page.click("form.confirm button")
        assert "s3://eu" in store.paused_groups()
        assert page.locator("p.flash").inner_text() == "Group s3://eu paused."

        for name in ("batches", f"batches/{filled.batch_id}", "schedules", "workers"):
            page.goto(url + f"/{name}")
            assert page.locator("h1").count() == 1
            shot = name.replace("/", "-")
            page.screenshot(path=str(SHOTS / f"ui-{shot}-{engine}.png"), full_page=True)
        assert "alive" in page.locator("table.grid").inner_text()
    assert problems == []


def test_the_pager_walks_a_long_listing_by_clicks(store: tm.TaskStore, browser: Any) -> None:
    store.submit_batch([tm.TaskSubmission("copy", dedup_key=f"k{i:04d}") for i in range(130)])
    with served(store) as url:
        page = browser.new_page()
        page.goto(url + "/tasks")
        seen: list[str] = []
        while True:
            seen += page.locator("table.tasks tbody tr td:first-child").all_inner_texts()
            older = page.locator("a[rel=next]")
            if not older.count():
                break
            older.click()
        assert seen == [str(i) for i in range(130, 0, -1)]
        page.click("text=« newest")
        assert page.locator("table.tasks tbody tr").first.inner_text().startswith("130")
