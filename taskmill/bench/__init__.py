"""``taskmill bench``: the ways of loading a sync plan, and dispatching it, measured side by
side.

- :mod:`taskmill.bench.runner`    the driver of every run (a worker process each) and the
  SQLite cases; ``taskmill bench`` itself (:func:`run`, :func:`table`, :func:`to_json`);
- :mod:`taskmill.bench.postgres`  the PostgreSQL cases and the peers (``--db``);
- :mod:`taskmill.bench.cases`     what each case runs on either engine: plans, controls;
- :mod:`taskmill.bench.pace`      ``--pace``: dispatch as users run it, on both engines;
- ``python -m taskmill.bench …``  one worker process (:func:`worker_main`).

The names below were ``taskmill/bench.py``'s and are kept here.
"""

from __future__ import annotations

from .runner import (
    CASES,
    CONTROLS,
    DISPATCH_SAMPLE,
    EMPTY_ONLY,
    ONE_BY_ONE_SAMPLE,
    Result,
    machine,
    measure,
    peak_mb,
    run,
    table,
    to_json,
    worker_main,
)

__all__ = [
    "CASES",
    "CONTROLS",
    "DISPATCH_SAMPLE",
    "EMPTY_ONLY",
    "ONE_BY_ONE_SAMPLE",
    "Result",
    "machine",
    "measure",
    "peak_mb",
    "run",
    "table",
    "to_json",
    "worker_main",
]
