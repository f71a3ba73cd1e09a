"""What the ingest endpoints need to know before producing: read-model facts.

Who owns a learning instance, which learning instance a registration or goal
belongs to. These come from the read model the worker projects from the event
stream (``ms:li:*``, ``ms:reg:*``, ``ms:goal:*``), never from a second source
of truth; one Redis round trip per request, however many events it carries.
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
from schemas.read_model import NAMESPACE_LUA, ReadModelKeys

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


# ARGV: prefix, kind ('li' | 'reg' | 'goal'), ids... Returns, per id, the
# entity's value and its learning instance's value ('' when missing).
_FACTS_LUA = (
    NAMESPACE_LUA
    + """
local kind = ARGV[2]
local out = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local value
  local li
  if kind == 'li' then
    li = id
    value = ''
  else
    value = redis.call('GET', p .. ':' .. kind .. ':' .. id)
    if value then
      if kind == 'reg' then li = cjson.decode(value)['learning_instance_id']
      else li = value end
    else
      value = ''
    end
  end
  local li_meta = ''
  if li then li_meta = redis.call('GET', p .. ':li:' .. li) or '' end
  out[#out + 1] = value
  out[#out + 1] = li_meta
end
return out
"""
)


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
        self._script = redis.register_script(_FACTS_LUA)

    async def _run(self, kind: str, ids: Sequence[str]) -> list[Any]:
        if not ids:
            return []
        try:
            result: list[Any] = await self._script(
                keys=[], args=[self.keys.prefix, kind, *ids]
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise redis_unreachable(exc) from exc
        return result

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
