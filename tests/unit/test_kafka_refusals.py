"""SASL/TLS refusals and missing ACLs are explained, not reported as an
unreachable broker or a bug (the real broker's side is
tests/reliability/test_kafka_security.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
)
from faust.exceptions import ProducerSendError

from app.cli.errors import EX_CONFIG, EX_NOPERM, EX_UNAVAILABLE, explain
from app.devstack.embedded import free_port
from app.worker.faust_corrections.exit_policy import EXIT_NOPERM, access_denied
from infra.kafka_security import (
    describe_refusal,
    is_authorization_failure,
    kafka_client_kwargs,
    refusal_cause,
)
from infra.settings import Settings


def _sasl(**kw: Any) -> Settings:
    base: dict[str, Any] = {
        "kafka_bootstrap_servers": f"127.0.0.1:{free_port()}",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-512",
        "kafka_sasl_username": "mastery-worker",
        "kafka_sasl_password": "s3cret-pw",
    }
    return Settings(**(base | kw))


def test_a_denied_operation_is_77_naming_the_principal_and_the_acl_list() -> None:
    problem = explain(GroupAuthorizationFailedError("mastery-worker"), _sasl())
    assert problem is not None and problem.exit_code == EX_NOPERM
    assert "denied SASL_SSL SCRAM-SHA-512 as 'mastery-worker'" in problem.message
    assert "GroupAuthorizationFailedError: mastery-worker" in problem.message
    assert 'deploy/README.md lists ("Kafka ACLs")' in problem.message
    assert "s3cret-pw" not in problem.message


def test_a_refused_login_is_78() -> None:
    problem = explain(SaslAuthenticationFailed("invalid credentials"), _sasl())
    assert problem is not None and problem.exit_code == EX_CONFIG
    assert "refused the SASL login" in problem.message


def test_no_broker_behind_a_failed_bootstrap_stays_unreachable() -> None:
    # Nothing listens: the second connection finds no refusal either.
    settings = _sasl()
    problem = explain(KafkaConnectionError("Unable to bootstrap"), settings)
    assert problem is not None and problem.exit_code == EX_UNAVAILABLE
    assert problem.message.startswith("cannot reach the Kafka broker")
    kwargs = kafka_client_kwargs(settings)
    assert settings.kafka_bootstrap_servers is not None
    assert asyncio.run(refusal_cause(settings.kafka_bootstrap_servers, kwargs)) is None


def test_plaintext_is_not_diagnosed() -> None:
    assert asyncio.run(refusal_cause("127.0.0.1:1", {})) is None


def test_refusals_name_the_settings_to_check() -> None:
    import ssl

    sasl = describe_refusal(SaslAuthenticationFailed("bad"))
    assert "MASTERY_KAFKA_SASL_PASSWORD" in sasl
    tls = describe_refusal(ssl.SSLCertVerificationError("certificate verify failed"))
    assert "MASTERY_KAFKA_SSL_CAFILE" in tls


def test_the_worker_exits_77_on_a_denial_faust_wrapped() -> None:
    try:
        try:
            raise TopicAuthorizationFailedError("mastery.dead-letter.v1")
        except TopicAuthorizationFailedError as exc:
            raise ProducerSendError(f"Error while sending: {exc!r}") from exc
    except ProducerSendError as wrapped:
        assert is_authorization_failure(wrapped)
        denied = access_denied(wrapped)
    assert denied is not None and denied.exit_code == EXIT_NOPERM == 77
    assert "TopicAuthorizationFailedError: mastery.dead-letter.v1" in str(denied)
    assert denied.__cause__ is None  # logged in one line, without a traceback
    assert access_denied(ValueError("a bug")) is None
