"""Reference data: learning instances, goals and module tags, as a projection.

Every worker rebuilds the catalog by replaying the catalog topic, so
:meth:`Catalog.apply` must be deterministic and idempotent. It is the one
mutable object of :mod:`processors`: it is owned by a single follower task and
only read elsewhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from processors.mastery import DEFAULT_PARAMS, Params
from schemas.events import GoalDefined, LearningInstanceCreated, ModuleTagged

__all__ = ["Catalog", "CatalogChange"]

_VOLATILE = frozenset({"event_id", "occurred_at"})


@dataclass(frozen=True, slots=True)
class CatalogChange:
    """What one catalog event changed.

    ``redefined`` is True when an existing goal or module definition changed,
    so rows derived from it for existing registrations must be recomputed.
    """

    kind: Literal["learning_instance", "goal", "module"]
    id: str
    redefined: bool


def _definition(event: GoalDefined | ModuleTagged) -> dict[str, Any]:
    return event.model_dump(exclude=set(_VOLATILE))


class Catalog:
    """In-memory projection of the catalog events."""

    def __init__(self) -> None:
        self._instances: dict[str, LearningInstanceCreated] = {}
        self._goals: dict[str, GoalDefined] = {}
        self._goals_of: dict[str, list[str]] = {}
        self._modules: dict[str, ModuleTagged] = {}
        self._params: dict[str, Params] = {}
        self._covering: dict[str, frozenset[str]] = {}

    def apply(
        self, event: LearningInstanceCreated | GoalDefined | ModuleTagged
    ) -> CatalogChange:
        """Fold one catalog event in; say what changed."""
        if isinstance(event, LearningInstanceCreated):
            self._instances.setdefault(event.learning_instance_id, event)
            return CatalogChange(
                "learning_instance", event.learning_instance_id, redefined=False
            )
        if isinstance(event, GoalDefined):
            return self._apply_goal(event)
        return self._apply_module(event)

    def _apply_goal(self, event: GoalDefined) -> CatalogChange:
        old = self._goals.get(event.goal_id)
        redefined = old is not None and _definition(old) != _definition(event)
        if old is not None and old.learning_instance_id != event.learning_instance_id:
            self._goals_of[old.learning_instance_id].remove(event.goal_id)
            old = None
        if old is None:
            self._goals_of.setdefault(event.learning_instance_id, []).append(
                event.goal_id
            )
        if old is None or redefined:
            self._goals[event.goal_id] = event
        return CatalogChange("goal", event.goal_id, redefined=redefined)

    def _apply_module(self, event: ModuleTagged) -> CatalogChange:
        old = self._modules.get(event.module_id)
        redefined = old is not None and _definition(old) != _definition(event)
        if old is not None and not redefined:
            return CatalogChange("module", event.module_id, redefined=False)
        if old is not None:
            for objective in old.learning_objective_ids:
                self._covering[objective] = self._covering[objective] - {
                    event.module_id
                }
        for objective in event.learning_objective_ids:
            self._covering[objective] = self._covering.get(objective, frozenset()) | {
                event.module_id
            }
        for objective, given in (event.parameters or {}).items():
            self._params[objective] = Params.from_schema(given)
        self._modules[event.module_id] = event
        return CatalogChange("module", event.module_id, redefined=redefined)

    def learning_instances(self) -> Sequence[LearningInstanceCreated]:
        """Every learning instance, in order of creation."""
        return list(self._instances.values())

    def goals(self) -> Sequence[GoalDefined]:
        """Every goal's current definition, in order of first definition."""
        return list(self._goals.values())

    def learning_instance(self, li_id: str) -> LearningInstanceCreated | None:
        """The learning instance, if created."""
        return self._instances.get(li_id)

    def goal(self, goal_id: str) -> GoalDefined | None:
        """The current definition of a goal."""
        return self._goals.get(goal_id)

    def goals_of(self, li_id: str) -> Sequence[GoalDefined]:
        """Goals of a learning instance, in order of first definition."""
        return [self._goals[g] for g in self._goals_of.get(li_id, ())]

    def module(self, module_id: str) -> ModuleTagged | None:
        """The current tagging of a module."""
        return self._modules.get(module_id)

    def params_for(self, objective_id: str) -> Params:
        """BKT parameters of an objective: the last ones given, else defaults."""
        return self._params.get(objective_id, DEFAULT_PARAMS)

    def modules_covering(self, objective_id: str) -> frozenset[str]:
        """Modules currently tagged with the objective."""
        return self._covering.get(objective_id, frozenset())
