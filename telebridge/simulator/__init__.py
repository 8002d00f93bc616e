"""Simulated carriers, fake carrier APIs and an in-process bridge, for `simulate` and tests."""
