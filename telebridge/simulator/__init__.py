"""Simulated carriers, fake carrier APIs and an in-process bridge: for `simulate`, demos and tests."""
