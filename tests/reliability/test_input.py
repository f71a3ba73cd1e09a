"""Duplicates, late attempts and bad input against a real worker."""

from __future__ import annotations

import asyncio
import random

import orjson
import pytest

from app.cli.dlq import pending_dead_letters, redrive
from app.devstack.stack import DevStack
from app.devstack.workload import DEMO_PARTNER, simulated
from infra.broker import KAFKA, profile_for
from infra.producer import EventProducer
from infra.settings import Settings
from infra.topic_names import TopicNames
from schemas.dead_letter import DeadLetter
from schemas.events import AttemptGraded, ModuleTagged, encode_event
from tests.integration.helpers import produce, wait_until_rows_match
from tests.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_every_attempt_twice_and_some_ten_times(stack: DevStack) -> None:
    rng = random.Random(4)
    workload = simulated(
        learning_instances=1, learners_per_instance=30, attempts_per_learner=40, seed=8
    )
    noisy: list[AttemptGraded] = []
    for attempt in workload.attempts:
        copies = 10 if rng.random() < 0.05 else 2
        noisy += [attempt] * copies
    produce(stack, [*workload.catalog, *workload.registrations])
    stack.start_worker()
    produce(stack, noisy)
    wait_until_rows_match(
        stack, workload, [*workload.registrations, *workload.attempts]
    )


def test_late_attempts_are_applied_in_arrival_order(stack: DevStack) -> None:
    """An attempt whose interaction_end_time is older than ones already applied
    is applied when it arrives (docs/reliability.md): the oracle folds in
    arrival order, so the rows must equal it."""
    workload = simulated(
        learning_instances=1, learners_per_instance=10, attempts_per_learner=20, seed=12
    )
    attempts = list(workload.attempts)
    late = attempts[5::7]
    on_time = [a for a in attempts if a not in late]
    arrival = on_time + [
        a.model_copy(
            update={"interaction_end_time": a.interaction_end_time.replace(year=2020)}
        )
        for a in late
    ]
    produce(stack, [*workload.catalog, *workload.registrations])
    stack.start_worker()
    produce(stack, arrival)
    wait_until_rows_match(stack, workload, [*workload.registrations, *arrival])


def _bad_records(
    good: AttemptGraded, reg_li_goal: str, catalog_event: bytes
) -> list[tuple[bytes | None, bytes]]:
    """At least 20 kinds of malformed or unusable registration-topic records."""
    base = orjson.loads(encode_event(good))
    key = good.registration_id.encode()

    def variant(**changes: object) -> bytes:
        body = {**base, "attempt_id": f"bad-{id(changes)}", **changes}
        return orjson.dumps({k: v for k, v in body.items() if v is not _DROP})

    return [
        (key, b"\xff\xfe\x00 not utf-8"),
        (key, b"{not json"),
        (key, b""),
        (key, b"[]"),
        (key, b"null"),
        (key, b'"just a string"'),
        (key, variant(type="NoSuchEvent")),
        (key, variant(type=_DROP)),
        (key, variant(is_correct=_DROP)),
        (key, variant(is_correct="maybe")),
        (key, variant(module_id=_DROP)),
        (key, variant(module_id="")),
        (key, variant(interaction_end_time="yesterday")),
        (key, variant(interaction_end_time="2026-01-01T00:00:00")),  # no timezone
        (key, variant(occurred_at=12)),
        (key, variant(schema_version=2)),
        (key, variant(extra_field=1)),
        (key, variant(registration_id="has spaces")),
        (key, variant(attempt_id="x" * 500)),
        (key, variant(module_id="module-never-tagged")),
        (key, variant(goal_id="goal-that-does-not-exist")),
        (key, variant(goal_id=reg_li_goal)),  # a goal of another learning instance
        (b"reg-unknown", variant(registration_id="reg-unknown")),
        (b"some-other-key", variant()),  # key is not the registration id
        (key, catalog_event),  # a valid catalog event on the registration topic
        (key, b"{" + b'"pad": "' + b"x" * 200_000 + b'"}'),  # oversized
    ]


class _Drop:
    pass


_DROP = _Drop()


