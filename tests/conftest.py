"""Shared fixtures.  Real PostgreSQL only: the embedded server (fsync off, tests only)
or ``SPECTRAL_TEST_DATABASE_URL``; every test gets its own database cloned from a
migrated template."""

pytest_plugins = ["tests.fix_db"]
