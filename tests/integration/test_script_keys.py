"""Every key a read-model script touches is one it names in ``KEYS[]``.

A Redis Cluster refuses a key of another slot, but a script that touches an
undeclared key of its own slot runs there (and valkey has no switch to make
it strict). So this test watches a real server with MONITOR while the
worker's writes and every read of the API run, and holds each command a
script ran (MONITOR shows them as the ``lua`` client's, right after the
EVAL/EVALSHA) against the keys that call declared, found with COMMAND
GETKEYS. A control script that spells a key in Lua is caught.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from api.dashboard import RedisViewStore
from api.facts import RedisFactStore
from api.health import redis_checks
from api.metrics import ApiMetrics
from api.store import RedisPageStore
from app.devstack.embedded import EmbeddedRedis
from infra.read_model import ReadModelKeys
from infra.read_model.scripts import SWITCH_LUA
from tests.integration.auth_world import seed, seed_world

pytestmark = pytest.mark.integration

KEYS = ReadModelKeys()
_ARG = re.compile(rb'"((?:[^"\\]|\\.)*)"')
_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|.)")
_SIMPLE = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"a": b"\a", b"b": b"\b"}


def _unescape(raw: bytes) -> bytes:
    def one(m: re.Match[bytes]) -> bytes:
        code = m.group(1)
        if code.startswith(b"x"):
            return bytes([int(code[1:], 16)])
        return _SIMPLE.get(code, code)

    return _ESCAPE.sub(one, raw)


def _parse(line: bytes) -> tuple[str, list[bytes]]:
    """(client, arguments) of a MONITOR line: ``<time> [<db> <client>] "a" ...``."""
    head, _, rest = line.partition(b"] ")
    client = head.rsplit(b" ", 1)[-1].decode()
    return client, [_unescape(a) for a in _ARG.findall(rest)]


class _Monitor:
    """Collects every command the server runs, on a connection of its own."""

    def __init__(self, url: str) -> None:
        self._redis = Redis.from_url(url)
        self.lines: list[bytes] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> _Monitor:
        self._conn = await self._redis.connection_pool.get_connection()
        await self._conn.send_command("MONITOR")
        assert await self._conn.read_response() in (b"OK", "OK")
        self._task = asyncio.create_task(self._read())
        return self

    async def _read(self) -> None:
        while True:
            line = await self._conn.read_response(disable_decoding=True)
            self.lines.append(line)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.sleep(0.2)  # the last lines
        assert self._task is not None
        self._task.cancel()
        await self._conn.disconnect()
        await self._redis.aclose()


async def _undeclared(redis: Redis, lines: list[bytes]) -> tuple[list[str], int]:
    """Commands scripts ran on keys their call did not declare, and how many
    script commands were checked."""
    declared: set[bytes] | None = None
    problems: list[str] = []
    checked = 0
    for line in lines:
        client, args = _parse(line)
        if not args:
            continue
        name = args[0].upper()
        if client != "lua":
            if name in (b"EVAL", b"EVALSHA"):
                declared = set(args[3 : 3 + int(args[2])])
            else:
                declared = None
            continue
        assert declared is not None, f"a script command without its call: {args}"
        checked += 1
        try:
            touched = await redis.execute_command("COMMAND GETKEYS", *args)
        except ResponseError:
            continue  # no key arguments
        # redis-py answers COMMAND GETKEYS as str
        extra = {k if isinstance(k, bytes) else k.encode() for k in touched} - declared
        if extra:
            problems.append(f"{args[0].decode()} on undeclared {sorted(extra)}")
    return problems, checked


def test_every_script_touches_only_the_keys_it_declares() -> None:
    with EmbeddedRedis() as server:
        server.start()
        seed_world(server.url)

        async def go() -> tuple[list[str], int, list[str]]:
            redis = Redis.from_url(server.url)
            pages = RedisPageStore(redis)
            async with _Monitor(server.url) as seen:
                # The worker's writes (the row feed) and every read the API has.
                await seed(server.url)
                for _ in range(2):  # afresh, then through the frame
                    await pages.learning_instance_page("li-a", ["goal-a"], 0, 10)
                await pages.learning_instance_page(
                    "li-a", ["goal-a"], 0, 10, if_version="*"
                )
                await pages.registration_page("reg-a1", ["goal-a"], caller="la1")
                await pages.registration_page("reg-ti-a", ["goal-a"])
                await pages.learning_instance_page("li-a", ["goal-b"], 0, 10)
                await pages.snapshot(
                    "li", "li-a", ["goal-a"], "ti-a", after=None, max_learners=10
                )
                await pages.snapshot(
                    "reg", "reg-a1", ["goal-a"], "", after="0-0", max_learners=10
                )
                await pages.history("reg-a1", "goal-a")
                await RedisViewStore(redis).view("li-a", "la1")
                facts = RedisFactStore(redis)
                await facts.registrations(["reg-a1", "reg-b1", "nope"])
                await facts.goals(["goal-a", "goal-b"])
                checks, _ = redis_checks(redis, ApiMetrics())
                await checks["read_model"]()
                await redis.register_script(SWITCH_LUA)(
                    keys=[KEYS.current_generation()], args=["0", "0"]
                )
            ours = await _undeclared(redis, seen.lines)
            # The control: a key spelled in Lua is caught.
            async with _Monitor(server.url) as control:
                await redis.eval(
                    "return redis.call('GET', KEYS[1] .. ':template')",
                    1,
                    KEYS.learning_instance("li-a"),
                )
            caught, _ = await _undeclared(redis, control.lines)
            await pages.aclose()
            await redis.aclose()
            return ours[0], ours[1], caught

        problems, checked, caught = asyncio.run(go())
    assert problems == []
    assert checked > 40  # the reads above ran their scripts
    assert caught == [
        f"GET on undeclared [b'{KEYS.learning_instance('li-a')}:template']"
    ]
