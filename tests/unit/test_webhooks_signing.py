"""What a webhook delivery is (infra/webhooks.py): the CloudEvent, its Standard
Webhooks signature checked with the ``standardwebhooks`` library itself, the
retry schedule, and the URLs deliveries may go to; and that docs/webhooks.md
shows what the code produces."""

from __future__ import annotations

import base64
import ipaddress
import random
import re
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from cloudevents.core.bindings.http import HTTPMessage, from_structured_event
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from infra.webhooks import (
    MIN_RETRY_DELAY_S,
    RETRY_CAPS_S,
    RETRY_DEADLINE_S,
    UrlRefused,
    check_url,
    cloudevent,
    new_secret,
    next_delay,
    refusal,
    retry_delays,
    sign,
    webhook_request,
)
from schemas.transitions import StatusChanged, transition_id
from schemas.webhooks import STATUS_CHANGED_TYPE

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"

#: The transition docs/webhooks.md shows as its payload example.
EXAMPLE = StatusChanged(
    transition_id=transition_id(
        "3f2b6c1e-0d7a-4f51-9a7e-2b1c5d8e9f01", "goal-algebra-1"
    ),
    partner_id="partner-demo",
    learning_instance_id="li-algebra-2026",
    registration_id="reg-0042",
    user_id="learner-0042",
    goal_id="goal-algebra-1",
    previous_status="in_progress",
    status="struggling",
    occurred_at=datetime(2026, 3, 2, 14, 5, 31, tzinfo=UTC),
    event_id="3f2b6c1e-0d7a-4f51-9a7e-2b1c5d8e9f01",
    source_partition=3,
    source_offset=18234,
)
#: The secret and the sending time of docs/webhooks.md's header example.
DOC_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
DOC_SENT_AT = datetime(2026, 3, 2, 14, 5, 32, tzinfo=UTC)


def _now() -> datetime:
    return datetime.now(UTC)


# --- signing -----------------------------------------------------------------


def test_our_signature_verifies_with_the_standard_webhooks_library() -> None:
    secret = new_secret()
    headers, body = webhook_request(EXAMPLE, secret, _now())
    payload = Webhook(secret).verify(body, headers)
    assert payload["data"] == EXAMPLE.model_dump(mode="json")


def test_a_tampered_body_fails_verification() -> None:
    secret = new_secret()
    headers, body = webhook_request(EXAMPLE, secret, _now())
    tampered = body.replace(b'"struggling"', b'"complete"')
    assert tampered != body
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(tampered, headers)


def test_another_secret_fails_verification() -> None:
    headers, body = webhook_request(EXAMPLE, new_secret(), _now())
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(body, headers)


def test_a_changed_id_or_timestamp_fails_verification() -> None:
    secret = new_secret()
    headers, body = webhook_request(EXAMPLE, secret, _now())
    for name, value in (
        ("webhook-id", "another-id"),
        ("webhook-timestamp", str(int(headers["webhook-timestamp"]) + 1)),
    ):
        with pytest.raises(WebhookVerificationError):
            Webhook(secret).verify(body, headers | {name: value})


def test_the_webhook_id_is_the_transition_id_and_a_redelivery_keeps_it() -> None:
    secret = new_secret()
    first, body1 = webhook_request(EXAMPLE, secret, _now() - timedelta(minutes=2))
    again, body2 = webhook_request(EXAMPLE, secret, _now())
    assert first["webhook-id"] == again["webhook-id"] == EXAMPLE.transition_id
    assert body1 == body2  # the same bytes, signed at another time
    assert first["webhook-timestamp"] != again["webhook-timestamp"]
    assert first["webhook-signature"] != again["webhook-signature"]
    for headers in (first, again):
        Webhook(secret).verify(body2, headers)


def test_the_signature_is_v1_hmac_sha256_of_id_timestamp_and_body() -> None:
    # The spec's construction, by hand, so the library cannot drift from it.
    import hashlib
    import hmac

    secret = new_secret()
    at = datetime(2026, 3, 2, 14, 5, 32, 900_000, tzinfo=UTC)
    _, body = cloudevent(EXAMPLE)
    headers = sign(secret, "msg-1", body, at)
    assert headers["webhook-timestamp"] == str(int(at.timestamp()))
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"msg-1.{int(at.timestamp())}.".encode() + body, hashlib.sha256)
    assert (
        headers["webhook-signature"] == "v1," + base64.b64encode(mac.digest()).decode()
    )


def test_secrets_are_whsec_and_24_to_64_random_bytes() -> None:
    secrets = {new_secret() for _ in range(50)}
    assert len(secrets) == 50
    for secret in secrets:
        assert secret.startswith("whsec_")
        assert 24 <= len(base64.b64decode(secret.removeprefix("whsec_"))) <= 64


# --- the CloudEvent ----------------------------------------------------------


