"""bench/peers.py reads the project's rows under compare.py's spelling
(``ms:row:<registration>:<goal>``) on a real Redis."""

from __future__ import annotations

import orjson
import pytest
import redis

from app.devstack.embedded import EmbeddedRedis
from bench.peers import translate_row_keys
from infra.read_model import ReadModelKeys

pytestmark = pytest.mark.integration


def test_compare_py_finds_rows_under_their_old_spelling(
    redis_server: EmbeddedRedis,
) -> None:
    class Client(redis.Redis):  # patched alone, not every client of the process
        pass

    translate_row_keys(Client)
    keys = ReadModelKeys()
    plain = redis.Redis.from_url(redis_server.url)
    plain.set(
        keys.registration("reg-p"), orjson.dumps({"learning_instance_id": "li-p"})
    )
    plain.set(keys.row("li-p", "reg-p", "goal-1"), b"row")
    plain.set("peer:row:reg-p", b"peer")
    client = Client.from_url(redis_server.url)
    assert client.mget(["ms:row:reg-p:goal-1", "peer:row:reg-p"]) == [b"row", b"peer"]
    assert client.exists("ms:row:reg-p:goal-1", "ms:row:reg-q:goal-1") == 1
    # an unpatched client still reads keys as they are spelled
    assert plain.mget(["ms:row:reg-p:goal-1"]) == [None]
