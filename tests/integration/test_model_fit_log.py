"""`mastery model fit --from-log [--publish [--send]]` against the real embedded
broker: the fit of one partner's registrations, the dry run, then the
published ModuleTagged events as the worker would fold them."""

from __future__ import annotations

import asyncio
import json
import zlib
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from app.cli.main import main
from app.devstack.embedded import EmbeddedKafka
from infra.broker import ensure_topics, profile_for
from infra.producer import EventProducer
from infra.settings import Settings
from infra.topic_names import AnyEvent, TopicNames
from infra.topic_reader import read_topic
from processors.catalog import Catalog
from processors.fit import Sequences, fit
from processors.mastery import DEFAULT_PARAMS, Params
from schemas.events import (
    AttemptGraded,
    BKTParameters,
    LearningInstanceCreated,
    ModuleTagged,
    RegistrationCreated,
    decode_event,
)
from tests.unit.test_fit import simulate

pytestmark = pytest.mark.integration

PREFIX = "fitlog"
T0 = datetime(2026, 9, 1, tzinfo=UTC)
TRUTH = Params(prior=0.3, learn=0.12, guess=0.2, slip=0.1)
GIVEN_B = BKTParameters(prior=0.5, learn=0.2, guess=0.25, slip=0.05)


def _world() -> tuple[list[AnyEvent], list[list[bool]]]:
    """Partner pa: 300 learners on lo-a; both partners have a module m-s
    practising an objective lo-s, each its own (ids are per partner)."""
    rng = np.random.default_rng(13)
    events: list[AnyEvent] = [
        LearningInstanceCreated(
            event_id="li-a",
            occurred_at=T0,
            learning_instance_id="li-a",
            partner_id="pa",
        ),
        LearningInstanceCreated(
            event_id="li-b",
            occurred_at=T0,
            learning_instance_id="li-b",
            partner_id="pb",
        ),
        ModuleTagged(
            event_id="m-a",
            occurred_at=T0,
            partner_id="pa",
            module_id="m-a",
            learning_objective_ids=["lo-a"],
        ),
        ModuleTagged(
            event_id="m-s",
            occurred_at=T0,
            partner_id="pa",
            module_id="m-s",
            learning_objective_ids=["lo-s"],
        ),
        ModuleTagged(
            event_id="m-s-b",
            occurred_at=T0,
            partner_id="pb",
            module_id="m-s",
            learning_objective_ids=["lo-s"],
        ),
        ModuleTagged(
            event_id="m-b",
            occurred_at=T0,
            partner_id="pb",
            module_id="m-b",
            learning_objective_ids=["lo-b"],
            parameters={"lo-b": GIVEN_B},
        ),
    ]
    sequences = simulate(TRUTH, 300, rng)
    streams: list[list[AttemptGraded]] = []
    for n, seq in enumerate(sequences):
        reg = f"ra-{n}"
        events.append(_registration(reg, "li-a"))
        own = [_attempt(reg, "m-a", c, k) for k, c in enumerate(seq)]
        own.append(_attempt(reg, "m-s", True, len(seq)))
        streams.append(own)
    for n in range(20):
        reg = f"rb-{n}"
        events.append(_registration(reg, "li-b"))
        streams.append([_attempt(reg, "m-b", True, 0), _attempt(reg, "m-s", False, 1)])
    # Learners interleaved, each one's attempts in order (as a platform sends).
    while streams:
        i = int(rng.integers(len(streams)))
        events.append(streams[i].pop(0))
        if not streams[i]:
            streams.pop(i)
    return events, sequences


def _registration(reg: str, li: str) -> RegistrationCreated:
    return RegistrationCreated(
        event_id=f"e-{reg}",
        occurred_at=T0,
        registration_id=reg,
        learning_instance_id=li,
        user_id=f"u-{reg}",
        role="learner",
    )


