"""Every topic of the system and the settings it must have: one declaration.

:func:`declared_topics` says, for the catalog, the registration events, the
dead letters and the worker's changelog, how many partitions and replicas
they get and which topic configs (``cleanup.policy``, ``retention.ms``,
``retention.bytes``, ``min.insync.replicas``, ``unclean.leader.election.enable``).
:func:`apply_topic_specs` creates the missing ones exactly so and verifies
the existing ones with DescribeConfigs. A topic that exists with a setting
that loses data (a compacted catalog, a finite retention on an input topic,
a changelog that is not compacted, fewer partitions or replicas than
declared ...) raises :class:`TopicSettingsError`, one line that names the
topic, the setting, the value found and the one expected; ``mastery`` exits
78 (``EX_CONFIG``) on it. Nothing is ever altered on an existing topic: an
operator decides (docs/operations.md, "Topics").

deploy/ creates the topics with ``mastery topics`` (this module);
tests/unit/test_deploy.py checks the deploy files and the tables of
deploy/README.md and docs/operations.md against :func:`declared_topics`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import for_code

from infra.kafka_security import kafka_client_kwargs
from infra.settings import Settings
from infra.topic_names import TopicNames

__all__ = [
    "CHECKED_CONFIGS",
    "TopicCreationError",
    "TopicError",
    "TopicProblem",
    "TopicReport",
    "TopicSettingsError",
    "TopicSpec",
    "TopicState",
    "apply_topic_specs",
    "changelog_topic",
    "declared_topics",
    "min_insync_replicas",
    "problems_of",
]

#: The Kafka error code of a topic created meanwhile by another process.
_TOPIC_ALREADY_EXISTS = 36
#: Error codes of a topic whose metadata has not reached every broker yet.
_NOT_YET = frozenset({3, 5})  # UNKNOWN_TOPIC_OR_PARTITION, LEADER_NOT_AVAILABLE


class TopicError(Exception):
    """A topic of the system cannot be used as declared (exit code 78)."""


class TopicCreationError(TopicError):
    """The broker refused to create a declared topic."""

    def __init__(self, topic: str, error: str, message: str | None) -> None:
        self.topic = topic
        self.error = error
        detail = f": {message}" if message else ""
        super().__init__(
            f"the broker refused to create topic {topic} ({error}{detail}); check "
            "MASTERY_TOPIC_REPLICATION against the number of brokers and the ACLs "
            "of the client (docs/operations.md, 'Topics')"
        )


@dataclass(frozen=True, slots=True)
class TopicProblem:
    """One setting of an existing topic that would lose data."""

    topic: str
    setting: str
    found: str
    expected: str
    why: str

    def describe(self) -> str:
        return (
            f"topic {self.topic}: {self.setting} is {self.found}, expected "
            f"{self.expected} ({self.why})"
        )


class TopicSettingsError(TopicError):
    """Existing topics whose settings would lose data; ``mastery`` refuses them."""

    def __init__(self, problems: Iterable[TopicProblem]) -> None:
        self.problems = tuple(problems)
        first, *rest = self.problems
        more = f"; and {len(rest)} more: " if rest else ""
        super().__init__(
            "refusing to run on "
            + first.describe()
            + more
            + "; ".join(f"{p.topic} {p.setting}={p.found}" for p in rest)
            + "; fix the topic or point MASTERY_TOPIC_PREFIX / MASTERY_APP_ID at "
            "new topics (docs/operations.md, 'Topics')"
        )


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How one topic is created, and what an existing one must have."""

    name: str
    #: catalog, registration-events, dead-letter or changelog
    role: str
    partitions: int
    replication: int
    configs: Mapping[str, str]
    #: Why the settings matter; said when an existing topic breaks them.
    why: Mapping[str, str] = field(default_factory=dict)

    def new_topic(self) -> NewTopic:
        return NewTopic(
            self.name,
            self.partitions,
            self.replication,
            topic_configs=dict(self.configs),
        )


@dataclass(frozen=True, slots=True)
class TopicState:
    """What the broker says about an existing topic."""

    name: str
    partitions: int
    replication: int
    configs: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class TopicReport:
    """What :func:`apply_topic_specs` did: topics created, topics verified."""

    created: tuple[str, ...]
    verified: tuple[str, ...]
    specs: tuple[TopicSpec, ...]


def changelog_topic(settings: Settings) -> str:
    """The worker's state-table changelog, named as Faust names it:
    ``<app_id>-<table>-changelog``."""
    return f"{settings.worker_id}-registration-state-changelog"


def min_insync_replicas(replication: int) -> int:
    """2 of 3 replicas (producers send with acks=all); 1 below that."""
    return max(1, min(2, replication - 1))


