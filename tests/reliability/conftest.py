"""Fixtures of the reliability tests: a fresh stack per test, real processes."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.devstack.embedded_kafka import EmbeddedKafka
from app.devstack.stack import DevStack
from infra.settings import Settings

_prefixes = itertools.count(1)


@pytest.fixture
def stack(
    request: pytest.FixtureRequest, tmp_path: Path, kafka_server: EmbeddedKafka
) -> Iterator[DevStack]:
    """Broker, Redis and the API started; workers are started by each test.

    The session's broker is shared (each test has its own topic prefix, so
    its own topics and consumer group), except for tests marked
    ``own_broker``, which restart or kill theirs.
    """
    settings = Settings(
        api_port=0, topic_partitions=4, topic_prefix=f"rel{next(_prefixes)}"
    )
    own = request.node.get_closest_marker("own_broker") is not None
    shared = {} if own else {"kafka": kafka_server, "shared_kafka": True}
    with DevStack(settings, log_dir=tmp_path, **shared) as s:  # type: ignore[arg-type]
        s.start_servers()
        s.start_api()
        yield s
        for log in sorted(tmp_path.glob("*.log")):  # shown when a test fails
            print(f"==== {log.name}\n{log.read_text()[-3000:]}")
