"""The serializer's contract test: the rows the processors derive are what
schemas/status_and_progress.py says the API serves.

The rows come from the real fold (processors/batch.py, which derives them
through processors/rows.py) over two workloads: a slice of ASSISTments 2009
(real answers, learning-objective targets, topics) and the simulated one
(module targets, goal-tagged attempts, a work cap). Each is folded with the
exact forecaster and with a deferred one that has no tables yet, whose rows
are provisional (the worker's rows before their tables are built).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from functools import cache
from typing import Any, get_args

import orjson
import pytest
from pydantic import TypeAdapter, ValidationError

from app.devstack.workload import Workload, assistments, simulated
from processors.batch import Decoded, Record, fold
from processors.catalog import Catalog
from processors.forecast import ForecastTables
from processors.forecaster import SYNCHRONOUS, DeferredForecaster, Forecaster
from processors.registration import RegistrationState
from processors.rows import goal_template
from schemas.events import AttemptGraded, RegistrationCreated, encode_event
from schemas.status_and_progress import (
    MAX_WORK_REMAINING,
    HistoryPoint,
    StatusAndProgress,
    StatusAndProgressPage,
    TargetStatus,
)
from schemas.transitions import GoalStatus
from tests.unit.test_batch import TOPIC
from tests.unit.test_transitions import TRAIN

TIMELINE = TypeAdapter(list[HistoryPoint])
#: Small batches: the rows of many intermediate states, not only the last.
BATCH = 10


def _workload(name: str) -> Workload:
    if name == "simulated":
        return simulated(
            learning_instances=2,
            learners_per_instance=12,
            attempts_per_learner=80,
            seed=9,
        )
    if not TRAIN.exists():  # pragma: no cover - the data ships with ../shared
        pytest.fail(f"ASSISTments data missing: {TRAIN}")
    return assistments(TRAIN, max_learners=200, learners_per_instance=30)


@cache
def _derived(name: str, deferred: bool) -> tuple[list[bytes], list[bytes]]:
    """Every row and timeline the fold writes for the workload, batch by
    batch, and each goal's template row."""
    workload = _workload(name)
    catalog = Catalog()
    for event in workload.catalog:
        catalog.apply(event)
    forecaster: Forecaster = (
        DeferredForecaster(ForecastTables(), inline_builds=0)
        if deferred
        else SYNCHRONOUS
    )
    events: list[RegistrationCreated | AttemptGraded] = [
        *workload.registrations,
        *workload.attempts,
    ]
    log = [
        Decoded(
            Record(TOPIC, 0, offset, e.registration_id.encode(), encode_event(e)), e
        )
        for offset, e in enumerate(events)
    ]
    states: dict[str, RegistrationState | None] = {}
    rows: list[bytes] = []
    timelines: list[bytes] = []
    for start in range(0, len(log), BATCH):
        chunk = log[start : start + BATCH]
        lookup = {
            d.event.registration_id: states.get(d.event.registration_id) for d in chunk
        }
        plan = fold(chunk, lookup, catalog, forecaster=forecaster)
        states.update(plan.states)
        rows.extend(row for _, _, row in plan.rows)
        timelines.extend(points for _, _, points in plan.history)
    for li in workload.learning_instances:
        for goal in catalog.for_learning_instance(li).goals_of(li):
            rows.append(goal_template(goal, catalog, forecaster=forecaster))
    return rows, timelines


def _all_rows() -> Iterator[tuple[str, bool, bytes]]:
    for name in ("assistments", "simulated"):
        for deferred in (False, True):
            for row in _derived(name, deferred)[0]:
                yield name, deferred, row


@pytest.mark.parametrize("deferred", [False, True], ids=["exact", "provisional"])
@pytest.mark.parametrize("name", ["assistments", "simulated"])
def test_every_derived_row_is_a_valid_item(name: str, deferred: bool) -> None:
    rows, _ = _derived(name, deferred)
    assert len(rows) > 500
    for row in rows:
        # strict: a number sent as a string, or a count as a float, fails
        StatusAndProgress.model_validate_json(row, strict=True)


def test_the_rows_reach_every_value_the_contract_names() -> None:
    # The test above means something only if the rows cover the contract.
    statuses: Counter[str] = Counter()
    target_statuses: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    remaining: set[int] = set()
    topics = 0
    for _, _, raw in _all_rows():
        row = orjson.loads(raw)
        statuses[row["status"]] += 1
        remaining.add(row["work_remaining"])
        for target in row["targets"]:
            target_statuses[target["status"]] += 1
            kinds["target_id" if "target_id" in target else "module_id"] += 1
        for topic in row.get("topic_work_remaining", ()):
            topics += 1
            remaining |= {topic["min_work_remaining"], topic["average_work_remaining"]}
    assert set(statuses) == set(get_args(GoalStatus)), statuses
    assert set(target_statuses) == set(get_args(TargetStatus)), target_statuses
    assert set(kinds) == {"target_id", "module_id"}
    assert topics > 0
    assert {-1, 0, 1, MAX_WORK_REMAINING} <= remaining, sorted(remaining)


