"""What a webhook delivery is: the CloudEvent, its signature, its retry
schedule, and which URLs may receive it (docs/webhooks.md).

Shared by the API (which checks a subscription's URL) and the notifier (which
builds, signs and retries each delivery). Pure: the only I/O is the DNS
resolution in :func:`check_url`.

- The body is a CloudEvents 1.0 event in structured JSON mode, built and
  serialized by the ``cloudevents`` package; ``id`` is the transition's id.
- The signature follows the Standard Webhooks spec (``standardwebhooks``):
  ``webhook-id`` is the transition's id too, so a redelivery carries the id of
  the first attempt and a receiver can drop duplicates by it.
- Retries use full jitter under a capped exponential schedule
  (:data:`RETRY_CAPS_S`) and stop :data:`RETRY_DEADLINE_S` after the first
  attempt, when the delivery is dead-lettered.
"""

from __future__ import annotations

import base64
import ipaddress
import random
import secrets
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from math import floor
from urllib.parse import SplitResult, urlsplit

from cloudevents.core.bindings.http import to_structured_event
from cloudevents.core.v1.event import CloudEvent
from standardwebhooks import Webhook

from schemas.transitions import StatusChanged
from schemas.webhooks import STATUS_CHANGED_TYPE

__all__ = [
    "MIN_RETRY_DELAY_S",
    "RETRY_CAPS_S",
    "RETRY_DEADLINE_S",
    "SECRET_BYTES",
    "CheckedUrl",
    "UrlRefused",
    "check_url",
    "cloudevent",
    "new_secret",
    "next_delay",
    "refusal",
    "retry_delays",
    "sign",
    "webhook_request",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

# --- the event ---------------------------------------------------------------


def cloudevent(transition: StatusChanged) -> tuple[dict[str, str], bytes]:
    """The transition as a structured-mode CloudEvents 1.0 JSON request:
    its headers (``content-type: application/cloudevents+json``) and body.

    The same transition always gives the same bytes, so a redelivery sends
    the same body (only the signature's timestamp changes)."""
    event = CloudEvent(
        {
            "type": STATUS_CHANGED_TYPE,
            "source": f"/learning-instances/{transition.learning_instance_id}",
            "subject": transition.registration_id,
            "id": transition.transition_id,
            "time": transition.occurred_at,
            "datacontenttype": "application/json",
        },
        transition.model_dump(mode="json"),
    )
    message = to_structured_event(event)
    return dict(message.headers), message.body


# --- signing (Standard Webhooks) ---------------------------------------------

#: Random bytes of a signing secret (the spec asks for 24 to 64).
SECRET_BYTES = 32


def new_secret() -> str:
    """A signing secret as the spec writes it: ``whsec_`` and base64."""
    return "whsec_" + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def sign(secret: str, msg_id: str, body: bytes, at: datetime) -> dict[str, str]:
    """The three Standard Webhooks headers for ``body`` sent at ``at``
    (``webhook-signature`` is ``v1,<base64 HMAC-SHA256>``)."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(floor(at.timestamp())),
        "webhook-signature": Webhook(secret).sign(msg_id, at, body),
    }


def webhook_request(
    transition: StatusChanged, secret: str, at: datetime
) -> tuple[dict[str, str], bytes]:
    """Headers and body of one delivery attempt of ``transition`` at ``at``."""
    headers, body = cloudevent(transition)
    return headers | sign(secret, transition.transition_id, body, at), body


# --- retries -----------------------------------------------------------------

#: The cap of the delay after the n-th failed attempt (the last one repeats):
#: 5 s, 30 s, 2 min, 10 min, 30 min, 1 h, 2 h, then 3 h. Each delay is drawn
#: uniformly below its cap ("full jitter"), so endpoints that failed together
#: are not retried together.
RETRY_CAPS_S: tuple[float, ...] = (5, 30, 120, 600, 1800, 3600, 7200, 10800)
#: Retries stop this long after the change entered the subscription's outbox
#: (app/notifier/service.py; about its first attempt): the last one is made at
#: the deadline, then the delivery is dead-lettered.
RETRY_DEADLINE_S = 24 * 3600.0
#: No retry sooner than this after a failure.
MIN_RETRY_DELAY_S = 1.0


def next_delay(
    attempt: int, rng: random.Random, elapsed_s: float = 0.0
) -> float | None:
    """Seconds to wait after failed attempt number ``attempt`` (1 = the
    first), ``elapsed_s`` after the first attempt; ``None``: dead-letter."""
    if attempt < 1:
        raise ValueError("attempts are numbered from 1")
    left = RETRY_DEADLINE_S - elapsed_s
    if left <= 0:
        return None
    cap = RETRY_CAPS_S[min(attempt, len(RETRY_CAPS_S)) - 1]
    delay = max(MIN_RETRY_DELAY_S, rng.uniform(0.0, cap))
    return min(delay, left)


def retry_delays(rng: random.Random) -> list[float]:
    """Every delay of a delivery that always fails at once, until it is
    dead-lettered (their sum is :data:`RETRY_DEADLINE_S`)."""
    delays: list[float] = []
    elapsed = 0.0
    while (delay := next_delay(len(delays) + 1, rng, elapsed)) is not None:
        delays.append(delay)
        elapsed += delay
    return delays


# --- where deliveries may go -------------------------------------------------


class UrlRefused(ValueError):
    """A URL that may not receive webhooks; ``reason`` says why."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"webhook URL refused: {reason}")
        self.url = url
        self.reason = reason


@dataclass(frozen=True, slots=True)
class CheckedUrl:
    """A URL that passed :func:`check_url`, and the addresses it resolved to
    then (empty when private URLs are allowed: nothing was resolved)."""

    url: str
    host: str
    port: int
    addresses: tuple[Address, ...]


def _system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _embedded_v4(addr: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64),
    which is where a connection to it may end up."""
    if addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    if addr.sixtofour is not None:
        return addr.sixtofour
    if addr.teredo is not None:
        return addr.teredo[1]
    if addr in _NAT64:
        return ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
    return None


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _category(addr: Address) -> str | None:
    """What kind of address webhooks may not go to ``addr`` is, or ``None``."""
    if isinstance(addr, ipaddress.IPv6Address):
        inner = _embedded_v4(addr)
        if inner is not None:
            kind = _category(inner)
            return f"{kind} ({inner} inside an IPv6 address)" if kind else None
    for kind, test in (
        ("an unspecified address", addr.is_unspecified),
        ("a loopback address", addr.is_loopback),
        ("a link-local address", addr.is_link_local),
        ("a multicast address", addr.is_multicast),
        ("a reserved address", addr.is_reserved),
        ("a private address", addr.is_private),
        ("not a globally reachable address", not addr.is_global),
    ):
        if test:
            return kind
    return None


def refusal(addr: Address) -> str | None:
    """Why a webhook may not be sent to ``addr``, or ``None`` (a sender
    checks each address it connects to: DNS may have changed since)."""
    kind = _category(addr)
    return None if kind is None else f"{addr} is {kind}"


def _parse(url: str) -> tuple[SplitResult, str, int]:
    if any(c.isspace() or ord(c) < 0x20 or c == "\x7f" for c in url):
        raise UrlRefused(url, "the URL contains blanks or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a bad port or bracketed host
        raise UrlRefused(url, f"the URL cannot be parsed: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise UrlRefused(url, "the URL's scheme must be http or https")
    if "@" in parts.netloc:
        raise UrlRefused(url, "the URL may not carry a user name or password")
    host = parts.hostname
    if not host:
        raise UrlRefused(url, "the URL has no host")
    return parts, host, port or (443 if scheme == "https" else 80)


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def check_url(
    url: str, allow_private: bool, *, resolve: Resolver = _system_resolver
) -> CheckedUrl:
    """``url`` if webhooks may be sent to it, else :class:`UrlRefused`.

    Only ``http`` and ``https``, no credentials; unless ``allow_private``,
    the host must resolve, and every address it resolves to must be globally
    reachable (no loopback, private, link-local, multicast, reserved or
    unspecified address, IPv4 or IPv6, nor IPv6 carrying such an IPv4).
    DNS may answer differently later (rebinding): a sender checks the
    addresses again when it connects."""
    _, host, port = _parse(url)
    if allow_private:
        return CheckedUrl(url, host, port, ())
    literal = _literal(host)
    if literal is not None:
        found: list[Address] = [literal]
    else:
        try:
            answers = resolve(host, port)
        except (OSError, UnicodeError) as exc:
            raise UrlRefused(url, f"the host {host!r} does not resolve") from exc
        found = [ipaddress.ip_address(a.partition("%")[0]) for a in answers]
        if not found:
            raise UrlRefused(url, f"the host {host!r} does not resolve")
    for addr in found:
        kind = _category(addr)
        if kind is not None:
            why = (
                f"{addr} is {kind}"
                if literal is not None
                else f"the host {host!r} resolves to {addr}, {kind}"
            )
            raise UrlRefused(url, f"{why}; webhooks go to public addresses only")
    return CheckedUrl(url, host, port, tuple(dict.fromkeys(found)))
