"""The one frozen Settings object, read from the environment once and passed in."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

_REPO_ROOT = Path(__file__).resolve().parent.parent


def _worker_id(app_id: str | None, topic_prefix: str) -> str:
    return app_id or f"{topic_prefix}-worker"


def _state_home() -> Path:
    """``$XDG_STATE_HOME``, else ``~/.local/state`` (the XDG Base Directory
    rules: a relative value is ignored); for a user without a home directory
    (a container's), the system's temporary folder: what the worker keeps
    there is a cache of its changelog, and no process should fail to read
    its settings over a worker's default."""
    value = os.environ.get("XDG_STATE_HOME", "")
    if value and Path(value).is_absolute():
        return Path(value)
    try:
        return Path.home() / ".local" / "state"
    except RuntimeError:  # neither HOME nor a passwd entry
        return Path(tempfile.gettempdir())


def _default_data_dir(data: dict[str, Any]) -> Path:
    # Outside the source tree, one folder per worker id: two workers of
    # different apps on one host never share their RocksDB tables.
    worker_id = _worker_id(data.get("app_id"), data.get("topic_prefix", "mastery"))
    return _state_home() / "mastery" / worker_id


class Settings(BaseSettings):
    """Every knob of the worker, the API and the embedded stack.

    Each field is read from ``MASTERY_<FIELD>``; the two that production always
    sets also answer to their conventional names ``KAFKA_BOOTSTRAP_SERVERS`` and
    ``REDIS_URL``. Leaving them unset means "use the embedded stack".
    """

    model_config = SettingsConfigDict(
        env_prefix="MASTERY_", frozen=True, extra="ignore"
    )

    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "MASTERY_KAFKA_BOOTSTRAP_SERVERS"
        ),
        description="host:port[,host:port]; unset = start an embedded Apache Kafka",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "MASTERY_REDIS_URL"),
        description=(
            "redis[s]://[user:password@]host:port/db; unset = start an embedded "
            "valkey server"
        ),
    )
    redis_cluster: bool = Field(
        default=False,
        description=(
            "REDIS_URL names a node of a Redis Cluster (infra/redis_client.py; "
            "database 0 only)"
        ),
    )
    broker_profile: Literal["auto", "kafka"] = Field(
        default="auto",
        description=(
            "client settings for the broker (infra/broker.py); one profile, "
            "Apache Kafka's ('auto' = 'kafka'). The Tansu profile was removed"
        ),
    )

    app_id: str | None = Field(
        default=None,
        description="Faust app id (consumer group, changelog prefix); "
        "default <topic_prefix>-worker",
    )
    topic_prefix: str = Field(
        default="mastery", description="topic names <prefix>.<name>.v1"
    )
    topic_partitions: int = Field(
        default=4,
        ge=1,
        le=256,
        description="partitions of the registration-events topic (at most as "
        "many busy workers)",
    )
    topic_replication: int = Field(
        default=1, ge=1, le=5, description="replication factor of created topics"
    )

    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="RocksDB tables of the worker (rebuildable from changelogs); "
        "unset = $XDG_STATE_HOME/mastery/<worker id>, ~/.local/state/mastery/"
        "<worker id> without XDG_STATE_HOME (docs/operations.md)",
    )
    batch_max_events: int = Field(
        default=2000, ge=1, le=100_000, description="most events in one batch"
    )
    batch_within_ms: int = Field(
        default=20,
        ge=1,
        le=10_000,
        description="longest a batch keeps growing after its first record (a "
        "batch is handed over as soon as every record fetched so far is in it; "
        "app/worker/faust_corrections/streams.py; so this bounds batches that keep "
        "growing, as a backlog's do, not a live row's wait)",
    )
    fetch_max_wait_ms: int | None = Field(
        default=None,
        ge=1,
        le=10_000,
        description="the worker consumer's fetch wait; profile default 50 ms "
        "(infra/broker.py: longer waits delay rows behind idle partitions)",
    )
    consumer_fetch_bytes: int = Field(
        default=2**20,
        ge=2**16,
        le=64 * 2**20,
        description="worker: most bytes one fetch returns per partition (4 MiB "
        "replays ~10 % faster, but see docs/performance.md)",
    )
    stream_buffer_events: int = Field(
        default=4096,
        ge=256,
        le=262_144,
        description="worker: records queued between the fetch loop and the "
        "registration agent before Faust holds their partitions back",
    )
    broker_session_timeout_s: float | None = Field(
        default=None, description="consumer group session timeout; profile default"
    )
    table_standby_replicas: int | None = Field(
        default=None,
        ge=0,
        le=3,
        description="standby replicas of the worker's state table (other workers "
        "follow its changelog for a faster failover); profile default: 1 on "
        "Kafka, 0 on the embedded broker",
    )
    catalog_catchup_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="start-up: longest wait for the catalog to be read whole",
    )
    state_cache_max_entries: int = Field(
        default=200_000,
        ge=1,
        description="decoded registration states the worker keeps in memory "
        "(clean ones beyond this are dropped after a checkpoint)",
    )
    forecast_cache_mb: int = Field(
        default=256,
        ge=16,
        le=65_536,
        description="worker: memory of the work-remaining forecast tables, in "
        "MiB (least recently used dropped first; docs/analytics.md, 'Work "
        "remaining')",
    )
    forecast_partner_share_percent: int = Field(
        default=50,
        ge=10,
        le=100,
        description="worker: the most of MASTERY_FORECAST_CACHE_MB (at least 16 "
        "MiB) and of MASTERY_FORECAST_INLINE_BUILDS one partner's rows may take; "
        "beyond it a partner's tables evict its own least recently used ones, "
        "not another partner's (100: no share; docs/operations.md)",
    )
    forecast_inline_builds: int = Field(
        default=16,
        ge=0,
        le=1000,
        description="worker: coarse provisional forecast chains built inline per "
        "batch for tables not built yet; beyond that a row shows the best case "
        "until its exact table is built (docs/analytics.md, 'Work remaining')",
    )
    commit_interval_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="how often the worker checkpoints states and commits offsets",
    )
    checkpoint_interval_s: float | None = Field(
        default=None,
        gt=0,
        le=3600,
        description="how often the worker writes changed states to the changelog "
        "and acks the records they cover (default: MASTERY_COMMIT_INTERVAL_S); "
        "only acked offsets are committed, so a longer interval means fewer "
        "changelog writes and more records read again after a crash",
    )
    worker_heartbeat_ttl_s: float = Field(
        default=30.0,
        gt=0,
        description="a running worker refreshes its Redis heartbeat every third of "
        "this; the API's /readyz fails once no worker refreshed it for this long",
    )
    broker_check_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="how often a running worker compares the broker's end offsets "
        "with the highest seen, to notice a broker that lost its data",
    )

    api_host: str = Field(
        default="127.0.0.1", description="API listen address (0.0.0.0: all)"
    )
    api_port: int = Field(default=8080, ge=0, le=65535, description="API port")
    max_request_bytes: int = Field(
        default=65_536, ge=1024, description="largest status-query body"
    )
    api_max_header_bytes: int = Field(
        default=16_384,
        ge=1024,
        le=1_048_576,
        description="largest request line plus headers; beyond it the server "
        "answers 431 without reading the rest (docs/auth.md)",
    )
    api_head_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=300,
        description="time a connection has to send a whole request head (from "
        "its first byte, or from the connection when it sends nothing); beyond "
        "it the server answers 408 and closes (slowloris; docs/operations.md)",
    )
    api_keep_alive_timeout_s: int = Field(
        default=5,
        ge=1,
        le=300,
        description="time an idle keep-alive connection stays open after its "
        "last response (docs/operations.md)",
    )
    max_token_bytes: int = Field(
        default=8192,
        ge=256,
        description="largest bearer token; a longer one is refused with 401 "
        "before it is verified (docs/auth.md)",
    )

    # Authentication of the API (docs/auth.md). Secure by default: with
    # auth_mode "jwt" and no key configured the API refuses to start.
    auth_mode: Literal["jwt", "none"] = Field(
        default="jwt",
        description="'jwt': bearer tokens required; 'none': no authentication "
        "(local experiments only)",
    )
    jwt_hs256_secret: SecretStr | None = Field(
        default=None, description="shared secret for HS256 tokens (>= 32 bytes)"
    )
    jwt_rs256_public_key: str | None = Field(
        default=None, description="PEM public key for RS256 tokens"
    )
    jwt_audience: str | None = Field(
        default=None, description="required 'aud' claim, when set"
    )
    jwt_issuer: str | None = Field(
        default=None, description="required 'iss' claim, when set"
    )
    jwt_leeway_s: int = Field(
        default=30, ge=0, le=300, description="clock skew allowed on exp/nbf"
    )
    token_partner_id: str = Field(
        default="partner-demo",
        min_length=1,
        description="the partner_id claim `mastery token` mints by default; "
        "`mastery dev` writes the partner of its workload to var/dev.env",
    )

    # Webhooks (docs/webhooks.md).
    webhooks_allow_private_urls: bool = Field(
        default=False,
        description="accept webhook URLs on loopback, private and link-local "
        "addresses (development and tests only)",
    )
    history_interval_s: int = Field(
        default=3600,
        ge=0,
        le=30 * 86400,
        description="a learner's timeline gets at most one point per this many "
        "seconds of the learner's own time (occurred_at), besides a point at "
        "every status change (docs/read-model.md, 'History')",
    )
    notifier_timeout_s: float = Field(
        default=10.0,
        gt=0,
        le=60,
        description="the notifier's wait for a receiver's answer, per attempt",
    )
    notifier_lease_s: float = Field(
        default=15.0,
        ge=1,
        le=300,
        description="a notifier holds a subscription this long without renewing "
        "it; another one takes over after a crash",
    )
    notifier_retry_scale: float = Field(
        default=1.0,
        gt=0,
        le=1,
        description="multiplies the retry schedule and its 24 h deadline "
        "(below 1 only for tests and drills)",
    )
    notifier_outbox_max: int = Field(
        default=10_000,
        ge=1,
        le=10_000_000,
        description="changes one subscription's outbox may hold; a change "
        "beyond it is dead-lettered at intake ('outbox full', redeliverable; "
        "docs/webhooks.md, 'Outbox bound')",
    )

    # Ingest endpoints (docs/ingest.md).
    max_ingest_request_bytes: int = Field(
        default=2_097_152, ge=1024, description="largest ingest request body"
    )
    ingest_ack_timeout_s: float = Field(
        default=10.0, gt=0, description="wait for the broker's acks per request"
    )
    ingest_retry_after_s: int = Field(
        default=5, ge=1, le=3600, description="Retry-After of ingest 503s"
    )
    ingest_max_inflight_per_partner: int = Field(
        default=64,
        ge=1,
        description="ingest requests of one partner in progress at once per API "
        "process (each holds Redis and the broker until acked), then 429 with "
        "scope partner",
    )
    read_max_inflight_per_partner: int = Field(
        default=64,
        ge=1,
        description="status-and-progress reads of one partner in progress at once "
        "per API process (each holds a Redis connection), then 429 with scope "
        "partner",
    )
    ingest_correct_min_score: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="xAPI/Caliper: an attempt is correct when its score, as a "
        "fraction of the maximum, is at least this",
    )

    # Kafka security (docs/operations.md): applied to every Kafka client through
    # infra.kafka_security.
    kafka_security_protocol: Literal[
        "PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"
    ] = Field(
        default="PLAINTEXT",
        description="PLAINTEXT, SSL (TLS), SASL_PLAINTEXT or SASL_SSL (SASL over TLS)",
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        default="PLAIN", description="with a SASL_* protocol"
    )
    kafka_sasl_username: str | None = Field(
        default=None, description="with a SASL_* protocol"
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None, description="with a SASL_* protocol"
    )
    kafka_ssl_cafile: Path | None = Field(
        default=None,
        description="PEM CA bundle that signed the brokers' certificates "
        "(SSL, SASL_SSL); unset = the system's trust store",
    )
    kafka_ssl_certfile: Path | None = Field(
        default=None, description="PEM client certificate, for mutual TLS"
    )
    kafka_ssl_keyfile: Path | None = Field(
        default=None, description="PEM private key of the client certificate"
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None, description="password of the client certificate's key"
    )
    kafka_ssl_check_hostname: bool = Field(
        default=True, description="verify that broker certificates match their host"
    )

    # Operations (docs/operations.md, deploy/README.md).
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="'json': one JSON object per line; 'text': readable lines",
    )
    log_rate_limit: int = Field(
        default=20,
        ge=1,
        description="at most this many lines per logger and message per "
        "log_rate_interval_s; the rest are counted and reported in one line",
    )
    log_rate_interval_s: float = Field(
        default=60.0, gt=0, description="window of log_rate_limit"
    )
    metrics_host: str = Field(
        default="0.0.0.0",
        description="worker: address of its metrics and health port",
    )
    metrics_port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="worker: port of its /metrics, /healthz and /readyz; "
        "unset = not served",
    )

    # Live streams of the dashboard (docs/dashboard.md).
    stream_max_per_token: int = Field(
        default=10, ge=1, description="open streams per token subject, then 429"
    )
    stream_max_total: int = Field(
        default=2000, ge=1, description="open streams per API process, then 429"
    )
    stream_max_per_partner: int = Field(
        default=500,
        ge=1,
        description="open streams of one partner (all its tokens) per API "
        "process, then 429 with scope partner: its share of stream_max_total",
    )
    stream_queue_events: int = Field(
        default=2000,
        ge=1,
        description="changes queued for one stream; a client further behind is "
        "dropped (it reconnects and resumes)",
    )
    stream_send_timeout_s: float = Field(
        default=10.0,
        gt=0,
        description="a stream whose client reads nothing for this long is closed",
    )
    stream_heartbeat_s: float = Field(
        default=15.0, gt=0, description="SSE comment sent on an idle stream"
    )
    stream_max_learners: int = Field(
        default=5000, ge=1, description="learners of a learning-instance stream"
    )

    shared_dir: Path = Field(
        default=_REPO_ROOT.parent / "shared",
        description="the project's shared data folder (ASSISTments, pyBKT reference)",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="lowest level logged"
    )

    @model_validator(mode="after")
    def _kafka_security_is_complete(self) -> Settings:
        sasl = self.kafka_security_protocol.startswith("SASL_")
        if sasl and (not self.kafka_sasl_username or self.kafka_sasl_password is None):
            raise ValueError(
                f"MASTERY_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} "
                "needs MASTERY_KAFKA_SASL_USERNAME and MASTERY_KAFKA_SASL_PASSWORD"
            )
        if not sasl and (self.kafka_sasl_username or self.kafka_sasl_password):
            raise ValueError(
                "MASTERY_KAFKA_SASL_USERNAME/PASSWORD are set but "
                f"MASTERY_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} "
                "does not use SASL (use SASL_SSL or SASL_PLAINTEXT)"
            )
        tls_files = (self.kafka_ssl_cafile, self.kafka_ssl_certfile)
        if not self.kafka_security_protocol.endswith("SSL") and any(tls_files):
            raise ValueError(
                "MASTERY_KAFKA_SSL_* files are set but "
                f"MASTERY_KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} "
                "does not use TLS (use SSL or SASL_SSL)"
            )
        if self.kafka_ssl_keyfile is not None and self.kafka_ssl_certfile is None:
            raise ValueError(
                "MASTERY_KAFKA_SSL_KEYFILE needs MASTERY_KAFKA_SSL_CERTFILE"
            )
        return self

    @property
    def worker_id(self) -> str:
        return _worker_id(self.app_id, self.topic_prefix)

    @property
    def uses_embedded_kafka(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None


def default(field: str) -> Any:
    """The default of a :class:`Settings` field: what a component constructed
    without Settings (tests, benchmarks) uses, so no default is written twice."""
    info = Settings.model_fields[field]
    if info.default_factory is not None:
        raise ValueError(f"{field} has a computed default")
    return info.default
