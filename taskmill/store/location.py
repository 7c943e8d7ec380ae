"""The old path of :mod:`taskmill.backends.location` (where a store is: a SQLite file or a
PostgreSQL URL), kept for code that imports it: the same module under its old name (a
setting changed through either name is the one the code reads)."""

import sys

from ..backends import location as _moved
from ..backends.location import *  # noqa: F403

sys.modules[__name__] = _moved
