"""A SASL_SSL Apache Kafka for the security tests: a CA and broker certificate
made here, SCRAM-SHA-512 users, KRaft's StandardAuthorizer on demand, ACLs
created and deleted through the broker, and the ACL list of deploy/README.md.

The broker keeps the plaintext listener that app/devstack/embedded_kafka.py gives every
node for inter-broker and controller traffic. Its principal is ``ANONYMOUS``,
which must be a super user once the authorizer is on (the broker talks to
itself there); the test creates the topics and ACLs through it, as an
operator's topics job would with admin rights. The processes under test only
ever get the SASL_SSL listener.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaClient
from aiokafka.protocol.admin import CreateAclsRequest, DeleteAclsRequest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from app.devstack.embedded_kafka import KafkaCluster
from app.devstack.stack import DevStack
from infra.settings import Settings

__all__ = [
    "DEPLOY_README",
    "Acl",
    "SecureStack",
    "apply_acls",
    "denials",
    "documented_acls",
    "make_pki",
    "secure_cluster",
]

LISTENER = "SASL_SSL"
MECHANISM = "SCRAM-SHA-512"
#: SCRAM users formatted into the cluster's storage: name -> password.
USERS = {
    "mastery-worker": "worker-pw-1",
    "mastery-api": "api-pw-2",
    "mastery-cli": "cli-pw-3",
    "mastery-notifier": "notifier-pw-4",
}
DEPLOY_README = Path(__file__).resolve().parents[2] / "deploy" / "README.md"


# -- certificates -------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path  #: PEM of the CA that signed the broker's certificate
    other_ca: Path  #: PEM of a CA that signed nothing of ours
    broker_keystore: Path  #: key (PKCS#8) and chain, Kafka's PEM key store


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("localhost"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            # The advertised listener is 127.0.0.1: hostname checks stay on.
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_pki(folder: Path) -> Pki:
    """A CA, a broker certificate it signed (for 127.0.0.1 and localhost), and
    an unrelated CA, as PEM files in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca = _ca("mastery test CA")
    key, cert = _leaf(ca_key, ca)
    _, other = _ca("some other CA")
    pki = Pki(
        ca=folder / "ca.pem",
        other_ca=folder / "other-ca.pem",
        broker_keystore=folder / "broker.pem",
    )
    pki.ca.write_bytes(_pem(ca))
    pki.other_ca.write_bytes(_pem(other))
    pki.broker_keystore.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        + _pem(cert)
        + _pem(ca)
    )
    pki.broker_keystore.chmod(0o600)
    return pki


# -- the broker ---------------------------------------------------------------


def secure_cluster(pki: Pki, *, authorizer: bool) -> KafkaCluster:
    """One node with a SASL_SSL listener (SCRAM-SHA-512 over TLS) and the
    :data:`USERS`; with ``authorizer``, KRaft's StandardAuthorizer denies what
    no ACL allows."""
    prefix = f"listener.name.{LISTENER.lower()}"
    config = {
        f"{prefix}.ssl.keystore.type": "PEM",
        f"{prefix}.ssl.keystore.location": str(pki.broker_keystore),
        f"{prefix}.sasl.enabled.mechanisms": MECHANISM,
        f"{prefix}.{MECHANISM.lower()}.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "sasl.enabled.mechanisms": MECHANISM,
    }
    if authorizer:
        config |= {
            "authorizer.class.name": (
                "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
            ),
            # The plaintext inter-broker/controller listener (module docstring).
            "super.users": "User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        }
    scram = [
        arg
        for name, password in USERS.items()
        for arg in ("--add-scram", f"{MECHANISM}=[name={name},password={password}]")
    ]
    return KafkaCluster(
        1, config=config, listeners={LISTENER: LISTENER}, format_args=scram
    )


class SecureStack(DevStack):
    """A DevStack whose processes reach the broker only through SASL_SSL, as
    ``principal`` unless a process is given other credentials."""

    def __init__(
        self, settings: Settings, *, pki: Pki, kafka: KafkaCluster, log_dir: Path
    ) -> None:
        super().__init__(settings, log_dir=log_dir, kafka=kafka)
        self.pki = pki
        self.principal = "mastery-api"

    def security_env(
        self, user: str, *, password: str | None = None, ca: Path | None = None
    ) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka.bootstrap_for(LISTENER),
            "MASTERY_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "MASTERY_KAFKA_SASL_MECHANISM": MECHANISM,
            "MASTERY_KAFKA_SASL_USERNAME": user,
            "MASTERY_KAFKA_SASL_PASSWORD": USERS[user]
            if password is None
            else password,
            "MASTERY_KAFKA_SSL_CAFILE": str(ca or self.pki.ca),
        }

    def env(self, **extra: str) -> dict[str, str]:
        return super().env(**(self.security_env(self.principal) | extra))


