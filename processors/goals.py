"""Status and progress of one registration on one goal (the API's row item).

Every rule here is written out, with worked examples, in docs/analytics.md;
this module implements exactly that document. In short:

- a target is *mastered* when the log-odds of P(mastered) of its objective
  (every objective, for a module target) reach ``logit(min_predicted_mastery)``;
  it is *complete* when also its work reaches ``min_work_per_target``;
- work remaining comes from the BKT chain (:mod:`processors.forecast`), through
  a :class:`~processors.forecaster.Forecaster` (default: synchronous, exact);
- progress is ``done / (done + work_remaining)``;
- *struggling* is wheel-spinning with evidence: at least
  :data:`STRUGGLE_MIN_ATTEMPTS` attempts on an objective, not mastered, and the
  answers fit "unmastered and never learns" better than the BKT model by a
  likelihood ratio of at least ``exp(STRUGGLE_LLR)``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from processors.catalog import PartnerCatalog
from processors.forecast import (
    HORIZON,
    TableKey,
    best_case_items,
    expected_items,
)
from processors.forecaster import SYNCHRONOUS, Forecaster
from processors.mastery import ObjectiveState, logit
from processors.registration import RegistrationState
from schemas.events import GoalDefined, Target

__all__ = [
    "PROGRESS_DIGITS",
    "STRUGGLE_LLR",
    "STRUGGLE_MIN_ATTEMPTS",
    "StatusScope",
    "TargetOutcome",
    "affected_by",
    "evaluate",
    "evaluate_target",
    "goal_status",
    "scoped_status",
    "status_scope",
]

#: Attempts on an objective before it can be called struggling (Beck & Gong's
#: ten-opportunity wheel-spinning horizon).
STRUGGLE_MIN_ATTEMPTS = 10
#: Log likelihood ratio "stuck" vs BKT above which a learner is struggling.
STRUGGLE_LLR = 0.0
#: Progress values are rounded to this many decimals (deterministic rows).
PROGRESS_DIGITS = 4

_EMPTY: Mapping[str, int] = {}
_NO_OBJECTIVES: Mapping[str, ObjectiveState] = {}


@dataclass(frozen=True, slots=True)
class TargetOutcome:
    """Evaluation of one target of a goal for one registration."""

    status: str
    work: int
    expected: float  # E[min(T, HORIZON)] further items; 0.0 when complete
    best_case: int  # further items if every answer is correct; 0 when complete
    remaining: int  # round(expected), 0..HORIZON
    progress: float
    modules: frozenset[str]  # modules whose attempts count toward the target
    # Exact forecast tables this outcome lacked (it used a provisional CDF).
    pending: frozenset[TableKey] = frozenset()


def _round_half_up(x: float) -> int:
    return math.floor(x + 0.5)


def _progress(done: int, remaining: int) -> float:
    if done <= 0:
        return 0.0
    return round(done / (done + remaining), PROGRESS_DIGITS)


def _target_scope(
    target: Target, catalog: PartnerCatalog
) -> tuple[list[str], frozenset[str]]:
    """Objectives whose mastery decides the target; modules whose work counts."""
    if target.learning_objective_id is not None:
        objective = target.learning_objective_id
        return [objective], catalog.modules_covering(objective)
    module_id = target.id
    module = catalog.module(module_id)
    objectives = [] if module is None else list(module.learning_objective_ids)
    return objectives, frozenset((module_id,))


def affected_by(
    goal: GoalDefined,
    catalog: PartnerCatalog,
    *,
    modules: Collection[str],
    objectives: Collection[str],
    goal_ids: Collection[str],
) -> bool:
    """Can attempts on ``modules`` (updating ``objectives``, tagged with
    ``goal_ids``) change this goal's row? Exact: a row depends only on its
    targets' objectives, the work on modules covering them, and the work tagged
    with the goal; the worker skips re-evaluating goals this returns False for.
    """
    if goal.goal_id in goal_ids:
        return True
    for target in goal.targets:
        target_objectives, target_modules = _target_scope(target, catalog)
        if any(o in objectives for o in target_objectives):
            return True
        if any(m in modules for m in target_modules):
            return True
    return False


def _target_status(
    target: Target,
    min_work: int,
    threshold: float,
    *,
    objectives: Mapping[str, ObjectiveState],
    untagged: Mapping[str, int],
    tagged: Mapping[str, int],
    catalog: PartnerCatalog,
) -> tuple[str, int, int, list[str], frozenset[str]]:
    """A target's status without its forecast: ``(status, work, items still
    needed for min_work, objectives deciding it, modules whose work counts)``.
    The rows' rule (:func:`evaluate_target`); :func:`scoped_status` applies
    the same one to a :class:`StatusScope`."""
    scope, modules = _target_scope(target, catalog)
    work = 0
    for module_id in modules:
        work += untagged.get(module_id, 0) + tagged.get(module_id, 0)
    need = max(min_work - work, 0)
    mastered = bool(scope)
    struggling = False
    for objective in scope:
        state = objectives.get(objective)
        lo = (
            catalog.params_for(objective).prior_log_odds
            if state is None
            else (state.log_odds)
        )
        if lo < threshold:
            mastered = False
            if (
                state is not None
                and state.attempts >= STRUGGLE_MIN_ATTEMPTS
                and state.stuck_llr > STRUGGLE_LLR
            ):
                struggling = True
    if mastered and need == 0:
        status = "complete"
    elif work == 0:
        status = "no_work"
    elif struggling:
        status = "struggling"
    else:
        status = "in_progress"
    return status, work, need, scope, modules


def _inputs(
    state: RegistrationState | None, goal_id: str
) -> tuple[Mapping[str, ObjectiveState], Mapping[str, int], Mapping[str, int]]:
    """What a goal's row reads of a state: its objectives, its untagged work
    and the work tagged with the goal (all empty without a state)."""
    if state is None:
        return _NO_OBJECTIVES, _EMPTY, _EMPTY
    return state.objectives, state.untagged_work, state.tagged_work.get(goal_id, _EMPTY)


def _goal_status(statuses: Collection[str], done: int, max_work: int | None) -> str:
    """A goal's status from its targets' statuses and the work done on it."""
    if all(s == "complete" for s in statuses):
        return "complete"
    if max_work is not None and done >= max_work:
        return "complete_max_work"
    if done == 0:
        return "no_work"
    if "struggling" in statuses:
        return "struggling"
    return "in_progress"


@dataclass(frozen=True, slots=True)
class StatusScope:
    """What a goal's status reads, looked up once: per target, its objectives
    with their prior log-odds and the modules whose work counts. Valid while
    the catalog does not change (the fold builds them per batch)."""

    goal_id: str
    targets: tuple[tuple[tuple[tuple[str, float], ...], tuple[str, ...]], ...]
    counted: tuple[str, ...]  # every module whose untagged work counts
    threshold: float
    min_work: int
    max_work: int | None


def status_scope(goal: GoalDefined, catalog: PartnerCatalog) -> StatusScope:
    """The goal's :class:`StatusScope` under the catalog."""
    criteria = goal.completion_criteria
    targets = []
    counted: set[str] = set()
    for target in goal.targets:
        scope, modules = _target_scope(target, catalog)
        targets.append(
            (
                tuple((o, catalog.params_for(o).prior_log_odds) for o in scope),
                tuple(sorted(modules)),
            )
        )
        counted |= modules
    return StatusScope(
        goal.goal_id,
        tuple(targets),
        tuple(sorted(counted)),
        logit(criteria.min_predicted_mastery),
        criteria.min_work_per_target,
        criteria.max_work_on_goal,
    )


