"""The drivers: the only code that talks to a database.

``base.py`` declares the :class:`~taskmill.backends.base.Driver`, the data-level operations
the store's face (:class:`~taskmill.store.TaskStore`) runs its logic over; ``sql.py`` loads
named queries; ``sqlite/`` and ``postgres/`` are the two drivers, each with its schema,
its named queries and its migrations as SQL files (PostgreSQL's, and psycopg, imported
only when a PostgreSQL store is opened)."""
