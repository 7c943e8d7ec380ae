"""``taskmill server``: a throwaway PostgreSQL to try the scale-out section with, run as a
user would — the URL it prints is a working store; Ctrl-C (SIGINT) or SIGTERM stops the
server and removes its folder."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import pytest

import taskmill as tm

from conftest import ENV, PYTHON


def _folder_of(url: str) -> Path:
    """The server's folder, from the postmaster's command line (its data folder)."""
    port = url.rsplit(":", 1)[1].split("/")[0]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-D" in command and any(port.encode() in part for part in command):
            return Path(command[command.index(b"-D") + 1].decode()).parent
    raise AssertionError(f"no server process on port {port}")


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM])
def test_the_server_command_prints_a_working_url_and_stops_on_a_signal(
    how: signal.Signals,
) -> None:
    proc = subprocess.Popen(
        [PYTHON, "-m", "taskmill", "server", "--fast", "--database", "trying"],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("postgresql://taskmill@127.0.0.1:") and url.endswith("/trying")
        folder = _folder_of(url)
        with tm.TaskStore.open(url) as store:
            out = store.submit(tm.TaskSubmission("t", dedup_key="k"))
            assert out.action == "submitted"
            assert store.counts()["pending"] == 1
        proc.send_signal(how)
        assert proc.wait(timeout=60) == 0
        _, err = proc.communicate()
        assert "stopped and its folder removed" in err
        assert not folder.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_bad_database_name_is_refused_before_anything_starts() -> None:
    started = time.monotonic()
    done = subprocess.run(
        [PYTHON, "-m", "taskmill", "server", "--database", "no-such name"],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "--database" in done.stderr
    assert time.monotonic() - started < 30
