"""The cluster's errors: Redis unreachable, a bus request unanswered, no semaphore slot in time."""

from __future__ import annotations


class ClusterUnavailable(Exception):
    """Redis cannot be reached (or refused us); one line, never with the URL's password."""


class BusError(Exception):
    """A bus request failed: nobody serves the target process, or its handler raised."""


class BusTimeout(BusError, TimeoutError):
    """A bus request got no reply within its timeout."""


class SemaphoreTimeout(TimeoutError):
    """No slot of a cluster semaphore came free within the timeout."""
