"""A store's WAL checkpoints off the batch path: a background thread copies the pages a
batch wrote back into the store file, while the caller goes on.

A commit of a 100k-row batch writes ~25 MB of pages to the write-ahead log; SQLite's
automatic checkpoint then copies them into the database file inside that very ``COMMIT``
(about 0.1 s of a 0.6 s batch).  The batch connection turns the automatic checkpoint off,
and pokes this thread after each commit instead: it runs a ``PASSIVE`` checkpoint on its
own connection, which never blocks a reader or a writer (SQLite's advice for writers
that want throughput).  The other connections keep the automatic checkpoint; one that
commits while this thread checkpoints skips its own.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable

__all__ = ["Checkpointer"]


class Checkpointer:
    """One background thread per store that checkpoints the WAL when poked."""

    def __init__(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._connect = connect
        self._wake = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        #: seconds each checkpoint took, newest last (the bench reports them)
        self.seconds: list[float] = []
        #: frames in the log at the last checkpoint
        self.log_frames = 0

    def poke(self) -> None:
        """A batch committed: checkpoint soon (starts the thread on first use)."""
        with self._lock:
            if self._stop:
                return
            self._idle.clear()
            self._wake.set()
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="taskmill-checkpoint", daemon=True
                )
                self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Until no checkpoint is due or running; whether that happened in time."""
        return self._idle.wait(timeout)

    def settle(self, limit: int) -> None:
        """Before a write: when the log has grown past ``limit`` frames, wait for the
        checkpoint under way, so that the write finds the log copied back and starts it
        again from its beginning.  Without this a log checkpointed while batches keep
        committing is never restarted, and every page read searches a longer log: a
        1M-row batch's chunks took 62 ms at first and 200 ms at the end."""
        if self.log_frames > limit:
            self.wait(60.0)
            self.log_frames = 0

    def close(self) -> None:
        """Finish the checkpoint under way (if any) and stop the thread."""
        with self._lock:
            self._stop = True
            self._wake.set()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            while True:
                self._wake.wait()
                self._wake.clear()
                if self._stop:
                    return
                started = time.perf_counter()
                with contextlib.suppress(sqlite3.Error):  # a busy or closed store: next time
                    if conn is None:
                        conn = self._connect()
                    [(_, log, _)] = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                    self.log_frames = max(int(log), 0)
                self.seconds.append(time.perf_counter() - started)
                del self.seconds[:-100]
                with self._lock:
                    if not self._wake.is_set():
                        self._idle.set()
        finally:
            if conn is not None:
                conn.close()
            self._idle.set()