def test_the_body_is_a_structured_cloudevent_of_the_transition() -> None:
    headers, body = cloudevent(EXAMPLE)
    assert headers == {"content-type": "application/cloudevents+json"}
    event = from_structured_event(HTTPMessage(headers=headers, body=body))
    assert event.get_specversion() == "1.0"
    assert event.get_type() == STATUS_CHANGED_TYPE
    assert event.get_source() == "/learning-instances/li-algebra-2026"
    assert event.get_subject() == "reg-0042"
    assert event.get_id() == EXAMPLE.transition_id
    assert event.get_time() == EXAMPLE.occurred_at
    assert event.get_datacontenttype() == "application/json"
    assert event.get_data() == EXAMPLE.model_dump(mode="json")
    assert StatusChanged.model_validate(event.get_data()) == EXAMPLE


def test_the_same_transition_gives_the_same_bytes() -> None:
    copy = StatusChanged.from_bytes(EXAMPLE.to_bytes())
    assert cloudevent(copy) == cloudevent(EXAMPLE)


def test_a_first_row_has_a_null_previous_status() -> None:
    first = EXAMPLE.model_copy(update={"previous_status": None, "status": "no_work"})
    data = orjson.loads(cloudevent(first)[1])["data"]
    assert data["previous_status"] is None
    assert data["status"] == "no_work"


# --- retries -----------------------------------------------------------------


def test_the_caps_grow_and_stay_within_three_hours() -> None:
    assert list(RETRY_CAPS_S) == sorted(RETRY_CAPS_S)
    assert RETRY_CAPS_S[0] <= 5
    assert RETRY_CAPS_S[-1] <= 3 * 3600
    assert RETRY_DEADLINE_S <= 24 * 3600


@pytest.mark.parametrize("seed", range(20))
def test_every_delay_is_within_its_cap_and_the_span_is_the_deadline(seed: int) -> None:
    delays = retry_delays(random.Random(seed))
    assert sum(delays) == pytest.approx(RETRY_DEADLINE_S)
    assert sum(delays) <= 24 * 3600 + 1e-6
    for n, delay in enumerate(delays, start=1):
        cap = RETRY_CAPS_S[min(n, len(RETRY_CAPS_S)) - 1]
        assert delay <= cap
        if n < len(delays):  # the last one is cut at the deadline
            assert delay >= MIN_RETRY_DELAY_S
    # Retried all day, not a handful of times: 3 h caps, ~1.5 h on average.
    assert len(delays) >= 12


def test_after_the_deadline_the_delivery_is_dead_lettered() -> None:
    rng = random.Random(1)
    assert next_delay(50, rng, elapsed_s=RETRY_DEADLINE_S) is None
    assert next_delay(3, rng, elapsed_s=RETRY_DEADLINE_S + 5) is None
    last = next_delay(30, rng, elapsed_s=RETRY_DEADLINE_S - 2)
    assert last is not None and last <= 2
    with pytest.raises(ValueError, match="numbered from 1"):
        next_delay(0, rng)


def test_delays_are_jittered() -> None:
    firsts = {next_delay(6, random.Random(seed)) for seed in range(10)}
    assert len(firsts) == 10
    assert all(d is not None and 0 < d <= RETRY_CAPS_S[5] for d in firsts)


# --- URLs --------------------------------------------------------------------

REFUSED = {
    "http://127.0.0.1/hook": "loopback",
    "http://127.8.9.10:8080/hook": "loopback",
    "http://[::1]/hook": "loopback",
    "http://10.1.2.3/hook": "private",
    "http://172.16.0.1/hook": "private",
    "http://172.31.255.254/hook": "private",
    "https://192.168.1.20/hook": "private",
    "http://169.254.169.254/latest/meta-data": "link-local",
    "http://[fe80::1]/hook": "link-local",
    "http://[::ffff:127.0.0.1]/hook": "loopback",
    "http://[::ffff:10.0.0.1]/hook": "private",
    "http://[2002:7f00:1::]/hook": "loopback",  # 6to4 of 127.0.0.1
    "http://[64:ff9b::a00:1]/hook": "private",  # NAT64 of 10.0.0.1
    "http://0.0.0.0/hook": "unspecified",
    "http://[::]/hook": "unspecified",
    "http://224.0.0.1/hook": "multicast",
    "http://[ff02::1]/hook": "multicast",
    "http://100.64.0.1/hook": "not a globally reachable",
    "http://[fc00::1]/hook": "private",
    "http://240.0.0.1/hook": "reserved",
}


