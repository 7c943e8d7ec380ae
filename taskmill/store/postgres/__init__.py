"""The PostgreSQL backend: its schema, migrations and queries as SQL files, and the code
that talks to a PostgreSQL server (through psycopg; batches through DuckDB's postgres
extension).  Work in progress: the schema and its runner are here; the store follows."""