# -- ACLs ---------------------------------------------------------------------

_RESOURCE = {"topic": 2, "group": 3, "cluster": 4, "transactional-id": 5}
_PATTERN = {"literal": 3, "prefixed": 4}
#: Kafka's AclOperation codes, by kafka-acls.sh's names lower-cased.
_OPERATION = {
    "all": 2,
    "read": 3,
    "write": 4,
    "create": 5,
    "delete": 6,
    "alter": 7,
    "describe": 8,
    "clusteraction": 9,
    "describeconfigs": 10,
    "alterconfigs": 11,
    "idempotentwrite": 12,
}
_ALLOW = 3
_ANY_HOST = "*"


@dataclass(frozen=True, order=True)
class Acl:
    """One ALLOW ACL: ``principal`` may ``operation`` on a resource."""

    principal: str  #: e.g. ``User:mastery-worker``
    resource: str  #: topic, group, cluster, transactional-id
    pattern: str  #: literal or prefixed
    name: str
    operation: str

    def __str__(self) -> str:
        return (
            f"{self.principal} {self.operation} {self.resource} "
            f"{self.pattern} {self.name!r}"
        )


def documented_acls(
    role: str, *, user: str, prefix: str, app_id: str, readme: Path = DEPLOY_README
) -> list[Acl]:
    """The ACLs of ``role`` (worker, notifier, api, cli) in deploy/README.md's "Kafka
    ACLs" table, with its ``<prefix>`` and ``<app-id>`` filled in."""
    text = readme.read_text()
    start = text.index("## Kafka ACLs")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end > 0 else None]
    acls: list[Acl] = []
    for line in section.splitlines():
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        if len(cells) != 5 or cells[0] != role:
            continue
        _, resource, pattern, name, operations = cells
        name = name.replace("<prefix>", prefix).replace("<app-id>", app_id)
        for operation in re.split(r"[,\s]+", operations.strip()):
            acls.append(
                Acl(
                    f"User:{user}",
                    resource.lower(),
                    pattern.lower(),
                    name,
                    operation.lower(),
                )
            )
    if not acls:
        raise AssertionError(f"deploy/README.md lists no ACLs for {role!r}")
    return acls


async def _send_acls(bootstrap: str, requests: Iterable[object]) -> None:
    # aiokafka's admin client has no ACL methods (0.14); its protocol has the
    # requests. Sent over the plaintext listener, whose principal is a super user.
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        node = client.get_random_node()
        for request in requests:
            response = await client.send(node, request)
            results = getattr(response, "creation_responses", None) or getattr(
                response, "filter_responses", []
            )
            for result in results:
                if result[0]:
                    raise AssertionError(f"ACL request failed: {result}")
    finally:
        await client.close()


def apply_acls(
    cluster: KafkaCluster, acls: Iterable[Acl], *, delete: bool = False
) -> None:
    """Create (or delete) ``acls`` on the cluster."""
    request = DeleteAclsRequest if delete else CreateAclsRequest
    asyncio.run(
        _send_acls(
            cluster.bootstrap_servers,
            [
                request(
                    _RESOURCE[a.resource],
                    a.name,
                    _PATTERN[a.pattern],
                    a.principal,
                    _ANY_HOST,
                    _OPERATION[a.operation],
                    _ALLOW,
                )
                for a in acls
            ],
        )
    )


def denials(cluster: KafkaCluster, principal: str) -> list[str]:
    """The authorizer's "denied" lines for ``principal`` in the broker's log."""
    log = cluster.nodes[0].log_path.read_text(errors="replace")
    return [
        line
        for line in log.splitlines()
        if f"Principal = {principal} is Denied" in line
    ]