_FOREVER = "every record is the system's input; a deleted one is lost for good"
_KEPT = {"retention.ms": "-1", "retention.bytes": "-1"}


def declared_topics(settings: Settings) -> tuple[TopicSpec, ...]:
    """Every topic ``mastery`` creates and verifies, with its settings."""
    names = TopicNames(settings.topic_prefix)
    rf = settings.topic_replication
    safety = {
        "min.insync.replicas": str(min_insync_replicas(rf)),
        "unclean.leader.election.enable": "false",
    }
    safety_why = {
        "min.insync.replicas": "fewer in-sync replicas acknowledge a write than "
        "survive a broker's loss",
        "unclean.leader.election.enable": "an out-of-sync replica elected leader "
        "drops acknowledged writes",
        "replication": "fewer replicas than MASTERY_TOPIC_REPLICATION",
    }
    return (
        TopicSpec(
            names.catalog,
            "catalog",
            1,
            rf,
            {"cleanup.policy": "delete", **_KEPT, **safety},
            {
                **safety_why,
                "cleanup.policy": "compaction can drop the first creation of an id, "
                "which decides its owner (docs/auth.md, 'Ownership'), and every "
                "worker reads the catalog whole",
                "retention.ms": "workers read the whole catalog at start; a deleted "
                "record is a learning instance or goal gone",
                "retention.bytes": "workers read the whole catalog at start",
                "partitions": "one partition keeps the catalog in order",
            },
        ),
        TopicSpec(
            names.registration_events,
            "registration-events",
            settings.topic_partitions,
            rf,
            {"cleanup.policy": "delete", **_KEPT, **safety},
            {
                **safety_why,
                "cleanup.policy": "compaction keeps only a registration's last "
                "event and drops its attempts",
                "retention.ms": _FOREVER,
                "retention.bytes": _FOREVER,
                "partitions": "fewer partitions than MASTERY_TOPIC_PARTITIONS",
            },
        ),
        TopicSpec(
            names.dead_letter,
            "dead-letter",
            1,
            rf,
            {"cleanup.policy": "delete", **_KEPT, **safety},
            {
                **safety_why,
                "cleanup.policy": "compaction drops rejected records before they "
                "are re-driven",
                "retention.ms": "rejected records must stay until re-driven",
                "retention.bytes": "rejected records must stay until re-driven",
                "partitions": "one partition keeps the rejections in order",
            },
        ),
        TopicSpec(
            names.status_changes,
            "status-changes",
            settings.topic_partitions,
            rf,
            {"cleanup.policy": "delete", **_KEPT, **safety},
            {
                **safety_why,
                "cleanup.policy": "compaction keeps only a registration's last "
                "status change, and the notifier must deliver every one",
                "retention.ms": "a status change deleted before the notifier "
                "read it is a webhook never sent",
                "retention.bytes": "a status change deleted before the notifier "
                "read it is a webhook never sent",
                "partitions": "fewer partitions than MASTERY_TOPIC_PARTITIONS",
            },
        ),
        TopicSpec(
            changelog_topic(settings),
            "changelog",
            settings.topic_partitions,
            rf,
            {"cleanup.policy": "compact", **safety},
            {
                **safety_why,
                "cleanup.policy": "the changelog is the workers' state: only "
                "compaction keeps every registration's latest state forever",
                "partitions": "one changelog partition per registration-events "
                "partition",
            },
        ),
    )


def _policy(value: str) -> frozenset[str]:
    return frozenset(p.strip() for p in value.split(",") if p.strip())


def _at_least(found: str, expected: str) -> bool:
    try:
        return int(found) >= int(expected)
    except ValueError:
        return False


#: topic config -> is the found value safe, given the declared one?
CHECKED_CONFIGS: dict[str, Callable[[str, str], bool]] = {
    "cleanup.policy": lambda found, expected: _policy(found) == _policy(expected),
    # -1 declared: kept forever; anything else deletes records.
    "retention.ms": lambda found, expected: found == expected,
    "retention.bytes": lambda found, expected: found == expected,
    "min.insync.replicas": _at_least,
    "unclean.leader.election.enable": lambda found, expected: (
        found.lower() == expected.lower()
    ),
}


def problems_of(spec: TopicSpec, state: TopicState) -> list[TopicProblem]:
    """The settings of ``state`` that lose data compared with ``spec``."""
    found: list[TopicProblem] = []

    def problem(setting: str, got: object, want: object) -> None:
        found.append(
            TopicProblem(
                spec.name,
                setting,
                str(got),
                str(want),
                spec.why.get(setting, "declared in infra/topic_specs.py"),
            )
        )

    if state.partitions < spec.partitions:
        problem("partitions", state.partitions, spec.partitions)
    if state.replication < spec.replication:
        problem("replication", state.replication, spec.replication)
    for name, expected in spec.configs.items():
        value = state.configs.get(name)
        if value is None:
            problem(name, "unset", expected)
        elif not CHECKED_CONFIGS[name](value, expected):
            problem(name, value, expected)
    return found


