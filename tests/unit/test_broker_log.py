"""The rule that tells a broker which lost records (processors/broker_log.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from processors.broker_log import field_name, lost_partitions, parse_field
from schemas.broker_status import BrokerLoss, LostPartition

SEEN = {("t.reg", 0): 120, ("t.reg", 1): 80, ("t.cat", 0): 10, ("t.dlq", 0): 0}


def test_an_intact_log_that_grew_or_stayed_is_not_lost() -> None:
    now = {("t.reg", 0): 120, ("t.reg", 1): 95, ("t.cat", 0): 11, ("t.dlq", 0): 0}
    assert lost_partitions(SEEN, now) == []


def test_a_partition_whose_end_went_down_is_lost() -> None:
    now = {("t.reg", 0): 3, ("t.reg", 1): 95, ("t.cat", 0): 10, ("t.dlq", 0): 0}
    assert lost_partitions(SEEN, now) == [
        LostPartition(topic="t.reg", partition=0, seen=120, end=3)
    ]


def test_a_missing_partition_or_topic_counts_as_end_zero() -> None:
    lost = lost_partitions(SEEN, {("t.reg", 0): 120})
    assert [(p.topic, p.partition, p.end) for p in lost] == [
        ("t.cat", 0, 0),
        ("t.reg", 1, 0),
    ]  # sorted; the empty dead-letter partition had nothing to lose


def test_only_the_given_topics_are_judged() -> None:
    assert lost_partitions(SEEN, {}, topics=["t.cat"]) == [
        LostPartition(topic="t.cat", partition=0, seen=10, end=0)
    ]
    assert lost_partitions(SEEN, {}, topics=["other"]) == []


def test_nothing_seen_yet_means_nothing_lost() -> None:
    assert lost_partitions({}, {("t.reg", 0): 5}) == []


@pytest.mark.parametrize(
    ("topic", "partition"), [("t.reg", 0), ("mastery-worker-x-changelog", 255)]
)
def test_fields_round_trip(topic: str, partition: int) -> None:
    assert parse_field(field_name(topic, partition)) == (topic, partition)


@pytest.mark.parametrize("field", ["", "t.reg", "t.reg:", ":3", "t.reg:-1", "t:x"])
def test_malformed_fields_are_ignored(field: str) -> None:
    assert parse_field(field) is None


def test_a_loss_describes_its_first_partitions_and_the_runbook() -> None:
    lost = tuple(
        LostPartition(topic="t.reg", partition=p, seen=10, end=0) for p in range(6)
    )
    loss = BrokerLoss(by="w", at=datetime.now(UTC), reason="gone", lost=lost)
    text = loss.describe()
    assert text.startswith("gone: t.reg[0] ended at 10, now 0; t.reg[1]")
    assert "t.reg[3]" in text and "t.reg[4]" not in text and "(+2 more)" in text
    assert text.endswith('see docs/operations.md, "The broker restarted empty"')


def test_a_stored_report_round_trips_and_a_broken_one_still_counts() -> None:
    loss = BrokerLoss(by="w", at=datetime.now(UTC), reason="gone")
    assert BrokerLoss.stored(loss.model_dump_json()) == loss
    broken = BrokerLoss.stored(b'{"by": 1}')
    assert broken.by == "unknown"
    assert "does not parse" in broken.describe()