@pytest.mark.parametrize("name", ["assistments", "simulated"])
def test_every_timeline_is_a_list_of_valid_points(name: str) -> None:
    _, timelines = _derived(name, False)
    assert timelines
    statuses: set[str] = set()
    for raw in timelines:
        for point in TIMELINE.validate_json(raw, strict=True):
            statuses.add(point.status)
    assert len(statuses) >= 3, statuses


def _a_row(kind: str) -> dict[str, Any]:
    """A real row with targets of ``kind`` (and topics, for objectives)."""
    for _, _, raw in _all_rows():
        row: dict[str, Any] = orjson.loads(raw)
        if kind in row["targets"][0] and (
            kind == "module_id" or "topic_work_remaining" in row
        ):
            return row
    raise AssertionError(f"no row with {kind} targets")


def _set(path: str, value: Any) -> Any:
    def change(row: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = row
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _drop(key: str) -> Any:
    return lambda row: row.pop(key)


BROKEN = {
    # the contract's sample spells a target "completed"; its table says complete
    "target completed": ("target_id", _set("targets.0.status", "completed")),
    "goal status unknown": ("target_id", _set("status", "done")),
    "target complete_max_work": (
        "target_id",
        _set("targets.0.status", "complete_max_work"),
    ),
    "progress above 1": ("target_id", _set("progress", 1.5)),
    "progress below 0": ("module_id", _set("targets.0.progress", -0.1)),
    "work_remaining 31": ("target_id", _set("work_remaining", 31)),
    "work_remaining -2": ("module_id", _set("work_remaining", -2)),
    "work_remaining a float": ("target_id", _set("work_remaining", 3.0)),
    "progress a string": ("target_id", _set("progress", "0.5")),
    "topic average 31": (
        "target_id",
        _set("topic_work_remaining.0.average_work_remaining", 31),
    ),
    "topics null": ("target_id", _set("topic_work_remaining", None)),
    "topics empty": ("target_id", _set("topic_work_remaining", [])),
    "both target ids": ("target_id", _set("targets.0.module_id", "m-1")),
    "no target id": ("module_id", lambda row: row["targets"][0].pop("module_id")),
    "targets of two kinds": (
        "target_id",
        lambda row: row["targets"].append(
            {"module_id": "m-1", "status": "no_work", "progress": 0.0}
        ),
    ),
    "no targets": ("module_id", _set("targets", [])),
    "no goal_id": ("module_id", _drop("goal_id")),
    "an extra field": ("module_id", _set("provisional", True)),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_the_model_refuses_a_row_off_the_contract(case: str) -> None:
    kind, change = BROKEN[case]
    row = _a_row(kind)
    StatusAndProgress.model_validate_json(orjson.dumps(row), strict=True)
    change(row)
    with pytest.raises(ValidationError):
        StatusAndProgress.model_validate_json(orjson.dumps(row), strict=True)


#: The contract's "Single Goal, Single Target" sample response, as written.
SAMPLE = {
    "query": {"goal_ids": ["50d7d4fc-476d-45eb-8e8c-97c91d5d7c74"]},
    "column_headers": ["50d7d4fc-476d-45eb-8e8c-97c91d5d7c74"],
    "data": [
        {
            "registration_id": "104f4efc-62f0-4f4a-a577-c880ff7acc31",
            "status_and_progress": [
                {
                    "goal_id": "50d7d4fc-476d-45eb-8e8c-97c91d5d7c74",
                    "status": "in_progress",
                    "progress": 0.4,
                    "work_remaining": 9,
                    "targets": [
                        {
                            "target_id": "5d56b449-56be-4bb1-afd2-b3e281a66a42",
                            "status": "in_progress",
                            "progress": 0.8,
                        }
                    ],
                }
            ],
        }
    ],
}


def test_the_contracts_sample_page_is_valid_and_next_is_absent_not_null() -> None:
    page = StatusAndProgressPage.model_validate_json(orjson.dumps(SAMPLE))
    assert page.next is None
    more = SAMPLE | {"next": {"registration_offset": 4, "registrations_per_page": 2}}
    assert StatusAndProgressPage.model_validate(more).next is not None
    with pytest.raises(ValidationError, match="never null"):
        StatusAndProgressPage.model_validate(SAMPLE | {"next": None})
