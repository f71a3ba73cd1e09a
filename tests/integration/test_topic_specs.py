"""The declared topics on the real Apache Kafka broker: created exactly so,
verified by DescribeConfigs, and refused when an existing one would lose data."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.cli.main import main
from app.devstack.embedded import EmbeddedRedis
from app.devstack.embedded_kafka import EmbeddedKafka
from infra.settings import Settings
from infra.topic_specs import (
    TopicCreationError,
    TopicSettingsError,
    TopicSpec,
    apply_topic_specs,
    declared_topics,
)

pytestmark = pytest.mark.integration

_prefixes = itertools.count(1)


def _settings(**extra: Any) -> Settings:
    """Settings under a prefix (and app id) no other test uses."""
    prefix = f"ts{next(_prefixes)}"
    return Settings(
        topic_prefix=prefix,
        topic_partitions=3,
        topic_replication=1,
        **extra,
    )


async def _describe(bootstrap: str, specs: tuple[TopicSpec, ...]) -> dict[str, Any]:
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [s.name for s in specs]
        meta = {t["topic"]: t for t in await admin.describe_topics(names)}
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        )
        configs = {
            r["resource_name"]: {
                e["config_names"]: e["config_value"] for e in r["config_entries"]
            }
            for r in response.to_object()["resources"]
        }
    finally:
        await admin.close()
    return {
        name: (
            len(meta[name]["partitions"]),
            {len(p["replicas"]) for p in meta[name]["partitions"]},
            configs[name],
        )
        for name in names
    }


def _create(bootstrap: str, topic: NewTopic) -> None:
    async def go() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            response = await admin.create_topics([topic])
            assert response.to_object()["topic_errors"][0]["error_code"] == 0
        finally:
            await admin.close()

    asyncio.run(go())


def test_missing_topics_are_created_with_exactly_the_declared_settings(
    kafka_server: EmbeddedKafka,
) -> None:
    settings = _settings()
    bootstrap = kafka_server.bootstrap_servers
    report = asyncio.run(apply_topic_specs(settings, bootstrap))
    specs = declared_topics(settings)
    assert set(report.created) == {s.name for s in specs} == set(report.verified)
    described = asyncio.run(_describe(bootstrap, specs))
    for spec in specs:
        partitions, replicas, configs = described[spec.name]
        assert partitions == spec.partitions, spec.name
        assert replicas == {spec.replication}, spec.name
        for name, value in spec.configs.items():
            assert configs[name] == value, (spec.name, name)
    roles = {s.role: s for s in specs}
    assert roles["catalog"].configs["cleanup.policy"] == "delete"
    assert roles["catalog"].configs["retention.ms"] == "-1"
    assert roles["changelog"].configs["cleanup.policy"] == "compact"
    assert roles["changelog"].name == (
        f"{settings.topic_prefix}-worker-registration-state-changelog"
    )


def test_verification_passes_on_the_right_settings(
    kafka_server: EmbeddedKafka,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = _settings()
    bootstrap = kafka_server.bootstrap_servers
    asyncio.run(apply_topic_specs(settings, bootstrap))
    again = asyncio.run(apply_topic_specs(settings, bootstrap))
    assert again.created == ()
    assert len(again.verified) == len(declared_topics(settings)) == 5
    # The command deploy/ runs, in check mode (creates nothing).
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setenv("MASTERY_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("MASTERY_TOPIC_PARTITIONS", "3")
    assert main(["topics", "--check"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 5
    assert all(line.startswith("verified ") for line in out)


def test_check_mode_refuses_missing_topics(
    kafka_server: EmbeddedKafka,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = _settings()
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka_server.bootstrap_servers)
    monkeypatch.setenv("MASTERY_TOPIC_PREFIX", settings.topic_prefix)
    assert main(["topics", "--check"]) == 78
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "existence is missing" in err[0]


#: role -> (partitions, bad configs), setting named in the refusal, found value
DANGEROUS: dict[str, tuple[str, int | None, dict[str, str], str, str]] = {
    "compacted catalog": (
        "catalog",
        None,
        {"cleanup.policy": "compact"},
        "cleanup.policy",
        "compact",
    ),
    "catalog with a finite retention": (
        "catalog",
        None,
        {"retention.ms": "604800000"},
        "retention.ms",
        "604800000",
    ),
    "catalog with a size limit": (
        "catalog",
        None,
        {"retention.bytes": "1073741824"},
        "retention.bytes",
        "1073741824",
    ),
    "compacted registration events": (
        "registration-events",
        None,
        {"cleanup.policy": "compact,delete"},
        "cleanup.policy",
        "compact,delete",
    ),
    "registration events with a finite retention": (
        "registration-events",
        None,
        {"retention.ms": "86400000"},
        "retention.ms",
        "86400000",
    ),
    "fewer registration-events partitions than configured": (
        "registration-events",
        2,
        {},
        "partitions",
        "2",
    ),
    "unclean leader election on registration events": (
        "registration-events",
        None,
        {"unclean.leader.election.enable": "true"},
        "unclean.leader.election.enable",
        "true",
    ),
    "compacted dead letters": (
        "dead-letter",
        None,
        {"cleanup.policy": "compact"},
        "cleanup.policy",
        "compact",
    ),
    "a changelog that is not compacted": (
        "changelog",
        None,
        {"cleanup.policy": "delete"},
        "cleanup.policy",
        "delete",
    ),
    "a changelog also deleted by age": (
        "changelog",
        None,
        {"cleanup.policy": "compact,delete"},
        "cleanup.policy",
        "compact,delete",
    ),
}


@pytest.mark.parametrize("case", sorted(DANGEROUS))
def test_a_topic_that_would_lose_data_is_refused(
    case: str, kafka_server: EmbeddedKafka
) -> None:
    role, partitions, configs, setting, found = DANGEROUS[case]
    settings = _settings()
    bootstrap = kafka_server.bootstrap_servers
    spec = next(s for s in declared_topics(settings) if s.role == role)
    # Someone created it before us, with the declared settings but one.
    _create(
        bootstrap,
        NewTopic(
            spec.name,
            partitions or spec.partitions,
            spec.replication,
            topic_configs={**spec.configs, **configs},
        ),
    )
    with pytest.raises(TopicSettingsError) as refused:
        asyncio.run(apply_topic_specs(settings, bootstrap))
    (problem,) = refused.value.problems
    assert (problem.topic, problem.setting, problem.found) == (
        spec.name,
        setting,
        found,
    )
    assert problem.expected == (
        str(spec.partitions) if setting == "partitions" else spec.configs[setting]
    )
    message = str(refused.value)
    assert "\n" not in message
    assert f"topic {spec.name}: {setting} is {found}, expected" in message


def test_worker_and_topics_command_refuse_a_compacted_catalog_with_exit_78(
    kafka_server: EmbeddedKafka,
    redis_server: EmbeddedRedis,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = _settings()
    bootstrap = kafka_server.bootstrap_servers
    catalog = next(s for s in declared_topics(settings) if s.role == "catalog")
    _create(
        bootstrap,
        NewTopic(catalog.name, 1, 1, topic_configs={"cleanup.policy": "compact"}),
    )
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", bootstrap)
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    monkeypatch.setenv("MASTERY_TOPIC_PREFIX", settings.topic_prefix)
    monkeypatch.setenv("MASTERY_BROKER_PROFILE", "kafka")
    monkeypatch.setenv("MASTERY_DATA_DIR", "/nonexistent/never-created")
    for command in (["topics"], ["worker"]):
        assert main(command) == 78, command
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert err[0].startswith(
            f"error: refusing to run on topic {catalog.name}: cleanup.policy is "
            "compact, expected delete ("
        ), err[0]


def test_a_replication_the_cluster_cannot_hold_is_refused(
    kafka_server: EmbeddedKafka,
) -> None:
    settings = _settings().model_copy(update={"topic_replication": 3})
    with pytest.raises(TopicCreationError, match="InvalidReplicationFactor"):
        asyncio.run(apply_topic_specs(settings, kafka_server.bootstrap_servers))
