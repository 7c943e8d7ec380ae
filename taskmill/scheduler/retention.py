"""A scheduler's ``history_retention``: finished tasks pruned in the background.

The prune itself is the store's (``store.prune_history``, short transactions); this is
only when it runs: off the dispatch loop, shortly after start and then every few minutes.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from ..store import TaskStore

__all__ = ["RETENTION_FIRST_DELAY", "RETENTION_INTERVAL", "prune_history_now_and_then"]

log = logging.getLogger("taskmill")

#: With ``history_retention``: seconds from start to the first prune, then between two
#: prunes (a prune that fails is tried again at the next one).
RETENTION_FIRST_DELAY = 10.0
RETENTION_INTERVAL = 300.0


async def prune_history_now_and_then(store: TaskStore, retention: timedelta) -> None:
    """Prune the history of ``store`` older than ``retention`` after
    :data:`RETENTION_FIRST_DELAY` seconds, then every :data:`RETENTION_INTERVAL`; each
    prune logged with its count, a failed one logged and tried again at the next turn.
    Runs until cancelled."""
    delay = RETENTION_FIRST_DELAY
    while True:
        await asyncio.sleep(delay)
        delay = RETENTION_INTERVAL
        try:
            removed = await asyncio.to_thread(store.prune_history, older_than=retention)
        except Exception as exc:  # never fatal: the next turn tries again
            log.warning(
                "taskmill: could not prune history older than %s (trying again in %g s): %s",
                retention,
                RETENTION_INTERVAL,
                exc,
            )
            continue
        log.log(
            logging.INFO if removed else logging.DEBUG,
            "taskmill: history retention removed %d task(s) finished more than %s ago",
            removed,
            retention,
        )
