"""Reading pages of the read model: one Redis round trip per request.

A Lua script validates the learning instance / registration and the goals,
returns the facts the access rules need (the LI's partner, whether the caller
is an instructor there, the registration's user) and the page's version, and
the page's learner registrations (ZRANGE). Their rows come back as the stored
JSON bytes, either from a plain MGET sent in the same MULTI/EXEC as the script
(when the store knows the page's ids from an earlier read and the script
confirms them: :class:`_Frame`) or read by the script itself; the API joins
them, with the goal's template row for a learner without one, into the
response without decoding or re-encoding a row.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import hiredis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.change_hub import parse_stream_id
from api.errors import ServiceUnavailable, not_found, redis_unreachable
from schemas.read_model import NAMESPACE_LUA, ReadModelKeys

__all__ = ["Access", "Page", "PageStore", "RedisPageStore", "Snapshot"]


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
    """One page: ``data`` holds ``count`` registrations' items, each with its
    rows in the order of the requested goals.

    ``unknown_goals`` lists requested goals that are not goals of the learning
    instance; the route reports them only after the access check passed.
    """

    total: int
    #: registrations on the page
    count: int = 0
    #: the contract's ``data`` array without its brackets (rows as stored)
    data: bytes = b""
    #: bytes of the rows in ``data`` (the page's bound, api/render.py)
    row_bytes: int = 0
    access: Access = Access(None, False)
    unknown_goals: tuple[str, ...] = ()
    #: the registration is an instructor's: it has no row (only learners are
    #: rows, on the listing and the registration endpoint alike)
    not_a_learner: bool = False
    #: the page's version (40 hex digits; see _PAGE_LUA): equal versions are
    #: equal pages for equal requests. Empty for a live stream's snapshot.
    version: str = ""
    #: the caller holds this version (``if_version``): no row was read
    not_modified: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A live stream's start: the rows (unless resumed) and the access facts,
    read atomically with ``last_id``, the change-stream id the stream
    continues after: the id the rows are current at, or, when ``resumed``, the
    client's ``Last-Event-ID`` (still within the change stream's window;
    ``page`` then has no rows).
    """

    page: Page
    last_id: str
    resumed: bool
    li_id: str


class PageStore(Protocol):
    """The port the routes read through. ``caller`` is the caller's user id
    (empty when authentication is off), used for the instructor check;
    ``if_version`` a page version the caller holds (``*``: any), answered
    with a :attr:`Page.not_modified` page when it is still current."""

    async def learning_instance_page(
        self,
        li_id: str,
        goal_ids: Sequence[str],
        offset: int,
        limit: int,
        *,
        caller: str = "",
        if_version: str = "",
    ) -> Page: ...

    async def registration_page(
        self,
        registration_id: str,
        goal_ids: Sequence[str],
        *,
        caller: str = "",
        if_version: str = "",
    ) -> Page: ...

    async def history(self, registration_id: str, goal_id: str) -> bytes | None:
        """The registration's stored timeline on the goal (JSON), if any."""
        ...


