"""Helpers for tests, the demo and ``taskmill bench``, shipped with the package.

- :mod:`taskmill.testing.pgserver`  a throwaway PostgreSQL server (``ThrowawayPostgres``);
- :mod:`taskmill.testing.sample`    sample sync plans (``make_plan``).
"""
