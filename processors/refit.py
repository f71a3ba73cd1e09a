"""Refitting from the event log: training sequences per partner, and the
catalog events that publish fitted parameters.

:class:`AnswerLog` folds the registration events (after the whole catalog) the
way the worker does: an attempt counts for every objective its module is
tagged with, once per ``attempt_id`` of a registration, and only for learner
registrations that exist; everything else is counted under a reason and left
out. Each (registration, objective) pair is one BKT sequence, in log order
(one registration's events are totally ordered on one partition).

Ownership: a registration belongs to the partner of its learning instance
(``LearningInstanceCreated.partner_id``). A partner's fit uses only its own
registrations, and modules, objectives and their parameters are the
partner's own (processors/catalog.py): :func:`parameter_events` re-tags only
that partner's modules, so a fit never changes another partner's rows.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from processors.catalog import Catalog, PartnerCatalog
from processors.mastery import Params
from schemas.events import (
    AttemptGraded,
    BKTParameters,
    ModelSelection,
    ModuleTagged,
    RegistrationCreated,
)

__all__ = ["AnswerLog", "Publication", "parameter_events"]


@dataclass(frozen=True, slots=True)
class _Registration:
    partner: str | None
    learner: bool
    seen: set[str] = field(default_factory=set)


class AnswerLog:
    """Answer sequences per (partner, objective), folded from the log.

    ``since`` keeps only registrations created at or after it (whole
    sequences, so the prior still means "before the first attempt");
    ``until`` drops attempts that ended after it.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> None:
        self._catalog = catalog
        self._since = since
        self._until = until
        self._registrations: dict[str, _Registration] = {}
        # partner -> objective -> registration -> answers
        self._answers: dict[str, dict[str, dict[str, list[bool]]]] = {}
        self.skipped: Counter[str] = Counter()

    def apply(self, event: RegistrationCreated | AttemptGraded) -> None:
        """Fold one registration event in."""
        if isinstance(event, RegistrationCreated):
            self._register(event)
        else:
            self._attempt(event)

    def _register(self, event: RegistrationCreated) -> None:
        if event.registration_id in self._registrations:
            return  # a re-sent creation changes nothing, as in the worker
        if self._since is not None and event.occurred_at < self._since:
            self._registrations[event.registration_id] = _Registration(None, False)
            return
        instance = self._catalog.learning_instance(event.learning_instance_id)
        self._registrations[event.registration_id] = _Registration(
            instance.partner_id if instance is not None else None,
            event.role == "learner",
        )

    def _attempt(self, event: AttemptGraded) -> None:
        reg = self._registrations.get(event.registration_id)
        reason = None
        if reg is None:
            reason = "unknown registration"
        elif reg.partner is None:
            reason = "registration before --since or of an unknown learning instance"
        elif not reg.learner:
            reason = "instructor registration"
        elif event.attempt_id in reg.seen:
            reason = "duplicate attempt_id"
        elif self._until is not None and event.interaction_end_time > self._until:
            reason = "after --until"
        module = (
            None
            if reg is None or reg.partner is None
            else self._catalog.module(reg.partner, event.module_id)
        )
        if reason is None and module is None:
            reason = "untagged module"
        if reason is not None:
            self.skipped[reason] += 1
            return
        assert reg is not None and reg.partner is not None and module is not None
        reg.seen.add(event.attempt_id)
        objectives = self._answers.setdefault(reg.partner, {})
        for objective in module.learning_objective_ids:
            by_reg = objectives.setdefault(objective, {})
            by_reg.setdefault(event.registration_id, []).append(event.is_correct)

    def partners(self) -> list[str]:
        """Partners with at least one counted attempt."""
        return sorted(self._answers)

    def sequences(self, partner: str) -> dict[str, list[list[bool]]]:
        """Objective -> answer sequences of the partner's learners."""
        return {
            objective: list(by_reg.values())
            for objective, by_reg in sorted(self._answers.get(partner, {}).items())
        }


@dataclass(frozen=True, slots=True)
class Publication:
    """What publishing fitted parameters amounts to."""

    events: list[ModuleTagged]
    published: list[str]  # objectives whose parameters the events set
    refused: dict[str, str]  # objective -> why it is not published


def parameter_events(
    catalog: PartnerCatalog,
    fitted: Mapping[str, Params],
    *,
    now: datetime,
    new_id: Callable[[], str] = lambda: str(uuid.uuid4()),
    selections: Mapping[str, ModelSelection] | None = None,
) -> Publication:
    """``ModuleTagged`` events that set the fitted parameters of one partner
    (``catalog`` is that partner's view).

    Each of its modules tagged with a fitted objective is tagged again with the same
    objectives; its parameters become the fitted ones for fitted objectives
    and, for the others it gave parameters for, the catalog's current ones (so
    re-sending it never reverts a later definition). Unchanged modules are not
    re-sent. ``selections`` records, per fitted objective, why its model (with
    or without forgetting) was chosen.
    """
    partner_id = catalog.partner_id
    assert partner_id is not None, "parameters are published for a partner"
    refused: dict[str, str] = {}
    chosen = dict(fitted)
    modules: dict[str, ModuleTagged] = {}
    for objective in sorted(chosen):
        covering = catalog.modules_covering(objective)
        if not covering:
            refused[objective] = "no module is tagged with it"
        for module_id in sorted(covering):
            module = catalog.module(module_id)
            if module is not None:
                modules[module_id] = module
    events: list[ModuleTagged] = []
    for module_id, module in sorted(modules.items()):
        given = dict(module.parameters or {})
        parameters = {
            objective: _schema(catalog.params_for(objective))
            for objective in given
            if objective not in chosen
        }
        for objective in module.learning_objective_ids:
            if objective in chosen:
                parameters[objective] = _schema(
                    chosen[objective], (selections or {}).get(objective)
                )
        if parameters == given:
            continue
        events.append(
            ModuleTagged(
                event_id=new_id(),
                occurred_at=now,
                partner_id=partner_id,
                module_id=module_id,
                learning_objective_ids=module.learning_objective_ids,
                parameters=parameters,
            )
        )
    published = sorted(o for o in chosen if o not in refused)
    return Publication(events, published, dict(sorted(refused.items())))


def _schema(params: Params, selection: ModelSelection | None = None) -> BKTParameters:
    return BKTParameters(
        prior=params.prior,
        learn=params.learn,
        guess=params.guess,
        slip=params.slip,
        forget=params.forget if params.forget > 0.0 else None,
        selection=selection,
    )
