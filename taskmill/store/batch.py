"""The old path of :mod:`taskmill.backends.staging` (staging a batch with DuckDB, deciding
each row), kept for code that imports it: the same module under its old name (a setting
changed through either name is the one the code reads)."""

import sys

from ..backends import staging as _moved
from ..backends.staging import *  # noqa: F403
from ..backends.staging import _DUCK_LOCK as _DUCK_LOCK  # taskmill bench holds it

sys.modules[__name__] = _moved
