"""The SQLite driver: its schema, named queries and migrations (``*.sql`` beside this
file), and the code that talks to a SQLite file."""