async def _describe_configs(
    admin: AIOKafkaAdminClient, names: list[str], deadline: float, timeout_s: float
) -> dict[str, dict[str, str]]:
    """The explicit configs of ``names``, waiting for every broker to know them.

    DescribeConfigs goes to whichever broker the client picks, and in a cluster
    a topic created a moment ago may not have reached that broker's metadata
    yet even though the controller already lists its partitions: the broker
    answers UNKNOWN_TOPIC_OR_PARTITION.  That answer is retried until
    ``deadline``; any other error is final.
    """
    loop = asyncio.get_running_loop()
    configs: dict[str, dict[str, str]] = {}
    while True:
        wanted = [name for name in names if name not in configs]
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, name) for name in wanted]
        )
        unknown: list[tuple[str, str]] = []
        for response in responses:
            for resource in response.to_object()["resources"]:
                name = resource["resource_name"]
                code = resource["error_code"]
                if code in _NOT_YET:
                    unknown.append((name, for_code(code).__name__))
                    continue
                if code != 0:
                    error = for_code(code).__name__
                    raise TopicError(
                        f"cannot read the configs of topic {name} "
                        f"({error}: {resource['error_message']}); the client needs "
                        "DescribeConfigs on it"
                    )
                configs[name] = {
                    e["config_names"]: e["config_value"]
                    for e in resource["config_entries"]
                    if e["config_value"] is not None
                }
        if not unknown:
            return configs
        if loop.time() > deadline:
            listed = ", ".join(f"{name} ({error})" for name, error in sorted(unknown))
            raise TopicError(
                f"the broker answering DescribeConfigs does not know {listed} "
                f"within {timeout_s:.0f} s of creating them"
            )
        await asyncio.sleep(0.1)


async def _describe(
    admin: AIOKafkaAdminClient, names: list[str], timeout_s: float
) -> dict[str, TopicState]:
    """Partitions, replicas and configs of ``names``, waiting for fresh topics."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        metadata = await admin.describe_topics(names)
        pending = [
            t["topic"]
            for t in metadata
            if t["error_code"] in _NOT_YET or not t["partitions"]
        ]
        if not pending:
            break
        if loop.time() > deadline:
            raise TopicError(
                f"the broker lists no partitions of {', '.join(sorted(pending))} "
                f"within {timeout_s:.0f} s of creating them"
            )
        await asyncio.sleep(0.1)
    for t in metadata:
        if t["error_code"] != 0:
            error = for_code(t["error_code"]).__name__
            raise TopicError(f"cannot describe topic {t['topic']} ({error})")
    configs = await _describe_configs(admin, names, deadline, timeout_s)
    return {
        t["topic"]: TopicState(
            name=t["topic"],
            partitions=len(t["partitions"]),
            replication=min(len(p["replicas"]) for p in t["partitions"]),
            configs=configs.get(t["topic"], {}),
        )
        for t in metadata
    }


async def apply_topic_specs(
    settings: Settings,
    bootstrap: str,
    *,
    create: bool = True,
    timeout_s: float = 15.0,
) -> TopicReport:
    """Create the declared topics that are missing, then verify every one.

    Raises :class:`TopicSettingsError` when an existing topic would lose
    data (or, with ``create=False``, is missing), :class:`TopicCreationError`
    when the broker refuses a creation.
    """
    specs = declared_topics(settings)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, **kafka_client_kwargs(settings)
    )
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        created: list[str] = []
        if missing and not create:
            raise TopicSettingsError(
                TopicProblem(
                    s.name, "existence", "missing", "created", "run `mastery topics`"
                )
                for s in missing
            )
        if missing:
            response: Any = await admin.create_topics([s.new_topic() for s in missing])
            for error in response.to_object()["topic_errors"]:
                code = error["error_code"]
                if code == 0:
                    created.append(error["topic"])
                elif code != _TOPIC_ALREADY_EXISTS:  # a racing creator: verified below
                    raise TopicCreationError(
                        error["topic"], for_code(code).__name__, error["error_message"]
                    )
        states = await _describe(admin, [s.name for s in specs], timeout_s)
    finally:
        await admin.close()
    problems = [p for s in specs for p in problems_of(s, states[s.name])]
    if problems:
        raise TopicSettingsError(problems)
    return TopicReport(
        created=tuple(created),
        verified=tuple(s.name for s in specs),
        specs=specs,
    )
