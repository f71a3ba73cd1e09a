"""Kafka security: the ``MASTERY_KAFKA_*`` settings as client arguments.

One translation for every Kafka client the project creates: aiokafka's
producers, consumers and admin clients take :func:`kafka_client_kwargs`; the
Faust app takes :func:`faust_broker_credentials` as ``broker_credentials``
(Faust turns it into the same aiokafka arguments, which a unit test checks).
``PLAINTEXT`` (the default, and the embedded broker) adds no arguments at all.

aiokafka hides why a SASL login or a TLS handshake failed: it logs the reason
of each failed bootstrap connection and raises only ``KafkaConnectionError
("Unable to bootstrap from ...")``, the error of an unreachable broker.
:func:`refusal_cause` connects once more to find the reason, so that a wrong
password or an untrusted certificate is reported as such (by the CLI's one
error line and the API's ``/readyz``), not as "cannot reach the broker".
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from infra.settings import Settings

__all__ = [
    "KafkaSecurityError",
    "describe_kafka_security",
    "describe_refusal",
    "faust_broker_credentials",
    "is_authorization_failure",
    "is_sasl_refusal",
    "kafka_client_kwargs",
    "kafka_ssl_context",
    "refusal_cause",
    "refusal_reason",
]


class KafkaSecurityError(ValueError):
    """A TLS file named by a ``MASTERY_KAFKA_SSL_*`` setting is unusable."""


def kafka_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context of an ``SSL``/``SASL_SSL`` connection, else ``None``.

    Without ``MASTERY_KAFKA_SSL_CAFILE`` the system's trust store verifies the
    brokers (managed Kafka services use public CAs).
    """
    if not settings.kafka_security_protocol.endswith("SSL"):
        return None
    from aiokafka.helpers import create_ssl_context

    files = {
        "MASTERY_KAFKA_SSL_CAFILE": settings.kafka_ssl_cafile,
        "MASTERY_KAFKA_SSL_CERTFILE": settings.kafka_ssl_certfile,
        "MASTERY_KAFKA_SSL_KEYFILE": settings.kafka_ssl_keyfile,
    }
    for variable, path in files.items():
        if path is not None and not Path(path).is_file():
            raise KafkaSecurityError(f"{variable}: no such file: {path}")
    key_password = settings.kafka_ssl_key_password
    try:
        context: ssl.SSLContext = create_ssl_context(
            cafile=_path(settings.kafka_ssl_cafile),
            certfile=_path(settings.kafka_ssl_certfile),
            keyfile=_path(settings.kafka_ssl_keyfile),
            password=key_password.get_secret_value() if key_password else None,
        )
    except ssl.SSLError as exc:
        raise KafkaSecurityError(
            f"MASTERY_KAFKA_SSL_* files cannot be loaded: {exc}"
        ) from exc
    context.check_hostname = settings.kafka_ssl_check_hostname
    return context


