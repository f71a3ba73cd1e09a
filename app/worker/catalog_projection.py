"""Catalog records into the read model.

Every worker folds the whole catalog in memory (app/worker/catalog_follower.py) and
projects the keys of each catalog record it applies once caught up. Every
worker writes the same keys from the same log, and each one's last write
reflects the whole log, so the keys converge whichever worker writes last.
Records applied before that are projected by the repair pass after each
assignment. Changes that alter rows mark their learning instances for
re-derivation (app/worker/repairer.py). Refused records are dead-lettered by
app/worker/catalog_dead_letters.py.
"""

from __future__ import annotations

import logging

from app.worker.catalog_follower import CatalogEventT, CatalogFollower
from app.worker.repairer import Repairer
from infra.read_model import Projection, RedisProjector
from processors.forecaster import DeferredForecaster
from schemas.events import GoalDefined, LearningInstanceCreated, ModuleTagged

__all__ = ["CatalogProjection"]

log = logging.getLogger(__name__)


class CatalogProjection:
    """Projects catalog records and marks the rows they change."""

    def __init__(
        self,
        *,
        follower: CatalogFollower,
        projector: RedisProjector,
        repairer: Repairer,
        forecaster: DeferredForecaster,
    ) -> None:
        self.follower = follower
        self.projector = projector
        self.repairer = repairer
        self.forecaster = forecaster

    async def project(self, event: CatalogEventT) -> None:
        """Write the keys ``event`` changes, as the catalog now has them."""
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
            # rows only when the tags changed, below).
            for li_id in catalog.learning_instances_of(event.partner_id):
                for goal in catalog.goals_of(li_id):
                    projection.goal_names(goal, repairer.goal_names(goal))
        await self.projector.write(projection)

    async def on_change(self, event: CatalogEventT, changed: bool, live: bool) -> None:
        """The follower applied ``event``: project it, mark the rows it changes."""
        if not live:
            return  # the startup repair pass covers everything replayed
        await self.project(event)
        if not changed:
            return
        if isinstance(event, GoalDefined):
            self.repairer.mark_dirty(event.learning_instance_id)
        elif isinstance(event, ModuleTagged):
            # Which modules cover a target (work per target) and module-target
            # mastery depend on module tags: of this partner's rows only.
            for li in self.follower.catalog.learning_instances_of(event.partner_id):
                self.repairer.mark_dirty(li)
