"""Carrying out a batch's plan (app/worker/pipeline.py): send, keep, count, project.

The order matters: dead letters and status changes are sent before the new
states enter the state cache, and the next checkpoint awaits their
acknowledgement before it stores any state (app/worker/checkpoint.py, steps 1-3).
"""

from __future__ import annotations

from app.metrics import WorkerMetrics
from app.worker.checkpoint import PendingSends
from app.worker.outbox import Outbox, dead_letter
from app.worker.pipeline import PlannedBatch
from app.worker.repairer import Repairer
from app.worker.state_cache import StateCache
from app.worker.worker_health import WorkerHealth
from infra.read_model import Projection, RedisProjector

__all__ = ["EffectExecutor"]


class EffectExecutor:
    """Carries out a :class:`PlannedBatch`."""

    def __init__(
        self,
        *,
        outbox: Outbox,
        sends: PendingSends,
        cache: StateCache,
        metrics: WorkerMetrics,
        projector: RedisProjector,
        health: WorkerHealth,
        repairer: Repairer,
    ) -> None:
        self.outbox = outbox
        self.sends = sends
        self.cache = cache
        self.metrics = metrics
        self.projector = projector
        self.health = health
        self.repairer = repairer

    async def execute(self, planned: PlannedBatch) -> None:
        plan = planned.plan
        dead = [
            dead_letter(r.record, r.reason) for r in (*planned.rejected, *plan.dead)
        ]
        self.sends.add(await self.outbox.send(dead, plan.transitions))
        cache = self.cache
        for state in plan.states.values():
            cache.put(state.source_partition, state)
        metrics = self.metrics
        for outcome, n in plan.outcomes.items():
            metrics.events.labels(outcome).inc(n)
        metrics.events.labels("rejected").inc(len(planned.rejected))
        metrics.status_changes.inc(len(plan.transitions))

        projection = Projection(self.repairer.keys)
        # Keys are tagged by learning instance (docs/read-model.md).
        li_of = {r: s.learning_instance_id for r, s in plan.states.items()}
        for reg_id, goal_id, row in plan.rows:
            projection.row(li_of[reg_id], reg_id, goal_id, row)
        for state in plan.registrations:
            projection.registration(state)
        for reg_id, goal_id, points in plan.history:
            projection.history(li_of[reg_id], reg_id, goal_id, points)
        with self.health.redis_write():
            await self.projector.write(projection)
        for reg_id, keys in plan.provisional.items():
            self.repairer.note_provisional(plan.states[reg_id], keys)
