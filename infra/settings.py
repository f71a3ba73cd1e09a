"""The one frozen Settings object, read from the environment once and passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["Settings"]

_REPO_ROOT = Path(__file__).resolve().parent.parent


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
        description="host:port[,host:port]; unset = start the embedded Tansu broker",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "MASTERY_REDIS_URL"),
        description="redis://host:port/db; unset = start an embedded valkey server",
    )
    broker_profile: Literal["auto", "kafka", "tansu"] = Field(
        default="auto",
        description=(
            "workarounds for the embedded Tansu broker (see infra/broker.py); 'auto' "
            "applies them only to a broker this process started itself"
        ),
    )

    app_id: str | None = Field(
        default=None,
        description="Faust app id (consumer group, changelog prefix); "
        "default <topic_prefix>-worker",
    )
    topic_prefix: str = "mastery"
    topic_partitions: int = Field(default=4, ge=1, le=256)
    topic_replication: int = Field(default=1, ge=1, le=5)

    data_dir: Path = Field(
        default=_REPO_ROOT / "var" / "worker",
        description="RocksDB tables of the worker (rebuildable from changelogs)",
    )
    batch_max_events: int = Field(default=2000, ge=1, le=100_000)
    batch_within_ms: int = Field(default=20, ge=1, le=10_000)
    fetch_max_wait_ms: int | None = Field(
        default=None,
        description="consumer fetch max wait; default 1500 (Faust's) or the profile's",
    )
    broker_session_timeout_s: float | None = Field(
        default=None, description="consumer group session timeout; profile default"
    )
    catalog_catchup_timeout_s: float = Field(default=30.0, gt=0)
    stall_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="exit (code 75, for the supervisor to restart) when events "
        "wait on assigned partitions and no batch was processed for this long",
    )

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8080, ge=0, le=65535)
    max_request_bytes: int = Field(default=65_536, ge=1024)

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
    jwt_leeway_s: int = Field(default=30, ge=0, le=300)

    # Ingest endpoints (docs/ingest.md).
    max_ingest_request_bytes: int = Field(default=2_097_152, ge=1024)
    ingest_ack_timeout_s: float = Field(
        default=10.0, gt=0, description="wait for the broker's acks per request"
    )
    ingest_retry_after_s: int = Field(default=5, ge=1, le=3600)
    ingest_correct_min_score: float = Field(
        default=1.0,
        gt=0.0,
        le=1.0,
        description="xAPI/Caliper: an attempt is correct when its score, as a "
        "fraction of the maximum, is at least this",
    )

    # Live streams of the dashboard (docs/dashboard.md).
    stream_max_per_token: int = Field(
        default=10, ge=1, description="open streams per token subject, then 429"
    )
    stream_max_total: int = Field(
        default=2000, ge=1, description="open streams per API process, then 429"
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
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @property
    def worker_id(self) -> str:
        return self.app_id or f"{self.topic_prefix}-worker"

    @property
    def uses_embedded_kafka(self) -> bool:
        return self.kafka_bootstrap_servers is None

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None
