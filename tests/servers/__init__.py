"""Real servers the tests start for themselves (PostgreSQL, Redis), private to the test session."""
