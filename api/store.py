"""Reading pages of the read model: one Redis round trip per request.

A Lua script validates the learning instance / registration and the goals,
reads the page of learner registrations (ZRANGE) and their rows (MGET), and
falls back to the goal's template row for registrations without one. Rows come
back as the stored JSON bytes, which the API concatenates without re-encoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.errors import NotFound, ServiceUnavailable
from schemas.read_model import ReadModelKeys

__all__ = ["Page", "PageStore", "RedisPageStore"]


@dataclass(frozen=True, slots=True)
class Page:
    """Rows of one page: ``rows[i][j]`` is registration i's item for goal j."""

    total: int
    registration_ids: list[str]
    rows: list[list[bytes]]


class PageStore(Protocol):
    """The port the routes read through."""

    async def learning_instance_page(
        self, li_id: str, goal_ids: Sequence[str], offset: int, limit: int
    ) -> Page: ...

    async def registration_page(
        self, registration_id: str, goal_ids: Sequence[str]
    ) -> Page: ...


# Return codes: {-1} unknown LI/registration, {-2, goal...} goals unknown or of
# another learning instance, else {total, n, reg_1..reg_n, row_1_1..row_n_g}.
_PAGE_LUA = """
local p = ARGV[1]
local mode = ARGV[2]
local id = ARGV[3]
local offset = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local goals = {}
for i = 6, #ARGV do goals[#goals + 1] = ARGV[i] end
local li
local regs
local total
if mode == 'li' then
  if redis.call('EXISTS', p .. ':li:' .. id) == 0 then return {-1} end
  li = id
else
  local meta = redis.call('GET', p .. ':reg:' .. id)
  if not meta then return {-1} end
  li = cjson.decode(meta)['learning_instance_id']
end
local bad = {-2}
local templates = {}
for i, g in ipairs(goals) do
  local owner = redis.call('GET', p .. ':goal:' .. g)
  if owner ~= li then bad[#bad + 1] = g end
  templates[i] = redis.call('GET', p .. ':goal:' .. g .. ':template')
end
if #bad > 1 then return bad end
if mode == 'li' then
  local key = p .. ':li:' .. li .. ':learners'
  total = redis.call('ZCARD', key)
  regs = redis.call('ZRANGE', key, offset, offset + limit - 1)
else
  total = 1
  regs = {id}
end
local out = {total, #regs}
for _, r in ipairs(regs) do out[#out + 1] = r end
if #regs > 0 then
  local keys = {}
  for _, r in ipairs(regs) do
    for _, g in ipairs(goals) do keys[#keys + 1] = p .. ':row:' .. r .. ':' .. g end
  end
  local rows = redis.call('MGET', unpack(keys))
  local ng = #goals
  for i, v in ipairs(rows) do
    if not v then v = templates[((i - 1) % ng) + 1] or '{}' end
    out[#out + 1] = v
  end
end
return out
"""


class RedisPageStore:
    """:class:`PageStore` over the Redis read model."""

    def __init__(self, redis: Redis, keys: ReadModelKeys | None = None) -> None:
        self.redis = redis
        self.keys = keys or ReadModelKeys()
        self._script = redis.register_script(_PAGE_LUA)

    async def _run(self, args: list[Any]) -> list[Any]:
        try:
            result: list[Any] = await self._script(
                keys=[], args=[self.keys.prefix, *args]
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise ServiceUnavailable(
                "the read model (Redis) is unreachable; retry shortly",
                details={"reason": str(exc)},
            ) from exc
        return result

    @staticmethod
    def _page(
        result: list[Any], goal_ids: Sequence[str], what: str, ident: str
    ) -> Page:
        head = int(result[0])
        if head == -1:
            raise NotFound(f"{what} {ident!r} does not exist", details={"field": what})
        if head == -2:
            unknown = [
                g.decode() if isinstance(g, bytes) else str(g) for g in result[1:]
            ]
            raise NotFound(
                f"goal_ids not found in this learning instance: {unknown}",
                details={"field": "goal_ids", "goal_ids": unknown},
                code="goal_not_found",
            )
        n = int(result[1])
        regs = [r.decode() for r in result[2 : 2 + n]]
        flat: list[bytes] = result[2 + n :]
        g = len(goal_ids)
        rows = [flat[i * g : (i + 1) * g] for i in range(n)]
        return Page(total=head, registration_ids=regs, rows=rows)

    async def learning_instance_page(
        self, li_id: str, goal_ids: Sequence[str], offset: int, limit: int
    ) -> Page:
        result = await self._run(["li", li_id, offset, limit, *goal_ids])
        return self._page(result, goal_ids, "li_id", li_id)

    async def registration_page(
        self, registration_id: str, goal_ids: Sequence[str]
    ) -> Page:
        result = await self._run(["reg", registration_id, 0, 1, *goal_ids])
        return self._page(result, goal_ids, "reg_id", registration_id)
