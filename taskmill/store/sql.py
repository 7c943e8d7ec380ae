"""The old path of :mod:`taskmill.backends.sql` (the named-query loader and the SQLite
schema, queries and migrations), kept for code that imports it: the same module under its
old name (a setting changed through either name is the one the code reads)."""

import sys

from ..backends import sql as _moved
from ..backends.sql import *  # noqa: F403

sys.modules[__name__] = _moved