def _attempt(reg: str, module: str, correct: bool, k: int) -> AttemptGraded:
    at = T0 + timedelta(minutes=k)
    return AttemptGraded(
        event_id=f"e-{reg}-{k}",
        occurred_at=at,
        attempt_id=f"a-{reg}-{k}",
        registration_id=reg,
        module_id=module,
        is_correct=correct,
        interaction_end_time=at,
    )


async def _produce(settings: Settings, bootstrap: str, events: list[AnyEvent]) -> None:
    await ensure_topics(settings, bootstrap)
    async with EventProducer(
        bootstrap, profile_for(settings), TopicNames(PREFIX)
    ) as producer:
        await producer.send_all(events)


async def _catalog(settings: Settings, bootstrap: str) -> tuple[Catalog, int]:
    catalog = Catalog()
    count = 0
    async for record in read_topic(
        bootstrap, TopicNames(PREFIX).catalog, profile_for(settings)
    ):
        event = decode_event(record.value or b"")
        assert isinstance(event, LearningInstanceCreated | ModuleTagged)
        catalog.apply(event)
        count += 1
    return catalog, count


def test_fit_from_log_then_publish(
    kafka_server: EmbeddedKafka,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bootstrap = kafka_server.bootstrap_servers
    for name, value in {
        "MASTERY_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "MASTERY_BROKER_PROFILE": "kafka",
        "MASTERY_TOPIC_PREFIX": PREFIX,
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    events, sequences = _world()
    asyncio.run(_produce(settings, bootstrap, events))

    assert main(["model", "fit", "--from-log", "--partner", "pa", "--publish"]) == 0
    captured = capsys.readouterr()
    fitted = json.loads(captured.out)
    assert sorted(fitted) == ["lo-a", "lo-s"]  # pa's objectives only, not lo-b
    expected = fit(Sequences.of(sequences), seed=[0, zlib.crc32(b"lo-a")]).params
    for name in ("prior", "learn", "guess", "slip"):
        assert fitted["lo-a"][name] == pytest.approx(getattr(expected, name), abs=1e-9)
    assert abs(fitted["lo-a"]["learn"] - TRUTH.learn) < 0.04
    assert "not published" not in captured.err  # lo-s is pa's own objective
    assert "dry run: would publish 2 ModuleTagged events for 2 objectives" in (
        captured.err
    )
    _, count = asyncio.run(_catalog(settings, bootstrap))
    assert count == 6  # a dry run sends nothing

    assert (
        main(["model", "fit", "--from-log", "--partner", "pa", "--publish", "--send"])
        == 0
    )
    captured = capsys.readouterr()
    assert "published 2 ModuleTagged events for 2 objectives" in captured.err
    catalog, count = asyncio.run(_catalog(settings, bootstrap))
    assert count == 8
    pa, pb = catalog.for_partner("pa"), catalog.for_partner("pb")
    published = json.loads(captured.out)
    assert pa.params_for("lo-a") == Params(**published["lo-a"])
    assert pa.params_for("lo-s") == Params(**published["lo-s"])
    # pb's objective of the same id, and its own lo-b, are untouched.
    assert pb.params_for("lo-s") == DEFAULT_PARAMS
    assert pb.params_for("lo-b") == Params.from_schema(GIVEN_B)

    # Partner pb's fit sees only its 20 learners; --until keeps their first answer.
    until = (T0 + timedelta(seconds=30)).isoformat()
    assert (
        main(["model", "fit", "--from-log", "--partner", "pb", "--until", until]) == 0
    )
    captured = capsys.readouterr()
    assert sorted(json.loads(captured.out)) == ["lo-b"]
    late = sum(
        isinstance(e, AttemptGraded)
        and e.interaction_end_time > T0 + timedelta(seconds=30)
        for e in events
    )
    assert f"left out: {late:,} attempts, all partners (after --until)" in captured.err
    assert "lo-b  attempts       20  learners     20" in captured.err
