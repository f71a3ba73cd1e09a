"""What the ingest endpoints need to know before producing: read-model facts.

Who owns a learning instance, which learning instance a registration or goal
belongs to. These come from the read model the worker projects from the event
stream (``learning_instance``, ``registration`` and ``goal`` keys of
infra/read_model/keys.py), never from a second source of truth. Two pipelined
reads per request however many events it carries (the ids' values name their
learning instances, whose keys are read next; on Redis Cluster each read is
split by node), no script: these facts gate what is produced, and every id's
lookup stands alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.errors import redis_unreachable
from infra.read_model import Generation, ReadModelKeys

__all__ = ["FactStore", "GoalFacts", "RedisFactStore", "RegistrationFacts"]


@dataclass(frozen=True, slots=True)
class RegistrationFacts:
    """A projected registration and its learning instance's partner."""

    learning_instance_id: str
    user_id: str
    role: str
    partner_id: str | None


@dataclass(frozen=True, slots=True)
class GoalFacts:
    learning_instance_id: str
    partner_id: str | None


class FactStore(Protocol):
    """The port the ingest routes look facts up through."""

    async def learning_instance_partner(self, li_id: str) -> str | None: ...

    async def registrations(
        self, registration_ids: Sequence[str]
    ) -> dict[str, RegistrationFacts]: ...

    async def goals(self, goal_ids: Sequence[str]) -> dict[str, GoalFacts]: ...


def _partner(li_meta: bytes) -> str | None:
    if not li_meta:
        return None
    value = orjson.loads(li_meta).get("partner_id")
    return value if isinstance(value, str) else None


class RedisFactStore:
    """:class:`FactStore` over the Redis read model."""

    def __init__(self, redis: Redis, keys: ReadModelKeys | None = None) -> None:
        self.redis = redis
        self.keys = keys or ReadModelKeys()
        self.generation = Generation(redis, self.keys)

    async def _get(self, names: list[str]) -> list[Any]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.get(name)
            replies: list[Any] = await pipe.execute()
        return replies

    async def _run(self, kind: str, ids: Sequence[str]) -> list[Any]:
        """Per id, its value ('' for a learning instance) and its learning
        instance's value (b'' when missing). When one is missing and the
        generation moved meanwhile (infra/read_model/generation.py), read
        again in the new one."""
        if not ids:
            return []
        try:
            keys: ReadModelKeys | None = await self.generation.current()
            while keys is not None:
                out = await self._once(keys, kind, ids)
                if all(out[1::2]):
                    return out
                moved = await self.generation.moved(keys)
                if moved is None:
                    return out
                keys = moved
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise redis_unreachable(exc) from exc
        raise AssertionError("unreachable")  # pragma: no cover

    async def _once(
        self, keys: ReadModelKeys, kind: str, ids: Sequence[str]
    ) -> list[Any]:
        if kind == "li":
            values: list[Any] = [b""] * len(ids)
            lis: list[str | None] = list(ids)
        else:
            lookup = keys.registration if kind == "reg" else keys.goal
            values = await self._get([lookup(i) for i in ids])
            lis = []
            for value in values:
                if not value:
                    lis.append(None)
                elif kind == "reg":
                    lis.append(orjson.loads(value)["learning_instance_id"])
                else:
                    lis.append(value.decode())
        wanted = sorted({li for li in lis if li is not None})
        metas = dict(
            zip(
                wanted,
                await self._get([keys.learning_instance(li) for li in wanted]),
                strict=True,
            )
        )
        out: list[Any] = []
        for value, li in zip(values, lis, strict=True):
            out += [value or b"", (metas.get(li) if li is not None else None) or b""]
        return out

    async def learning_instance_partner(self, li_id: str) -> str | None:
        result = await self._run("li", [li_id])
        return _partner(result[1])

    async def registrations(
        self, registration_ids: Sequence[str]
    ) -> dict[str, RegistrationFacts]:
        ids = list(dict.fromkeys(registration_ids))
        result = await self._run("reg", ids)
        facts: dict[str, RegistrationFacts] = {}
        for i, reg_id in enumerate(ids):
            value, li_meta = result[2 * i], result[2 * i + 1]
            if value:
                meta = orjson.loads(value)
                facts[reg_id] = RegistrationFacts(
                    learning_instance_id=meta["learning_instance_id"],
                    user_id=meta["user_id"],
                    role=meta["role"],
                    partner_id=_partner(li_meta),
                )
        return facts

    async def goals(self, goal_ids: Sequence[str]) -> dict[str, GoalFacts]:
        ids = list(dict.fromkeys(goal_ids))
        result = await self._run("goal", ids)
        facts: dict[str, GoalFacts] = {}
        for i, goal_id in enumerate(ids):
            value, li_meta = result[2 * i], result[2 * i + 1]
            if value:
                facts[goal_id] = GoalFacts(value.decode(), _partner(li_meta))
        return facts
