"""config/compose.yaml, read as docker compose would (no docker here): two bridges built from the
repository's Dockerfile with the cluster extra, Redis and PostgreSQL, each with a healthcheck;
every setting it names is a real one, and each bridge's environment, its `${...}` filled in the
way compose does, loads as valid settings that share everything but the process's name and URL.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from telebridge.settings import Settings, load_settings
from tests.cli.test_main import PREFIXES

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "config" / "compose.yaml"
BRIDGES = ("bridge-1", "bridge-2")
# `${NAME}`, `${NAME:-default}` or `${NAME:?message}`, as compose interpolates them.
VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)(?::([-?])([^}]*))?\}")
GIVEN = {"TELEBRIDGE_SECRET": "compose-test-secret-0123456789", "TELEBRIDGE_API_KEY": "k" * 24}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def interpolate(value: str, given: dict[str, str]) -> str:
    def one(m: re.Match[str]) -> str:
        name, kind, rest = m.groups()
        if name in given:
            return given[name]
        assert kind is not None, f"${{{name}}} has no default"
        assert kind == "-", f"${{{name}}} must be given ({rest})"
        return rest

    return VARIABLE.sub(one, value)


def environment(compose: dict[str, Any], service: str) -> dict[str, str]:
    env = compose["services"][service]["environment"]
    assert isinstance(env, dict)
    return {name: interpolate(str(value), GIVEN) for name, value in env.items()}


def test_two_bridges_redis_and_postgres_each_with_a_healthcheck(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {*BRIDGES, "redis", "postgres"}
    for name, service in services.items():
        assert service["healthcheck"]["test"], name
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    for name in BRIDGES:
        build = services[name]["build"]
        assert (COMPOSE.parent / build["context"] / build["dockerfile"]).resolve() == (
            REPO / "Dockerfile"
        )
        # PostgreSQL and Redis need the `cluster` extra, which the Dockerfile's EXTRAS adds.
        assert build["args"]["EXTRAS"] == "[cluster]"
        assert "cluster" in extras["optional-dependencies"]
        assert "/readyz" in " ".join(services[name]["healthcheck"]["test"])
        for needed in ("redis", "postgres"):
            assert services[name]["depends_on"][needed] == {"condition": "service_healthy"}
    assert 'ARG EXTRAS=""' in (REPO / "Dockerfile").read_text()


def test_every_setting_it_names_is_a_real_setting(compose: dict[str, Any]) -> None:
    real = {name.upper() for name in Settings.model_fields}
    for name in BRIDGES:
        named = [k for k in environment(compose, name) if k.startswith(PREFIXES)]
        assert named and set(named) <= real, set(named) - real


def test_each_bridge_loads_and_shares_all_but_its_name_and_url(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)  # no .env file of the checkout
    loaded: dict[str, Settings] = {}
    for name in BRIDGES:
        with monkeypatch.context() as env:
            for key in [k for k in list(os.environ) if k.startswith(PREFIXES)]:
                env.delenv(key)
            for key, value in environment(compose, name).items():
                env.setenv(key, value)
            loaded[name] = load_settings(None)
    one, two = (loaded[name] for name in BRIDGES)
    assert (one.process_id, two.process_id) == BRIDGES
    assert one.telebridge_public_url != two.telebridge_public_url
    own = {"telebridge_process_id", "telebridge_public_url"}
    shared = {k: v for k, v in one.model_dump().items() if k not in own}
    assert shared == {k: v for k, v in two.model_dump().items() if k not in own}
    postgres = compose["services"]["postgres"]["environment"]
    db = urlsplit(str(one.telebridge_db))
    assert (db.scheme, db.hostname, db.port, db.username, db.path) == (
        "postgresql",
        "postgres",
        5432,
        postgres["POSTGRES_USER"],
        "/" + postgres["POSTGRES_DB"],
    )
    assert db.password == interpolate(postgres["POSTGRES_PASSWORD"], GIVEN)
    assert one.telebridge_redis_url is not None
    redis = urlsplit(one.telebridge_redis_url.get_secret_value())
    assert (redis.hostname, redis.port) == ("redis", 6379)
