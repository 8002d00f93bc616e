"""Real servers the tests start for themselves (PostgreSQL), private to the test session."""
