"""A batch of registration events, from Faust's events to a plan: guard,
forward the misplaced, decode, read the states, fold (processors.batch).

Nothing here writes: :class:`app.worker.effects.EffectExecutor` carries the plan
out, as eventsourcing's process applications record what a policy decided.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from app.worker.catalog_follower import CatalogFollower
from app.worker.failures import InternalErrors
from app.worker.faust_corrections.guards import SkipGuard
from app.worker.outbox import Outbox
from app.worker.state_cache import StateCache
from processors import batch
from processors.forecaster import DeferredForecaster, SynchronousForecaster
from processors.history import HistoryPolicy

__all__ = ["PlannedBatch", "RegistrationPipeline"]


@dataclass(frozen=True, slots=True)
class PlannedBatch:
    """One batch's records and what folding them decided."""

    #: Faust's messages, in the order received.
    messages: list[Any]
    decoded: list[batch.Decoded]
    #: Records that are not valid events.
    rejected: list[batch.Rejection]
    plan: batch.BatchPlan


class RegistrationPipeline:
    """Turns a batch of events of the registration-events topic into a plan."""

    def __init__(
        self,
        *,
        skip_guard: SkipGuard,
        outbox: Outbox,
        cache: StateCache,
        follower: CatalogFollower,
        forecaster: DeferredForecaster,
        exact: SynchronousForecaster,
        history: HistoryPolicy,
        internal_errors: InternalErrors,
        partitions: Callable[[], int],
        catalog_catchup_timeout_s: float,
    ) -> None:
        self.skip_guard = skip_guard
        self.outbox = outbox
        self.cache = cache
        self.follower = follower
        self.forecaster = forecaster
        self.exact = exact
        self.history = history
        self.internal_errors = internal_errors
        self._partitions = partitions
        self._catchup_timeout_s = catalog_catchup_timeout_s

    async def plan(self, events: Sequence[Any]) -> PlannedBatch:
        messages = [ev.message for ev in events]
        await self.skip_guard.check((m.topic, m.partition, m.offset) for m in messages)
        placed, misplaced = batch.split_misplaced(
            (
                batch.Record(m.topic, m.partition, m.offset, m.key, m.value)
                for m in messages
            ),
            self._partitions(),
        )
        if misplaced:
            await self.outbox.forward(misplaced)
        decoded, rejected = batch.decode(placed)
        cache = self.cache
        states = {
            reg_id: cache.get(reg_id, partition)
            for reg_id, partition in batch.registration_ids(decoded).items()
        }
        if batch.needs_catalog(decoded, states, self.follower.catalog):
            await self.follower.catch_up(self._catchup_timeout_s)
        plan = batch.fold(
            decoded,
            states,
            self.follower.catalog,
            forecaster=self.forecaster,
            history=self.history,
            exact=self.exact,
        )
        self.internal_errors.add(plan.internal_errors)  # or a bug: exit 70
        return PlannedBatch(messages, decoded, rejected, plan)
