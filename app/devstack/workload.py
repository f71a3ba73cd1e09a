"""Workloads for the demo, the benchmark and the end-to-end tests.

- :func:`simulated`: BKT-simulated learners in several learning instances, with
  goals over learning objectives and modules, topics, tagged and untagged work.
- :func:`assistments`: learners of the ASSISTments 2009-10 skill-builder data
  (DKT text format) replayed as registrations and attempts.

Both return a :class:`Workload`: catalog events first, then registration
events in the order a platform would emit them (learners interleaved).
:func:`produce` streams one to the broker.
"""

from __future__ import annotations

import json
import logging
import random
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from schemas.bkt_params import BOUNDS
from schemas.events import (
    AttemptGraded,
    BKTParameters,
    CompletionCriteria,
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    RegistrationCreated,
    Target,
)

if TYPE_CHECKING:
    from infra.settings import Settings

__all__ = [
    "DEMO_PARTNER",
    "DKT_PARTNER",
    "Workload",
    "assistments",
    "produce",
    "read_dkt",
    "simulated",
]

#: The partner of the simulated demo workload, and of the DKT replay.
DEMO_PARTNER = "partner-demo"
DKT_PARTNER = "partner-assistments"
_EPOCH = datetime(2026, 9, 1, 8, 0, tzinfo=UTC)
log = logging.getLogger(__name__)


@dataclass
class Workload:
    """Events to produce, in order."""

    catalog: list[LearningInstanceCreated | GoalDefined | ModuleTagged] = field(
        default_factory=list
    )
    registrations: list[RegistrationCreated] = field(default_factory=list)
    attempts: list[AttemptGraded] = field(default_factory=list)

    @property
    def learning_instances(self) -> list[str]:
        return [
            e.learning_instance_id
            for e in self.catalog
            if isinstance(e, LearningInstanceCreated)
        ]

    def goals_of(self, li_id: str) -> list[str]:
        return [
            e.goal_id
            for e in self.catalog
            if isinstance(e, GoalDefined) and e.learning_instance_id == li_id
        ]


class _Ids:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def __call__(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))


def _clock() -> Iterator[datetime]:
    t = _EPOCH
    while True:
        yield t
        t += timedelta(milliseconds=250)


#: Display names of the simulated catalog and learners (taken in order, no
#: random draws: a workload is the same with or without them).
_OBJECTIVE_NAMES = [
    "Fractions",
    "Decimals",
    "Ratios",
    "Percents",
    "Linear equations",
    "Inequalities",
]
_FIRST_NAMES = ["Ada", "Ben", "Chloé", "Dev", "Elif", "Femi", "Grace", "Hiro", "Ines"]
#: Every NAMELESS-th learner has no display name (the page shows its id).
NAMELESS = 8


def learner_name(n: int) -> str | None:
    """The simulated display name of a learning instance's n-th learner."""
    if n % NAMELESS == NAMELESS - 1:
        return None
    first = _FIRST_NAMES[n % len(_FIRST_NAMES)]
    return f"{first} {chr(65 + (n // len(_FIRST_NAMES)) % 26)}."


def simulated(
    *,
    learning_instances: int = 3,
    learners_per_instance: int = 40,
    attempts_per_learner: int = 40,
    seed: int = 7,
) -> Workload:
    """BKT-simulated learners; a tenth of them never learn (learn rate 0).

    The catalog and the learners carry display names (:func:`learner_name`).
    """
    rng = random.Random(seed)
    new_id = _Ids(rng)
    clock = _clock()
    w = Workload()
    objectives = [f"lref-{new_id()}" for _ in range(6)]
    params = {
        lo: BKTParameters(
            prior=round(rng.uniform(0.1, 0.4), 3),
            learn=round(rng.uniform(0.08, 0.25), 3),
            guess=round(rng.uniform(0.1, 0.25), 3),
            slip=round(rng.uniform(0.05, 0.15), 3),
        )
        for lo in objectives
    }
    # One module per objective, plus a review module covering two of them.
    modules: dict[str, list[str]] = {
        f"module-{i + 1}": [lo] for i, lo in enumerate(objectives)
    }
    modules["module-review"] = objectives[:2]
    objective_names = dict(zip(objectives, _OBJECTIVE_NAMES, strict=True))
    for module_id, los in modules.items():
        w.catalog.append(
            ModuleTagged(
                event_id=new_id(),
                occurred_at=next(clock),
                partner_id=DEMO_PARTNER,
                module_id=module_id,
                learning_objective_ids=los,
                parameters={lo: params[lo] for lo in los},
                module_name=" and ".join(objective_names[lo] for lo in los),
                objective_names={lo: objective_names[lo] for lo in los},
            )
        )
    streams: list[Iterator[AttemptGraded]] = []
    for k in range(learning_instances):
        li = new_id()
        w.catalog.append(
            LearningInstanceCreated(
                event_id=new_id(),
                occurred_at=next(clock),
                learning_instance_id=li,
                partner_id=DEMO_PARTNER,
                title=f"Algebra I, section {k + 1}",
            )
        )
        goal_lo = new_id()
        w.catalog.append(
            GoalDefined(
                event_id=new_id(),
                occurred_at=next(clock),
                goal_id=goal_lo,
                learning_instance_id=li,
                targets=[Target(learning_objective_id=lo) for lo in objectives[:4]],
                topics={"topic-1": objectives[:2], "topic-2": objectives[2:4]},
                title="Number sense",
                completion_criteria=CompletionCriteria(
                    min_predicted_mastery=0.95,
                    min_work_per_target=2,
                    max_work_on_goal=60,
                ),
            )
        )
        goal_mod = new_id()
        w.catalog.append(
            GoalDefined(
                event_id=new_id(),
                occurred_at=next(clock),
                goal_id=goal_mod,
                learning_instance_id=li,
                targets=[Target(module_id=m) for m in ("module-5", "module-6")],
                completion_criteria=CompletionCriteria(min_predicted_mastery=0.9),
                title="Equations and inequalities",
            )
        )
        w.registrations.append(
            RegistrationCreated(
                event_id=new_id(),
                occurred_at=next(clock),
                registration_id=new_id(),
                learning_instance_id=li,
                user_id=f"instructor-{li[:8]}",
                role="instructor",
            )
        )
        for n in range(learners_per_instance):
            reg = _learner(new_id, clock, li, f"user-{new_id()[:8]}", learner_name(n))
            w.registrations.append(reg)
            never_learns = n % 10 == 9
            streams.append(
                _simulate_learner(
                    rng=rng,
                    new_id=new_id,
                    registration_id=reg.registration_id,
                    modules=modules,
                    params=params,
                    count=attempts_per_learner,
                    never_learns=never_learns,
                    goal_lo=goal_lo,
                    goal_mod=goal_mod,
                )
            )
    w.attempts = _interleave(streams, rng, clock)
    return w


