"""Live streams (SSE) and ETags against the API process over a real Redis whose
rows and change streams are written by the worker's own projector."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from redis import Redis as SyncRedis
from redis.asyncio import Redis

from app.devstack.embedded import EmbeddedRedis
from infra.read_model import CHANGES_MAXLEN, Projection, ReadModelKeys, RedisProjector
from schemas.events import GoalDefined, Target
from tests.integration.auth_world import LI_OF_REG, SETTINGS, T0, bearer, seed_world
from tests.integration.live_api import ApiProcess, api_process
from tests.integration.sse import SseStream
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

KEYS = ReadModelKeys()
ADMIN = bearer("admin-1", "p1", ("partner_admin",))
LI_A = "/learning-instances/li-a/metrics/status-and-progress"
#: The server ends a stream whose one send has waited this long (seconds).
SEND_TIMEOUT_S = 2
REG_A1 = "/registrations/reg-a1/metrics/status-and-progress"


def _row(goal: str, progress: float, pad: int = 0) -> bytes:
    row: dict[str, Any] = {
        "goal_id": goal,
        "status": "in_progress",
        "progress": progress,
        "work_remaining": 3,
        "targets": [],
    }
    if pad:
        row["pad"] = "x" * pad
    return orjson.dumps(row)


def write_rows(redis_url: str, batches: list[list[tuple[str, str, bytes]]]) -> None:
    """Write rows through the worker's projector, one MULTI/EXEC per batch."""

    async def go() -> None:
        redis = Redis.from_url(redis_url)
        projector = RedisProjector(redis)
        for batch in batches:
            p = Projection(KEYS)
            for reg, goal, row in batch:
                p.row(LI_OF_REG[reg], reg, goal, row)
            await projector.write(p)
        await redis.aclose()

    asyncio.run(go())


