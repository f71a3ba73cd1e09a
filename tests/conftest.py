"""Session fixtures: real servers on free loopback ports, torn down at the end."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from app.devstack.embedded import EmbeddedKafka, EmbeddedRedis, EmbeddedRedisCluster
from infra.logs import RateLimitingHandler
from infra.redis_client import redis_client


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--without",
        action="append",
        default=[],
        metavar="NAME",
        help="run with a correction of app/worker/faust_corrections swapped for "
        "Faust's own behaviour (tests/switches/without.py), here and in the worker "
        "processes the tests start: its test must then fail",
    )


def pytest_configure(config: pytest.Config) -> None:
    names: list[str] = config.getoption("--without")
    if names:
        from tests.switches.without import apply

        apply(names)
        root = Path(__file__).resolve().parent.parent
        os.environ["MASTERY_TEST_WITHOUT"] = ",".join(names)
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [
                str(root / "tests" / "switches"),
                str(root),
                os.environ.get("PYTHONPATH", ""),
            ]
        )


@pytest.fixture(autouse=True)
def _no_leftover_log_handler() -> Iterator[None]:
    """Tests that run ``mastery`` in-process install the CLI's log handler on
    the root logger, bound to that test's captured stderr; remove it after."""
    yield
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, RateLimitingHandler):
            root.removeHandler(handler)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[EmbeddedRedisCluster]:
    """A Redis Cluster of three masters (started once, ~2 s)."""
    cluster = EmbeddedRedisCluster().start()
    yield cluster
    cluster.stop()


@dataclass(frozen=True)
class RedisTarget:
    """Where a read-model test runs: one server, or a Redis Cluster."""

    url: str
    cluster: bool

    def client(self, **kwargs: Any) -> Any:
        """An asyncio client, as the worker and the API build theirs."""
        return redis_client(self.url, cluster=self.cluster, **kwargs)


@pytest.fixture(scope="module", params=["single", "cluster"])
def redis_target(request: pytest.FixtureRequest) -> RedisTarget:
    """Each read-model test that takes it runs on a single valkey and on a
    three-master Redis Cluster, where a script that names a key of another
    slot fails (CROSSSLOT, or a key "not local" to the node)."""
    if request.param == "single":
        server: EmbeddedRedis = request.getfixturevalue("redis_server")
        return RedisTarget(server.url, cluster=False)
    cluster: EmbeddedRedisCluster = request.getfixturevalue("redis_cluster")
    return RedisTarget(cluster.url, cluster=True)


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[EmbeddedKafka]:
    server = EmbeddedKafka().start()
    yield server
    server.stop()
