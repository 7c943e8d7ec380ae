"""The views: what a person sees of a batch or a queue.

- :mod:`taskmill.views.notebook`  the Jupyter widgets (``OutcomeWidget``, ``QueueWidget``);
- :mod:`taskmill.views.terminal`  the rich tables of the command line;
- :mod:`taskmill.views.waits`     what a group's tasks wait on, in words (every view's rule).

They sit above everything they show and import it; nothing below imports a view (a value
reaches its widget through :mod:`taskmill.display`, which imports the notebook views by
name).  This package imports neither module: ``import taskmill`` loads no ipywidgets.
"""
