"""One-line errors for the usual mistakes, naming the setting to fix.

:func:`explain` turns an exception that a wrong or unreachable configuration
causes into a :class:`Problem` (a message and a sysexits code); anything else
is a bug and keeps its traceback. Exit codes: 69 (``EX_UNAVAILABLE``) for a
dependency that cannot be reached, 78 (``EX_CONFIG``) for a setting that is
wrong, 77 (``EX_NOPERM``) for a Kafka principal that lacks an ACL; a
supervisor restarts on all three, and none is 75, the worker's "restart me"
code.

A Kafka client that could not bootstrap over SASL or TLS is diagnosed with one
more connection (:func:`infra.kafka_security.refusal_cause`): aiokafka raises
the same error for a refused password or certificate as for a broker that is
down, and only the former is a wrong setting.
"""

from __future__ import annotations

import asyncio
import errno
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from infra.settings import Settings

__all__ = [
    "EX_CONFIG",
    "EX_NOPERM",
    "EX_UNAVAILABLE",
    "PortInUse",
    "Problem",
    "bind_port",
    "explain",
    "explain_settings_error",
    "redact_url",
]

EX_UNAVAILABLE = 69
EX_NOPERM = 77
EX_CONFIG = 78


@dataclass(frozen=True, slots=True)
class Problem:
    message: str
    exit_code: int


class PortInUse(OSError):
    """The API's listen address is taken (or not ours to bind)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(errno.EADDRINUSE, reason)
        self.host = host
        self.port = port
        self.reason = reason


def bind_port(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``, or :class:`PortInUse`.

    Bound here rather than by uvicorn, which logs the failure and exits 1.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise PortInUse(host, port, exc.strerror or str(exc)) from exc
    sock.set_inheritable(True)
    return sock


def redact_url(url: str) -> str:
    """``url`` without its password (Redis URLs may carry one)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def explain_settings_error(exc: ValidationError) -> Problem:
    """A bad ``MASTERY_*`` value, named by its variable."""
    from app.cli.help import env_name

    fields = Settings.model_fields
    parts = []
    for err in exc.errors(include_url=False):
        loc = err["loc"]
        name = str(loc[0]) if loc else ""
        message = err["msg"].removeprefix("Value error, ")
        if name in fields:
            parts.append(f"{env_name(name, fields[name])}: {message}")
        else:
            parts.append(message)
    return Problem("invalid setting: " + "; ".join(parts), EX_CONFIG)


def explain(exc: BaseException, settings: Settings) -> Problem | None:
    """The one-line explanation of ``exc``, or ``None`` for a real bug."""
    # Imported here: `mastery model trace` loads neither client library.
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    from infra.broker import BrokerMisreportsOffsets
    from infra.kafka_security import (
        KafkaSecurityError,
        describe_kafka_security,
        is_authorization_failure,
        is_sasl_refusal,
    )

    bootstrap = settings.kafka_bootstrap_servers or "(embedded)"
    if isinstance(exc, KafkaConnectionError):
        exc = _refusal_behind(exc, settings)
    if isinstance(exc, KafkaSecurityError | BrokerMisreportsOffsets):
        return Problem(str(exc), EX_CONFIG)
    if isinstance(exc, PortInUse):
        return Problem(
            f"cannot listen on {exc.host}:{exc.port} ({exc.reason}); set "
            "MASTERY_API_PORT (or --port) to a free port, or stop the process "
            "using it",
            EX_UNAVAILABLE,
        )
    if is_sasl_refusal(exc):
        return Problem(
            f"the Kafka broker at {bootstrap} refused the SASL login ({exc}); "
            "check MASTERY_KAFKA_SASL_USERNAME, MASTERY_KAFKA_SASL_PASSWORD and "
            "MASTERY_KAFKA_SASL_MECHANISM",
            EX_CONFIG,
        )
    if is_authorization_failure(exc):
        return Problem(
            f"the Kafka broker at {bootstrap} denied "
            f"{describe_kafka_security(settings)} an operation ({exc}); grant the "
            'ACLs that deploy/README.md lists ("Kafka ACLs") for this process',
            EX_NOPERM,
        )
    if isinstance(exc, ssl.SSLError):
        return Problem(
            f"TLS with the Kafka broker at {bootstrap} failed ({exc}); check "
            "MASTERY_KAFKA_SECURITY_PROTOCOL and MASTERY_KAFKA_SSL_CAFILE",
            EX_CONFIG,
        )
    if isinstance(exc, KafkaConnectionError | KafkaTimeoutError):
        return Problem(
            f"cannot reach the Kafka broker at {bootstrap} ({exc}); check "
            "KAFKA_BOOTSTRAP_SERVERS and MASTERY_KAFKA_SECURITY_PROTOCOL",
            EX_UNAVAILABLE,
        )
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        url = redact_url(settings.redis_url or "(embedded)")
        return Problem(
            f"cannot reach Redis at {url} ({exc}); check REDIS_URL", EX_UNAVAILABLE
        )
    from app.devstack.embedded import EmbeddedServiceError

    if isinstance(exc, EmbeddedServiceError):
        # No Java, no Maven, a broker that did not start: the message names
        # what to install or where the log is.
        return Problem(str(exc), EX_UNAVAILABLE)
    return None


def _refusal_behind(exc: BaseException, settings: Settings) -> BaseException:
    """The SASL or TLS error behind a failed bootstrap, else ``exc``."""
    from infra.kafka_security import kafka_client_kwargs, refusal_cause

    bootstrap = settings.kafka_bootstrap_servers
    if bootstrap is None or settings.kafka_security_protocol == "PLAINTEXT":
        return exc
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return exc  # called inside a loop: cannot wait for a connection here
    cause = asyncio.run(refusal_cause(bootstrap, kafka_client_kwargs(settings)))
    return exc if cause is None else cause
