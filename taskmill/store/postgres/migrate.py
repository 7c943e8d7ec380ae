"""The old path of :mod:`taskmill.backends.postgres.migrate` (PostgreSQL's schema and
migrations), kept for code that imports it: the same module under its old name (a setting
changed through either name is the one the code reads)."""

import sys

from ...backends.postgres import migrate as _moved
from ...backends.postgres.migrate import *  # noqa: F403

sys.modules[__name__] = _moved
