"""The old import path of :mod:`taskmill.views.notebook` (the Jupyter widgets): its names, re-
exported."""

from .views.notebook import (
    ACTIONS,
    PAGE_SIZE,
    VIEWS,
    OutcomeWidget,
    PagedTable,
    QueueWidget,
    outcome_bundle,
    page_html,
    view_frame,
)

__all__ = [
    "ACTIONS",
    "PAGE_SIZE",
    "VIEWS",
    "OutcomeWidget",
    "PagedTable",
    "QueueWidget",
    "outcome_bundle",
    "page_html",
    "view_frame",
]
