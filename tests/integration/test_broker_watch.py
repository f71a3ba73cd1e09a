"""The worker's broker watch against the real broker and Redis
(app/worker/broker_watch.py): it records end offsets, reports a log that went
below them, refuses while the report stands, and ``reset`` clears it. Faust's
ConsistencyError ends in the same report."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any, NoReturn

import pytest
from faust.exceptions import ConsistencyError
from redis.asyncio import Redis

import app.worker.broker_watch as broker_watch
from app.devstack.embedded import EmbeddedKafka, EmbeddedRedis
from app.worker.broker_watch import BrokerWatch, reset, watched_topics
from app.worker.faust_corrections.exit_policy import (
    EXIT_BROKER_LOST,
    BrokerLostData,
    WorkerExit,
)
from infra.broker import ensure_topics, profile_for
from infra.producer import EventProducer
from infra.read_model import ReadModelKeys
from infra.settings import Settings
from infra.topic_names import TopicNames
from schemas.broker_status import BrokerLoss

pytestmark = pytest.mark.integration

_n = itertools.count(1)


@pytest.fixture
async def watch(
    kafka_server: EmbeddedKafka, redis_server: EmbeddedRedis
) -> AsyncIterator[BrokerWatch]:
    n = next(_n)
    settings = Settings(broker_profile="kafka", topic_prefix=f"bw{n}")
    bootstrap = kafka_server.bootstrap_servers
    await ensure_topics(settings, bootstrap)
    topics = TopicNames(settings.topic_prefix)
    async with EventProducer(bootstrap, profile_for(settings), topics) as producer:
        for i in range(5):
            await (await producer.send_raw(topics.catalog, b"k", b"v%d" % i))
    redis = Redis.from_url(redis_server.url)
    watch = BrokerWatch(
        redis,
        bootstrap,
        watched_topics(settings),
        by="test",
        profile=profile_for(settings),
        keys=ReadModelKeys(prefix=f"bw{n}"),
        confirm_after_s=0.1,
    )
    yield watch
    await watch.close()
    await redis.aclose()


async def test_a_check_records_the_true_end_offsets(watch: BrokerWatch) -> None:
    await watch.check()
    seen = await watch.seen()
    catalog = watch.topics[1]
    assert seen[(catalog, 0)] == 5  # five records, one by one
    # registrations, catalog, dead letters, status changes and the state
    # changelog, all created as declared (infra/topic_specs.py) before the
    # first check
    assert len(seen) == 4 + 1 + 1 + 4 + 4
    await watch.check()  # an intact log: nothing lost, nothing lowered
    assert await watch.seen() == seen


async def test_a_log_below_what_was_seen_is_reported_until_reset(
    watch: BrokerWatch,
) -> None:
    await watch.check()
    catalog = watch.topics[1]
    # As if the broker had held 50 records there before it lost them.
    await watch.record({(catalog, 0): 50})
    with pytest.raises(BrokerLostData) as lost:
        await watch.check()
    assert lost.value.exit_code == EXIT_BROKER_LOST == 65
    assert f"{catalog}[0] ended at 50, now 5" in str(lost.value)
    reported = await watch.reported()
    assert reported is not None and reported.by == "test"
    assert [(p.topic, p.seen, p.end) for p in reported.lost] == [(catalog, 50, 5)]

    with pytest.raises(BrokerLostData, match="reported earlier and not cleared"):
        await watch.check()

    cleared, now = await reset(watch)
    assert cleared == reported
    assert now[(catalog, 0)] == 5
    assert await watch.reported() is None
    await watch.check()  # the broker's log as it is now is accepted


async def test_recording_never_lowers_an_end(watch: BrokerWatch) -> None:
    catalog = watch.topics[1]
    await watch.record({(catalog, 0): 9})
    await watch.record({(catalog, 0): 7})
    assert (await watch.seen())[(catalog, 0)] == 9


async def test_faust_consistency_error_becomes_a_reported_loss(
    watch: BrokerWatch, monkeypatch: pytest.MonkeyPatch
) -> None:
    crashed: list[BaseException] = []

    async def crash(reason: BaseException) -> None:
        crashed.append(reason)

    def exit_process(exc: WorkerExit, **kwargs: Any) -> NoReturn:
        raise SystemExit(exc.exit_code)

    app = SimpleNamespace(tables=SimpleNamespace(recovery=SimpleNamespace(crash=crash)))
    monkeypatch.setattr(broker_watch, "exit_process", exit_process)
    broker_watch.report_consistency_errors(app, watch, "/data/w1")

    other = RuntimeError("something else")
    await app.tables.recovery.crash(other)
    assert crashed == [other]  # Faust's own handling for anything else
    assert await watch.reported() is None

    with pytest.raises(SystemExit) as ended:
        await app.tables.recovery.crash(ConsistencyError("offset 12 > highwater 3"))
    assert ended.value.code == 65
    reported = await watch.reported()
    assert isinstance(reported, BrokerLoss)
    assert "offset 12 > highwater 3" in reported.reason
    assert reported.reason.endswith("once the loss is accepted, delete /data/w1")
    assert crashed == [other]


async def test_an_unreachable_broker_is_not_a_loss(
    redis_server: EmbeddedRedis,
) -> None:
    from app.devstack.embedded import free_port

    redis = Redis.from_url(redis_server.url)
    watch = BrokerWatch(
        redis,
        f"127.0.0.1:{free_port()}",
        ["x.catalog.v1"],
        by="test",
        profile=profile_for(Settings(broker_profile="kafka")),
        keys=ReadModelKeys(prefix="bw-down"),
        timeout_s=1.0,
    )
    await watch.record({("x.catalog.v1", 0): 3})
    with pytest.raises(broker_watch.UNREACHABLE):
        await watch.check()
    await asyncio.wait_for(watch.check_or_exit(), 10)  # logs, does not exit
    assert await watch.reported() is None
    await watch.close()
    await redis.aclose()


#: ``mastery worker`` whose Faust worker crashes (mode exits 1) the way
#: Faust's copartitioned assignor did on a broker restarted empty, after the
#: broker's log went below what was recorded (argv "lost").
_CRASHING_WORKER = """
import asyncio, sys
import faust
from redis.asyncio import Redis
from app.worker.broker_watch import BrokerWatch
from infra.settings import Settings

