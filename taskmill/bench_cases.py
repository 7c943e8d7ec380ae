"""The old import path of :mod:`taskmill.bench.cases` (what each ``taskmill bench`` case runs):
its names, re-exported."""

from .bench.cases import (
    CONTROLS,
    control_settings,
    is_dispatch,
)

__all__ = [
    "CONTROLS",
    "control_settings",
    "is_dispatch",
]
