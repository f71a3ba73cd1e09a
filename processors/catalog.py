"""Reference data: learning instances, goals and module tags, as a projection.

Every worker rebuilds the catalog by replaying the catalog topic, so
:meth:`Catalog.apply` must be deterministic and idempotent. It is the one
mutable object of :mod:`processors`: it is owned by a single follower task and
only read elsewhere.

Ownership (docs/auth.md, "Ownership"), decided here in log order:

- learning instance ids are global; the first ``LearningInstanceCreated`` of
  an id makes its partner the owner, for good;
- goal ids are global; a goal belongs to the partner of its learning
  instance, and the first definition decides: a definition for a learning
  instance of another partner than the goal's owner is rejected, as is one
  for an unknown learning instance;
- module and learning objective ids are scoped per partner
  (``ModuleTagged.partner_id``): each partner has its own modules, tags and
  objective parameters, and a registration's attempts and goals are read
  through its learning instance's partner (:class:`PartnerCatalog`).

A rejected event changes nothing; :class:`CatalogChange` says why, so the
catalog agent can dead-letter it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from processors.mastery import DEFAULT_PARAMS, Params
from schemas.events import GoalDefined, LearningInstanceCreated, ModuleTagged

__all__ = ["Catalog", "CatalogChange", "PartnerCatalog"]

_VOLATILE = frozenset({"event_id", "occurred_at"})
#: Display names: a change of these alone changes no row (only the names the
#: dashboard shows), so it is no redefinition.
_NAMES = frozenset({"title", "module_name", "objective_names"})


@dataclass(frozen=True, slots=True)
class CatalogChange:
    """What one catalog event changed.

    ``redefined`` is True when an existing goal or module definition changed,
    so rows derived from it for existing registrations must be recomputed.
    ``rejected`` says why the event was refused (it changed nothing).
    """

    kind: Literal["learning_instance", "goal", "module"]
    id: str
    redefined: bool
    rejected: str | None = None


def _definition(event: GoalDefined | ModuleTagged) -> dict[str, Any]:
    return event.model_dump(exclude=set(_VOLATILE | _NAMES))


def _names(event: GoalDefined | ModuleTagged) -> dict[str, Any]:
    return event.model_dump(include=set(_NAMES))


class _Content:
    """One partner's modules, their tags and its objectives' parameters."""

    __slots__ = ("covering", "modules", "params")

    def __init__(self) -> None:
        self.modules: dict[str, ModuleTagged] = {}
        self.params: dict[str, Params] = {}
        self.covering: dict[str, frozenset[str]] = {}


_NO_CONTENT = _Content()


class PartnerCatalog:
    """The catalog as one partner sees it: its own learning instances, goals,
    modules and objective parameters; everything else does not exist.

    Every evaluation of a registration goes through the view of its learning
    instance's partner (:meth:`Catalog.for_learning_instance`).
    """

    __slots__ = ("_catalog", "_content", "partner_id")

    def __init__(
        self, catalog: Catalog, partner_id: str | None, content: _Content
    ) -> None:
        self._catalog = catalog
        self._content = content
        self.partner_id = partner_id

    def learning_instance(self, li_id: str) -> LearningInstanceCreated | None:
        """The learning instance, if created by this partner."""
        li = self._catalog.learning_instance(li_id)
        return li if li is not None and li.partner_id == self.partner_id else None

    def goal(self, goal_id: str) -> GoalDefined | None:
        """The current definition of one of this partner's goals."""
        goal = self._catalog.goal(goal_id)
        if goal is None or self._catalog.goal_owner(goal_id) != self.partner_id:
            return None
        return goal

    def goals_of(self, li_id: str) -> Sequence[GoalDefined]:
        """Goals of one of this partner's learning instances."""
        if self.learning_instance(li_id) is None:
            return []
        return self._catalog.goals_of(li_id)

    def module(self, module_id: str) -> ModuleTagged | None:
        """The current tagging of one of this partner's modules."""
        return self._content.modules.get(module_id)

    def params_for(self, objective_id: str) -> Params:
        """BKT parameters of this partner's objective: the last given, else
        defaults."""
        return self._content.params.get(objective_id, DEFAULT_PARAMS)

    def modules_covering(self, objective_id: str) -> frozenset[str]:
        """This partner's modules currently tagged with the objective."""
        return self._content.covering.get(objective_id, frozenset())

    def target_name(self, kind: str, target_id: str) -> str | None:
        """A module's name, or an objective's (from the first module, by id,
        that is tagged with it and names it); None when none is given."""
        modules = self._content.modules
        if kind == "module":
            module = modules.get(target_id)
            return None if module is None else module.module_name
        for module_id in sorted(self.modules_covering(target_id)):
            names = modules[module_id].objective_names
            if names and target_id in names:
                return names[target_id]
        return None


