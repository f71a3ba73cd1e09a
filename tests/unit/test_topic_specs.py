"""The declared topics and the comparison with an existing topic (no broker)."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from infra.settings import Settings
from infra.topic_specs import (
    CHECKED_CONFIGS,
    TopicError,
    TopicSettingsError,
    TopicSpec,
    TopicState,
    _describe_configs,
    declared_topics,
    min_insync_replicas,
    problems_of,
)


def _specs(**kwargs: Any) -> dict[str, TopicSpec]:
    settings = Settings(**kwargs)
    return {s.role: s for s in declared_topics(settings)}


def _as_declared(spec: TopicSpec) -> TopicState:
    return TopicState(spec.name, spec.partitions, spec.replication, dict(spec.configs))


def test_every_topic_is_declared_with_the_settings_that_keep_its_data() -> None:
    specs = _specs(topic_prefix="m", topic_partitions=6, topic_replication=3)
    assert set(specs) == {
        "catalog",
        "registration-events",
        "dead-letter",
        "status-changes",
        "changelog",
    }
    assert specs["catalog"].name == "m.catalog.v1"
    assert specs["status-changes"].name == "m.status-changes.v1"
    assert specs["changelog"].name == "m-worker-registration-state-changelog"
    assert specs["catalog"].partitions == specs["dead-letter"].partitions == 1
    assert specs["registration-events"].partitions == 6
    assert specs["changelog"].partitions == 6
    assert specs["status-changes"].partitions == 6
    for role in ("catalog", "registration-events", "dead-letter", "status-changes"):
        assert specs[role].configs["cleanup.policy"] == "delete"
        assert specs[role].configs["retention.ms"] == "-1"
        assert specs[role].configs["retention.bytes"] == "-1"
    assert specs["changelog"].configs["cleanup.policy"] == "compact"
    for spec in specs.values():
        assert spec.replication == 3
        assert spec.configs["min.insync.replicas"] == "2"
        assert spec.configs["unclean.leader.election.enable"] == "false"
        assert set(spec.configs) <= set(CHECKED_CONFIGS)
        assert problems_of(spec, _as_declared(spec)) == []


def test_the_changelog_follows_the_app_id() -> None:
    assert _specs(app_id="blue")["changelog"].name == (
        "blue-registration-state-changelog"
    )


@pytest.mark.parametrize(("rf", "isr"), [(1, 1), (2, 1), (3, 2), (5, 2)])
def test_min_insync_replicas(rf: int, isr: int) -> None:
    assert min_insync_replicas(rf) == isr


def test_safe_differences_pass_and_dangerous_ones_are_named() -> None:
    spec = _specs(topic_replication=3)["registration-events"]
    state = _as_declared(spec)
    safe = replace(
        state,
        partitions=spec.partitions + 4,
        configs={
            **state.configs,
            "min.insync.replicas": "3",
            "unclean.leader.election.enable": "FALSE",
        },
    )
    assert problems_of(spec, safe) == []
    unsafe = replace(
        state,
        replication=2,
        configs={**state.configs, "min.insync.replicas": "1"},
    )
    found = {(p.setting, p.found, p.expected) for p in problems_of(spec, unsafe)}
    assert found == {("replication", "2", "3"), ("min.insync.replicas", "1", "2")}
    missing = replace(state, configs={})
    assert {p.setting for p in problems_of(spec, missing)} == set(spec.configs)


def test_a_compaction_policy_is_compared_as_a_set() -> None:
    spec = _specs()["changelog"]
    state = _as_declared(spec)
    both = replace(state, configs={**state.configs, "cleanup.policy": "delete,compact"})
    assert [p.setting for p in problems_of(spec, both)] == ["cleanup.policy"]
    spaced = replace(state, configs={**state.configs, "cleanup.policy": " compact"})
    assert problems_of(spec, spaced) == []


def test_the_refusal_is_one_line_naming_topic_setting_found_and_expected() -> None:
    specs = _specs()
    catalog = specs["catalog"]
    problems = problems_of(
        catalog,
        replace(
            _as_declared(catalog),
            configs={
                **catalog.configs,
                "cleanup.policy": "compact",
                "retention.ms": "1000",
            },
        ),
    )
    message = str(TopicSettingsError(problems))
    assert "\n" not in message
    assert message.startswith(
        "refusing to run on topic mastery.catalog.v1: cleanup.policy is compact, "
        "expected delete (compaction can drop the first creation of an id"
    )
    assert "and 1 more: mastery.catalog.v1 retention.ms=1000" in message


class _ConfigsAnswer:
    """One DescribeConfigs response as aiokafka hands it over."""

    def __init__(self, resources: list[dict[str, Any]]) -> None:
        self._resources = resources

    def to_object(self) -> dict[str, Any]:
        return {"resources": self._resources}


class _LaggingBroker:
    """An admin client whose DescribeConfigs broker learns of topics late.

    Its first ``lag`` answers name every topic unknown (code 3), as a broker
    does whose metadata has not caught up with a topic created a moment ago
    (seen in CI on a three-node cluster); later answers carry the configs.
    """

    def __init__(self, lag: int, final_code: int = 0) -> None:
        self.lag = lag
        self.final_code = final_code
        self.asked: list[list[str]] = []

    async def describe_configs(self, resources: list[Any]) -> list[_ConfigsAnswer]:
        names = [r.name for r in resources]
        self.asked.append(names)
        code = 3 if len(self.asked) <= self.lag else self.final_code
        return [
            _ConfigsAnswer(
                [
                    {
                        "resource_name": name,
                        "error_code": code,
                        "error_message": "",
                        "config_entries": [
                            {"config_names": "retention.ms", "config_value": "-1"},
                            {"config_names": "unset.one", "config_value": None},
                        ],
                    }
                    for name in names
                ]
            )
        ]


def test_configs_unknown_to_the_answering_broker_are_asked_again() -> None:
    async def run() -> tuple[dict[str, dict[str, str]], list[list[str]]]:
        admin = _LaggingBroker(lag=2)
        deadline = asyncio.get_running_loop().time() + 5
        got = await _describe_configs(admin, ["a", "b"], deadline, 5)  # type: ignore[arg-type]
        return got, admin.asked

    configs, asked = asyncio.run(run())
    assert configs == {"a": {"retention.ms": "-1"}, "b": {"retention.ms": "-1"}}
    assert asked == [["a", "b"]] * 3


def test_configs_still_unknown_at_the_deadline_are_named() -> None:
    async def run() -> None:
        deadline = asyncio.get_running_loop().time() + 0.3
        await _describe_configs(_LaggingBroker(lag=10**6), ["t1"], deadline, 0.3)  # type: ignore[arg-type]

    unknown = r"does not know t1 \(UnknownTopicOrPartitionError\)"
    with pytest.raises(TopicError, match=unknown):
        asyncio.run(run())


def test_a_refused_describe_configs_is_final() -> None:
    admin = _LaggingBroker(lag=0, final_code=29)  # TOPIC_AUTHORIZATION_FAILED

    async def run() -> None:
        deadline = asyncio.get_running_loop().time() + 5
        await _describe_configs(admin, ["t1"], deadline, 5)  # type: ignore[arg-type]

    with pytest.raises(TopicError, match="needs DescribeConfigs"):
        asyncio.run(run())
    assert len(admin.asked) == 1
