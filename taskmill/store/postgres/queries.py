"""The old path of :mod:`taskmill.backends.postgres.queries` (PostgreSQL's named queries),
kept for code that imports it: the same module under its old name (a setting changed through
either name is the one the code reads)."""

import sys

from ...backends.postgres import queries as _moved
from ...backends.postgres.queries import *  # noqa: F403

sys.modules[__name__] = _moved
