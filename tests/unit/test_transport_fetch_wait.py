"""The worker consumer's fetch wait follows the profile (Faust hard-codes 1.5 s).

On Apache Kafka a 1.5 s wait made `make bench`'s freshness p99 1.7 s: aiokafka
sends one fetch per broker at a time and leaves out partitions whose records
are still buffered, so a fetch of idle partitions (standby changelogs, the
catalog) held new records of the busy ones for the whole wait
(docs/performance.md, "Freshness on Apache Kafka"). ``pytest --without
fetch-wait`` puts Faust's consumer thread back and this test fails.
"""

from __future__ import annotations

from dataclasses import replace

from app.worker.faust_corrections.transport import MasteryApp
from infra.broker import KAFKA


def _fetch_wait(profile_wait: int) -> int:
    app = MasteryApp(
        "fetch-wait-test",
        broker="kafka://127.0.0.1:9",
        profile=replace(KAFKA, fetch_max_wait_ms=profile_wait),
        web_enabled=False,
    )
    thread = app.consumer._thread
    consumer = thread._create_worker_consumer(app.transport)
    wait: int = consumer._fetch_max_wait_ms
    return wait


async def test_the_worker_consumer_waits_what_the_profile_says() -> None:
    assert KAFKA.fetch_max_wait_ms == 50
    assert _fetch_wait(50) == 50
    assert _fetch_wait(7) == 7
