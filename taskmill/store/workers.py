"""The old path of :mod:`taskmill.backends.workers` (worker identities, leases, the store's
clock), kept for code that imports it: the same module under its old name (a setting changed
through either name is the one the code reads)."""

import sys

from ..backends import workers as _moved
from ..backends.workers import *  # noqa: F403

sys.modules[__name__] = _moved