def _simulate_learner(
    *,
    rng: random.Random,
    new_id: _Ids,
    registration_id: str,
    modules: dict[str, list[str]],
    params: dict[str, BKTParameters],
    count: int,
    never_learns: bool,
    goal_lo: str,
    goal_mod: str,
) -> Iterator[AttemptGraded]:
    mastered = {lo: rng.random() < p.prior for lo, p in params.items()}
    module_ids = list(modules)
    for _ in range(count):
        module_id = rng.choice(module_ids)
        los = modules[module_id]
        # A multi-objective item is answered correctly when every skill "fires".
        correct = all(
            rng.random() < ((1 - params[lo].slip) if mastered[lo] else params[lo].guess)
            for lo in los
        )
        for lo in los:
            if (
                not never_learns
                and not mastered[lo]
                and rng.random() < params[lo].learn
            ):
                mastered[lo] = True
        goal = rng.choice(
            [
                None,
                None,
                goal_lo if module_id not in ("module-5", "module-6") else goal_mod,
            ]
        )
        yield AttemptGraded(
            event_id=new_id(),
            occurred_at=_EPOCH,  # replaced when interleaved
            attempt_id=new_id(),
            registration_id=registration_id,
            module_id=module_id,
            is_correct=correct,
            interaction_end_time=_EPOCH,
            goal_id=goal,
        )


def _learner(
    new_id: _Ids,
    clock: Iterator[datetime],
    li: str,
    user_id: str,
    display_name: str | None = None,
) -> RegistrationCreated:
    return RegistrationCreated(
        event_id=new_id(),
        occurred_at=next(clock),
        registration_id=new_id(),
        learning_instance_id=li,
        user_id=user_id,
        role="learner",
        display_name=display_name,
    )


def _interleave(
    streams: list[Iterator[AttemptGraded]],
    rng: random.Random,
    clock: Iterator[datetime],
) -> list[AttemptGraded]:
    out: list[AttemptGraded] = []
    live = list(streams)
    while live:
        i = rng.randrange(len(live))
        attempt = next(live[i], None)
        if attempt is None:
            live.pop(i)
            continue
        t = next(clock)
        out.append(
            attempt.model_copy(update={"occurred_at": t, "interaction_end_time": t})
        )
    return out


def read_dkt(path: Path) -> Iterator[tuple[list[str], list[bool]]]:
    """Learner sequences of a DKT-format file: (skill ids, correctness)."""
    with path.open() as fh:
        lines = [line.strip().rstrip(",") for line in fh]
    for i in range(0, len(lines) - 2, 3):
        if not lines[i]:
            continue
        count = int(lines[i])
        skills = [s for s in lines[i + 1].split(",") if s][:count]
        answers = [a == "1" for a in lines[i + 2].split(",") if a][:count]
        if len(skills) == len(answers) == count and count:
            yield skills, answers


