"""Display hooks: how a value shown in Jupyter (a :class:`~taskmill.BatchOutcome`, a
:class:`~taskmill.Scheduler`) reaches its widget.

The views (:mod:`taskmill.views.notebook`) sit above everything they show and import it;
nothing below them imports a view.  A value's ``widget()`` or ``_repr_mimebundle_`` calls a
hook here, and the hook imports the views module by name only then: ``import taskmill``
loads no ipywidgets, and the package's import graph points downward only
(``tests/test_layers.py``, the import-linter ``layers`` contract in ``pyproject.toml``).
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = [
    "VIEWS_MODULE",
    "batch_bundle",
    "batch_widget",
    "in_kernel",
    "outcome_bundle",
    "outcome_widget",
    "queue_widget",
]

#: The module of the Jupyter views, imported when a hook first needs it.
VIEWS_MODULE = "taskmill.views.notebook"


def in_kernel() -> bool:
    """Whether this runs in a Jupyter kernel (where a value's display is its widget)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _views() -> ModuleType:
    return importlib.import_module(VIEWS_MODULE)


def outcome_widget(outcome: Any) -> Any:
    """The ``OutcomeWidget`` of a :class:`~taskmill.BatchOutcome`."""
    return _views().OutcomeWidget(outcome)


def outcome_bundle(outcome: Any) -> dict[str, Any]:
    """The MIME bundle of a :class:`~taskmill.BatchOutcome` in a Jupyter kernel: its widget
    view, with HTML and text for frontends without widgets."""
    return _views().outcome_bundle(outcome)


def queue_widget(sched: Any, *, refresh: float) -> Any:
    """A live ``QueueWidget`` following a running :class:`~taskmill.Scheduler`, started."""
    return _views().QueueWidget(sched, refresh=refresh).start()


def batch_widget(status: Any, *, refresh: float | None) -> Any:
    """The ``BatchWidget`` of a :class:`~taskmill.BatchStatus` (refreshing itself every
    ``refresh`` seconds until the batch is done; ``None``: on request)."""
    return _views().BatchWidget(status, refresh=refresh)


def store_widget(store: Any, *, refresh: float | None) -> Any:
    """The ``StoreWidget`` of a :class:`~taskmill.TaskStore`: its queue, live, with no
    scheduler (refreshing itself every ``refresh`` seconds; ``None``: on request)."""
    return _views().StoreWidget(store, refresh=refresh)


def batch_bundle(status: Any) -> dict[str, Any]:
    """The MIME bundle of a :class:`~taskmill.BatchStatus` in a Jupyter kernel: its widget
    view, with HTML and text for frontends without widgets."""
    return _views().batch_bundle(status)
