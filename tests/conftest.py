"""Session fixtures: real servers on free loopback ports, torn down at the end."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from app.embedded import EmbeddedKafka, EmbeddedRedis
from infra.logs import RateLimitingHandler


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
def kafka_server() -> Iterator[EmbeddedKafka]:
    server = EmbeddedKafka().start()
    yield server
    server.stop()
