"""taskmill's dashboard in the browser (``taskmill ui``): the queue of any store, live,
without a scheduler — counts by status, group and task type, what each group waits on,
what ended per minute; batches; tasks filtered and paged over any number of rows; one
task with its payload, dependencies, children and attempts; schedules and workers; and
the actions (cancel, retry, pause and resume a task, a group or a schedule), each behind
a confirmation.

- :mod:`taskmill.web.app`       the Starlette application (:func:`create_app`);
- :mod:`taskmill.web.pages`     what each page reads from the store;
- :mod:`taskmill.web.security`  the token, the session, CSRF and the response headers;
- :mod:`taskmill.web.serve`     serving it with uvicorn (:func:`serve`).

Templates and assets (htmx among them) ship in this package: the pages load nothing
from anywhere else.
"""

from __future__ import annotations

from .app import ACTIONS, create_app
from .security import is_loopback
from .serve import serve

__all__ = ["ACTIONS", "create_app", "is_loopback", "serve"]