def test_bad_input_is_dead_lettered_and_good_input_applied(stack: DevStack) -> None:
    workload = simulated(
        learning_instances=2, learners_per_instance=10, attempts_per_learner=20, seed=21
    )
    li_a, li_b = workload.learning_instances
    other_goal = workload.goals_of(li_b)[0]
    good = [a for a in workload.attempts]
    sample = next(
        a
        for a in good
        if any(
            r.registration_id == a.registration_id and r.learning_instance_id == li_a
            for r in workload.registrations
        )
    )
    bad = _bad_records(sample, other_goal, encode_event(workload.catalog[-1]))
    assert len(bad) >= 20
    produce(stack, [*workload.catalog, *workload.registrations])
    stack.start_worker()
    settings = Settings(broker_profile="kafka")
    topics = TopicNames(stack.settings.topic_prefix)

    async def interleave() -> None:
        async with EventProducer(
            stack.kafka.bootstrap_servers, profile_for(settings), topics
        ) as producer:
            step = max(1, len(good) // len(bad))
            futures = []
            for i, attempt in enumerate(good):
                futures.append(await producer.send(attempt))
                if i % step == 0 and bad:
                    k, v = bad.pop()
                    futures.append(
                        await producer.send_raw(topics.registration_events, k, v)
                    )
            for k, v in bad:
                futures.append(
                    await producer.send_raw(topics.registration_events, k, v)
                )
            await asyncio.gather(*futures)

    expected_bad = len(bad)
    asyncio.run(interleave())
    wait_until_rows_match(stack, workload, [*workload.registrations, *good])

    view = wait_for(
        lambda: asyncio.run(
            pending_dead_letters(stack.kafka.bootstrap_servers, topics, KAFKA)
        ),
        accept=lambda view: len(view.pending) >= expected_bad,
        timeout_s=60,
        interval_s=1,
        what=f"{expected_bad} dead letters",
    )
    assert len(view.pending) == expected_bad
    assert all(isinstance(d, DeadLetter) and d.reason for d in view.pending)
    reasons = " | ".join(d.reason for d in view.pending)
    for expected in (
        "invalid event",
        "unknown module",
        "unknown goal",
        "unknown registration",
        "key differs",
        "does not belong on this topic",
    ):
        assert expected in reasons, expected
    # Original bytes are kept exactly.
    assert any(d.value == b"{not json" for d in view.pending)


def test_dead_letters_can_be_redriven_after_a_fix(stack: DevStack) -> None:
    workload = simulated(
        learning_instances=1, learners_per_instance=5, attempts_per_learner=10, seed=30
    )
    untagged = ModuleTagged(
        event_id="e-late-module",
        occurred_at=workload.catalog[0].occurred_at,
        partner_id=DEMO_PARTNER,
        module_id="module-late",
        learning_objective_ids=[workload.catalog[0].learning_objective_ids[0]],  # type: ignore[union-attr]
    )
    late = [
        a.model_copy(update={"module_id": "module-late", "attempt_id": f"late-{i}"})
        for i, a in enumerate(workload.attempts[:15])
    ]
    produce(stack, [*workload.catalog, *workload.registrations])
    stack.start_worker()
    produce(stack, [*workload.attempts, *late])
    topics = TopicNames(stack.settings.topic_prefix)
    bootstrap = stack.kafka.bootstrap_servers
    view = wait_for(
        lambda: asyncio.run(pending_dead_letters(bootstrap, topics, KAFKA)),
        accept=lambda view: len(view.pending) >= len(late),
        timeout_s=60,
        interval_s=1,
        what=f"{len(late)} dead letters (unknown module)",
    )
    assert len(view.pending) == len(late)
    assert all("unknown module" in d.reason for d in view.pending)

    produce(stack, [untagged])  # the fix: the module gets tagged
    workload.catalog.append(untagged)
    asyncio.run(
        redrive(
            bootstrap,
            profile_for(Settings(broker_profile="kafka")),
            topics,
            view.pending,
        )
    )
    wait_until_rows_match(
        stack, workload, [*workload.registrations, *workload.attempts, *late]
    )
    after = asyncio.run(pending_dead_letters(bootstrap, topics, KAFKA))
    assert after.pending == []
    assert after.redriven == len(late)
