"""Shared steps of the pipeline tests: produce with a real client, poll the API."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from app.devstack.embedded_kafka import EmbeddedKafka
from app.devstack.stack import DevStack, post_json
from app.devstack.workload import Workload
from infra.broker import end_offsets, profile_for, topic_partitions
from infra.producer import EventProducer
from infra.settings import Settings
from infra.topic_names import AnyEvent, TopicNames
from schemas.events import AttemptGraded, LearningInstanceCreated, RegistrationCreated
from tests.oracle import expected_rows
from tests.waiting import wait_for

__all__ = [
    "all_pages",
    "group_behind",
    "partner_of",
    "produce",
    "produce_catalog_first",
    "started_stack",
    "wait_until_rows_match",
]

_stacks = itertools.count(1)


@contextlib.contextmanager
def started_stack(
    kafka: EmbeddedKafka,
    log_dir: Path,
    prefix: str,
    partitions: int,
    *,
    redis_cluster: bool = False,
) -> Iterator[DevStack]:
    """Redis (with ``redis_cluster``, a three-master Redis Cluster), one
    worker and the API on the session's broker, with a topic prefix of their
    own; their logs are printed at the end (pytest shows them when the test
    failed)."""
    settings = Settings(
        api_port=0,
        topic_partitions=partitions,
        topic_prefix=f"{prefix}{next(_stacks)}",
        redis_cluster=redis_cluster,
    )
    with DevStack(settings, log_dir=log_dir, kafka=kafka, shared_kafka=True) as s:
        s.start()
        yield s
        for log in sorted(s.log_dir.iterdir()):
            print(f"==== {log.name}\n{log.read_text()[-4000:]}")


def produce(stack: DevStack, events: Sequence[AnyEvent]) -> None:
    """Produce events with aiokafka (acks=all) and wait for the acks."""

    async def go() -> None:
        profile = profile_for(Settings(broker_profile="kafka"))
        topics = TopicNames(stack.settings.topic_prefix)
        async with EventProducer(
            stack.kafka.bootstrap_servers, profile, topics
        ) as producer:
            await producer.send_all(events)

    asyncio.run(go())


def group_behind(bootstrap: str, group: str, topic: str) -> dict[int, int]:
    """Per partition of ``topic`` with records: how far ``group``'s committed
    offset is behind the end (the end itself where nothing is committed).
    Over ``bootstrap`` without credentials (the tests' admin listener)."""

    async def go() -> dict[int, int]:
        partitions = await topic_partitions(bootstrap, topic)
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await consumer.start()
        await admin.start()
        try:
            ends = await end_offsets(consumer, tps)
            committed = await admin.list_consumer_group_offsets(group)
        finally:
            await consumer.stop()
            await admin.close()
        behind = {}
        for tp in tps:
            if ends[tp] > 0:
                done = committed.get(tp)
                behind[tp.partition] = ends[tp] - max(done.offset if done else 0, 0)
        return behind

    return asyncio.run(go())


def wait_until_committed(stack: DevStack, timeout_s: float = 60.0) -> None:
    """Until the workers' group has committed every registration-topic record:
    a commit follows the checkpoint that wrote the states those records
    changed (app/worker/checkpoint.py), so the changelog then holds them all."""
    group = stack.settings.worker_id
    topic = TopicNames(stack.settings.topic_prefix).registration_events
    wait_for(
        lambda: group_behind(stack.kafka.bootstrap_servers, group, topic),
        accept=lambda behind: behind and not any(behind.values()),
        timeout_s=timeout_s,
        interval_s=0.5,
        what=f"{group} to commit all of {topic} (records behind, by partition)",
    )


def produce_catalog_first(stack: DevStack, workload: Workload) -> None:
    """Produce the workload's catalog and wait until the worker serves every
    learning instance's pages, so registrations produced next are folded
    against the whole catalog (as the oracles fold them)."""
    produce(stack, workload.catalog)
    deadline = time.monotonic() + 60
    for li in workload.learning_instances:
        wait_for(
            lambda li=li: all_pages(stack, workload, li, workload.goals_of(li), 10),
            accept=lambda pages: not isinstance(pages, str),
            timeout_s=max(0.0, deadline - time.monotonic()),
            interval_s=0.2,
            what=f"the pages of {li}",
        )


def partner_of(workload: Workload, li: str) -> str:
    """The partner that owns a learning instance of the workload."""
    return next(
        e.partner_id
        for e in workload.catalog
        if isinstance(e, LearningInstanceCreated) and e.learning_instance_id == li
    )


def all_pages(
    stack: DevStack, workload: Workload, li: str, goals: list[str], per_page: int
) -> tuple[int, list[dict[str, Any]]] | str:
    """Every row of a learning instance, page by page; a string on HTTP errors."""
    rows: list[dict[str, Any]] = []
    body: dict[str, Any] = {"goal_ids": goals, "registrations_per_page": per_page}
    token = stack.token(partner_id=partner_of(workload, li))
    pages = 0
    while True:
        status, page = post_json(
            f"{stack.api_url}/learning-instances/{li}/metrics/status-and-progress",
            body,
            token=token,
        )
        if status != 200:  # e.g. 404 until the worker has projected the LI
            return f"{li}: HTTP {status} {page}"
        assert isinstance(page, dict)
        assert page["column_headers"] == goals
        assert page["query"] == body
        pages += 1
        rows += page["data"]
        if "next" not in page:
            return pages, rows
        assert page["next"]["registrations_per_page"] == per_page
        body = {**body, "registration_offset": page["next"]["registration_offset"]}


def wait_until_rows_match(
    stack: DevStack,
    workload: Workload,
    registration_events: Sequence[RegistrationCreated | AttemptGraded],
    *,
    per_page: int = 10,
    min_pages: int = 1,
    timeout_s: float = 150.0,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Poll the API until every row equals the oracle; return the oracle."""
    oracle = expected_rows(workload.catalog, registration_events)
    learners = {
        li: [
            r.registration_id
            for r in workload.registrations
            if r.learning_instance_id == li and r.role == "learner"
        ]
        for li in workload.learning_instances
    }

    def mismatches() -> list[str]:
        problems = []
        for li in workload.learning_instances:
            goals = workload.goals_of(li)
            result = all_pages(stack, workload, li, goals, per_page)
            if isinstance(result, str):
                problems.append(result)
                continue
            pages, rows = result
            if pages < min_pages:  # not every learner is registered yet
                problems.append(f"{li}: {pages} pages < {min_pages}")
                continue
            got = [row["registration_id"] for row in rows]
            if got != learners[li]:
                problems.append(f"{li}: registrations {got} != {learners[li]}")
                continue
            for row in rows:
                expected = [oracle[row["registration_id"]][g] for g in goals]
                if row["status_and_progress"] != expected:
                    problems.append(
                        f"{row['registration_id']}: {row['status_and_progress']} "
                        f"!= {expected}"
                    )
        return problems

    wait_for(
        mismatches,
        accept=lambda problems: problems == [],
        timeout_s=timeout_s,
        interval_s=0.5,
        what="every row to equal the oracle (mismatches)",
    )
    return oracle
