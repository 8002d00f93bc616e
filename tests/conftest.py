"""Fixtures every test folder may use: the private PostgreSQL of tests/servers/postgres.py
(`postgres_server`, one per session, and `pg_url`, a fresh database per test)."""

pytest_plugins = ["tests.servers.postgres"]