async def lose():
    settings = Settings()
    redis = Redis.from_url(settings.redis_url)
    watch = BrokerWatch.of_worker(settings, redis, settings.kafka_bootstrap_servers)
    ends = await watch.end_offsets()
    await watch.record({tp: end + 5 for tp, end in ends.items()})
    await watch.close()
    await redis.aclose()

async def crash(self):
    if sys.argv[1] == "lost":
        await lose()
    raise AssertionError("as Faust's assignor")

faust.Worker.start = crash  # mode's execute_from_commandline: exit 1
from app.cli.main import main
sys.exit(main(["worker"]))
"""


@pytest.mark.parametrize(
    ("broker", "code"), [("lost", EXIT_BROKER_LOST), ("intact", 1)]
)
def test_a_crash_after_the_broker_lost_data_exits_65(
    kafka_server: EmbeddedKafka, tmp_path: Any, broker: str, code: int
) -> None:
    import os
    import subprocess
    import sys

    redis_server = EmbeddedRedis().start()  # its own: a loss report is global
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MASTERY_")}
        env.update(
            KAFKA_BOOTSTRAP_SERVERS=kafka_server.bootstrap_servers,
            REDIS_URL=redis_server.url,
            MASTERY_BROKER_PROFILE="kafka",
            MASTERY_TOPIC_PREFIX=f"bw-crash-{broker}",
            MASTERY_DATA_DIR=str(tmp_path / "data"),
        )
        done = subprocess.run(
            [sys.executable, "-c", _CRASHING_WORKER, broker],
            check=False,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == code, done.stderr[-3000:]
        if broker == "lost":
            assert "BROKER LOST DATA" in done.stderr
        else:
            assert "as Faust's assignor" in done.stderr
    finally:
        redis_server.stop()