def kafka_client_kwargs(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``AIOKafkaProducer``/``Consumer``/``AdminClient``.

    Empty for ``PLAINTEXT``, so clients of the embedded broker are unchanged.
    """
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return {}
    kwargs: dict[str, Any] = {"security_protocol": protocol}
    context = kafka_ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        kwargs |= {
            "sasl_mechanism": settings.kafka_sasl_mechanism,
            "sasl_plain_username": settings.kafka_sasl_username,
            "sasl_plain_password": password.get_secret_value() if password else None,
        }
    return kwargs


def faust_broker_credentials(settings: Settings) -> Any:
    """``broker_credentials`` for ``faust.App`` (``None`` for ``PLAINTEXT``).

    Faust derives the protocol from the type: ``SASLCredentials`` with a TLS
    context is ``SASL_SSL``, without one ``SASL_PLAINTEXT``; ``SSLCredentials``
    is ``SSL``. Faust is imported here, not at module level, so the API process
    never loads it.
    """
    import faust

    protocol = settings.kafka_security_protocol
    context = kafka_ssl_context(settings)
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        return faust.SASLCredentials(
            username=settings.kafka_sasl_username,
            password=password.get_secret_value() if password else None,
            mechanism=settings.kafka_sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def describe_kafka_security(settings: Settings) -> str:
    """One line for logs and errors; never includes a secret."""
    protocol = settings.kafka_security_protocol
    if protocol.startswith("SASL_"):
        return (
            f"{protocol} {settings.kafka_sasl_mechanism} as "
            f"{settings.kafka_sasl_username!r}"
        )
    return protocol


async def refusal_cause(
    bootstrap: str, client_kwargs: Mapping[str, Any], *, timeout_s: float = 5.0
) -> Exception | None:
    """Why a client with ``client_kwargs`` cannot bootstrap, when a broker of
    ``bootstrap`` answered and refused it: the SASL error
    (``SaslAuthenticationFailed``, ...) or the :class:`ssl.SSLError` of the
    handshake. ``None`` for ``PLAINTEXT`` and when no broker answered at all
    (then "cannot reach the broker" is the right explanation).
    """
    if client_kwargs.get("security_protocol", "PLAINTEXT") == "PLAINTEXT":
        return None
    from aiokafka.conn import create_conn
    from aiokafka.errors import KafkaError

    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        if not host or not port.isdigit():
            continue
        try:
            async with asyncio.timeout(timeout_s):
                conn = await create_conn(
                    host.strip("[]"),
                    int(port),
                    request_timeout_ms=int(timeout_s * 1000),
                    **client_kwargs,
                )
        except ssl.SSLError as exc:
            return exc
        except KafkaError as exc:
            # The SASL errors; a KafkaConnectionError is "no answer".
            if is_sasl_refusal(exc):
                refused: Exception = exc  # aiokafka's errors are untyped
                return refused
        except (OSError, TimeoutError):
            continue
        else:
            conn.close()
    return None


def describe_refusal(cause: BaseException) -> str:
    """One line for a :func:`refusal_cause`, naming the settings to check."""
    if isinstance(cause, ssl.SSLError):
        return (
            f"TLS handshake with the Kafka broker failed ({cause}); check "
            "MASTERY_KAFKA_SSL_CAFILE (the CA that signed the broker's "
            "certificate) and MASTERY_KAFKA_SECURITY_PROTOCOL"
        )
    return (
        f"the Kafka broker refused the SASL login ({cause}); check "
        "MASTERY_KAFKA_SASL_USERNAME, MASTERY_KAFKA_SASL_PASSWORD and "
        "MASTERY_KAFKA_SASL_MECHANISM"
    )


async def refusal_reason(
    exc: BaseException,
    bootstrap: str,
    client_kwargs: Mapping[str, Any],
    *,
    timeout_s: float = 5.0,
) -> str | None:
    """:func:`describe_refusal` of the refusal behind ``exc`` when it is a
    failed bootstrap that a broker refused, else ``None``."""
    from aiokafka.errors import KafkaConnectionError

    if not isinstance(exc, KafkaConnectionError):
        return None
    cause = await refusal_cause(bootstrap, client_kwargs, timeout_s=timeout_s)
    return None if cause is None else describe_refusal(cause)


def is_authorization_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is the broker denying this principal an operation (an
    ACL is missing), directly or as the cause of a wrapping error (Faust's
    ``ProducerSendError``)."""
    from aiokafka.errors import (
        ClusterAuthorizationFailedError,
        GroupAuthorizationFailedError,
        TopicAuthorizationFailedError,
        TransactionalIdAuthorizationFailed,
    )

    denied = (
        TopicAuthorizationFailedError
        | GroupAuthorizationFailedError
        | ClusterAuthorizationFailedError
        | TransactionalIdAuthorizationFailed
    )
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, denied):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


def is_sasl_refusal(exc: BaseException) -> bool:
    """Whether ``exc`` is aiokafka's error for a refused SASL login."""
    from aiokafka.errors import (
        IllegalSaslStateError,
        SaslAuthenticationFailed,
        UnsupportedSaslMechanismError,
    )

    return isinstance(
        exc,
        SaslAuthenticationFailed
        | UnsupportedSaslMechanismError
        | IllegalSaslStateError,
    )


def _path(value: object) -> str | None:
    return None if value is None else str(value)
