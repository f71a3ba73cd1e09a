"""The notifier's metrics (app/notifier/metrics.py) are the ones
docs/operations.md lists, with every delivery outcome present from the start."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from app.notifier.metrics import OUTCOMES, NotifierMetrics

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def _exposed() -> dict[str, set[str]]:
    """Sample name -> the outcome labels seen, without the process_* ones."""
    text = NotifierMetrics().exposition().decode()
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("mastery_notifier_") and not (
                sample.name.endswith("_created")
            ):
                name = re.sub(r"_(bucket|sum|count)$", "", sample.name)
                out.setdefault(name, set()).add(sample.labels.get("outcome", ""))
    return out


def _documented() -> set[str]:
    section = OPERATIONS.read_text().split("### Notifier (", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(mastery_notifier_[a-z_]+)`", section, re.M))


def test_operations_md_lists_exactly_the_notifier_metrics() -> None:
    exposed = set(_exposed())
    # The lag has no sample before a partition is assigned.
    assert _documented() == exposed | {"mastery_notifier_consumer_lag"}


def test_every_outcome_is_exposed_at_zero_from_the_start() -> None:
    assert _exposed()["mastery_notifier_deliveries_total"] == set(OUTCOMES)
    documented = OPERATIONS.read_text().split("`mastery_notifier_deliveries_total`")[1]
    for outcome in OUTCOMES:
        assert f"`{outcome}`" in documented.split("\n", 1)[0], outcome
