"""Several bridge processes in one benchmark: what they share (one private Redis, one private
PostgreSQL and one signing secret, as a cluster of `telebridge serve` processes does, issue 16)
and their /_bench/stats read as one.

The servers are the test suite's own starters (tests/servers/redis.py and postgres.py: loopback
only, no persistence), imported only when a benchmark starts them. Every run gets them fresh:
Redis restarted empty on its port and a new database, so nothing a run left (registry claims,
the call log) reaches the next one.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import BenchError

if TYPE_CHECKING:
    from tests.servers.postgres import PostgresServer
    from tests.servers.redis import RedisServer


class SharedStores:
    """Redis, PostgreSQL and the secret of one benchmark's bridge processes."""

    def __init__(self) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="tb-bench-cluster-")
        self.redis: RedisServer | None = None
        self.postgres: PostgresServer | None = None
        self.db_url = ""
        # Never on a command line (ps shows those): the bridges get it in their environment.
        self.env = {"TELEBRIDGE_SECRET": secrets.token_hex(32)}

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    async def fresh(self) -> None:
        """Empty Redis and a new database, for the next run's processes."""
        await asyncio.to_thread(self._fresh)

    async def close(self) -> None:
        await asyncio.to_thread(self._close)

    def pids(self) -> list[int]:
        """The processes of Redis and PostgreSQL (its postmaster and the backends now running),
        whose CPU the benchmark reports beside the bridges'."""
        pids: list[int] = []
        if self.redis is not None:
            pids += _redis_pid(self.redis.port)
        if self.postgres is not None:
            try:
                lines = (self.postgres.data / "postmaster.pid").read_text().splitlines()
                postmaster = int(lines[0])
                children = Path(f"/proc/{postmaster}/task/{postmaster}/children").read_text()
            except (OSError, ValueError, IndexError):
                return pids
            pids += [postmaster, *(int(pid) for pid in children.split())]
        return pids

    def bridge_args(self, process_id: str) -> list[str]:
        assert self.redis is not None and self.db_url
        return ["--redis-url", self.redis.url, "--db", self.db_url, "--process-id", process_id]

    def _start(self) -> None:
        # The test suite's starters (they load pytest): only for a benchmark of several processes.
        import pytest

        from tests.servers.postgres import PostgresServer
        from tests.servers.redis import RedisServer

        # They report a broken machine (no redis-server, no PostgreSQL) through pytest.
        try:
            self.redis = RedisServer(Path(self._folder.name))
            self.redis.start()
            self.postgres = PostgresServer()
            self.postgres.start()
        except pytest.fail.Exception as exc:
            raise BenchError(f"--processes needs Redis and PostgreSQL: {exc}") from None

    def _fresh(self) -> None:
        assert self.redis is not None and self.postgres is not None
        self.redis.stop()
        self.redis.start()
        if self.db_url:
            self.postgres.drop_database(self.db_url)
        self.db_url = self.postgres.create_database()

    def _close(self) -> None:
        if self.redis is not None:
            self.redis.stop()
        if self.postgres is not None:
            self.postgres.close()
        self._folder.cleanup()


def _redis_pid(port: int) -> list[int]:
    """The redis-server's process id, as its INFO says (empty if it does not answer)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            sock.sendall(b"INFO server\r\n")
            data = b""
            while b"process_id:" not in data or not data.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return []
    for line in data.decode(errors="replace").splitlines():
        if line.startswith("process_id:"):
            return [int(line.partition(":")[2])]
    return []


def merge_stats(each: list[dict[str, Any]]) -> dict[str, Any]:
    """The /_bench/stats of several bridges as one: events joined in time order, counts added."""
    if len(each) == 1:
        return each[0]
    counts: dict[str, int] = {}
    requests: dict[str, int] = {}
    for stats in each:
        for kind, n in stats["counts"].items():
            counts[kind] = counts.get(kind, 0) + int(n)
        for kind, n in stats["requests"].items():
            requests[kind] = requests.get(kind, 0) + int(n)
    return {
        "now": max(float(stats["now"]) for stats in each),
        "active_calls": sum(int(stats["active_calls"]) for stats in each),
        "counts": counts,
        "first_audio": sorted(e for stats in each for e in stats["first_audio"]),
        "agent": sorted((e for stats in each for e in stats["agent"]), key=lambda e: e[1]),
        "requests": requests,
        # Each process's own requests, in the order of the bridges' URLs.
        "requests_by_process": [stats["requests"] for stats in each],
    }