def scoped_status(scope: StatusScope, state: RegistrationState | None) -> str:
    """The ``status`` :func:`evaluate` gives, without forecasting anything:
    the rules of :func:`_target_status` and :func:`_goal_status` on a
    :class:`StatusScope` (the transitions' hot path, processors/transitions.py;
    tests/unit/test_transitions.py holds it equal to :func:`evaluate`)."""
    objectives, untagged, tagged = _inputs(state, scope.goal_id)
    threshold = scope.threshold
    complete = True
    struggling = False
    for target_objectives, modules in scope.targets:
        work = 0
        for module_id in modules:
            work += untagged.get(module_id, 0) + tagged.get(module_id, 0)
        mastered = bool(target_objectives)
        stuck = False
        for objective, prior in target_objectives:
            known = objectives.get(objective)
            if (prior if known is None else known.log_odds) < threshold:
                mastered = False
                if (
                    known is not None
                    and known.attempts >= STRUGGLE_MIN_ATTEMPTS
                    and known.stuck_llr > STRUGGLE_LLR
                ):
                    stuck = True
        if mastered and work >= scope.min_work:
            continue  # complete
        complete = False
        if work and stuck:
            struggling = True
    if complete:
        return "complete"
    done = sum(tagged.values()) + sum(untagged.get(m, 0) for m in scope.counted)
    if scope.max_work is not None and done >= scope.max_work:
        return "complete_max_work"
    if done == 0:
        return "no_work"
    return "struggling" if struggling else "in_progress"


def goal_status(
    goal: GoalDefined, state: RegistrationState | None, catalog: PartnerCatalog
) -> str:
    """The ``status`` :func:`evaluate` gives, without forecasting anything."""
    return scoped_status(status_scope(goal, catalog), state)