# Return: {-1} unknown LI/registration ({-3} while the read model is not
# materialized: the id may only be missing); else a head, the access facts
# {partner_id or '', caller is instructor 0/1, registration user or ''}, then
# either the goals that are unknown or of another learning instance (head -2)
# or, with head = total, {version, last, resumed, li, generation, templates,
# ids, rows}: the page's registration ids and their rows as stored (MGET
# order: registration by registration, goals in the request's order), which
# the API joins into the contract's "data" array (_Frame, _join). A learner
# with no row yet gets the goal's template: put in place by the script when
# it reads the rows (`templates` is then 0), by the API when the rows come
# from the transaction's MGET (nil there; `templates` lists each goal's).
# Moving the rows through Lua was most of a page's server time
# (docs/performance.md).
# ARGV[9] is '' or the generation and digest (SHA-1 of the ids joined by ',')
# of the page the API assumed when it sent the page's row keys as an MGET in
# the same MULTI/EXEC, right after the script: when they still hold, `ids`
# and `rows` are 0 (the rows are the MGET's reply, read in the same atomic
# step), else the script reads the rows itself.
# ARGV[7] is '' for a page; for a live stream (api/stream.py) '-' (a snapshot)
# or the id of the last change the client has; `last` is then the LI's
# change-stream id at this instant and `resumed` 1 when the client can resume
# after its id without a gap (no rows are read then) else 0 (for a page '' and
# 0). The stream key is ReadModelKeys.changes (tested in
# tests/unit/test_row_feed.py).
# ARGV[8] (pages only) is the page version the client holds ('' for none, '*'
# for any). A page's version is the SHA-1 of everything its body is made of
# besides the request: the generation, the LI's change-stream last id (every
# changed row appends to it in the row's own transaction, app/row_feed.py),
# the learner count and the goal templates. A page whose version equals
# ARGV[8] is {-5, access facts, version}: not modified, no row is read. A
# stream's version is ''.
_PAGE_LUA = (
    NAMESPACE_LUA
    + """
local function id_le(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as <= bs)
end
-- The change stream's last id, and 1 when every entry after `after` (an id,
-- or '-' for a snapshot) is still in the stream: none was trimmed.
local function stream_position(key, after)
  if redis.call('EXISTS', key) == 0 then
    return '0-0', after ~= '-' and 1 or 0
  end
  local info = redis.call('XINFO', 'STREAM', key)
  local f = {}
  for j = 1, #info, 2 do f[info[j]] = info[j + 1] end
  local last = f['last-generated-id']
  if after == '-' then return last, 0 end
  if f['entries-added'] == f['length'] then return last, 1 end
  local first = f['first-entry']
  if first and id_le(first[1], after) then return last, 1 end
  return last, 0
end
-- An unknown id while the read model is not materialized (Redis lost its
-- data, a repair is running): -3, answered 503, not a false 404.
local function unknown()
  if redis.call('EXISTS', p .. ':meta:materialized') == 0 then return {-3} end
  return {-1}
end
local mode = ARGV[2]
local id = ARGV[3]
local offset = tonumber(ARGV[4])
local limit = tonumber(ARGV[5])
local caller = ARGV[6]
local changes = ARGV[7]
local held = ARGV[8]
local expect = ARGV[9]
local goals = {}
for i = 10, #ARGV do goals[#goals + 1] = ARGV[i] end
local li
local regs
local total
local reg_user = ''
local reg_role = 'learner'
if mode == 'li' then
  li = id
else
  local meta = redis.call('GET', p .. ':reg:' .. id)
  if not meta then return unknown() end
  local m = cjson.decode(meta)
  li = m['learning_instance_id']
  reg_user = m['user_id']
  reg_role = m['role'] or 'learner'
end
local li_meta = redis.call('GET', p .. ':li:' .. li)
if mode == 'li' and not li_meta then return unknown() end
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
-- Only learners are rows, on both endpoints (docs/read-model.md): an
-- instructor's registration is -4 with the access facts, answered 409 once
-- the caller may see it.
if reg_role ~= 'learner' then return {-4, partner, instructor, reg_user} end
local last, resumed = '0-0', 0
if changes ~= '' then
  last, resumed = stream_position(ARGV[1] .. ':changes:' .. li, changes)
end
local learners = p .. ':li:' .. li .. ':learners'
if mode == 'li' then total = redis.call('ZCARD', learners) else total = 1 end
local version
if changes == '' then
  local newest = redis.call('XREVRANGE', ARGV[1] .. ':changes:' .. li, '+', '-',
                            'COUNT', 1)
  local parts = {p, newest[1] and newest[1][1] or '0-0', tostring(total)}
  for i = 1, #goals do parts[#parts + 1] = templates[i] or '' end
  version = redis.sha1hex(table.concat(parts, '\\n'))
  if held == '*' or held == version then
    return {-5, partner, instructor, reg_user, version}
  end
end
if mode == 'li' then
  regs = redis.call('ZRANGE', learners, offset, offset + limit - 1)
  if resumed == 1 then regs = {} end
else
  regs = {id}
  if resumed == 1 then regs = {} end
end
local gen = generation or '0'
local fallback = {}
for i = 1, #goals do fallback[i] = templates[i] or '{}' end
local head = {total, partner, instructor, reg_user, version or '', last, resumed,
              li, gen, fallback}
if expect ~= '' and expect == gen .. ':' .. redis.sha1hex(table.concat(regs, ',')) then
  head[11] = 0
  head[12] = 0
  return head
end
local rows = {}
if #regs > 0 and #goals > 0 then
  local keys = {}
  for _, r in ipairs(regs) do
    for _, g in ipairs(goals) do keys[#keys + 1] = p .. ':row:' .. r .. ':' .. g end
  end
  rows = redis.call('MGET', unpack(keys))
  -- Here (a page read afresh, a registration, a stream's snapshot) a
  -- missing row's template is put in place: the templates then need not
  -- travel.
  local ng = #goals
  for k = 1, #rows do
    if not rows[k] then rows[k] = fallback[(k - 1) % ng + 1] end
  end
end
-- ids and rows as nested arrays: no copy into the reply's own table.
head[10] = 0
head[11] = regs
head[12] = rows
return head
"""
)


