"""The old import path of :mod:`taskmill.testing.sample` (the sample plans): its names, re-
exported."""

from .testing.sample import (
    ACTIONS,
    ENDPOINTS,
    make_plan,
)

__all__ = [
    "ACTIONS",
    "ENDPOINTS",
    "make_plan",
]
