"""The old import path of :mod:`taskmill.views.terminal` (the rich tables of the terminal): its
names, re-exported."""

from .views.terminal import (
    ACTIVE_COUNTS,
    ListingColumn,
    count_tables,
    data_table,
    listing_table,
    outcome_table,
    shorten,
    tally,
)
from .views.terminal import _cell as _cell  # imported by taskmill/cli.py

__all__ = [
    "ACTIVE_COUNTS",
    "ListingColumn",
    "count_tables",
    "data_table",
    "listing_table",
    "outcome_table",
    "shorten",
    "tally",
]
