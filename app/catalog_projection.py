"""Catalog records into the read model: the catalog agent's work.

Every worker folds the whole catalog in memory (app/catalog_follower.py);
the catalog agent, a consumer-group member, gets each catalog record once
per deployment and projects its keys (or dead-letters it). Changes that
alter rows mark their learning instances for re-derivation (app/repairer.py).
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from app.catalog_follower import CatalogEventT, CatalogFollower
from app.outbox import Outbox, dead_letter
from app.repairer import ALL, Repairer
from infra.read_model import Projection, RedisProjector
from processors import batch
from processors.forecaster import DeferredForecaster
from schemas.events import (
    GoalDefined,
    LearningInstanceCreated,
    ModuleTagged,
    decode_event,
)

__all__ = ["CatalogProjection"]

log = logging.getLogger(__name__)


class CatalogProjection:
    """Projects catalog records and marks the rows they change."""

    def __init__(
        self,
        *,
        follower: CatalogFollower,
        outbox: Outbox,
        projector: RedisProjector,
        repairer: Repairer,
        forecaster: DeferredForecaster,
        catchup_timeout_s: float,
    ) -> None:
        self.follower = follower
        self.outbox = outbox
        self.projector = projector
        self.repairer = repairer
        self.forecaster = forecaster
        self._catchup_timeout_s = catchup_timeout_s

    async def handle(self, ev: Any) -> None:
        """Validate a catalog record, dead-letter it or project its keys."""
        message = ev.message
        try:
            event = decode_event(ev.value or b"")
            if not isinstance(
                event, LearningInstanceCreated | GoalDefined | ModuleTagged
            ):
                raise ValueError(f"{event.type} does not belong on this topic")
        except (ValidationError, ValueError) as exc:
            await self._reject(message, batch.rejection_reason(exc))
            return
        # Ownership and the template depend on the catalog as of this record:
        # let the follower reach it first.
        partition, offset = message.partition, message.offset
        if not await self.follower.wait_for_record(
            partition, offset, self._catchup_timeout_s
        ):
            log.warning(
                "catalog follower behind offset %d: the repair pass projects it",
                offset,
            )
            self.repairer.mark_dirty(ALL)
            return
        reason = self.follower.rejection_at(partition, offset)
        if reason is not None:
            await self._reject(message, reason)
            return
        catalog = self.follower.catalog
        repairer = self.repairer
        projection = Projection(repairer.keys)
        if isinstance(event, LearningInstanceCreated):
            # The first creation wins (as in the catalog); a repeat by the same
            # partner projects the same.
            li = catalog.learning_instance(event.learning_instance_id)
            projection.learning_instance(li or event)
        elif isinstance(event, GoalDefined):
            goal = catalog.goal(event.goal_id)
            if goal is not None:
                self.forecaster.start_batch()
                projection.goal(
                    goal, repairer.goal_template(goal), repairer.goal_names(goal)
                )
        elif isinstance(event, ModuleTagged):
            # Its module's and objectives' names may have changed: the names
            # of the partner's goals are derived again (a cheap write; their
            # rows only when the tags changed, on_change).
            for li_id in catalog.learning_instances_of(event.partner_id):
                for goal in catalog.goals_of(li_id):
                    projection.goal_names(goal, repairer.goal_names(goal))
        await self.projector.write(projection)

    async def _reject(self, message: Any, reason: str) -> None:
        record = batch.Record(
            message.topic, message.partition, message.offset, message.key, message.value
        )
        await self.outbox.send_dead_letters([dead_letter(record, reason)])

    async def on_change(self, event: CatalogEventT, changed: bool, live: bool) -> None:
        """The follower applied ``event``: mark the rows it changes."""
        if not live or not changed:
            return  # the startup repair pass covers everything replayed
        if isinstance(event, GoalDefined):
            self.repairer.mark_dirty(event.learning_instance_id)
        elif isinstance(event, ModuleTagged):
            # Which modules cover a target (work per target) and module-target
            # mastery depend on module tags: of this partner's rows only.
            for li in self.follower.catalog.learning_instances_of(event.partner_id):
                self.repairer.mark_dirty(li)
