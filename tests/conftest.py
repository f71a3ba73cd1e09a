"""Session fixtures: real servers on free loopback ports, torn down at the end."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from app.embedded import EmbeddedKafka, EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def kafka_server() -> Iterator[EmbeddedKafka]:
    server = EmbeddedKafka().start()
    yield server
    server.stop()
