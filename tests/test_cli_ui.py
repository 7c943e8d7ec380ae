"""``taskmill ui`` as a user starts it: a real process that says where it listens, serves
the store there, keeps to loopback unless given a token, and stops on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

import taskmill as tm

pytestmark = pytest.mark.backends("sqlite", "postgres")


def _start(
    location: str | Path, *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """``taskmill ui`` on any free port; the process and the address it printed."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "taskmill", "ui", "--db", str(location), "--port", "0", *args],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert proc.stderr is not None
    line = proc.stderr.readline()
    found = re.search(r" at (http://127\.0\.0\.1:\d+/\S*)  \(Ctrl-C stops\)", line)
    if not found:
        proc.kill()
        proc.wait()
        rest = proc.stderr.read()
        proc.stderr.close()
        raise AssertionError(f"no address in {line!r}: {rest}")
    return proc, found.group(1)


def _stop(proc: subprocess.Popen[str]) -> int:
    """Ctrl-C; the exit code."""
    proc.send_signal(signal.SIGINT)
    try:
        return proc.wait(20)
    finally:
        assert proc.stderr is not None
        proc.stderr.close()


def test_ui_serves_the_store_until_ctrl_c(location: str | Path) -> None:
    with tm.TaskStore.open(location) as store:
        store.submit_batch([tm.TaskSubmission("copy", dedup_key=f"k{i}") for i in range(3)])
    proc, url = _start(location)
    try:
        page = httpx.get(url + "tasks")
        assert page.status_code == 200
        assert [int(i) for i in re.findall(r'href="/tasks/(\d+)"', page.text)] == [3, 2, 1]
    finally:
        assert _stop(proc) == 0


def test_ui_with_a_token_from_the_environment(location: str | Path) -> None:
    tm.TaskStore.open(location).close()
    proc, url = _start(location, "--read-only", env={"TASKMILL_UI_TOKEN": "t0k"})
    try:
        assert url.endswith("/?token=t0k")
        base = url.split("?")[0]
        assert httpx.get(base).status_code == 401
        with httpx.Client() as browser:
            signed = browser.get(url, follow_redirects=True)
            assert signed.status_code == 200 and "read-only" in signed.text
            assert browser.get(base + "workers").status_code == 200
    finally:
        assert _stop(proc) == 0


def test_ui_refuses_to_listen_beyond_loopback_without_a_token(location: str | Path) -> None:
    tm.TaskStore.open(location).close()
    env = {k: v for k, v in os.environ.items() if k != "TASKMILL_UI_TOKEN"}
    done = subprocess.run(
        [sys.executable, "-m", "taskmill", "ui", "--db", str(location), "--host", "0.0.0.0"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 1
    assert "beyond this machine, with no token: give --token" in done.stderr
    assert done.stdout == ""


@pytest.mark.backends("sqlite")
def test_ui_on_a_missing_file_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "nope.db"
    done = subprocess.run(
        [sys.executable, "-m", "taskmill", "ui", "--db", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1 and "does not exist" in done.stderr
    assert not missing.exists()


def test_ui_on_a_port_in_use_says_so(location: str | Path) -> None:
    tm.TaskStore.open(location).close()
    proc, url = _start(location)
    try:
        port = url.rsplit(":", 1)[1].strip("/")
        done = subprocess.run(
            [sys.executable, "-m", "taskmill", "ui", "--db", str(location), "--port", port],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 1
        assert done.stderr.startswith(f"taskmill: error: cannot listen on 127.0.0.1:{port}: ")
        assert "(another taskmill ui? give --port, or 0 for any free one)" in done.stderr
        assert httpx.get(url).status_code == 200  # the first one serves on
    finally:
        assert _stop(proc) == 0


def test_ui_stops_cleanly_on_sigterm_and_refuses_a_refresh_of_nan(location: str | Path) -> None:
    tm.TaskStore.open(location).close()
    proc, url = _start(location)
    assert httpx.get(url).status_code == 200
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(20) == 0
    finally:
        assert proc.stderr is not None
        proc.stderr.close()
    done = subprocess.run(
        [sys.executable, "-m", "taskmill", "ui", "--db", str(location), "--refresh", "nan"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "refresh must be a number of seconds, 0 or more, not nan" in done.stderr
