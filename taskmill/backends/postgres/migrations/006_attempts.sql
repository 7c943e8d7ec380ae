-- Schema 6 (as the SQLite store's migration 006): every attempt that ended is kept.

-- include: attempts.sql