def evaluate_target(
    target: Target,
    goal: GoalDefined,
    *,
    objectives: Mapping[str, ObjectiveState],
    untagged: Mapping[str, int],
    tagged: Mapping[str, int],
    catalog: PartnerCatalog,
    forecaster: Forecaster = SYNCHRONOUS,
    best_case: bool = True,
) -> TargetOutcome:
    """Status, work and forecast of one target (``tagged``: this goal's counts).
    Without ``best_case`` its ``best_case`` is left at 0 (only topics read it).

    With a deferred ``forecaster`` the outcome may rest on a provisional CDF;
    ``pending`` then names the tables to build before evaluating again.
    """
    criteria = goal.completion_criteria
    threshold = logit(criteria.min_predicted_mastery)
    status, work, need, scope, modules = _target_status(
        target,
        criteria.min_work_per_target,
        threshold,
        objectives=objectives,
        untagged=untagged,
        tagged=tagged,
        catalog=catalog,
    )
    if status == "complete":
        return TargetOutcome("complete", work, 0.0, 0, 0, 1.0, modules)

    cdf: list[float] | None = None
    best = 0
    pending: set[TableKey] = set()
    for objective in scope:
        params = catalog.params_for(objective)
        state = objectives.get(objective)
        lo = params.prior_log_odds if state is None else state.log_odds
        forecast = forecaster.forecast(params, threshold, lo, need)
        one = forecast.cdf
        if forecast.pending is not None:
            pending.add(forecast.pending)
        # Objectives of one module are practised together; completion needs
        # all of them, taken as independent (docs/analytics.md).
        cdf = (
            list(one) if cdf is None else [a * b for a, b in zip(cdf, one, strict=True)]
        )
        if best_case:
            best = max(best, best_case_items(params, threshold, lo, need))

    if cdf is None:  # a module target that is not tagged: it cannot complete
        expected, best = float(HORIZON), HORIZON
    else:
        expected = expected_items(tuple(cdf))
    remaining = min(HORIZON, max(1, _round_half_up(expected)))
    return TargetOutcome(
        status,
        work,
        expected,
        best,
        remaining,
        _progress(work, remaining),
        modules,
        frozenset(pending),
    )


def evaluate(
    goal: GoalDefined,
    state: RegistrationState | None,
    catalog: PartnerCatalog,
    *,
    forecaster: Forecaster = SYNCHRONOUS,
    summary: bool = False,
) -> dict[str, object]:
    """The contract's ``status_and_progress[]`` item for one goal.

    A :class:`~processors.forecaster.DeferredForecaster` records the tables a
    provisional row lacked (its ``take_pending``). With ``summary``, only the
    goal's ``status``, ``progress`` and ``work_remaining`` (a history point:
    no targets, no topics, so no best cases to compute).
    """
    objectives, untagged, tagged = _inputs(state, goal.goal_id)

    key = "target_id" if goal.target_kind == "learning_objective" else "module_id"
    outcomes: dict[str, TargetOutcome] = {}
    counted: set[str] = set()
    for target in goal.targets:
        outcome = evaluate_target(
            target,
            goal,
            objectives=objectives,
            untagged=untagged,
            tagged=tagged,
            catalog=catalog,
            forecaster=forecaster,
            best_case=not summary,
        )
        outcomes[target.id] = outcome
        counted |= outcome.modules

    done = sum(tagged.values()) + sum(untagged.get(m, 0) for m in counted)
    max_work = goal.completion_criteria.max_work_on_goal
    budget = HORIZON if max_work is None else min(HORIZON, max_work - done)
    results = list(outcomes.values())
    status = _goal_status([r.status for r in results], done, max_work)
    if status in ("complete", "complete_max_work"):
        remaining = 0
    else:
        remaining = _remaining(results, budget)
    if remaining == 0:
        progress = 1.0
    elif remaining < 0:
        progress = 0.0
    else:
        progress = _progress(done, remaining)
    if summary:
        return {"status": status, "progress": progress, "work_remaining": remaining}

    row: dict[str, object] = {
        "goal_id": goal.goal_id,
        "status": status,
        "progress": progress,
        "work_remaining": remaining,
        "targets": [
            {
                key: target.id,
                "status": outcomes[target.id].status,
                "progress": outcomes[target.id].progress,
            }
            for target in goal.targets
        ],
    }
    if goal.topics:
        row["topic_work_remaining"] = [
            _topic(topic_id, [outcomes[m] for m in members], budget)
            for topic_id, members in goal.topics.items()
        ]
    return row


def _remaining(results: list[TargetOutcome], budget: int) -> int:
    """Goal or topic work remaining: -1 without work on any target."""
    if all(r.work == 0 for r in results):
        return -1
    expected = math.fsum(r.expected for r in results)
    return max(0, min(budget, _round_half_up(expected)))


def _topic(
    topic_id: str, results: list[TargetOutcome], budget: int
) -> dict[str, object]:
    if all(r.status == "complete" for r in results):
        average = best = 0
    else:
        average = _remaining(results, budget)
        best = (
            -1
            if average < 0
            else max(0, min(budget, sum(r.best_case for r in results)))
        )
    return {
        "topic_id": topic_id,
        "min_work_remaining": best,
        "average_work_remaining": average,
    }
