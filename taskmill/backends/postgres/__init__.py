"""The PostgreSQL driver: its schema, named queries and migrations (``*.sql`` beside this
file), and the code that talks to a PostgreSQL server (through psycopg, imported only by
the driver's modules, never by this package)."""
