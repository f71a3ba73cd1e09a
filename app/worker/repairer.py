"""Rows derived again outside a batch: after a catalog change, after each
partition assignment (the repair pass), when a read model was lost or
rebuilt, and when the forecast tables a provisional row lacked are built.

Every pass works in chunks of :data:`CHUNK` registrations, each under the
batch lock and written before the lock is released, so batches run between
chunks (a re-derivation one partner's catalog change started never holds the
others' rows back by more than about a batch). Each chunk reads the
registrations' *current* states, so a batch that ran in between is never
overwritten by an older row.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.worker.catalog_follower import CatalogFollower
from app.worker.forecast_builder import ForecastBuilder, Waiting
from app.worker.state_cache import StateCache
from infra.read_model import Projection, ReadModelKeys, RedisProjector
from infra.read_model.materialized import mark_materialized
from processors.forecast import ForecastTables, TableKey
from processors.forecaster import DeferredForecaster
from processors.registration import RegistrationState
from processors.rows import derive_rows, goal_names, goal_template, timelines
from schemas.events import GoalDefined

__all__ = ["ALL", "CHUNK", "Repairer"]

log = logging.getLogger(__name__)

#: "Every learning instance" (the repair pass).
ALL = "*"
#: Registrations re-derived per hold of the batch lock (about a batch's work).
CHUNK = 500

_Item = TypeVar("_Item")


class Repairer:
    """Re-derives rows and catalog keys; holds the read model's current keys."""

    def __init__(
        self,
        *,
        redis: Redis,
        projector: RedisProjector,
        follower: CatalogFollower,
        cache: StateCache,
        lock: asyncio.Lock,
        forecast_tables: ForecastTables,
        forecaster: DeferredForecaster,
        assigned_partitions: Callable[[], list[int]],
        by: str,
    ) -> None:
        self.redis = redis
        self.projector = projector
        self.follower = follower
        self.cache = cache
        self.lock = lock
        self.forecaster = forecaster
        self.forecast_builder = ForecastBuilder(
            forecast_tables, self.on_forecasts_built
        )
        self._assigned = assigned_partitions
        self._by = by
        #: The read model's keys in its current generation (the batches
        #: write there too); the read-model watch follows generation switches.
        self.keys = ReadModelKeys()
        #: True once the repair pass after the latest assignment wrote this
        #: worker's whole part of the read model.
        self.repaired_once = False
        self._dirty: set[str] = set()
        self._dirty_event = asyncio.Event()
        self._provisional_rows: Waiting[tuple[str, int]] = Waiting()
        self._provisional_goals: Waiting[str] = Waiting()

    # -- what to derive again -------------------------------------------------

    def mark_dirty(self, li_id: str) -> None:
        """Derive the rows of ``li_id`` (or :data:`ALL`) again soon."""
        self._dirty.add(li_id)
        self._dirty_event.set()

    def forget(self, gone: set[int]) -> None:
        """Partitions were revoked: their provisional rows are not ours."""
        self._provisional_rows.forget(lambda item: item[1] not in gone)

    async def run(self) -> None:
        """Re-derive what was marked dirty, coalescing bursts of changes."""
        await self.follower.ready.wait()
        while True:
            await self._dirty_event.wait()
            await asyncio.sleep(0.1)  # coalesce bursts of catalog changes
            dirty, self._dirty = self._dirty, set()
            self._dirty_event.clear()
            await self.rederive(dirty)

    async def rederive(self, learning_instances: Iterable[str]) -> int:
        """Recompute and write the rows of local registrations; returns how many.

        With :data:`ALL` this is the repair pass run after every partition
        assignment: it also rewrites the registrations' facts and the whole
        catalog's keys, so a flushed or replaced Redis is restored. A
        rebalance in between ends the pass (the new assignment starts a full
        one).
        """
        wanted = set(learning_instances)
        everything = ALL in wanted
        partitions = self._assigned()
        states = self.cache.items(partitions)
        count = 0
        first = True

        def derive(chunk: list[RegistrationState], projection: Projection) -> None:
            nonlocal count, first
            if first and everything:
                self.project_catalog(projection)
            first = False
            for seen in chunk:
                if not (everything or seen.learning_instance_id in wanted):
                    continue
                partition = seen.source_partition
                state = (
                    self.cache.peek(seen.registration_id, partition)
                    if partition in partitions
                    else None
                ) or seen
                self.project_rows(state, projection)
                if everything:
                    projection.registration(state)
                count += 1

        if not await self._in_chunks(states, derive, partitions):
            log.info("re-derivation ended by a rebalance")
            return count
        if everything:
            # The whole read model of this worker's partitions is written:
            # the API's /readyz may report it present.
            await mark_materialized(self.redis, self._by, self.keys)
            self.repaired_once = True
        if count:
            log.info("re-derived rows of %d registrations", count)
        return count

    async def on_forecasts_built(self, keys: frozenset[TableKey]) -> None:
        """Derive again the rows and goal templates that were provisional."""
        goals = self._provisional_goals.release(keys)
        waiting = iter(sorted(self._provisional_rows.release(keys)))

        def derive(chunk: list[tuple[str, int]], projection: Projection) -> None:
            nonlocal goals
            catalog = self.follower.catalog
            for goal_id in goals:
                if (goal := catalog.goal(goal_id)) is not None:
                    projection.goal(
                        goal, self.goal_template(goal), self.goal_names(goal)
                    )
            goals = set()
            assigned = set(self._assigned())
            for reg_id, partition in chunk:
                if partition not in assigned:
                    continue
                state = self.cache.peek(reg_id, partition)
                if state is not None:
                    self.project_rows(state, projection)

        await self._in_chunks(waiting, derive, None)

    async def _in_chunks(
        self,
        items: Iterator[_Item],
        derive: Callable[[list[_Item], Projection], None],
        partitions: list[int] | None,
    ) -> bool:
        """Derive ``items`` :data:`CHUNK` at a time, each chunk under the batch
        lock and written before it is released. With ``partitions``, stop
        (returning False) when the assignment is no longer those."""
        while True:
            async with self.lock:
                if partitions is not None and self._assigned() != partitions:
                    return False
                projection = Projection(self.keys)
                self.forecaster.start_batch()
                chunk = list(itertools.islice(items, CHUNK))
                derive(chunk, projection)
                await self.projector.write(projection)
            if len(chunk) < CHUNK:
                return True
            await asyncio.sleep(0)  # let the waiting batch take the lock

    # -- deriving ------------------------------------------------------------

    def project_catalog(self, projection: Projection) -> None:
        catalog = self.follower.catalog
        for li in catalog.learning_instances():
            projection.learning_instance(li)
        for goal in catalog.goals():
            projection.goal(goal, self.goal_template(goal), self.goal_names(goal))

    def goal_names(self, goal: GoalDefined) -> bytes:
        return goal_names(goal, self.follower.catalog)

    def goal_template(self, goal: GoalDefined) -> bytes:
        """The goal's row template; tables it lacked are requested."""
        catalog = self.follower.catalog
        owner = self.forecast_owner(goal.learning_instance_id)
        self.forecaster.serve(owner)
        template = goal_template(goal, catalog, forecaster=self.forecaster)
        if keys := self.forecaster.take_pending():
            self._provisional_goals.add(goal.goal_id, keys)
            self.forecast_builder.request(keys, owner=owner)
        return template

    def project_rows(self, state: RegistrationState, projection: Projection) -> None:
        """Derive the registration's rows into ``projection``; tables its rows
        lacked are requested."""
        catalog = self.follower.catalog
        self.forecaster.serve(self.forecast_owner(state.learning_instance_id))
        rows = derive_rows(state, catalog, forecaster=self.forecaster)
        li, reg_id = state.learning_instance_id, state.registration_id
        for goal_id, row in rows:
            projection.row(li, reg_id, goal_id, row)
        for goal_id, points in timelines(state):
            projection.history(li, reg_id, goal_id, points)
        if keys := self.forecaster.take_pending():
            self.note_provisional(state, keys)

    def note_provisional(
        self, state: RegistrationState, keys: frozenset[TableKey]
    ) -> None:
        """Rows of ``state`` were derived without these tables: build them."""
        item = (state.registration_id, state.source_partition)
        self._provisional_rows.add(item, keys)
        self.forecast_builder.request(
            keys, owner=self.forecast_owner(state.learning_instance_id)
        )

    def forecast_owner(self, li_id: str) -> str:
        """Builds are served round-robin per partner: one partner's many
        distinct parameters and thresholds never queue ahead of another's,
        and each partner's tables stay within its share of the budget."""
        return self.follower.catalog.share_owner(li_id)

    # -- the read model's generation ------------------------------------------

    async def watch_read_model(self) -> None:
        """Follow the read model's generation and notice a lost read model.

        Every second (once this worker has materialized its part): when
        ``mastery rebuild --flush`` has switched the generation, write into
        the new one from now on and repair this worker's part of it (the
        rebuild read the changelog, which can be behind the last batches);
        when the current generation's "materialized" marker is gone (Redis
        restarted empty, FLUSHALL), repair it; when ``mastery rebuild``
        rewrote the live generation (its count, ``ReadModelKeys.rebuilds``),
        derive this worker's part again, as the rebuild's changelog can be
        behind. Meanwhile the API answers 503 for ids it cannot find, not 404
        (api/store.py).
        """
        await self.follower.ready.wait()
        base = ReadModelKeys(self.keys.prefix)
        rebuilds: int | None = None  # the count seen at the last check
        while True:
            await asyncio.sleep(1.0)
            if not self.repaired_once:
                continue  # the repair after the first assignment comes first
            try:
                raw, count = await self.redis.mget(
                    base.current_generation(), base.rebuilds()
                )
                generation = int(raw or 0)
                counted = int(count or 0)
                present = await self.redis.exists(
                    base.in_generation(generation).materialized()
                )
            except (RedisError, OSError, ValueError) as exc:
                log.debug("read-model watch: %r", exc)
                continue
            seen, rebuilds = rebuilds, counted
            if generation != self.keys.generation:
                log.warning(
                    "the read model moved to generation %d: writing there, repairing",
                    generation,
                )
                self.keys = base.in_generation(generation)
            elif not present:
                log.warning(
                    "the read model was lost (no materialized marker): repairing"
                )
            elif seen is not None and rebuilds != seen:
                # `mastery rebuild` wrote rows from the changelog, which can
                # be behind this worker's last batches: derive them again.
                log.warning(
                    "mastery rebuild rewrote the read model from the changelog: "
                    "deriving this worker's part again"
                )
            else:
                continue
            self.repaired_once = False
            self.mark_dirty(ALL)