# The timeline of ARGV[2] (a registration) on ARGV[3] (a goal) in the live
# generation, or nil (ReadModelKeys.history).
_HISTORY_LUA = (
    NAMESPACE_LUA
    + """
return redis.call('GET', p .. ':hist:' .. ARGV[2] .. ':' .. ARGV[3])
"""
)


def _pack(*parts: Any) -> bytes:
    """One command packed in one C call (redis-py's Encoder goes per
    argument)."""
    packed: bytes = hiredis.pack_command(parts)
    return packed


_MULTI = _pack("MULTI")
_EXEC = _pack("EXEC")


class _ScriptCaller:
    """Runs one Lua script over connections of its own: redis-py's
    :class:`~redis.asyncio.Connection` (its handshake, AUTH, TLS, database)
    without the client's per-command machinery (retry wrapper, pool lock,
    observability hooks), which was ~30 % of a 304's CPU (docs/performance.md).

    Idle connections are kept (at most :data:`IDLE_KEPT`); a connection whose
    exchange failed or was cancelled is dropped, never reused. The script
    only reads, so when a reused connection turns out closed (the server's
    idle timeout, a restart) every idle connection is dropped and the read
    is retried once on a new one; the script is sent whole (EVAL) once when
    the server does not know its SHA-1 (NOSCRIPT).
    """

    IDLE_KEPT = 64

    def __init__(self, redis: Redis, script: str) -> None:
        pool = redis.connection_pool
        self._connection_class = pool.connection_class
        self._connection_kwargs = pool.connection_kwargs
        self._script = script
        self._sha = hashlib.sha1(script.encode()).hexdigest()
        self._idle: list[Any] = []

    async def __call__(self, args: Sequence[Any], after: bytes = b"") -> Any:
        """The script's reply; with ``after`` (one packed command), the script
        and that command in one MULTI/EXEC, one round trip: the EXEC's reply,
        ``[script's reply, command's reply]``."""
        reused = bool(self._idle)
        try:
            return await self._on_one_connection(args, after)
        except (RedisConnectionError, OSError):
            if not reused:
                raise
        await self.aclose()  # the others idled as long: likely closed too
        return await self._on_one_connection(args, after)  # once, on a new one

    async def _on_one_connection(self, args: Sequence[Any], after: bytes) -> Any:
        conn = (
            self._idle.pop()
            if self._idle
            else self._connection_class(**self._connection_kwargs)
        )
        keep = False
        try:
            if after:
                reply = await self._transaction(conn, args, after)
            else:
                reply = await self._exchange(conn, args)
            keep = True
            return reply
        except ResponseError:
            keep = True  # an answer (the script's error): the connection is fine
            raise
        finally:
            if keep and len(self._idle) < self.IDLE_KEPT:
                self._idle.append(conn)
            else:
                await conn.disconnect(nowait=True)

    async def _exchange(self, conn: Any, args: Sequence[Any]) -> Any:
        await conn.send_packed_command(
            _pack("EVALSHA", self._sha, 0, *args), check_health=False
        )
        try:
            return await conn.read_response()
        except NoScriptError:
            pass
        await conn.send_packed_command(
            _pack("EVAL", self._script, 0, *args), check_health=False
        )
        return await conn.read_response()

    async def _transaction(self, conn: Any, args: Sequence[Any], after: bytes) -> Any:
        packed = b"".join(
            (
                _MULTI,
                _pack("EVALSHA", self._sha, 0, *args),
                after,
                _EXEC,
            )
        )
        for attempt in (1, 2):
            await conn.send_packed_command(packed, check_health=False)
            # +OK, +QUEUED, +QUEUED, then EXEC's: all four are read whatever
            # they are, so the connection stays in step for its next use.
            answers: list[Any] = []
            for _ in range(4):
                try:
                    answers.append(await conn.read_response())
                except ResponseError as exc:
                    answers.append(exc)
            replies = answers[3]
            # NOSCRIPT comes at EXEC (valkey does so) or, on a server that
            # checks it while queueing, instead of QUEUED: load, redo once.
            if attempt == 1 and (
                isinstance(answers[1], NoScriptError)
                or (isinstance(replies, list) and isinstance(replies[0], NoScriptError))
            ):
                await conn.send_packed_command(
                    _pack("SCRIPT", "LOAD", self._script), check_health=False
                )
                await conn.read_response()
                continue
            for answer in answers:
                if isinstance(answer, ResponseError):
                    raise answer  # the transaction was refused (EXECABORT)
            for reply in replies:
                if isinstance(reply, ResponseError):
                    raise reply  # the script's error; never rows made of one
            return replies  # [the script's reply, the command's]
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        """Drop the idle connections."""
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.disconnect(nowait=True)


