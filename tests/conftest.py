"""Session fixtures: real servers on free loopback ports, torn down at the end."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.embedded import EmbeddedKafka, EmbeddedRedis
from infra.logs import RateLimitingHandler


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--without",
        action="append",
        default=[],
        metavar="NAME",
        help="run with a correction of app/faust_corrections swapped for Faust's "
        "own behaviour (tests/switches/without.py), here and in the worker "
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
def kafka_server() -> Iterator[EmbeddedKafka]:
    server = EmbeddedKafka().start()
    yield server
    server.stop()
