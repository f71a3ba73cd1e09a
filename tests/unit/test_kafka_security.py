"""Kafka security settings reach every Kafka client we construct.

The aiokafka clients are real objects: their ``AIOKafkaClient`` keeps the
arguments it was given (``_security_protocol``, ``_sasl_*``, ``_ssl_context``),
and those are what the connection handshake uses. Clients that connect at once
(the topic reader, the sink's lazily started producer) are built through a
subclass that records its arguments and then fails like an unreachable broker.
"""

from __future__ import annotations

import datetime as dt
import ssl
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError

import infra.producer
import infra.topic_reader
from api.errors import BrokerUnavailable
from api.sink import KafkaEventSink
from app.cli.main import main
from infra.broker import KAFKA
from infra.kafka_security import (
    KafkaSecurityError,
    describe_kafka_security,
    faust_broker_credentials,
    kafka_client_kwargs,
)
from infra.producer import EventProducer
from infra.settings import Settings
from infra.topic_names import TopicNames
from infra.topic_reader import read_topic
from schemas.events import AttemptGraded

SASL_ENV = {
    "MASTERY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "MASTERY_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "MASTERY_KAFKA_SASL_USERNAME": "svc-mastery",
    "MASTERY_KAFKA_SASL_PASSWORD": "s3cret-pw",
}


def _sasl(**kw: Any) -> Settings:
    base: dict[str, Any] = {
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "SCRAM-SHA-256",
        "kafka_sasl_username": "svc-mastery",
        "kafka_sasl_password": "s3cret-pw",
    }
    return Settings(**(base | kw))


@pytest.fixture(scope="module")
def ca_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A self-signed CA certificate (PEM), made here."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mastery-test-ca")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    path = tmp_path_factory.mktemp("tls") / "ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


# -- settings ----------------------------------------------------------------


def test_plaintext_adds_no_arguments() -> None:
    assert kafka_client_kwargs(Settings()) == {}
    assert faust_broker_credentials(Settings()) is None


def test_sasl_without_credentials_is_refused_naming_the_variables() -> None:
    with pytest.raises(ValidationError) as info:
        Settings(kafka_security_protocol="SASL_SSL", kafka_sasl_username="u")
    assert "MASTERY_KAFKA_SASL_PASSWORD" in str(info.value)


def test_credentials_without_sasl_are_refused() -> None:
    with pytest.raises(ValidationError, match="does not use SASL"):
        Settings(kafka_sasl_username="u", kafka_sasl_password="p")


def test_tls_files_without_tls_are_refused(ca_file: Path) -> None:
    with pytest.raises(ValidationError, match="does not use TLS"):
        Settings(kafka_ssl_cafile=ca_file)


def test_unknown_mechanism_is_refused() -> None:
    with pytest.raises(ValidationError, match="kafka_sasl_mechanism"):
        _sasl(kafka_sasl_mechanism="GSSAPI")


def test_sasl_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SASL_ENV.items():
        monkeypatch.setenv(name, value)
    kwargs = kafka_client_kwargs(Settings())
    assert kwargs["security_protocol"] == "SASL_SSL"
    assert kwargs["sasl_mechanism"] == "SCRAM-SHA-512"
    assert kwargs["sasl_plain_username"] == "svc-mastery"
    assert kwargs["sasl_plain_password"] == "s3cret-pw"
    assert isinstance(kwargs["ssl_context"], ssl.SSLContext)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_has_no_tls_context(mechanism: str) -> None:
    kwargs = kafka_client_kwargs(
        _sasl(kafka_security_protocol="SASL_PLAINTEXT", kafka_sasl_mechanism=mechanism)
    )
    assert kwargs == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc-mastery",
        "sasl_plain_password": "s3cret-pw",
    }


def test_tls_context_trusts_the_configured_ca(ca_file: Path) -> None:
    settings = Settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=ca_file,
        kafka_ssl_check_hostname=False,
    )
    kwargs = kafka_client_kwargs(settings)
    context = kwargs["ssl_context"]
    assert kwargs["security_protocol"] == "SSL"
    assert "sasl_mechanism" not in kwargs
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is False
    subjects = [dict(x[0] for x in c["subject"]) for c in context.get_ca_certs()]
    assert {"commonName": "mastery-test-ca"} in subjects


def test_a_missing_ca_file_fails_at_start_naming_it(tmp_path: Path) -> None:
    settings = Settings(
        kafka_security_protocol="SSL", kafka_ssl_cafile=tmp_path / "nope.pem"
    )
    with pytest.raises(KafkaSecurityError, match="MASTERY_KAFKA_SSL_CAFILE: no such"):
        kafka_client_kwargs(settings)


def test_a_file_that_is_not_pem_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate")
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=bogus)
    with pytest.raises(KafkaSecurityError, match="cannot be loaded"):
        kafka_client_kwargs(settings)


def test_description_never_shows_the_password() -> None:
    text = describe_kafka_security(_sasl())
    assert "svc-mastery" in text and "SCRAM-SHA-256" in text
    assert "s3cret-pw" not in text
    assert "s3cret-pw" not in repr(_sasl())


# -- Faust (the worker) ------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "mechanism"),
    [
        ("SASL_SSL", "PLAIN"),
        ("SASL_SSL", "SCRAM-SHA-512"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-256"),
    ],
)
def test_faust_credentials_translate_to_the_same_client_arguments(
    protocol: str, mechanism: str
) -> None:
    settings = _sasl(kafka_security_protocol=protocol, kafka_sasl_mechanism=mechanism)
    ours = kafka_client_kwargs(settings)
    fausts = credentials_to_aiokafka_auth(faust_broker_credentials(settings))
    assert isinstance(fausts.pop("ssl_context"), ssl.SSLContext) == (
        protocol == "SASL_SSL"
    )
    ours.pop("ssl_context", None)
    assert fausts == ours


