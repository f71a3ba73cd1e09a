"""app.metrics.observe_many records what one observe() per value records."""

from __future__ import annotations

import math
import random

from prometheus_client import CollectorRegistry, Histogram

from app.metrics import _FRESH, observe_many


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str, str], float]:
    """Bucket counts, count and sum by (sample, clock, le); no creation times."""
    return {
        (s.name, s.labels.get("clock", ""), s.labels.get("le", "")): s.value
        for metric in registry.collect()
        for s in metric.samples
        if not s.name.endswith("_created")
    }


def _histogram(registry: CollectorRegistry) -> Histogram:
    return Histogram("h", "h", ["clock"], buckets=_FRESH, registry=registry)


def test_bulk_observation_equals_one_observe_per_value() -> None:
    rng = random.Random(7)
    # Values on every bound (a bound counts in its own bucket), just beside
    # them, between them, at 0 and past the last finite bound.
    values = [*_FRESH, 0.0, 1e9, *(rng.uniform(0, 70) for _ in range(500))]
    values += [b * f for b in _FRESH for f in (0.999999, 1.000001)]
    one, many = CollectorRegistry(), CollectorRegistry()
    h_one, h_many = _histogram(one), _histogram(many)
    for v in values:
        h_one.labels("record").observe(v)
    for start in range(0, len(values), 97):  # in batches, as the worker does
        observe_many(h_many.labels("record"), values[start : start + 97])

    got, want = _samples(many), _samples(one)
    assert got.keys() == want.keys()
    for key, value in want.items():
        if key[0] == "h_sum":  # summed in another order
            assert math.isclose(got[key], value, rel_tol=1e-12), key
        else:
            assert got[key] == value, key
    assert got[("h_count", "record", "")] == len(values)
    assert got[("h_bucket", "record", "0.01")] == sum(v <= 0.01 for v in values)


def test_an_empty_batch_records_nothing() -> None:
    registry = CollectorRegistry()
    observe_many(_histogram(registry).labels("event"), [])
    samples = _samples(registry)
    assert samples[("h_count", "event", "")] == 0
    assert samples[("h_sum", "event", "")] == 0
