"""Fixtures of the reliability tests: a fresh stack per test, real processes."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.devstack import DevStack
from infra.settings import Settings

_prefixes = itertools.count(1)


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[DevStack]:
    """Broker, Redis and the API started; workers are started by each test."""
    settings = Settings(
        api_port=0, topic_partitions=4, topic_prefix=f"rel{next(_prefixes)}"
    )
    with DevStack(settings, log_dir=tmp_path) as s:
        s.start_servers()
        s.start_api()
        yield s
        for log in sorted(tmp_path.glob("*.log")):  # shown when a test fails
            print(f"==== {log.name}\n{log.read_text()[-3000:]}")
