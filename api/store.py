"""Reading pages of the read model: one Redis round trip per request.

A Lua script validates the learning instance / registration and the goals,
returns the facts the access rules need (the LI's partner, whether the caller
is an instructor there, the registration's user),
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

from api.errors import ServiceUnavailable, not_found
from schemas.read_model import NAMESPACE_LUA, ReadModelKeys

__all__ = ["Access", "Page", "PageStore", "RedisPageStore"]


@dataclass(frozen=True, slots=True)
class Access:
    """Facts the access rules need, read in the page's own round trip.

    ``partner_id`` is the learning instance's partner (``None`` when the LI is
    not known yet); ``caller_is_instructor`` whether the caller's user id is an
    instructor of that LI; ``registration_user_id`` the user of the requested
    registration (registration endpoint only).
    """

    partner_id: str | None
    caller_is_instructor: bool
    registration_user_id: str | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """Rows of one page: ``rows[i][j]`` is registration i's item for goal j.

    ``unknown_goals`` lists requested goals that are not goals of the learning
    instance; the route reports them only after the access check passed.
    """

    total: int
    registration_ids: list[str]
    rows: list[list[bytes]]
    access: Access = Access(None, False)
    unknown_goals: tuple[str, ...] = ()


class PageStore(Protocol):
    """The port the routes read through. ``caller`` is the caller's user id
    (empty when authentication is off), used for the instructor check."""

    async def learning_instance_page(
        self,
        li_id: str,
        goal_ids: Sequence[str],
        offset: int,
        limit: int,
        caller: str = "",
    ) -> Page: ...

    async def registration_page(
        self, registration_id: str, goal_ids: Sequence[str], caller: str = ""
    ) -> Page: ...


# Return: {-1} unknown LI/registration; else a head, the access facts
# {partner_id or '', caller is instructor 0/1, registration user or ''}, then
# either the goals that are unknown or of another learning instance (head -2)
# or {n, reg_1..reg_n, row_1_1..row_n_g} (head = total).
_PAGE_LUA = (
    NAMESPACE_LUA
    + """
local mode = ARGV[2]
local id = ARGV[3]
local offset = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local caller = ARGV[6]
local goals = {}
for i = 7, #ARGV do goals[#goals + 1] = ARGV[i] end
local li
local regs
local total
local reg_user = ''
if mode == 'li' then
  li = id
else
  local meta = redis.call('GET', p .. ':reg:' .. id)
  if not meta then return {-1} end
  local m = cjson.decode(meta)
  li = m['learning_instance_id']
  reg_user = m['user_id']
end
local li_meta = redis.call('GET', p .. ':li:' .. li)
if mode == 'li' and not li_meta then return {-1} end
local partner = ''
if li_meta then partner = cjson.decode(li_meta)['partner_id'] end
local instructor = 0
if caller ~= '' then
  instructor = redis.call('SISMEMBER', p .. ':li:' .. li .. ':instructors', caller)
end
local bad = {-2, partner, instructor, reg_user}
local templates = {}
for i, g in ipairs(goals) do
  local owner = redis.call('GET', p .. ':goal:' .. g)
  if owner ~= li then bad[#bad + 1] = g end
  templates[i] = redis.call('GET', p .. ':goal:' .. g .. ':template')
end
if #bad > 4 then return bad end
if mode == 'li' then
  local key = p .. ':li:' .. li .. ':learners'
  total = redis.call('ZCARD', key)
  regs = redis.call('ZRANGE', key, offset, offset + limit - 1)
else
  total = 1
  regs = {id}
end
local out = {total, partner, instructor, reg_user, #regs}
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
)


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
        result: list[Any], goal_ids: Sequence[str], field: str, ident: str
    ) -> Page:
        head = int(result[0])
        if head == -1:
            raise not_found(field, ident)
        partner = result[1].decode()
        reg_user = result[3].decode()
        access = Access(
            partner_id=partner or None,
            caller_is_instructor=int(result[2]) == 1,
            registration_user_id=reg_user or None,
        )
        if head == -2:
            unknown = tuple(g.decode() for g in result[4:])
            return Page(0, [], [], access, unknown)
        n = int(result[4])
        regs = [r.decode() for r in result[5 : 5 + n]]
        flat: list[bytes] = result[5 + n :]
        g = len(goal_ids)
        rows = [flat[i * g : (i + 1) * g] for i in range(n)]
        return Page(total=head, registration_ids=regs, rows=rows, access=access)

    async def learning_instance_page(
        self,
        li_id: str,
        goal_ids: Sequence[str],
        offset: int,
        limit: int,
        caller: str = "",
    ) -> Page:
        result = await self._run(["li", li_id, offset, limit, caller, *goal_ids])
        return self._page(result, goal_ids, "li_id", li_id)

    async def registration_page(
        self, registration_id: str, goal_ids: Sequence[str], caller: str = ""
    ) -> Page:
        result = await self._run(["reg", registration_id, 0, 1, caller, *goal_ids])
        return self._page(result, goal_ids, "reg_id", registration_id)
