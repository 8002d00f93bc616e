"""The test redis-server itself: a missing binary fails (naming the Debian package), never skips."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers.redis import redis_binary


def test_a_missing_redis_server_fails_naming_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(pytest.fail.Exception, match=r"Debian package redis-server"):
        redis_binary(path=str(tmp_path))


def test_the_installed_redis_server_is_found() -> None:
    assert Path(redis_binary()).name == "redis-server"
