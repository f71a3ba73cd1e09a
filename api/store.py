"""Reading pages of the read model: one Redis round trip per request.

A Lua script (infra/read_model/scripts.py, ``PAGE_LUA``) validates the
learning instance / registration and the goals, returns the facts the access
rules need (the LI's partner, whether the caller is an instructor there, the
registration's user), the page's version, and the page's learner
registrations (ZRANGE). Every key it touches is in ``KEYS[]``, in the learning
instance's slot. A learning instance's rows come from a plain MGET sent in the
same MULTI/EXEC as the script, of the keys of the registrations the store
assumed (:class:`_Frame`); the script confirms them, else its answer names
the page's registrations and the transaction is sent again (the first read of
a page takes two round trips). A registration's rows are read by the script.
The API joins the rows, with the goal's template row for a learner without
one, into the response without decoding or re-encoding a row.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import hiredis
import orjson
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import AskError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from api.change_hub import parse_stream_id
from api.errors import ServiceUnavailable, not_found, redis_unreachable
from infra.read_model import Generation, ReadModelKeys
from infra.read_model.scripts import HISTORY_LUA, PAGE_LUA, history_keys, page_keys

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

    On Redis Cluster the connection goes to the primary that owns the slot of
    the call's first key (every key of a call shares it); a ``MOVED`` or
    ``ASK`` reply (a resharding, a failover) refreshes the client's slot map
    and the call is sent once more.

    Idle connections are kept (at most :data:`IDLE_KEPT` per server); a
    connection whose exchange failed or was cancelled is dropped, never
    reused. The script only reads, so when a reused connection turns out
    closed (the server's idle timeout, a restart) every idle connection is
    dropped and the read is retried once on a new one; the script is sent
    whole (EVAL) once when the server does not know its SHA-1 (NOSCRIPT).
    """

    IDLE_KEPT = 64

    def __init__(self, redis: Redis | RedisCluster, script: str) -> None:
        self._redis = redis
        self._script = script
        self._sha = hashlib.sha1(script.encode()).hexdigest()
        #: server ("host:port", "" for a single server) -> idle connections
        self._idle_by: dict[str, list[Any]] = {}
        self._single: tuple[str, Any, dict[str, Any]] | None = None
        if not isinstance(redis, RedisCluster):
            pool = redis.connection_pool
            self._single = ("", pool.connection_class, pool.connection_kwargs)

    @property
    def _idle(self) -> list[Any]:
        """Every idle connection (tests count them)."""
        return [c for idle in self._idle_by.values() for c in idle]

    def _server(self, key: str) -> tuple[str, Any, dict[str, Any]]:
        single = self._single
        if single is not None:
            return single
        redis = self._redis
        assert isinstance(redis, RedisCluster)
        node = redis.get_node_from_key(key)
        if node is None:
            raise RedisConnectionError(f"no Redis Cluster node serves {key!r}")
        return node.name, node.connection_class, node.connection_kwargs

    async def __call__(
        self, keys: Sequence[str], args: Sequence[Any], after: bytes = b""
    ) -> Any:
        """The script's reply; with ``after`` (one packed command on keys of
        the same slot), the script and that command in one MULTI/EXEC, one
        round trip: the EXEC's reply, ``[script's reply, command's reply]``."""
        call = _pack("EVALSHA", self._sha, len(keys), *keys, *args)
        for attempt in (1, 2):
            server = self._server(keys[0])
            reused = bool(self._idle_by.get(server[0]))
            try:
                return await self._on_one_connection(server, call, after)
            except (RedisConnectionError, OSError):
                if not reused or attempt == 2:
                    raise
                await self.aclose()  # the others idled as long: likely closed
            except AskError:  # MOVED too: the slot map changed
                if attempt == 2 or not isinstance(self._redis, RedisCluster):
                    raise
                await self._redis.nodes_manager.initialize()
        raise AssertionError("unreachable")  # pragma: no cover

    async def _on_one_connection(
        self, server: tuple[str, Any, dict[str, Any]], call: bytes, after: bytes
    ) -> Any:
        name, connection_class, kwargs = server
        idle = self._idle_by.setdefault(name, [])
        conn = idle.pop() if idle else connection_class(**kwargs)
        keep = False
        try:
            if after:
                reply = await self._transaction(conn, call, after)
            else:
                reply = await self._exchange(conn, call)
            keep = True
            return reply
        except ResponseError:
            keep = True  # an answer (the script's error): the connection is fine
            raise
        finally:
            if keep and len(idle) < self.IDLE_KEPT:
                idle.append(conn)
            else:
                await conn.disconnect(nowait=True)

    async def _exchange(self, conn: Any, call: bytes) -> Any:
        await conn.send_packed_command(call, check_health=False)
        try:
            return await conn.read_response()
        except NoScriptError:
            pass
        await conn.send_packed_command(
            _pack("SCRIPT", "LOAD", self._script), check_health=False
        )
        await conn.read_response()
        await conn.send_packed_command(call, check_health=False)
        return await conn.read_response()

    async def _transaction(self, conn: Any, call: bytes, after: bytes) -> Any:
        packed = b"".join((_MULTI, call, after, _EXEC))
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
        idle_by, self._idle_by = self._idle_by, {}
        for idle in idle_by.values():
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
        li_id: str,
        ids: list[bytes],
        goals: Sequence[str],
    ) -> _Frame:
        """The frame of ``ids`` in ``keys``' generation."""
        digest = hashlib.sha1(b",".join(ids)).hexdigest()
        row_keys = [
            keys.row(li_id, r, g) for r in (i.decode() for i in ids) for g in goals
        ]
        openers = _openers(ids)
        return cls(
            expect=f"{keys.generation}:{digest}",
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
    """:class:`PageStore` over the Redis read model (a single server or a
    Redis Cluster: every read names its keys, all in one learning instance's
    slot).

    ``timeout_s`` bounds each read as a whole (answered 503 past it). Give it
    with a client made without ``socket_timeout``: redis-py then runs no timer
    of its own per send and read (its ``asyncio.wait_for`` starts a task per
    command), which was ~10 % of a cheap request's CPU (docs/performance.md).
    A read cancelled by the timeout drops its connection (_ScriptCaller), so
    no late reply is ever read as another request's.

    A learning instance's page is read in one MULTI/EXEC: the page script
    (access facts, version, and the check that the page's registrations are
    still those of the page's :class:`_Frame`) and a plain MGET of the
    frame's row keys. The frame comes from an earlier read of the same page;
    without one (or when the page changed) the script's answer gives the
    registrations, and the transaction is sent again with their frame. At
    most :data:`FRAMES_KEPT` frames of at most :data:`FRAME_BYTES_KEPT` bytes
    in all are kept, the oldest dropped first (a page of 100 learners and 2
    goals has a frame of ~25 KB; the largest page, 100 x 50 rows, ~1 MB).

    A registration's learning instance (which never changes) is looked up by
    its ``reg:`` key and kept (at most :data:`REGISTRATIONS_KEPT`).
    """

    FRAMES_KEPT = 256
    FRAME_BYTES_KEPT = 16 * 1024 * 1024
    REGISTRATIONS_KEPT = 100_000
    #: reads of one page before giving up on rows that keep changing under it
    ATTEMPTS = 5

    def __init__(
        self,
        redis: Redis | RedisCluster,
        keys: ReadModelKeys | None = None,
        *,
        timeout_s: float | None = None,
    ) -> None:
        self.redis = redis
        self.keys = keys or ReadModelKeys()
        self.generation = Generation(redis, self.keys)
        self.timeout_s = timeout_s
        self._deadlines = None if timeout_s is None else _Deadlines(timeout_s)
        self._script = _ScriptCaller(redis, PAGE_LUA)
        self._frames: dict[tuple[Any, ...], _Frame] = {}
        self._frame_bytes = 0
        self._history = _ScriptCaller(redis, HISTORY_LUA)
        self._li_of: dict[str, str] = {}
        self._keys_of: dict[tuple[Any, ...], list[str]] = {}

    async def aclose(self) -> None:
        """Close the page reads' own connections."""
        await self._script.aclose()
        await self._history.aclose()

    async def _guarded(self, read: Any) -> Any:
        """Await ``read`` within this store's deadline; Redis errors as 503."""
        deadlines = self._deadlines
        task = None if deadlines is None else deadlines.start()
        try:
            return await read
        except asyncio.CancelledError:
            if deadlines is not None and task is not None and deadlines.end(task):
                late = RedisTimeoutError(
                    f"Timeout reading from {self._where()}: "
                    f"no answer within {self.timeout_s} s"
                )
                raise redis_unreachable(late) from late
            raise
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise redis_unreachable(exc) from exc
        finally:
            if deadlines is not None and task is not None:
                deadlines.end(task)

    def _where(self) -> str:
        """The servers read, for the log (the API's answer redacts them)."""
        redis = self.redis
        if isinstance(redis, RedisCluster):
            return ",".join(node.name for node in redis.get_nodes())
        kwargs = redis.connection_pool.connection_kwargs
        return f"{kwargs.get('host', '?')}:{kwargs.get('port', '?')}"

    async def _current(self) -> ReadModelKeys:
        keys = self.generation.fresh()
        if keys is None:
            keys = await self._guarded(self.generation.current())
        return keys

    async def _moved(self, seen: ReadModelKeys) -> ReadModelKeys | None:
        keys: ReadModelKeys | None = await self._guarded(self.generation.moved(seen))
        return keys

    async def _unknown(self, keys: ReadModelKeys, field: str, ident: str) -> Exception:
        """404 for an unknown id, 503 while the read model is not
        materialized (Redis lost its data, a repair is running)."""
        present = await self._guarded(self.redis.exists(keys.materialized()))
        if not present:
            return ServiceUnavailable(
                "the read model is being repaired (Redis lost its data); retry shortly",
                code="read_model_repairing",
                retry_after_s=2,
            )
        return not_found(field, ident)

    async def _learning_instance_of(
        self, keys: ReadModelKeys, registration_id: str
    ) -> str | None:
        li = self._li_of.get(registration_id)
        if li is not None:
            return li
        raw = await self._guarded(self.redis.get(keys.registration(registration_id)))
        if raw is None:
            return None
        li = str(orjson.loads(raw)["learning_instance_id"])
        if len(self._li_of) >= self.REGISTRATIONS_KEPT:
            del self._li_of[next(iter(self._li_of))]  # the oldest
        self._li_of[registration_id] = li
        return li

    async def history(self, registration_id: str, goal_id: str) -> bytes | None:
        keys = await self._current()
        while True:
            li = await self._learning_instance_of(keys, registration_id)
            if li is not None:
                call = history_keys(keys, li, registration_id, goal_id)
                found = await self._guarded(self._history(call, []))
                if int(found[0]) == 1:
                    return found[1]  # type: ignore[no-any-return]
            moved = await self._moved(keys)
            if moved is None:
                return None
            keys = moved

    def _page(
        self,
        result: list[Any],
        field: str,
        ident: str,
        *,
        frame: _Frame | None = None,
        outside: list[bytes | None] | None = None,
    ) -> Page | None:
        """The page of a script reply; ``None`` when the rows are still to be
        read (a learning instance's page whose frame the script did not
        confirm). ``outside`` is the reply of ``frame``'s MGET, sent in the
        script's transaction; it is used only when the script confirmed it."""
        head = int(result[0])
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
        templates = result[9]
        if ids == 0:  # the script confirmed the frame: the MGET's rows
            assert frame is not None and outside is not None
            ids, rows = frame.ids, outside
            openers, framing = frame.openers, frame.framing
        elif rows == 0 and ids and templates:
            return None  # a learning instance's rows: not read yet
        elif len(ids) == 1 and rows:  # a registration's page: rows in place
            body = b",".join(rows)
            return Page(
                total=head,
                count=1,
                data=b"".join((_OPEN, ids[0], _OPENED, body, b"]}")),
                row_bytes=len(body) - len(rows) + 1,
                access=access,
                version=result[4].decode(),
            )
        else:
            openers, framing = _openers(ids), None
            rows = rows or []
        data, row_bytes = _join(openers, rows, templates, framing)
        return Page(
            total=head,
            count=len(ids),
            data=data,
            row_bytes=row_bytes,
            access=access,
            version=result[4].decode(),
        )

    def _page_keys(
        self,
        keys: ReadModelKeys,
        li_id: str,
        goal_ids: Sequence[str],
        registration_id: str | None = None,
    ) -> list[str]:
        """:func:`page_keys`, kept per request shape (building them was ~8 us
        of a request's CPU); at most :data:`FRAMES_KEPT` x 16 shapes."""
        shape = (keys.generation, li_id, registration_id, *goal_ids)
        found = self._keys_of.get(shape)
        if found is None:
            found = page_keys(keys, li_id, goal_ids, registration_id)
            if len(self._keys_of) >= 16 * self.FRAMES_KEPT:
                del self._keys_of[next(iter(self._keys_of))]  # the oldest
            self._keys_of[shape] = found
        return found

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

    async def _li_read(
        self,
        li_id: str,
        *,
        goal_ids: Sequence[str],
        offset: int,
        limit: int,
        caller: str,
        changes: str,
        held: str,
        remember: tuple[Any, ...] | None,
    ) -> tuple[list[Any], Page]:
        """A learning instance's page (or a stream's snapshot) and the script
        reply it came from."""
        keys = await self._current()
        frame = None if (held or remember is None) else self._frames.get(remember)
        for _ in range(self.ATTEMPTS):
            call = self._page_keys(keys, li_id, goal_ids)
            args = [
                "li",
                offset,
                limit,
                caller,
                changes,
                held,
                frame.expect if frame is not None else "",
                keys.generation,
                li_id,
                *goal_ids,
            ]
            outside = None
            if frame is not None and frame.mget:
                result, outside = await self._guarded(
                    self._script(call, args, frame.mget)
                )
            else:
                result = await self._guarded(self._script(call, args))
            if int(result[0]) == -1:
                moved = await self._moved(keys)
                if moved is None:
                    raise await self._unknown(keys, "li_id", li_id)
                keys, frame = moved, None
                continue
            page = self._page(result, "li_id", li_id, frame=frame, outside=outside)
            if page is not None:
                return result, page
            frame = _Frame.of(keys, li_id, result[10], goal_ids)
            if remember is not None:
                self._remember(remember, frame)
            held = ""  # the version changed: the rows are wanted
        raise ServiceUnavailable(
            "the page kept changing while it was read; retry shortly",
            code="page_changing",
            retry_after_s=1,
        )

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
        key = (li_id, offset, limit, *goal_ids)
        _, page = await self._li_read(
            li_id,
            goal_ids=goal_ids,
            offset=offset,
            limit=limit,
            caller=caller,
            changes="",
            held=if_version,
            remember=key,
        )
        return page

    async def _registration_read(
        self, registration_id: str, goal_ids: Sequence[str], args: list[Any]
    ) -> tuple[list[Any], Page, str]:
        keys = await self._current()
        while True:
            li = await self._learning_instance_of(keys, registration_id)
            if li is not None:
                call = self._page_keys(keys, li, goal_ids, registration_id)
                result = await self._guarded(
                    self._script(
                        call,
                        [
                            "reg",
                            0,
                            1,
                            *args,
                            keys.generation,
                            registration_id,
                            *goal_ids,
                        ],
                    )
                )
                if int(result[0]) != -1:
                    page = self._page(result, "reg_id", registration_id)
                    assert page is not None
                    return result, page, li
            moved = await self._moved(keys)
            if moved is None:
                raise await self._unknown(keys, "reg_id", registration_id)
            keys = moved

    async def registration_page(
        self,
        registration_id: str,
        goal_ids: Sequence[str],
        *,
        caller: str = "",
        if_version: str = "",
    ) -> Page:
        _, page, _ = await self._registration_read(
            registration_id, goal_ids, [caller, "", if_version, ""]
        )
        return page

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
        if mode == "li":
            result, page = await self._li_read(
                ident,
                goal_ids=goal_ids,
                offset=0,
                limit=max_learners,
                caller=caller,
                changes=after or "-",
                held="",
                remember=None,
            )
            li = ident
        else:
            result, page, li = await self._registration_read(
                ident, goal_ids, [caller, after or "-", "", ""]
            )
        if int(result[0]) < 0:
            return Snapshot(page, "0-0", False, ident if mode == "li" else "")
        resumed = int(result[6]) == 1
        current = result[5].decode()
        last_id = after if resumed and after else current
        if _past(last_id, current):
            # An id past the stream's end (a client's guess): from now on.
            last_id = current
        return Snapshot(page, last_id, resumed, li)