@pytest.mark.parametrize("url", sorted(REFUSED))
def test_non_public_addresses_are_refused(url: str) -> None:
    with pytest.raises(UrlRefused) as info:
        check_url(url, allow_private=False)
    assert REFUSED[url] in info.value.reason
    assert "public addresses only" in str(info.value)
    # ... and allowed when the setting says so.
    assert check_url(url, allow_private=True).url == url


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/hook",
        "https://93.184.216.34:8443/a/b?c=d",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
        "HTTPS://93.184.216.34/hook",
    ],
)
def test_public_literals_are_allowed(url: str) -> None:
    checked = check_url(url, allow_private=False)
    assert checked.url == url
    assert all(refusal(a) is None for a in checked.addresses)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://93.184.216.34/hook", "scheme must be http or https"),
        ("file:///etc/passwd", "scheme must be http or https"),
        ("javascript:alert(1)", "scheme must be http or https"),
        ("http://user:pw@93.184.216.34/hook", "user name or password"),
        ("http://user@93.184.216.34/hook", "user name or password"),
        ("http:///hook", "no host"),
        ("http://93.184.216.34:99999/", "cannot be parsed"),
        ("http://[::1/", "cannot be parsed"),
        ("http://93.184.216.34/a b", "blanks or control characters"),
        ("http://93.184.216.34/\r\nX-Injected: 1", "blanks or control characters"),
    ],
)
def test_malformed_urls_are_refused_even_when_private_ones_are_allowed(
    url: str, reason: str
) -> None:
    for allow in (False, True):
        with pytest.raises(UrlRefused) as info:
            check_url(url, allow_private=allow)
        assert reason in info.value.reason


def test_a_host_is_refused_if_any_of_its_addresses_is_private() -> None:
    def resolve(host: str, port: int) -> list[str]:
        assert (host, port) == ("hooks.example.org", 443)
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(UrlRefused) as info:
        check_url("https://hooks.example.org/x", False, resolve=resolve)
    assert info.value.reason.startswith(
        "the host 'hooks.example.org' resolves to 10.0.0.7, a private address"
    )


def test_a_host_with_public_addresses_only_is_allowed() -> None:
    checked = check_url(
        "http://hooks.example.org:8080/x",
        False,
        resolve=lambda host, port: [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "93.184.216.34",
        ],
    )
    assert (checked.host, checked.port) == ("hooks.example.org", 8080)
    assert checked.addresses == (
        ipaddress.ip_address("93.184.216.34"),
        ipaddress.ip_address("2606:2800:220:1::1"),
    )


def test_an_unresolvable_host_is_refused() -> None:
    def fails(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(UrlRefused, match="does not resolve"):
        check_url("https://nowhere.invalid/x", False, resolve=fails)


def test_localhost_is_resolved_and_refused() -> None:
    with pytest.raises(UrlRefused) as info:
        check_url("http://localhost:9000/hook", allow_private=False)
    assert "the host 'localhost' resolves to" in info.value.reason
    assert "loopback" in info.value.reason


# --- docs/webhooks.md shows what the code does --------------------------------


def _fenced(text: str, after: str) -> str:
    start = text.index(after)
    match = re.search(r"```[a-z]*\n(.*?)```", text[start:], re.DOTALL)
    assert match is not None, after
    return match.group(1)


def test_the_documented_payload_is_what_the_code_sends() -> None:
    text = DOCS.read_text()
    body = _fenced(text, "<!-- payload -->")
    assert orjson.loads(body) == orjson.loads(cloudevent(EXAMPLE)[1])
    headers, _ = webhook_request(EXAMPLE, DOC_SECRET, DOC_SENT_AT)
    shown = _fenced(text, "<!-- headers -->")
    for name, value in headers.items():
        assert f"{name}: {value}" in shown


def _human(seconds: float) -> str:
    if seconds % 3600 == 0:
        return f"{int(seconds // 3600)} h"
    if seconds % 60 == 0:
        return f"{int(seconds // 60)} min"
    return f"{int(seconds)} s"


def test_the_documented_retry_schedule_is_the_code_s() -> None:
    text = DOCS.read_text()
    table = text[text.index("<!-- retry-caps -->") :].split("\n\n")[0]
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in table.splitlines()[3:]
    ]
    assert [cap for _, cap in rows] == [_human(cap) for cap in RETRY_CAPS_S]
    assert [n for n, _ in rows][:-1] == [str(n) for n in range(1, len(RETRY_CAPS_S))]
    assert rows[-1][0] == f"{len(RETRY_CAPS_S)} and later"
    assert (
        f"Retries stop {_human(RETRY_DEADLINE_S)} after the change entered the "
        "subscription's outbox" in " ".join(text.split())
    )
    assert f"between {int(MIN_RETRY_DELAY_S)} s and a cap" in text


def test_the_documented_verification_runs() -> None:
    secret = new_secret()
    headers, body = webhook_request(EXAMPLE, secret, _now())
    snippet = _fenced(DOCS.read_text(), "<!-- verify -->")
    scope = {"secret": secret, "headers": headers, "body": body}
    exec(snippet, scope)
    assert scope["event"]["id"] == EXAMPLE.transition_id
    with pytest.raises(WebhookVerificationError):
        exec(snippet, scope | {"body": body + b" "})
