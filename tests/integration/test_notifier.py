"""Webhooks end to end: Apache Kafka, Redis, a worker, the API and ``mastery
notifier`` processes, and a real HTTP receiver on loopback that verifies every
signature with the ``standardwebhooks`` library (docs/webhooks.md).

The expected deliveries are the oracle's transitions (every goal's full row
after every single event, tests/oracle.py) of the events produced.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis import Redis
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.devstack.embedded import free_port
from app.devstack.embedded_kafka import EmbeddedKafka
from app.devstack.stack import DevStack, post_json
from app.devstack.workload import Workload, assistments, simulated
from app.notifier.service import notifier_group
from infra.topic_names import TopicNames
from infra.webhook_store import WebhookKeys
from processors.catalog import Catalog
from schemas.events import AttemptGraded, RegistrationCreated
from schemas.transitions import transition_id
from schemas.webhooks import STATUS_CHANGED_TYPE
from tests.integration.helpers import (
    group_behind,
    partner_of,
    produce,
    produce_catalog_first,
    started_stack,
)
from tests.oracle import Transition, expected_transitions
from tests.unit.test_transitions import TRAIN
from tests.waiting import wait_for
from tests.webhook_receiver import Hook, Receiver

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: The notifier's settings in these tests: a lease that expires soon after a
#: kill, and the retry schedule at a thousandth (5 ms ... 10.8 s, 86 s).
NOTIFIER_ENV = {
    "MASTERY_NOTIFIER_LEASE_S": "2",
    "MASTERY_NOTIFIER_RETRY_SCALE": "0.001",
    "MASTERY_NOTIFIER_TIMEOUT_S": "5",
}


@pytest.fixture
def stack(tmp_path: Path, kafka_server: EmbeddedKafka) -> Iterator[DevStack]:
    with started_stack(kafka_server, tmp_path, "hooks", 4) as s:
        yield s


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.close()


def _subscribe(stack: DevStack, receiver: Receiver, partner: str, path: str) -> Hook:
    hook = receiver.hooks[path] = Hook()
    status, body = post_json(
        f"{stack.api_url}/webhooks",
        {"url": receiver.url(path), "event_types": [STATUS_CHANGED_TYPE]},
        token=stack.token(partner_id=partner),
    )
    assert status == 201, body
    assert isinstance(body, dict)
    hook.secret = body["secret"]
    return hook


def _expected(
    workload: Workload, events: list[RegistrationCreated | AttemptGraded]
) -> dict[str, dict[str, list[Transition]]]:
    """partner -> registration -> its transitions, in order."""
    catalog = Catalog()
    for event in workload.catalog:
        catalog.apply(event)
    li_of = {r.registration_id: r.learning_instance_id for r in workload.registrations}
    out: dict[str, dict[str, list[Transition]]] = {}
    for t in expected_transitions(catalog, events):
        partner = partner_of(workload, li_of[t[0]])
        out.setdefault(partner, {}).setdefault(t[0], []).append(t)
    return out


def _got(hook: Hook) -> dict[str, list[Transition]]:
    """registration -> the transitions delivered, first delivery of each id."""
    seen: set[str] = set()
    out: dict[str, list[Transition]] = {}
    for msg_id, event in hook.delivered:
        if msg_id in seen:
            continue
        seen.add(msg_id)
        d = event["data"]
        assert event["id"] == msg_id == d["transition_id"]
        out.setdefault(d["registration_id"], []).append(
            (
                d["registration_id"],
                d["goal_id"],
                d["previous_status"],
                d["status"],
                d["event_id"],
            )
        )
    return out


def _count(expected: dict[str, list[Transition]]) -> int:
    return sum(len(v) for v in expected.values())


def _wait_for(hook: Hook, n: int, timeout_s: float = 120) -> None:
    wait_for(
        lambda: len({msg_id for msg_id, _ in hook.delivered}),
        accept=lambda delivered: delivered >= n,
        timeout_s=timeout_s,
        interval_s=0.2,
        what=f"{n} distinct deliveries",
    )


def _wait_until_drained(
    stack: DevStack, partners: list[str], timeout_s: float = 60
) -> None:
    """Until the notifiers have nothing left to send: their group has
    committed every status change (only after Redis took the appends,
    app/notifier/service.py) and each partner's outbox is empty (its head goes only
    once delivered or dead-lettered). A receiver then has all it will get."""
    redis = Redis.from_url(stack.redis.url)
    keys = WebhookKeys()
    outboxes = [keys.outbox(p, _webhook_id(stack, p)) for p in partners]
    topic = TopicNames(stack.settings.topic_prefix).status_changes
    group = notifier_group(stack.settings)

    def left() -> dict[str, Any]:
        return {
            "records behind": group_behind(stack.kafka.bootstrap_servers, group, topic),
            "outbox entries": {key: redis.xlen(key) for key in outboxes},
        }

    wait_for(
        left,
        accept=lambda s: (
            s["records behind"]
            and not any(s["records behind"].values())
            and not any(s["outbox entries"].values())
        ),
        timeout_s=timeout_s,
        interval_s=0.2,
        what="the notifiers to take in and send everything",
    )
    redis.close()


def _two_partners() -> Workload:
    """A simulated class (partner-demo) and an ASSISTments class
    (partner-assistments) in one workload."""
    a = simulated(
        learning_instances=1, learners_per_instance=10, attempts_per_learner=30, seed=5
    )
    b = assistments(TRAIN, max_learners=12, learners_per_instance=12)
    return Workload(
        catalog=[*a.catalog, *b.catalog],
        registrations=[*a.registrations, *b.registrations],
        attempts=[*a.attempts, *b.attempts],
    )


def test_each_partner_gets_exactly_its_transitions_signed_and_in_order(
    stack: DevStack, receiver: Receiver
) -> None:
    workload = _two_partners()
    partners = sorted({partner_of(workload, li) for li in workload.learning_instances})
    assert len(partners) == 2
    hooks = {p: _subscribe(stack, receiver, p, f"/{p}") for p in partners}
    # Two notifiers share the work (the intake's group, the subscriptions'
    # leases); both start before any change is written.
    ports = [free_port(), free_port()]
    for i, port in enumerate(ports):
        stack.start_notifier(
            f"notifier-{i + 1}", extra_env=NOTIFIER_ENV, metrics_port=port
        )
    produce_catalog_first(stack, workload)
    events = [*workload.registrations, *workload.attempts]
    produce(stack, events)
    expected = _expected(workload, events)

    for partner, hook in hooks.items():
        _wait_for(hook, _count(expected[partner]))
    _wait_until_drained(stack, partners)  # anything extra would have come
    for partner, hook in hooks.items():
        assert _got(hook) == expected[partner]
        assert len(hook.delivered) == _count(expected[partner])  # no duplicates
        assert hook.bad_signatures == 0
        # Partner isolation: every delivery names this partner.
        assert {e["data"]["partner_id"] for _, e in hook.delivered} == {partner}
    kinds = {
        (t[2], t[3]) for regs in expected.values() for ts in regs.values() for t in ts
    }
    assert {(None, "no_work"), ("no_work", "in_progress")} <= kinds

    # The two notifiers' metrics add up to what the receiver got.
    total = sum(_count(e) for e in expected.values())
    answered = sum(len(h.delivered) for h in hooks.values())
    metrics = _wait_for_metrics(
        ports,
        lambda m: (
            m['mastery_notifier_deliveries_total{outcome="delivered"}'] == answered
        ),
    )
    assert metrics["mastery_notifier_appends_total"] == total
    assert metrics["mastery_notifier_changes_total"] == total
    assert metrics["mastery_notifier_request_seconds_count"] == answered
    for outcome in ("failed", "dead_lettered", "outbox_full", "redelivered"):
        assert metrics[f'mastery_notifier_deliveries_total{{outcome="{outcome}"}}'] == 0
    assert metrics["mastery_notifier_subscriptions_held"] == len(hooks)
    assert metrics["mastery_notifier_outbox_max_entries"] == 2 * 10_000
    # Every partition's lag is known to one of them, and all is taken in.
    lags = {k: v for k, v in metrics.items() if "consumer_lag" in k}
    assert len(lags) == 4 and set(lags.values()) == {0}, lags
    for port in ports:
        assert _http(port, "/healthz") == (200, {"status": "ok"})
        assert _http(port, "/readyz") == (200, {"status": "ready"})

    # The recorded attempts answer GET /webhooks/{id}/deliveries.
    partner = partners[0]
    token = stack.token(partner_id=partner)
    status, listed = _get(stack, "/webhooks", token)
    assert status == 200
    webhook_id = listed["webhooks"][0]["id"]
    status, deliveries = _get(stack, f"/webhooks/{webhook_id}/deliveries", token)
    assert status == 200
    recent = deliveries["deliveries"]
    assert recent and {d["outcome"] for d in recent} == {"delivered"}
    assert {d["status_code"] for d in recent} == {204}


def test_a_bad_signature_is_detected_by_the_receivers_library(
    stack: DevStack, receiver: Receiver
) -> None:
    workload = simulated(
        learning_instances=1, learners_per_instance=3, attempts_per_learner=5, seed=2
    )
    partner = partner_of(workload, workload.learning_instances[0])
    hook = _subscribe(stack, receiver, partner, "/signed")
    stack.start_notifier(extra_env=NOTIFIER_ENV)
    produce_catalog_first(stack, workload)
    produce(stack, [*workload.registrations, *workload.attempts])
    _wait_for(hook, 3)
    assert hook.bad_signatures == 0
    # The same request with its body changed, or signed with another
    # secret, fails verification.
    msg_id, event = hook.delivered[0]
    body = orjson.dumps(event)
    forged = Webhook("whsec_" + "A" * 32).sign(msg_id, _now(), body)
    headers = {
        "webhook-id": msg_id,
        "webhook-timestamp": str(int(_now().timestamp())),
        "webhook-signature": forged,
    }
    with pytest.raises(WebhookVerificationError):
        Webhook(hook.secret).verify(body, headers)
    genuine = Webhook(hook.secret).sign(msg_id, _now(), body)
    tampered = body.replace(b'"status"', b'"status" ', 1)
    with pytest.raises(WebhookVerificationError):
        Webhook(hook.secret).verify(tampered, {**headers, "webhook-signature": genuine})


def test_a_killed_notifier_and_a_receiver_down_lose_nothing(
    stack: DevStack, receiver: Receiver
) -> None:
    """The receiver answers 503 for a while (retried with backoff, then caught
    up, in order); the notifier is killed (SIGKILL) while a request waits for
    its answer, and a new one sends it again with the same webhook-id."""
    workload = simulated(
        learning_instances=1, learners_per_instance=12, attempts_per_learner=25, seed=8
    )
    partner = partner_of(workload, workload.learning_instances[0])
    hook = _subscribe(stack, receiver, partner, "/flaky")
    events = [*workload.registrations, *workload.attempts]
    expected = _expected(workload, events)[partner]
    n = _count(expected)
    learner = next(r for r in workload.registrations if r.role == "learner")
    first = expected[learner.registration_id][0]
    # The first registration's first transition will hang until the kill.
    hook.hang_id = transition_id(first[4], first[1])
    hook.hang_s = 8.0
    notifier = stack.start_notifier("notifier-1", extra_env=NOTIFIER_ENV)
    produce_catalog_first(stack, workload)
    produce(stack, events)
    wait_for(
        lambda: hook.hang_id is None,  # taken by the request that hangs
        timeout_s=60,
        interval_s=0.05,
        what="the first delivery, the one that hangs",
    )
    notifier.send_signal(signal.SIGKILL)
    notifier.wait(timeout=10)
    # Down for 6 s from now: the new notifier (which takes over once the
    # killed one's 2 s lease has expired) fails its first attempts.
    hook.down_until = time.monotonic() + 6.0
    stack.start_notifier("notifier-2", extra_env=NOTIFIER_ENV)
    _wait_for(hook, n)
    _wait_until_drained(stack, [partner])
    assert _got(hook) == expected
    hung = transition_id(first[4], first[1])
    assert hook.received.count(hung) >= 2  # sent again after the kill
    assert hook.bad_signatures == 0
    # While down, attempts were answered 503 and retried until delivered.
    assert hook.refused > 0
    token = stack.token(partner_id=partner)
    _, listed = _get(stack, "/webhooks", token)
    webhook_id = listed["webhooks"][0]["id"]
    _, deliveries = _get(stack, f"/webhooks/{webhook_id}/deliveries", token)
    outcomes = {d["outcome"] for d in deliveries["deliveries"]}
    assert "delivered" in outcomes


def _get(stack: DevStack, path: str, token: str) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{stack.api_url}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read() or b"null")


def _deliveries(stack: DevStack, webhook_id: str, token: str) -> Any:
    """The recorded delivery attempts of a subscription (the API's answer)."""
    status, listed = _get(stack, f"/webhooks/{webhook_id}/deliveries", token)
    assert status == 200, listed
    return listed


def _outcomes(listed: Any) -> list[str]:
    return [d["outcome"] for d in listed["deliveries"]]


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _webhook_id(stack: DevStack, partner: str) -> str:
    _, listed = _get(stack, "/webhooks", stack.token(partner_id=partner))
    return str(listed["webhooks"][0]["id"])


def test_a_receiver_down_past_the_deadline_gets_dead_letters_it_can_redeliver(
    stack: DevStack, receiver: Receiver
) -> None:
    """At a ten-thousandth of the schedule the 24 h are 8.6 s: every change
    is dead-lettered (recorded so), and the redeliver action sends one again
    once the receiver is back, with the same webhook-id."""
    workload = simulated(
        learning_instances=1, learners_per_instance=2, attempts_per_learner=6, seed=4
    )
    partner = partner_of(workload, workload.learning_instances[0])
    hook = _subscribe(stack, receiver, partner, "/dead")
    hook.down_until = time.monotonic() + 3600
    events = [*workload.registrations, *workload.attempts]
    n = _count(_expected(workload, events)[partner])
    stack.start_notifier(
        extra_env={**NOTIFIER_ENV, "MASTERY_NOTIFIER_RETRY_SCALE": "0.0001"}
    )
    produce_catalog_first(stack, workload)
    produce(stack, events)
    token = stack.token(partner_id=partner)
    webhook_id = _webhook_id(stack, partner)
    listed = wait_for(
        lambda: _deliveries(stack, webhook_id, token),
        accept=lambda listed: _outcomes(listed).count("dead_lettered") == n,
        timeout_s=90,
        interval_s=0.5,
        what=f"{n} dead letters",
    )
    dead = [d for d in listed["deliveries"] if d["outcome"] == "dead_lettered"]
    failed = [d for d in listed["deliveries"] if d["outcome"] == "failed"]
    assert failed, "retried before the deadline"
    assert all(d["status_code"] == 503 for d in (*failed, *dead))
    assert hook.delivered == []
    # The receiver is back; one dead letter is redelivered on request.
    hook.down_until = 0.0
    delivery_id = dead[0]["delivery_id"]
    status, queued = post_json(
        f"{stack.api_url}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
        {},
        token=token,
    )
    assert status == 202, queued
    _wait_for(hook, 1, timeout_s=30)
    assert [msg_id for msg_id, _ in hook.delivered] == [delivery_id]
    assert hook.bad_signatures == 0


def test_a_slow_partner_delays_nobody_else(stack: DevStack, receiver: Receiver) -> None:
    """Partner A's endpoint takes 1 s per answer; partner B's changes are all
    delivered while A's are still being sent."""
    workload = _two_partners()
    a, b = sorted({partner_of(workload, li) for li in workload.learning_instances})
    events = [*workload.registrations, *workload.attempts]
    expected = _expected(workload, events)
    slow = _subscribe(stack, receiver, a, "/slow")
    fast = _subscribe(stack, receiver, b, "/fast")
    slow.delay_s = 1.0
    stack.start_notifier(extra_env=NOTIFIER_ENV)
    produce_catalog_first(stack, workload)
    produce(stack, events)
    _wait_for(fast, _count(expected[b]), timeout_s=60)
    assert _got(fast) == expected[b]
    assert len({i for i, _ in slow.delivered}) < _count(expected[a]) / 2


def test_a_notifier_refuses_private_addresses_when_they_are_not_allowed(
    stack: DevStack, receiver: Receiver
) -> None:
    """The subscription was accepted by an API that allows loopback URLs; a
    notifier that does not allow them sends nothing there and records why
    (the check made at delivery time, against DNS rebinding)."""
    workload = simulated(
        learning_instances=1, learners_per_instance=2, attempts_per_learner=3, seed=6
    )
    partner = partner_of(workload, workload.learning_instances[0])
    hook = _subscribe(stack, receiver, partner, "/private")
    stack.start_notifier(
        extra_env={**NOTIFIER_ENV, "MASTERY_WEBHOOKS_ALLOW_PRIVATE_URLS": "false"}
    )
    produce_catalog_first(stack, workload)
    produce(stack, [*workload.registrations, *workload.attempts])
    token = stack.token(partner_id=partner)
    webhook_id = _webhook_id(stack, partner)
    listed = wait_for(
        lambda: _deliveries(stack, webhook_id, token),
        accept=lambda listed: listed["deliveries"],
        timeout_s=60,
        interval_s=0.3,
        what="an attempt recorded",
    )
    attempt = listed["deliveries"][-1]
    assert attempt["outcome"] == "failed"
    assert attempt["status_code"] is None
    assert "refused" in attempt["response"] and "loopback" in attempt["response"]
    assert hook.received == []


def _http(port: int, path: str) -> tuple[int, Any]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(
            f"http://127.0.0.1:{port}{path}", timeout=5
        ) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        body, status = exc.read(), exc.code
    if path == "/metrics":
        return status, body.decode()
    return status, orjson.loads(body)


def _metrics(ports: list[int]) -> dict[str, float]:
    """The notifiers' samples summed, by ``name`` or ``name{label="v"}``."""
    out: dict[str, float] = {}
    for port in ports:
        status, text = _http(port, "/metrics")
        assert status == 200
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(
                    f'{k}="{v}"' for k, v in sorted(sample.labels.items())
                )
                key = f"{sample.name}{{{labels}}}" if labels else sample.name
                out[key] = out.get(key, 0.0) + sample.value
    return out


def _wait_for_metrics(
    ports: list[int], ok: Any, timeout_s: float = 20
) -> dict[str, float]:
    """The metrics once ``ok(metrics)`` (a delivery is counted after its
    answer is read; the lag and readiness are sampled every 5 s)."""

    def metrics_when_ready() -> dict[str, float]:
        metrics = _metrics(ports)
        ready = all(_http(p, "/readyz")[0] == 200 for p in ports)
        return {**metrics, "ready": float(ready)}

    metrics = wait_for(
        metrics_when_ready,
        accept=lambda m: ok(m) and m["ready"] and any("consumer_lag" in k for k in m),
        timeout_s=timeout_s,
        interval_s=0.5,
        what="the notifiers' metrics, ready",
    )
    del metrics["ready"]
    return metrics


def test_a_full_outbox_dead_letters_what_it_refuses_and_it_can_be_redelivered(
    stack: DevStack, receiver: Receiver
) -> None:
    """An outbox bound of 2 and a receiver that takes 1 s per answer: every
    change is either delivered (in order) or dead-lettered with "outbox
    full" in GET …/deliveries, never both, never neither; the metrics count
    the same; a refused change is sent on request."""
    workload = simulated(
        learning_instances=1, learners_per_instance=2, attempts_per_learner=6, seed=4
    )
    partner = partner_of(workload, workload.learning_instances[0])
    hook = _subscribe(stack, receiver, partner, "/bounded")
    hook.delay_s = 1.0
    events = [*workload.registrations, *workload.attempts]
    expected = _expected(workload, events)[partner]
    n = _count(expected)
    assert 4 < n < 100  # overflows, and every record stays listed
    port = free_port()
    stack.start_notifier(
        extra_env={**NOTIFIER_ENV, "MASTERY_NOTIFIER_OUTBOX_MAX": "2"},
        metrics_port=port,
    )
    produce_catalog_first(stack, workload)
    produce(stack, events)
    token = stack.token(partner_id=partner)
    webhook_id = _webhook_id(stack, partner)
    listed = wait_for(
        lambda: _deliveries(stack, webhook_id, token),
        accept=lambda listed: (
            sum(_outcomes(listed).count(o) for o in ("dead_lettered", "delivered")) == n
        ),
        timeout_s=120,
        interval_s=0.5,
        what=f"{n} deliveries delivered or dead-lettered",
    )
    records = listed["deliveries"]
    full = [d for d in records if d["outcome"] == "dead_lettered"]
    delivered = [d for d in records if d["outcome"] == "delivered"]
    assert full, "the bound of 2 refused nothing"
    assert all(d["response"].startswith("outbox full: 2 ") for d in full)
    assert all(d["status_code"] is None for d in full)
    refused = {d["delivery_id"] for d in full}
    got = [msg_id for msg_id, _ in hook.delivered]
    assert set(got) == {d["delivery_id"] for d in delivered}
    assert not refused & set(got)
    every = {transition_id(t[4], t[1]) for ts in expected.values() for t in ts}
    assert refused | set(got) == every
    # What was kept arrived in order: each registration's sequence is the
    # oracle's with the refused ones left out.
    kept = {
        reg: [t for t in ts if transition_id(t[4], t[1]) not in refused]
        for reg, ts in expected.items()
    }
    assert _got(hook) == {reg: ts for reg, ts in kept.items() if ts}
    metrics = _wait_for_metrics(
        [port],
        lambda m: (
            m['mastery_notifier_deliveries_total{outcome="delivered"}'] == len(got)
        ),
    )
    assert metrics['mastery_notifier_deliveries_total{outcome="outbox_full"}'] == len(
        refused
    )
    assert metrics["mastery_notifier_appends_total"] == len(got)
    assert metrics["mastery_notifier_outbox_longest_entries"] <= 2
    # One refused change is sent on request, with its own webhook-id.
    delivery_id = sorted(refused)[0]
    status, queued = post_json(
        f"{stack.api_url}/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
        {},
        token=token,
    )
    assert status == 202, queued
    _wait_for(hook, len(got) + 1, timeout_s=30)
    assert hook.delivered[-1][0] == delivery_id
    assert hook.bad_signatures == 0
    metrics = _wait_for_metrics(
        [port],
        lambda m: m['mastery_notifier_deliveries_total{outcome="redelivered"}'] == 1,
    )