def test_faust_ssl_credentials(ca_file: Path) -> None:
    settings = Settings(kafka_security_protocol="SSL", kafka_ssl_cafile=ca_file)
    fausts = credentials_to_aiokafka_auth(faust_broker_credentials(settings))
    assert fausts["security_protocol"] == "SSL"
    assert isinstance(fausts["ssl_context"], ssl.SSLContext)


# -- each client -------------------------------------------------------------


def _assert_client_has(client: Any, settings: Settings) -> None:
    assert client._security_protocol == settings.kafka_security_protocol
    assert client._sasl_mechanism == settings.kafka_sasl_mechanism
    assert client._sasl_plain_username == "svc-mastery"
    assert client._sasl_plain_password == "s3cret-pw"
    assert isinstance(client._ssl_context, ssl.SSLContext)


async def test_event_producer_gets_the_settings() -> None:
    settings = _sasl()
    producer = EventProducer(
        "kafka:9093",
        KAFKA,
        TopicNames("t"),
        client_kwargs=kafka_client_kwargs(settings),
    )
    _assert_client_has(producer._producer.client, settings)


def _recording(cls: type[Any], seen: list[Any]) -> type[Any]:
    """A real client class whose start() fails like an unreachable broker,
    after keeping the client it built."""

    class Recording(cls):  # type: ignore[misc,valid-type]
        async def start(self) -> None:
            seen.append(self)
            self._closed = True  # nothing to close: never connected
            raise KafkaConnectionError("recorded, not connecting")

    return Recording


async def test_topic_reader_gets_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(
        infra.topic_reader, "AIOKafkaConsumer", _recording(AIOKafkaConsumer, seen)
    )
    settings = _sasl(kafka_sasl_mechanism="SCRAM-SHA-512")
    with pytest.raises(KafkaConnectionError):
        async for _ in read_topic(
            "kafka:9093", "t", KAFKA, client_kwargs=kafka_client_kwargs(settings)
        ):
            pass
    _assert_client_has(seen[0]._client, settings)


async def test_api_event_sink_gets_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(
        infra.producer, "AIOKafkaProducer", _recording(AIOKafkaProducer, seen)
    )
    settings = _sasl(kafka_sasl_mechanism="PLAIN")
    sink = KafkaEventSink(
        "kafka:9093",
        KAFKA,
        TopicNames("t"),
        ack_timeout_s=1.0,
        client_kwargs=kafka_client_kwargs(settings),
    )
    attempt = AttemptGraded(
        event_id="e-1",
        occurred_at=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        attempt_id="a-1",
        registration_id="r-1",
        module_id="m-1",
        is_correct=True,
        interaction_end_time=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    )
    with pytest.raises(BrokerUnavailable):
        await sink.send([attempt])
    _assert_client_has(seen[0].client, settings)


@pytest.mark.parametrize("command", [["dlq", "list"], ["dlq", "redrive"]])
def test_cli_dlq_passes_the_settings(
    monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(
        infra.topic_reader, "AIOKafkaConsumer", _recording(AIOKafkaConsumer, seen)
    )
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9093")
    for name, value in SASL_ENV.items():
        monkeypatch.setenv(name, value)
    assert main(command) == 69  # EX_UNAVAILABLE, explained in one line
    _assert_client_has(seen[0]._client, Settings())


def test_cli_produce_passes_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(
        infra.producer, "AIOKafkaProducer", _recording(AIOKafkaProducer, seen)
    )

    async def no_topics(*args: object) -> None:
        return None

    # Topic creation (infra/topic_specs.py) is not wired yet; skip it here.
    monkeypatch.setattr("infra.topic_specs.apply_topic_specs", no_topics)
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka:9093")
    for name, value in SASL_ENV.items():
        monkeypatch.setenv(name, value)
    assert main(["produce", "--instances", "1", "--learners", "1"]) == 69
    _assert_client_has(seen[0].client, Settings())


async def test_api_readiness_probe_gets_the_settings() -> None:
    from api.health import BrokerProbe

    settings = _sasl(kafka_sasl_mechanism="SCRAM-SHA-512")
    probe = BrokerProbe("kafka:9093", client_kwargs=kafka_client_kwargs(settings))
    admin = probe._new_admin()
    _assert_client_has(admin._client, settings)
    await admin.close()


# -- the worker's clients ----------------------------------------------------


async def test_worker_clients_get_the_settings(tmp_path: Path) -> None:
    """The Faust app, the changelog writer, the skip guard's probe and the
    catalog follower all carry the settings."""
    from app.worker.wiring import create_worker

    settings = _sasl(data_dir=str(tmp_path), topic_prefix="t")
    worker = create_worker(settings, KAFKA, "kafka:9093", "redis://127.0.0.1:1")
    credentials = worker.app.conf.broker_credentials
    assert credentials is not None
    assert credentials.username == "svc-mastery"
    # the changelog writer builds its producer from these (in start())
    changelog = AIOKafkaProducer(**worker.changelog._kwargs)
    _assert_client_has(changelog.client, settings)
    await changelog.client.close()
    _assert_client_has(worker.skip_guard.probes.new()._client, settings)
    assert worker.follower._client_kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
    assert worker.broker_watch._client_kwargs["sasl_mechanism"] == "SCRAM-SHA-256"