@contextlib.contextmanager
def _world_api(
    redis_server: EmbeddedRedis, log_dir: Path, **env: str
) -> Iterator[ApiProcess]:
    """The seeded auth world behind an API process with ``env``."""
    seed_world(redis_server.url)
    assert SETTINGS.jwt_hs256_secret is not None
    with api_process(
        redis_server.url, SETTINGS.jwt_hs256_secret.get_secret_value(), log_dir, **env
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def api(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    with _world_api(
        redis_server,
        Path(tmp_path_factory.mktemp("api")),
        MASTERY_STREAM_MAX_PER_TOKEN="2",
        MASTERY_STREAM_MAX_TOTAL="4",
        MASTERY_STREAM_QUEUE_EVENTS="20",
        MASTERY_STREAM_SEND_TIMEOUT_S=str(SEND_TIMEOUT_S),
        MASTERY_STREAM_HEARTBEAT_S="0.3",
        # Expired tokens are refused 1 s after exp (test_..._token_expires).
        MASTERY_JWT_LEEWAY_S="1",
    ) as proc:
        yield proc


@contextlib.contextmanager
def stream(
    api: ApiProcess,
    path: str,
    headers: dict[str, str],
    goal_ids: str = "goal-a",
    last_event_id: str | None = None,
) -> Iterator[SseStream]:
    h = dict(headers)
    if last_event_id is not None:
        h["last-event-id"] = last_event_id
    with (
        httpx.Client(timeout=httpx.Timeout(10.0)) as client,
        client.stream(
            "GET", f"{api.url}{path}/stream", params={"goal_ids": goal_ids}, headers=h
        ) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield SseStream(response)


def _post(api: ApiProcess, path: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(
        f"{api.url}{path}", json={"goal_ids": ["goal-a"]}, headers=headers
    )


def test_snapshot_is_the_post_table_then_changed_rows_follow(
    api: ApiProcess, redis_server: EmbeddedRedis
) -> None:
    with stream(api, LI_A, ADMIN) as s:
        snap = s.next("snapshot")
        page = _post(api, LI_A, ADMIN).json()
        assert snap.json() == {
            "query": {"goal_ids": ["goal-a"]},
            "column_headers": ["goal-a"],
            "data": page["data"],
        }
        assert [r["registration_id"] for r in page["data"]] == ["reg-a1", "reg-a2"]
        new = _row("goal-a", 0.75)
        write_rows(redis_server.url, [[("reg-a1", "goal-a", new)]])
        # An unchanged row is not published: the next event is reg-a2's.
        write_rows(redis_server.url, [[("reg-a1", "goal-a", new)]])
        write_rows(redis_server.url, [[("reg-a2", "goal-a", _row("goal-a", 0.25))]])
        first, second = s.next("row"), s.next("row")
        assert first.json() == {
            "registration_id": "reg-a1",
            "goal_id": "goal-a",
            "item": orjson.loads(new),
        }
        assert second.json()["registration_id"] == "reg-a2"
        assert snap.id is not None and first.id is not None and second.id is not None
        order = [tuple(map(int, i.split("-"))) for i in (snap.id, first.id, second.id)]
        assert order == sorted(order) and len(set(order)) == 3
        # Idle: what comes next is a heartbeat (within the client's 10 s read
        # timeout), and a change still follows it.
        idle = next(s.events())
        assert idle.event == ":", idle
        write_rows(redis_server.url, [[("reg-a2", "goal-a", _row("goal-a", 0.3))]])
        assert s.next("row").json()["item"]["progress"] == 0.3
    assert s.comments >= 1


def test_resume_with_last_event_id_loses_nothing(
    api: ApiProcess, redis_server: EmbeddedRedis
) -> None:
    """A writer publishes 120 changes in 120 transactions while the client
    reads 40, disconnects, reconnects with Last-Event-ID, and so on: the client
    sees every change exactly once, in order, and only one snapshot."""
    written = [
        ("reg-a1" if i % 2 else "reg-a2", round(0.001 * (i + 1), 3)) for i in range(120)
    ]

    def writer() -> None:
        for reg, progress in written:
            write_rows(redis_server.url, [[(reg, "goal-a", _row("goal-a", progress))]])
            time.sleep(0.002)

    seen: list[tuple[str, float]] = []
    snapshots = 0
    last_id: str | None = None
    thread = threading.Thread(target=writer)
    with stream(api, LI_A, ADMIN) as s:
        last_id = s.next("snapshot").id
        snapshots += 1
    thread.start()
    deadline = time.monotonic() + 60
    try:
        while len(seen) < len(written):
            assert time.monotonic() < deadline, f"{len(seen)} changes seen: {seen}"
            with stream(api, LI_A, ADMIN, last_event_id=last_id) as s:
                for ev in s.events():
                    if ev.event == "snapshot":
                        snapshots += 1
                    elif ev.event == "row":
                        row = ev.json()
                        seen.append((row["registration_id"], row["item"]["progress"]))
                        last_id = ev.id
                        if len(seen) % 40 == 0 or len(seen) == len(written):
                            break
                    if time.monotonic() > deadline:
                        break
    finally:
        thread.join()
    assert seen == written
    assert snapshots == 1


def test_an_id_older_than_the_window_gets_a_fresh_snapshot(
    api: ApiProcess, redis_server: EmbeddedRedis
) -> None:
    headers = bearer("admin-1", "p1", ("partner_admin",))
    path = "/learning-instances/li-b/metrics/status-and-progress"
    with stream(api, path, headers, goal_ids="goal-b") as s:
        old = s.next("snapshot").id
    # More changes than the window keeps (the worker trims with MAXLEN ~).
    rows = [("reg-b1", "goal-b", _row("goal-b", (i % 1000) / 1000)) for i in range(2)]
    write_rows(redis_server.url, [[rows[i % 2]] for i in range(CHANGES_MAXLEN // 10)])

    async def flood() -> None:
        redis = Redis.from_url(redis_server.url)
        async with redis.pipeline(transaction=False) as pipe:
            for i in range(CHANGES_MAXLEN + 500):
                pipe.xadd(
                    KEYS.changes("li-b"),
                    {"r": "reg-b1", "g": "goal-b", "row": _row("goal-b", i / 1e6)},
                    maxlen=CHANGES_MAXLEN,
                    approximate=True,
                )
            await pipe.execute()
        await redis.aclose()

    asyncio.run(flood())
    with stream(api, path, headers, goal_ids="goal-b", last_event_id=old) as s:
        first = s.next()
        assert first.event == "snapshot"
        latest = first.id
    with stream(api, path, headers, goal_ids="goal-b", last_event_id=latest) as s:
        write_rows(redis_server.url, [[("reg-b1", "goal-b", _row("goal-b", 0.5))]])
        assert s.next().event == "row"


@pytest.mark.parametrize(
    ("path", "headers", "status", "code"),
    [
        (LI_A, bearer("ti-a", "p1"), 200, None),  # instructor
        (LI_A, bearer("la1", "p1"), 403, "forbidden"),  # a learner: not the class
        (LI_A, bearer("admin-2", "p2", ("partner_admin",)), 404, "not_found"),
        (LI_A, {}, 401, "unauthorized"),
        (REG_A1, bearer("la1", "p1"), 200, None),  # the learner's own
        (REG_A1, bearer("la2", "p1"), 403, "forbidden"),
        (REG_A1, bearer("admin-2", "p2", ("partner_admin",)), 404, "not_found"),
    ],
)
def test_access_rules_are_those_of_the_post_endpoints(
    api: ApiProcess, path: str, headers: dict[str, str], status: int, code: str | None
) -> None:
    post = _post(api, path, headers)
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "GET", f"{api.url}{path}/stream?goal_ids=goal-a", headers=headers
        ) as response,
    ):
        assert response.status_code == status == post.status_code
        if code is not None:
            assert orjson.loads(response.read())["error"]["code"] == code
        else:
            assert (
                SseStream(response).next("snapshot").json()["data"]
                == (post.json()["data"])
            )


@pytest.mark.parametrize(
    ("query", "headers", "field"),
    [
        ("", {}, "goal_ids"),
        ("?goal_ids=goal-a,goal-a", {}, "goal_ids"),
        ("?goal_ids=bad%20id", {}, "goal_ids.0"),
    ],
)
def test_bad_requests_name_the_field(
    api: ApiProcess, query: str, headers: dict[str, str], field: str
) -> None:
    r = httpx.get(f"{api.url}{LI_A}/stream{query}", headers={**ADMIN, **headers})
    assert r.status_code == 400
    details = r.json()["error"]["details"]
    fields = (
        [d["field"] for d in details]
        if isinstance(details, list)
        else [details["field"]]
    )
    assert field in fields


def test_unknown_goal_is_404_after_access(api: ApiProcess) -> None:
    r = httpx.get(f"{api.url}{LI_A}/stream?goal_ids=goal-b", headers=ADMIN)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "goal_not_found"


def test_open_streams_are_bounded_per_token_and_in_total(api: ApiProcess) -> None:
    def status(headers: dict[str, str]) -> httpx.Response:
        return httpx.get(f"{api.url}{LI_A}/stream?goal_ids=goal-a", headers=headers)

    one, two, three = (bearer(f"ti-a-{i}", "p1", ("partner_admin",)) for i in range(3))
    with contextlib.ExitStack() as held:
        for _ in range(2):
            held.enter_context(stream(api, LI_A, one))
        r = status(one)
        assert r.status_code == 429
        assert r.headers["retry-after"]
        assert r.json()["error"]["code"] == "too_many_streams"
        assert r.json()["error"]["details"]["scope"] == "token"
        for _ in range(2):
            held.enter_context(stream(api, LI_A, two))
        r = status(three)  # a token with no stream open: the server is full
        assert r.status_code == 429
        assert r.json()["error"]["details"]["scope"] == "server"

    def snapshot() -> object:
        with stream(api, LI_A, three) as s:
            return s.next("snapshot")

    # Closed streams give their slots back (the server notices the disconnect).
    wait_for(
        snapshot,
        retry_on=(AssertionError,),
        timeout_s=5,
        interval_s=0.1,
        what="a released slot (a stream's snapshot)",
    )


def _slow_client(api: ApiProcess) -> socket.socket:
    """Opens a stream and never reads: a 4 KiB receive buffer fills at once."""
    host, port = api.url.removeprefix("http://").split(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, int(port)))
    sock.sendall(
        (
            f"GET {LI_A}/stream?goal_ids=goal-a HTTP/1.1\r\nHost: {host}\r\n"
            f"Authorization: {ADMIN['authorization']}\r\n\r\n"
        ).encode()
    )
    return sock


def _peek(sock: socket.socket) -> bytes:
    """What the server sent so far and the client has not read (it stays)."""
    try:
        return sock.recv(65536, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return b""


def _closed_by_server(sock: socket.socket, timeout_s: float) -> bool:
    sock.settimeout(timeout_s)
    try:
        while sock.recv(65536):
            pass
    except (TimeoutError, ConnectionResetError):
        return False
    return True


def test_a_client_that_stops_reading_is_dropped_and_memory_stays_flat(
    api: ApiProcess, redis_server: EmbeddedRedis
) -> None:
    """Each round: a client that reads nothing, and ~3 MB of changes (1,500
    rows of 2 KB) published to it. Its queue (20) overflows, the server ends
    the stream and closes the connection; the API's memory does not grow with
    what was published."""

    def flood(round_: int) -> None:
        batches = [
            [(reg, "goal-a", _row("goal-a", (round_ * 1000 + i) / 1e5, pad=2000))]
            for i in range(750)
            for reg in ("reg-a1", "reg-a2")
        ]
        write_rows(redis_server.url, batches)

    rss: list[int] = []
    for round_ in range(4):
        sock = _slow_client(api)
        # The snapshot is taken: what the flood writes goes to the stream.
        wait_for(
            lambda sock=sock: b"event: snapshot" in _peek(sock),
            timeout_s=10,
            what=f"round {round_}: the snapshot",
            interval_s=0.05,
        )
        flood(round_)
        # Not a wait: the client's not reading for longer than the send
        # timeout (2 s) is what the server must notice; reading sooner would
        # drain what it is stuck on.
        time.sleep(SEND_TIMEOUT_S + 0.5)
        assert _closed_by_server(sock, 10.0), f"round {round_}: still open"
        sock.close()
        rss.append(api.rss_kib())
    growth = rss[-1] - rss[0]
    # 9 MB were published to slow clients after the first round.
    assert growth < 3 * 1024, f"API RSS per round (KiB): {rss}"
    # The API still serves.
    assert _post(api, LI_A, ADMIN).status_code == 200


def _reads_of_rows(redis_url: str) -> int:
    """MGETs Redis has run, scripts included (INFO commandstats): a page that
    reads rows runs one."""
    stats = SyncRedis.from_url(redis_url).info("commandstats")
    return int(stats.get("cmdstat_mget", {}).get("calls", 0))


def test_etag_and_if_none_match_on_both_post_endpoints(
    api: ApiProcess, redis_server: EmbeddedRedis
) -> None:
    learner = bearer("la1", "p1")
    for path, headers in ((LI_A, ADMIN), (REG_A1, learner)):
        first = _post(api, path, headers)
        etag = first.headers["etag"]
        assert etag.startswith('"') and len(etag) == 58  # version + request
        before = _reads_of_rows(redis_server.url)
        again = _post(api, path, {**headers, "if-none-match": etag})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == etag
        other = _post(api, path, {**headers, "if-none-match": '"nope", W/' + etag})
        assert other.status_code == 304  # a list, weak comparison
        anything = _post(api, path, {**headers, "if-none-match": "*"})
        assert anything.status_code == 304
        assert _reads_of_rows(redis_server.url) == before  # no row was read
        stale = _post(api, path, {**headers, "if-none-match": '"nope"'})
        assert stale.status_code == 200 and stale.content == first.content
        assert _reads_of_rows(redis_server.url) == before + 1
    progress = first.json()["data"][0]["status_and_progress"][0]["progress"]
    write_rows(
        redis_server.url, [[("reg-a1", "goal-a", _row("goal-a", progress / 2 + 0.01))]]
    )
    changed = _post(api, REG_A1, {**learner, "if-none-match": etag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != etag


def test_a_page_tag_changes_whenever_its_body_can(
    api: ApiProcess, redis_server: EmbeddedRedis
) -> None:
    """The tag is a version, not a hash of the body: everything a body is
    made of must move it. Each change below is made the way the worker makes
    it (its projector), and each must give a 200 with the new body."""

    def page(body: dict[str, Any], held: str | None = None) -> httpx.Response:
        headers = {**ADMIN, **({"if-none-match": held} if held else {})}
        return httpx.post(f"{api.url}{LI_A}", json=body, headers=headers)

    query = {"goal_ids": ["goal-a"], "registrations_per_page": 1}
    first = page(query)
    tag = first.headers["etag"]
    assert page(query, tag).status_code == 304
    # Another request (paging, or the same goals asked for differently): its
    # own tag; a tag of one request never answers 304 to another.
    second_page = page({**query, "registration_offset": 1}, tag)
    assert second_page.status_code == 200 and second_page.headers["etag"] != tag
    # A row of another learner of the class, not on this page: the version
    # over-approximates (every page of the class gets a new tag).
    write_rows(redis_server.url, [[("reg-a2", "goal-a", _row("goal-a", 0.77))]])
    moved = page(query, tag)
    assert moved.status_code == 200 and moved.content == first.content
    tag = moved.headers["etag"]

    # A goal's template (the row of a learner without one) changes without a
    # row changing.
    async def new_template() -> None:
        redis = Redis.from_url(redis_server.url)
        p = Projection(KEYS)
        goal = GoalDefined(
            event_id="e-goal-a-again",
            occurred_at=T0,
            goal_id="goal-a",
            learning_instance_id="li-a",
            targets=[Target(learning_objective_id="lo-2")],
        )
        p.goal(goal, _row("goal-a", 0.0, pad=3))
        await RedisProjector(redis).write(p)
        await redis.aclose()

    asyncio.run(new_template())
    templated = page(query, tag)
    assert templated.status_code == 200 and templated.headers["etag"] != tag
    tag = templated.headers["etag"]
    # A caller the access rules refuse gets their answer (another partner's
    # class is not found, as without a tag), never a 304.
    other_partner = bearer("admin-2", "p2", ("partner_admin",))
    refused = httpx.post(
        f"{api.url}{LI_A}",
        json=query,
        headers={**other_partner, "if-none-match": tag},
    )
    untagged = httpx.post(f"{api.url}{LI_A}", json=query, headers=other_partner)
    assert refused.status_code == untagged.status_code == 404
    assert refused.content == untagged.content


@pytest.mark.parametrize(
    ("headers", "status", "view", "registration"),
    [
        (ADMIN, 200, "class", None),
        (bearer("ti-a", "p1"), 200, "class", None),
        (bearer("la1", "p1"), 200, "learner", "reg-a1"),
        (bearer("lb1", "p1"), 403, None, None),  # a learner of another LI
        (bearer("admin-2", "p2", ("partner_admin",)), 404, None, None),
    ],
)
def test_goals_lookup_tells_the_page_what_to_show(
    api: ApiProcess,
    headers: dict[str, str],
    status: int,
    view: str | None,
    registration: str | None,
) -> None:
    r = httpx.get(f"{api.url}/learning-instances/li-a/goals", headers=headers)
    assert r.status_code == status
    if status == 200:
        assert r.json() == {
            "learning_instance_id": "li-a",
            "view": view,
            "registration_id": registration,
            "goal_ids": ["goal-a"],
            # No names were given (the dashboard tests give some).
            "names": {"learning_instance": None, "goals": {}, "registrations": {}},
        }


def _next_row(s: SseStream, timeout_s: float = 10.0) -> dict[str, Any]:
    """The next row event within ``timeout_s`` (heartbeats keep coming while
    nothing else does, so a frozen stream would otherwise block for ever)."""
    deadline = time.monotonic() + timeout_s
    for ev in s.events():
        if ev.event == "row":
            row: dict[str, Any] = ev.json()
            return row
        assert ev.event in (":", "snapshot"), ev
        assert time.monotonic() < deadline, "no row: the stream is frozen"
    raise EOFError("the stream ended")


def test_a_last_event_id_past_the_end_never_freezes_the_class_stream(
    api: ApiProcess, redis_server: EmbeddedRedis
) -> None:
    """Issue 18, point 4: a learner who opens its own stream first with an id
    past the end must not move the reader the class stream then shares."""
    learner = bearer("la1", "p1")
    with stream(api, REG_A1, learner, last_event_id="18446744073709551615-0") as own:
        with stream(api, LI_A, ADMIN) as whole:
            whole.next("snapshot")
            write_rows(redis_server.url, [[("reg-a2", "goal-a", _row("goal-a", 0.31))]])
            row = _next_row(whole)
            assert (row["registration_id"], row["item"]["progress"]) == ("reg-a2", 0.31)
        # "From now" for the learner itself: its next change arrives.
        write_rows(redis_server.url, [[("reg-a1", "goal-a", _row("goal-a", 0.42))]])
        row = _next_row(own)
        assert (row["registration_id"], row["item"]["progress"]) == ("reg-a1", 0.42)


@pytest.mark.parametrize("value", ["yesterday", "12", "1-2-3", "-1-0"])
def test_a_malformed_last_event_id_gets_a_fresh_snapshot(
    api: ApiProcess, value: str
) -> None:
    with stream(api, LI_A, ADMIN, last_event_id=value) as s:
        first = s.next()
        assert first.event == "snapshot"
    # The query parameter, for clients that cannot set the header.
    with (
        httpx.Client(timeout=httpx.Timeout(10.0)) as client,
        client.stream(
            "GET",
            f"{api.url}{LI_A}/stream",
            params={"goal_ids": "goal-a", "last_event_id": value},
            headers=ADMIN,
        ) as response,
    ):
        assert response.status_code == 200
        assert SseStream(response).next().event == "snapshot"


@pytest.fixture(scope="module")
def partner_capped_api(
    redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiProcess]:
    with _world_api(
        redis_server,
        Path(tmp_path_factory.mktemp("api-partner")),
        MASTERY_STREAM_MAX_PER_TOKEN="2",
        MASTERY_STREAM_MAX_PER_PARTNER="3",
        MASTERY_STREAM_MAX_TOTAL="8",
        MASTERY_STREAM_HEARTBEAT_S="0.3",
    ) as proc:
        yield proc


def test_a_partner_at_its_stream_share_leaves_other_partners_unaffected(
    partner_capped_api: ApiProcess,
) -> None:
    api = partner_capped_api
    li_x = "/learning-instances/li-x/metrics/status-and-progress"

    def opened(path: str, headers: dict[str, str]) -> tuple[int, Any]:
        """Status and error body of a stream request; a stream that opens is
        closed again at once."""
        with (
            httpx.Client(timeout=10) as client,
            client.stream(
                "GET", f"{api.url}{path}/stream?goal_ids=goal-a", headers=headers
            ) as response,
        ):
            if response.status_code == 200:
                return 200, None
            return response.status_code, (
                orjson.loads(response.read()),
                response.headers.get("retry-after"),
            )

    a_tokens = [bearer(f"admin-a{i}", "p1", ("partner_admin",)) for i in range(3)]
    open_streams: list[SseStream] = []  # referenced: a dropped one disconnects
    with contextlib.ExitStack() as held:
        # Partner A: 3 streams from two tokens, its share.
        for headers in (a_tokens[0], a_tokens[0], a_tokens[1]):
            open_streams.append(held.enter_context(stream(api, LI_A, headers)))
            open_streams[-1].next("snapshot")
        status, (body, retry_after) = opened(LI_A, a_tokens[2])  # a fresh token of A
        assert status == 429, body
        assert body["error"]["details"] == {"limit": 3, "scope": "partner"}
        assert retry_after
        # Partner B is unaffected: its streams open and carry rows.
        b_admin = bearer("admin-x", "p2", ("partner_admin",))
        for _ in range(2):
            open_streams.append(
                held.enter_context(stream(api, li_x, b_admin, goal_ids="goal-x"))
            )
            assert open_streams[-1].next("snapshot").json()["data"]
    # A's slots are freed with its streams.
    with stream(api, LI_A, a_tokens[2]) as s:
        assert s.next().event == "snapshot"


def test_a_stream_ends_when_its_token_expires_with_a_refresh_event(
    api: ApiProcess, redis_server: EmbeddedRedis
) -> None:
    """Issue 18, point 12: rows stop when the POST endpoints would refuse the
    token (exp plus the 1 s leeway here), with an event saying why."""
    headers = bearer("admin-exp", "p1", ("partner_admin",), ttl_s=3)
    with stream(api, LI_A, headers) as s:
        s.next("snapshot")
        write_rows(redis_server.url, [[("reg-a2", "goal-a", _row("goal-a", 0.77))]])
        assert _next_row(s)["item"]["progress"] == 0.77  # live while valid
        deadline = time.monotonic() + 15
        for ev in s.events():
            assert time.monotonic() < deadline, "the stream outlived its token"
            if ev.event == "end":
                assert ev.json() == {"reason": "token_expired"}
                break
            assert ev.event == ":", ev  # heartbeats only
    assert _post(api, LI_A, headers).status_code == 401


def test_an_instructor_s_registration_has_no_stream_either(api: ApiProcess) -> None:
    with (
        httpx.Client(timeout=10) as client,
        client.stream(
            "GET",
            f"{api.url}/registrations/reg-ti-a/metrics/status-and-progress/stream",
            params={"goal_ids": "goal-a"},
            headers=ADMIN,
        ) as response,
    ):
        assert response.status_code == 409
        error = orjson.loads(response.read())["error"]
        assert error["code"] == "registration_not_a_learner"
