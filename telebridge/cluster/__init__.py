"""The cluster: several telebridge processes joined through one Redis (`TELEBRIDGE_REDIS_URL`).

Modules: connect (`Cluster`: the connection, its heartbeat, `degraded`), errors, registry (which
process holds which call), placed (the calls the call API placed, found by their request id),
bus (requests to the process that holds a call), semaphore (one cluster-wide cap, fair, with
leases), rate (one cluster-wide rate, GCRA), store (a shared byte store bounded by size, least
recently used evicted first), fills (something made once for the cluster, its pieces followed by
the others as they come), answers (the call API's Idempotency-Key answers, shared). Every entry a
process writes expires when its heartbeat stops (a placed call's record, an hour after placing),
so a dead process takes only its own calls and slots with it. When Redis is lost, operations
raise `ClusterUnavailable` within a bounded time and `Cluster.degraded` says so; callers then fall
back to local behaviour. The cluster imports only the root of telebridge and redis.
"""

from telebridge.cluster.bus import Bus, Handler
from telebridge.cluster.connect import Cluster
from telebridge.cluster.errors import BusError, BusTimeout, ClusterUnavailable, SemaphoreTimeout
from telebridge.cluster.rate import Rate
from telebridge.cluster.registry import Registry
from telebridge.cluster.semaphore import Semaphore
from telebridge.cluster.store import Store

__all__ = [
    "Bus",
    "BusError",
    "BusTimeout",
    "Cluster",
    "ClusterUnavailable",
    "Handler",
    "Rate",
    "Registry",
    "Semaphore",
    "SemaphoreTimeout",
    "Store",
]
