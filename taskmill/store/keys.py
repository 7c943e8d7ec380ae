"""The old path of :mod:`taskmill.backends.keys` (the dedup key hash), kept for code that
imports it: the same module under its old name (a setting changed through either name is the
one the code reads)."""

import sys

from ..backends import keys as _moved
from ..backends.keys import *  # noqa: F403

sys.modules[__name__] = _moved