class Catalog:
    """In-memory projection of the catalog events."""

    def __init__(self) -> None:
        self._instances: dict[str, LearningInstanceCreated] = {}
        self._goals: dict[str, GoalDefined] = {}
        self._goal_owner: dict[str, str] = {}
        self._goals_of: dict[str, list[str]] = {}
        self._content: dict[str, _Content] = {}
        self._views: dict[str | None, PartnerCatalog] = {}
        self._memos: dict[str, dict[Any, Any]] = {}

    def memo(self, name: str) -> dict[Any, Any]:
        """A dict for values derived from the catalog as it is now, emptied by
        every :meth:`apply` (e.g. what an attempt on a module can change:
        processors/transitions.py)."""
        memo = self._memos.get(name)
        if memo is None:
            memo = self._memos[name] = {}
        return memo

    def apply(
        self, event: LearningInstanceCreated | GoalDefined | ModuleTagged
    ) -> CatalogChange:
        """Fold one catalog event in; say what changed, or why it was refused."""
        for memo in self._memos.values():
            memo.clear()
        if isinstance(event, LearningInstanceCreated):
            return self._apply_learning_instance(event)
        if isinstance(event, GoalDefined):
            return self._apply_goal(event)
        return self._apply_module(event)

    def _apply_learning_instance(self, event: LearningInstanceCreated) -> CatalogChange:
        li_id = event.learning_instance_id
        first = self._instances.setdefault(li_id, event)
        if first.partner_id != event.partner_id:
            return CatalogChange(
                "learning_instance",
                li_id,
                redefined=False,
                rejected=f"learning_instance_id {li_id!r} already belongs to "
                "another partner (the first creation keeps it)",
            )
        if first.title != event.title:
            # A repeat by the owner renames it (or removes its title).
            self._instances[li_id] = first.model_copy(update={"title": event.title})
        return CatalogChange("learning_instance", li_id, redefined=False)

    def _apply_goal(self, event: GoalDefined) -> CatalogChange:
        goal_id = event.goal_id
        li = self._instances.get(event.learning_instance_id)
        if li is None:
            return CatalogChange(
                "goal",
                goal_id,
                redefined=False,
                rejected=f"unknown learning instance {event.learning_instance_id!r}",
            )
        owner = self._goal_owner.get(goal_id)
        if owner is not None and owner != li.partner_id:
            return CatalogChange(
                "goal",
                goal_id,
                redefined=False,
                rejected=f"goal_id {goal_id!r} already belongs to another partner "
                "(the first definition keeps it)",
            )
        self._goal_owner[goal_id] = li.partner_id
        old = self._goals.get(goal_id)
        redefined = old is not None and _definition(old) != _definition(event)
        if old is not None and old.learning_instance_id != event.learning_instance_id:
            self._goals_of[old.learning_instance_id].remove(goal_id)
            old = None
        if old is None:
            self._goals_of.setdefault(event.learning_instance_id, []).append(goal_id)
        if old is None or redefined or _names(old) != _names(event):
            self._goals[goal_id] = event
        return CatalogChange("goal", goal_id, redefined=redefined)

    def _apply_module(self, event: ModuleTagged) -> CatalogChange:
        content = self._content.get(event.partner_id)
        if content is None:
            content = self._content[event.partner_id] = _Content()
        old = content.modules.get(event.module_id)
        redefined = old is not None and _definition(old) != _definition(event)
        if old is not None and not redefined:
            if _names(old) != _names(event):
                content.modules[event.module_id] = event  # renamed only
            return CatalogChange("module", event.module_id, redefined=False)
        covering = content.covering
        if old is not None:
            for objective in old.learning_objective_ids:
                covering[objective] = covering[objective] - {event.module_id}
        for objective in event.learning_objective_ids:
            covering[objective] = covering.get(objective, frozenset()) | {
                event.module_id
            }
        for objective, given in (event.parameters or {}).items():
            content.params[objective] = Params.from_schema(given)
        content.modules[event.module_id] = event
        return CatalogChange("module", event.module_id, redefined=redefined)

    # -- views ------------------------------------------------------------

    def for_partner(self, partner_id: str | None) -> PartnerCatalog:
        """The catalog as ``partner_id`` sees it (``None``: nothing at all)."""
        view = self._views.get(partner_id)
        if view is None:
            content = (
                _NO_CONTENT
                if partner_id is None
                else self._content.setdefault(partner_id, _Content())
            )
            view = self._views[partner_id] = PartnerCatalog(self, partner_id, content)
        return view

    def for_learning_instance(self, li_id: str) -> PartnerCatalog:
        """The view of the learning instance's partner (an empty view while the
        learning instance is unknown)."""
        return self.for_partner(self.partner_of(li_id))

    def partner_of(self, li_id: str) -> str | None:
        """The partner owning the learning instance, if created."""
        li = self._instances.get(li_id)
        return None if li is None else li.partner_id

    def share_owner(self, li_id: str) -> str:
        """Whose share of a worker's pooled work (forecast builds and tables)
        the learning instance's rows draw on: its partner's, or its own while
        the catalog does not know the instance."""
        return self.partner_of(li_id) or f"li:{li_id}"

    # -- global, ownership-free lookups (ids are global) -------------------

    def learning_instances(self) -> Sequence[LearningInstanceCreated]:
        """Every learning instance, in order of creation."""
        return list(self._instances.values())

    def learning_instances_of(self, partner_id: str) -> Sequence[str]:
        """Ids of the partner's learning instances, in order of creation."""
        return [
            li_id
            for li_id, li in self._instances.items()
            if li.partner_id == partner_id
        ]

    def goals(self) -> Sequence[GoalDefined]:
        """Every goal's current definition, in order of first definition."""
        return list(self._goals.values())

    def learning_instance(self, li_id: str) -> LearningInstanceCreated | None:
        """The learning instance, if created (its first creation)."""
        return self._instances.get(li_id)

    def goal(self, goal_id: str) -> GoalDefined | None:
        """The current definition of a goal."""
        return self._goals.get(goal_id)

    def goal_owner(self, goal_id: str) -> str | None:
        """The partner owning the goal id, if defined."""
        return self._goal_owner.get(goal_id)

    def goals_of(self, li_id: str) -> Sequence[GoalDefined]:
        """Goals of a learning instance, in order of first definition."""
        return [self._goals[g] for g in self._goals_of.get(li_id, ())]

    def module(self, partner_id: str, module_id: str) -> ModuleTagged | None:
        """The current tagging of a partner's module."""
        content = self._content.get(partner_id)
        return None if content is None else content.modules.get(module_id)
