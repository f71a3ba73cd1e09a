"""The registration pipeline (app/worker/pipeline.py) and the effects of its plan
(app/worker/effects.py), with fakes for Kafka and Redis: the order of a batch's
steps, the forwarding of misplaced records, and a domain bug that crashes the
worker past the threshold instead of dead-lettering everything."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from app.worker.failures import DomainBug, InternalErrors
from app.worker.pipeline import RegistrationPipeline
from app.worker.state_cache import StateCache
from processors import batch
from processors.forecaster import SYNCHRONOUS
from processors.history import HistoryPolicy
from processors.partitioning import kafka_partition
from tests.unit.test_batch import TOPIC, attempt, created
from tests.unit.test_registration import make_catalog


class _Store:
    def get(self, partition: int, key: bytes) -> bytes | None:
        return None


class _Guard:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def check(self, positions: Any) -> None:
        self.log.append(f"guard {[offset for _, _, offset in positions]}")


class _Outbox:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def forward(self, misplaced: Any) -> None:
        self.log.append(f"forward {[(r.offset, home) for r, home in misplaced]}")


def _pipeline(log: list[str], errors: InternalErrors) -> RegistrationPipeline:
    async def catch_up(timeout: float) -> None:
        log.append("catch up")

    return RegistrationPipeline(
        skip_guard=_Guard(log),  # type: ignore[arg-type]
        outbox=_Outbox(log),  # type: ignore[arg-type]
        cache=StateCache(_Store()),  # type: ignore[arg-type]
        follower=SimpleNamespace(catalog=make_catalog(), catch_up=catch_up),  # type: ignore[arg-type]
        forecaster=SYNCHRONOUS,  # type: ignore[arg-type]
        exact=SYNCHRONOUS,  # type: ignore[arg-type]
        history=HistoryPolicy(interval_us=3600 * 10**6),
        internal_errors=errors,
        partitions=lambda: 4,
        catalog_catchup_timeout_s=1.0,
    )


def _events(values: list[bytes], key: bytes = b"r1") -> list[Any]:
    home = kafka_partition(key, 4)
    return [
        SimpleNamespace(
            message=SimpleNamespace(
                topic=TOPIC, partition=home, offset=i, key=key, value=v, timestamp=0.0
            )
        )
        for i, v in enumerate(values)
    ]


async def test_a_batch_is_guarded_then_folded_into_a_plan() -> None:
    log: list[str] = []
    planned = await _pipeline(log, InternalErrors()).plan(
        _events([created(), attempt(), b"not json"])
    )
    assert log == ["guard [0, 1, 2]"]
    assert [r.record.offset for r in planned.rejected] == [2]
    assert set(planned.plan.states) == {"r1"}
    assert planned.plan.internal_errors == 0


async def test_misplaced_records_are_forwarded_not_folded() -> None:
    log: list[str] = []
    events = _events([created(), attempt()])
    home = events[0].message.partition
    events[1].message.partition = (home + 1) % 4  # a producer's wrong partition
    planned = await _pipeline(log, InternalErrors()).plan(events)
    assert log == ["guard [0, 1]", f"forward {[(1, home)]}"]
    assert [d.record.offset for d in planned.decoded] == [0]


async def test_a_domain_bug_on_many_records_ends_the_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: object, **kwargs: object) -> object:
        raise KeyError("a bug")

    monkeypatch.setattr(batch, "apply_attempt", broken)
    pipeline = _pipeline([], InternalErrors(limit=10))
    planned = await pipeline.plan(_events([created(), *[attempt()] * 5]))
    assert planned.plan.internal_errors == 5  # dead letters, for now
    with pytest.raises(DomainBug):
        await pipeline.plan(_events([created(), *[attempt()] * 6]))