class _Deadlines:
    """Bounds the awaits of many tasks with one repeating timer.

    ``asyncio.timeout`` schedules and cancels a timer per call: ~9 % of a
    cheap request's CPU (docs/performance.md). Here each read only records
    its deadline; a timer every :data:`PERIOD_S`, running only while reads
    are in flight, cancels the tasks past theirs, and the read turns that
    cancellation (and only that one) into a timeout. A deadline is therefore
    kept within ``PERIOD_S`` late.
    """

    PERIOD_S = 0.1

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> asyncio.Task[Any]:
        """The calling task's read begins."""
        task = asyncio.current_task()
        assert task is not None
        loop = task.get_loop()
        if loop is not self._loop:  # a new loop (tests): nothing carries over
            self._loop, self._timer = loop, None
            self._due.clear()
            self._expired.clear()
        self._due[task] = loop.time() + self.timeout_s
        if self._timer is None:
            self._timer = loop.call_later(self.PERIOD_S, self._check)
        return task

    def end(self, task: asyncio.Task[Any]) -> bool:
        """The read ended (again: a no-op); whether its deadline cancelled it."""
        self._due.pop(task, None)
        if task in self._expired:
            self._expired.discard(task)
            task.uncancel()
            return True
        return False

    def _check(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        for task, due in self._due.items():
            if due <= now and task not in self._expired:
                self._expired.add(task)
                task.cancel()
        self._timer = (
            self._loop.call_later(self.PERIOD_S, self._check) if self._due else None
        )


def _past(stream_id: str, last: str) -> bool:
    a, b = parse_stream_id(stream_id), parse_stream_id(last)
    return a is not None and b is not None and a > b


@dataclass(frozen=True, slots=True)
class _Frame:
    """What a page's request and answer are made of besides its rows, for one
    (learning instance, offset, limit, goals) in one generation: the page's
    registration ids, each one's opening piece of the ``data`` array, and the
    packed MGET of its row keys. ``expect`` (the generation and a SHA-1 of
    the ids) lets the page script check, in the same MULTI/EXEC, that the
    page still holds exactly these registrations: only then are the MGET's
    rows used (``RedisPageStore.learning_instance_page``)."""

    expect: str
    ids: list[bytes]
    openers: list[bytes]
    #: bytes of the page's data that are not rows (:func:`_framing`)
    framing: int
    mget: bytes

    @property
    def size(self) -> int:
        """Bytes it holds, about."""
        return len(self.mget) + self.framing + sum(map(len, self.ids))

    @classmethod
    def of(
        cls,
        keys: ReadModelKeys,
        generation: bytes,
        ids: list[bytes],
        goals: Sequence[str],
    ) -> _Frame:
        digest = hashlib.sha1(b",".join(ids)).hexdigest()
        in_generation = keys.in_generation(int(generation))
        row_keys = [
            in_generation.row(r, g) for r in (i.decode() for i in ids) for g in goals
        ]
        openers = _openers(ids)
        return cls(
            expect=f"{generation.decode()}:{digest}",
            ids=ids,
            openers=openers,
            framing=_framing(openers, len(goals)),
            mget=_pack("MGET", *row_keys) if row_keys else b"",
        )


def _openers(ids: list[bytes]) -> list[bytes]:
    # Registration ids are EntityIds ([A-Za-z0-9._~-], schemas/events.py:
    # checked on ingest, and the read model holds no other): nothing to escape.
    return [
        (b"]},{" if i else b"{") + _OPEN[1:] + r + _OPENED for i, r in enumerate(ids)
    ]


_OPEN = b'{"registration_id":"'
_OPENED = b'","status_and_progress":['


def _framing(openers: list[bytes], goals: int) -> int:
    """Bytes of :func:`_join`'s data that are not rows: the opening pieces,
    the commas between a registration's rows, the closing piece."""
    if not openers:
        return 0
    return sum(map(len, openers)) + len(openers) * max(goals - 1, 0) + 2


def _join(
    openers: list[bytes],
    rows: list[bytes | None],
    templates: Sequence[bytes],
    framing: int | None = None,
) -> tuple[bytes, int]:
    """The contract's ``data`` array without its brackets, and the rows'
    bytes: per registration its opening piece, then its rows (registration
    by registration, goals in order; ``None``: the goal's template from
    ``templates``) separated by commas. C-level list work only, no loop over
    rows in Python. ``framing``: :func:`_framing` of ``openers``, if known."""
    n = len(openers)
    if not n:
        return b"", 0
    ng = len(rows) // n
    if None in rows:
        rows = [templates[i % ng] if row is None else row for i, row in enumerate(rows)]
    stride = 2 * ng if ng else 1
    pieces: list[bytes | None] = [b","] * (n * stride + 1)
    pieces[0 : n * stride : stride] = openers
    for j in range(ng):
        pieces[1 + 2 * j : n * stride : stride] = rows[j::ng]
    pieces[-1] = b"]}"
    data = b"".join(pieces)  # type: ignore[arg-type]  # every None was replaced
    if framing is None:
        framing = _framing(openers, ng)
    return data, len(data) - framing


class RedisPageStore:
    """:class:`PageStore` over the Redis read model.

    ``timeout_s`` bounds each read as a whole (answered 503 past it). Give it
    with a client made without ``socket_timeout``: redis-py then runs no timer
    of its own per send and read (its ``asyncio.wait_for`` starts a task per
    command), which was ~10 % of a cheap request's CPU (docs/performance.md).
    A read cancelled by the timeout drops its connection (_ScriptCaller), so
    no late reply is ever read as another request's.

    A learning instance's page is read in one MULTI/EXEC when this store has
    the page's :class:`_Frame` from an earlier read: the script (access
    facts, version, and the check that the page's registrations are still
    the frame's) and a plain MGET of the frame's row keys. At most
    :data:`FRAMES_KEPT` frames of at most :data:`FRAME_BYTES_KEPT` bytes in
    all are kept, the oldest dropped first (a page of 100 learners and 2
    goals has a frame of ~25 KB; the largest page, 100 x 50 rows, ~1 MB).
    """

    FRAMES_KEPT = 256
    FRAME_BYTES_KEPT = 16 * 1024 * 1024

    def __init__(
        self,
        redis: Redis,
        keys: ReadModelKeys | None = None,
        *,
        timeout_s: float | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys or ReadModelKeys()
        self.timeout_s = timeout_s
        self._deadlines = None if timeout_s is None else _Deadlines(timeout_s)
        self._script = _ScriptCaller(redis, _PAGE_LUA)
        self._frames: dict[tuple[Any, ...], _Frame] = {}
        self._frame_bytes = 0
        self._history = _ScriptCaller(redis, _HISTORY_LUA)

    async def aclose(self) -> None:
        """Close the page reads' own connections."""
        await self._script.aclose()
        await self._history.aclose()

    async def history(self, registration_id: str, goal_id: str) -> bytes | None:
        try:
            found: bytes | None = await self._history(
                [self.keys.prefix, registration_id, goal_id]
            )
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise redis_unreachable(exc) from exc
        return found

    async def _run(self, args: list[Any], after: bytes = b"") -> list[Any]:
        deadlines = self._deadlines
        task = None if deadlines is None else deadlines.start()
        try:
            call = [self.keys.prefix, *args]
            result: list[Any] = await (
                self._script(call, after) if after else self._script(call)
            )
        except asyncio.CancelledError:
            if deadlines is not None and task is not None and deadlines.end(task):
                kwargs = self.redis.connection_pool.connection_kwargs
                where = f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"
                late = RedisTimeoutError(
                    f"Timeout reading from {where}: no answer within {self.timeout_s} s"
                )
                raise redis_unreachable(late) from late
            raise
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise redis_unreachable(exc) from exc
        finally:
            if deadlines is not None and task is not None:
                deadlines.end(task)
        return result

    def _page(
        self,
        result: list[Any],
        field: str,
        ident: str,
        *,
        goal_ids: Sequence[str] = (),
        frame: _Frame | None = None,
        outside: list[bytes | None] | None = None,
        remember: tuple[Any, ...] | None = None,
    ) -> Page:
        """The page of a script reply. ``outside`` is the reply of ``frame``'s
        MGET, sent in the script's transaction; it is used only when the
        script confirmed the frame. ``remember`` is the key under which a
        frame of this page's ids is kept for the next request."""
        head = int(result[0])
        if head == -1:
            raise not_found(field, ident)
        if head == -3:
            raise ServiceUnavailable(
                "the read model is being repaired (Redis lost its data); retry shortly",
                code="read_model_repairing",
                retry_after_s=2,
            )
        partner = result[1].decode()
        reg_user = result[3].decode()
        access = Access(
            partner_id=partner or None,
            caller_is_instructor=int(result[2]) == 1,
            registration_user_id=reg_user or None,
        )
        if head == -2:
            unknown = tuple(g.decode() for g in result[4:])
            return Page(0, access=access, unknown_goals=unknown)
        if head == -4:
            return Page(0, access=access, not_a_learner=True)
        if head == -5:
            version = result[4].decode()
            return Page(0, access=access, version=version, not_modified=True)
        ids, rows = result[10], result[11]
        templates = result[9] or ()  # 0: the script put templates in place
        if ids == 0:  # the script confirmed the frame: the MGET's rows
            assert frame is not None and outside is not None
            ids, rows = frame.ids, outside
            openers, framing = frame.openers, frame.framing
        elif remember is not None and ids and goal_ids:
            frame = _Frame.of(self.keys, result[8], ids, goal_ids)
            self._remember(remember, frame)
            openers, framing = frame.openers, frame.framing
        elif len(ids) == 1:  # the registration endpoint: rows in place
            body = b",".join(rows)
            return Page(
                total=head,
                count=1,
                data=b"".join((_OPEN, ids[0], _OPENED, body, b"]}")),
                row_bytes=len(body) - len(rows) + 1 if rows else 0,
                access=access,
                version=result[4].decode(),
            )
        else:
            openers, framing = _openers(ids), None
        data, row_bytes = _join(openers, rows, templates, framing)
        return Page(
            total=head,
            count=len(ids),
            data=data,
            row_bytes=row_bytes,
            access=access,
            version=result[4].decode(),
        )

    def _remember(self, key: tuple[Any, ...], frame: _Frame) -> None:
        frames = self._frames
        old = frames.pop(key, None)
        if old is not None:
            self._frame_bytes -= old.size
        if frame.size > self.FRAME_BYTES_KEPT:
            return
        while frames and (
            len(frames) >= self.FRAMES_KEPT
            or self._frame_bytes + frame.size > self.FRAME_BYTES_KEPT
        ):
            self._frame_bytes -= frames.pop(next(iter(frames))).size  # the oldest
        frames[key] = frame
        self._frame_bytes += frame.size

    async def learning_instance_page(
        self,
        li_id: str,
        goal_ids: Sequence[str],
        offset: int,
        limit: int,
        *,
        caller: str = "",
        if_version: str = "",
    ) -> Page:
        if if_version:
            # A holder of a version most likely gets a 304: no rows are read
            # for it, so no MGET is sent (the script reads them if the
            # version changed).
            result = await self._run(
                ["li", li_id, offset, limit, caller, "", if_version, "", *goal_ids]
            )
            return self._page(result, "li_id", li_id)
        key = (li_id, offset, limit, *goal_ids)
        frame = self._frames.get(key)
        if frame is None:
            result = await self._run(
                ["li", li_id, offset, limit, caller, "", "", "", *goal_ids]
            )
            return self._page(result, "li_id", li_id, goal_ids=goal_ids, remember=key)
        result, outside = await self._run(
            ["li", li_id, offset, limit, caller, "", "", frame.expect, *goal_ids],
            frame.mget,
        )
        return self._page(result, "li_id", li_id, frame=frame, outside=outside)

    async def registration_page(
        self,
        registration_id: str,
        goal_ids: Sequence[str],
        *,
        caller: str = "",
        if_version: str = "",
    ) -> Page:
        result = await self._run(
            ["reg", registration_id, 0, 1, caller, "", if_version, "", *goal_ids]
        )
        return self._page(result, "reg_id", registration_id)

    async def snapshot(
        self,
        mode: Literal["li", "reg"],
        ident: str,
        goal_ids: Sequence[str],
        caller: str,
        *,
        after: str | None,
        max_learners: int,
    ) -> Snapshot:
        """Rows of a learning instance (up to ``max_learners``) or of one
        registration, with the change-stream id they are current at; only the
        access facts and that id when ``after`` can be resumed from."""
        result = await self._run(
            [mode, ident, 0, max_learners, caller, after or "-", "", "", *goal_ids]
        )
        field = "li_id" if mode == "li" else "reg_id"
        page = self._page(result, field, ident)
        if int(result[0]) < 0:
            return Snapshot(page, "0-0", False, ident if mode == "li" else "")
        resumed = int(result[6]) == 1
        current = result[5].decode()
        last_id = after if resumed and after else current
        if _past(last_id, current):
            # An id past the stream's end (a client's guess): from now on.
            last_id = current
        return Snapshot(page, last_id, resumed, result[7].decode())
