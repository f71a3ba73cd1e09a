"""A broker that misreports end offsets is refused (infra/broker.py)."""

from __future__ import annotations

import pytest

import infra.broker as broker
from infra.broker import BrokerCheck, BrokerMisreportsOffsets, verify_broker
from infra.settings import Settings
from infra.topic_names import TopicNames


def test_a_wrong_end_offset_is_described_as_wrong() -> None:
    # Tansu 0.6 answered a batch's base offset + 1 for three records.
    check = BrokerCheck(expected_end=3, reported_end=1)
    assert not check.reports_offsets_correctly
    assert "WRONG" in check.describe() and "lose updates" in check.describe()
    assert BrokerCheck(expected_end=3, reported_end=3).reports_offsets_correctly
    # Another worker's batch appended after ours: a larger end is no error.
    concurrent = BrokerCheck(expected_end=3, reported_end=6)
    assert concurrent.reports_offsets_correctly
    assert "WRONG" not in concurrent.describe()


async def test_verify_broker_refuses_a_misreporting_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def wrong(bootstrap: str, topics: TopicNames, **_: object) -> BrokerCheck:
        return BrokerCheck(expected_end=3, reported_end=1)

    monkeypatch.setattr(broker, "self_check", wrong)
    with pytest.raises(BrokerMisreportsOffsets, match="reported end 1, true end 3"):
        await verify_broker(Settings(), "127.0.0.1:1")


async def test_verify_broker_passes_a_correct_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def right(bootstrap: str, topics: TopicNames, **_: object) -> BrokerCheck:
        return BrokerCheck(expected_end=3, reported_end=3)

    monkeypatch.setattr(broker, "self_check", right)
    assert (await verify_broker(Settings(), "127.0.0.1:1")).reports_offsets_correctly