def dkt_by_skill(path: Path) -> dict[str, list[list[bool]]]:
    """Skill -> its answer sequences (one per learner who practised it) of a
    DKT file, skills named ``skill-<id>`` and in name order."""
    data: dict[str, list[list[bool]]] = {}
    for skills, answers in read_dkt(path):
        own: dict[str, list[bool]] = {}
        for skill, correct in zip(skills, answers, strict=True):
            own.setdefault(f"skill-{skill}", []).append(correct)
        for name, seq in own.items():
            data.setdefault(name, []).append(seq)
    return dict(sorted(data.items()))


def _accepted(skill: str, values: dict[str, float]) -> BKTParameters:
    """Reference parameters moved into the accepted ranges, with a warning.

    pyBKT's skill-44 has guess 0.539; the API refuses guess >= 0.5
    (schemas/bkt_params.py), so the replay uses the nearest accepted value.
    """
    clipped = {name: BOUNDS[name].clip(float(values[name])) for name in BOUNDS}
    moved = [name for name in BOUNDS if clipped[name] != float(values[name])]
    if moved:
        log.warning(
            "%s: %s outside the accepted ranges, replayed as %s",
            skill,
            {name: values[name] for name in moved},
            {name: clipped[name] for name in moved},
        )
    # A forget rate (params-forgets.json) is replayed as given: it is inside
    # its range for every reference skill.
    forget = values.get("forget")
    return BKTParameters(**clipped, forget=None if forget is None else float(forget))


def assistments(
    path: Path,
    *,
    params_path: Path | None = None,
    learners_per_instance: int = 100,
    max_learners: int | None = None,
    seed: int = 11,
) -> Workload:
    """Replay a DKT file.

    Skill N becomes module ``skill-N``, tagged with objective ``skill-N``.
    """
    rng = random.Random(seed)
    new_id = _Ids(rng)
    clock = _clock()
    sequences = list(read_dkt(path))[:max_learners]
    known = (
        json.loads(params_path.read_text())
        if params_path and params_path.exists()
        else {}
    )
    usage = Counter(s for skills, _ in sequences for s in skills)
    w = Workload()
    for skill in sorted(usage, key=lambda s: int(s) if s.isdigit() else 0):
        name = f"skill-{skill}"
        p = known.get(name)
        w.catalog.append(
            ModuleTagged(
                event_id=new_id(),
                occurred_at=next(clock),
                partner_id=DKT_PARTNER,
                module_id=name,
                learning_objective_ids=[name],
                parameters={name: _accepted(name, p)} if p else None,
            )
        )
    top = [f"skill-{s}" for s, _ in usage.most_common(8)]
    streams: list[Iterator[AttemptGraded]] = []
    li = ""
    for n, (skills, answers) in enumerate(sequences):
        if n % learners_per_instance == 0:
            li = new_id()
            w.catalog.append(
                LearningInstanceCreated(
                    event_id=new_id(),
                    occurred_at=next(clock),
                    learning_instance_id=li,
                    partner_id=DKT_PARTNER,
                )
            )
            for half, targets in enumerate((top[:4], top[4:])):
                w.catalog.append(
                    GoalDefined(
                        event_id=new_id(),
                        occurred_at=next(clock),
                        goal_id=new_id(),
                        learning_instance_id=li,
                        targets=[Target(learning_objective_id=t) for t in targets],
                        topics={
                            f"topic-{half}.a": targets[:2],
                            f"topic-{half}.b": targets[2:],
                        },
                    )
                )
        reg = _learner(new_id, clock, li, f"assist-{n}")
        w.registrations.append(reg)
        streams.append(
            iter(
                [
                    AttemptGraded(
                        event_id=new_id(),
                        occurred_at=_EPOCH,
                        attempt_id=new_id(),
                        registration_id=reg.registration_id,
                        module_id=f"skill-{s}",
                        is_correct=a,
                        interaction_end_time=_EPOCH,
                    )
                    for s, a in zip(skills, answers, strict=True)
                ]
            )
        )
    w.attempts = _interleave(streams, rng, clock)
    return w


async def produce(settings: Settings, bootstrap: str, workload: Workload) -> None:
    """Stream ``workload`` to the broker at ``bootstrap`` (``mastery produce``,
    ``mastery dev``): the topics as declared, then catalog, registrations and
    the attempts in tenths, printing progress. The producer loads only here."""
    from infra.broker import profile_for
    from infra.kafka_security import kafka_client_kwargs
    from infra.producer import EventProducer
    from infra.topic_names import TopicNames
    from infra.topic_specs import apply_topic_specs

    await apply_topic_specs(settings, bootstrap)
    async with EventProducer(
        bootstrap,
        profile_for(settings),
        TopicNames(settings.topic_prefix),
        client_kwargs=kafka_client_kwargs(settings),
    ) as producer:
        n = await producer.send_all(workload.catalog)
        n += await producer.send_all(workload.registrations)
        total = len(workload.attempts)
        step = max(1, total // 10)
        for start in range(0, total, step):
            n += await producer.send_all(workload.attempts[start : start + step])
            print(
                f"  produced {min(start + step, total):,}/{total:,} attempts",
                flush=True,
            )
    print(f"produced {n:,} events", flush=True)
