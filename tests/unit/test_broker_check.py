"""The broker self-check's verdict (infra.broker.BrokerCheck)."""

from __future__ import annotations

from infra.broker import BrokerCheck


def test_tansus_short_end_is_wrong() -> None:
    # Three records at base offset 0: Tansu says 1 (base + 1), the truth is 3.
    assert not BrokerCheck(expected_end=3, reported_end=1).reports_offsets_correctly


def test_the_true_end_is_correct() -> None:
    assert BrokerCheck(expected_end=3, reported_end=3).reports_offsets_correctly


def test_a_concurrent_writer_is_not_mistaken_for_tansu() -> None:
    # Two workers started together: the other one's three records came after.
    check = BrokerCheck(expected_end=3, reported_end=6)
    assert check.reports_offsets_correctly
    assert "WRONG" not in check.describe()
