"""A record the broker accepts but no dead letter can carry whole (issue 10.1):
dead-lettered as a bounded prefix with its size and digest, never a crash loop."""

from __future__ import annotations

import asyncio
import hashlib

import pytest

from app.cli.dlq import pending_dead_letters, redrive
from app.devstack.stack import DevStack
from app.devstack.workload import simulated
from infra.broker import KAFKA, profile_for
from infra.producer import EventProducer
from infra.settings import Settings
from infra.topic_names import TopicNames
from schemas.dead_letter import MAX_ORIGINAL_BYTES
from tests.integration.helpers import produce, wait_until_rows_match
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_an_oversized_record_is_dead_lettered_not_looped_on(stack: DevStack) -> None:
    workload = simulated(
        learning_instances=1, learners_per_instance=8, attempts_per_learner=20, seed=8
    )
    produce(stack, [*workload.catalog, *workload.registrations])
    topics = TopicNames(stack.settings.topic_prefix)
    poison = b'{"type": "AttemptGraded", "pad": "' + b"x" * 800_000 + b'"}'
    reg = workload.registrations[0].registration_id.encode()

    async def send() -> None:
        async with EventProducer(
            stack.kafka.bootstrap_servers,
            profile_for(Settings(broker_profile="kafka")),
            topics,
        ) as producer:
            await (await producer.send_raw(topics.registration_events, reg, poison))
            await producer.send_all(workload.attempts)

    asyncio.run(send())
    worker = stack.start_worker()
    wait_until_rows_match(
        stack, workload, [*workload.registrations, *workload.attempts], per_page=100
    )
    assert worker.poll() is None and len(stack.workers) == 1  # never restarted
    bootstrap = stack.kafka.bootstrap_servers
    view = wait_for(
        lambda: asyncio.run(pending_dead_letters(bootstrap, topics, KAFKA)),
        accept=lambda view: view.pending,
        timeout_s=30,
        interval_s=0.5,
        what="the poison record dead-lettered",
    )
    [letter] = view.pending
    assert letter.truncated
    assert letter.value_size == len(poison)
    assert letter.value_sha256 == hashlib.sha256(poison).hexdigest()
    assert letter.value == poison[:MAX_ORIGINAL_BYTES]
    assert letter.key == reg
    assert "invalid event" in letter.reason
    # Its original is not known whole: it is listed, not re-driven.
    assert asyncio.run(redrive(bootstrap, KAFKA, topics, [letter])) == 0
