"""The embedded broker's known bug, as the self-check reports it."""

from __future__ import annotations

import asyncio

import pytest

from app.embedded import EmbeddedKafka
from infra.broker import TANSU, self_check, verify_profile
from infra.settings import Settings
from infra.topics import TopicNames

pytestmark = pytest.mark.integration


def test_self_check_reports_tansus_end_offset_bug(kafka_server: EmbeddedKafka) -> None:
    check = asyncio.run(self_check(kafka_server.bootstrap_servers, TopicNames("bc")))
    # Three records in one batch: the true end is base + 3, Tansu says base + 1.
    assert not check.reports_offsets_correctly
    assert check.reported_end == check.expected_end - 2
    assert "WRONG" in check.describe()


def test_tansu_profile_is_accepted_for_the_embedded_broker(
    kafka_server: EmbeddedKafka,
) -> None:
    settings = Settings(broker_profile="tansu", topic_prefix="bc2")
    check = asyncio.run(verify_profile(settings, TANSU, kafka_server.bootstrap_servers))
    assert not check.reports_offsets_correctly
