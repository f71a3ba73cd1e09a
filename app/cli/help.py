"""The environment section of each ``mastery <command> --help``.

Names, defaults and descriptions come from the :class:`infra.settings.Settings`
fields themselves; this module only says which settings each command reads
(a test checks that every setting is read by some command).
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from infra.settings import Settings

__all__ = ["COMMAND_SETTINGS", "EnvironmentHelp", "env_name", "environment_help"]

_LOGS = ("log_level", "log_format", "log_rate_limit", "log_rate_interval_s")
_KAFKA = (
    "kafka_bootstrap_servers",
    "broker_profile",
    "topic_prefix",
    "kafka_security_protocol",
    "kafka_sasl_mechanism",
    "kafka_sasl_username",
    "kafka_sasl_password",
    "kafka_ssl_cafile",
    "kafka_ssl_certfile",
    "kafka_ssl_keyfile",
    "kafka_ssl_key_password",
    "kafka_ssl_check_hostname",
)
_TOPICS = ("topic_partitions", "topic_replication")
_WORKER = (
    "redis_url",
    "redis_cluster",
    "app_id",
    *_TOPICS,
    "data_dir",
    "batch_max_events",
    "batch_within_ms",
    "fetch_max_wait_ms",
    "consumer_fetch_bytes",
    "stream_buffer_events",
    "broker_session_timeout_s",
    "table_standby_replicas",
    "catalog_catchup_timeout_s",
    "worker_heartbeat_ttl_s",
    "broker_check_interval_s",
    "state_cache_max_entries",
    "forecast_cache_mb",
    "forecast_inline_builds",
    "forecast_partner_share_percent",
    "history_interval_s",
    "commit_interval_s",
    "checkpoint_interval_s",
    "metrics_host",
    "metrics_port",
)
_JWT = (
    "auth_mode",
    "jwt_hs256_secret",
    "jwt_rs256_public_key",
    "jwt_audience",
    "jwt_issuer",
    "jwt_leeway_s",
)
_API = (
    "redis_url",
    "redis_cluster",
    "api_host",
    "api_port",
    "max_request_bytes",
    "api_max_header_bytes",
    "api_head_timeout_s",
    "api_keep_alive_timeout_s",
    "max_token_bytes",
    *_JWT,
    "max_ingest_request_bytes",
    "ingest_ack_timeout_s",
    "ingest_retry_after_s",
    "ingest_max_inflight_per_partner",
    "read_max_inflight_per_partner",
    "ingest_correct_min_score",
    "stream_max_per_token",
    "stream_max_total",
    "stream_max_per_partner",
    "stream_queue_events",
    "stream_send_timeout_s",
    "stream_heartbeat_s",
    "stream_max_learners",
    "worker_heartbeat_ttl_s",
    "webhooks_allow_private_urls",
)
_EMBEDDED = {"kafka_bootstrap_servers", "redis_url", "redis_cluster"} | set(_KAFKA[3:])

#: subcommand -> the settings it reads, in the order they are listed.
COMMAND_SETTINGS: dict[str, tuple[str, ...]] = {
    "worker": (*_KAFKA, *_WORKER, *_LOGS),
    "api": (*_KAFKA, *_API, *_LOGS),
    "produce": (*_KAFKA, *_TOPICS, "app_id", "shared_dir", *_LOGS),
    "topics": (*_KAFKA, *_TOPICS, "app_id", *_LOGS),
    "token": (
        "jwt_hs256_secret",
        "jwt_audience",
        "jwt_issuer",
        "token_partner_id",
        *_LOGS,
    ),
    "rebuild": (*_KAFKA, "redis_url", "redis_cluster", "app_id", *_LOGS),
    "broker-reset": (*_KAFKA, "redis_url", "redis_cluster", "app_id", *_LOGS),
    "notifier": (
        *_KAFKA,
        "redis_url",
        "redis_cluster",
        "app_id",
        *_TOPICS,
        "webhooks_allow_private_urls",
        "notifier_timeout_s",
        "notifier_lease_s",
        "notifier_retry_scale",
        "notifier_outbox_max",
        "metrics_host",
        "metrics_port",
        *_LOGS,
    ),
    "dlq": (*_KAFKA, *_LOGS),
    "selfcheck": (*_KAFKA, *_LOGS),
    "dev": tuple(
        dict.fromkeys(
            name
            for name in (*_KAFKA, *_WORKER, *_API, "shared_dir", *_LOGS)
            if name not in _EMBEDDED
        )
    ),
    "model": _LOGS,
}


def env_name(name: str, field: FieldInfo) -> str:
    """The variable a field is read from (its conventional name if it has one)."""
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        first = alias.choices[0]
        if isinstance(first, str):
            return first
    return f"MASTERY_{name.upper()}"


def _default(field: FieldInfo) -> str:
    value: Any = field.default
    if value is PydanticUndefined or value is None:
        return "unset"
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, Path):
        try:
            return str(value.relative_to(Path.cwd()))
        except ValueError:
            return str(value)
    return str(value)


def _choices(field: FieldInfo) -> str:
    args = getattr(field.annotation, "__args__", ())
    literals = [a for a in args if isinstance(a, str)]
    return "|".join(literals) if literals and len(literals) == len(args) else ""


def environment_help(command: str, *, width: int = 79) -> str:
    """The ``environment:`` block of ``command``'s help (argparse epilog)."""
    fields = Settings.model_fields
    lines = ["environment (default in brackets):"]
    for name in COMMAND_SETTINGS[command]:
        field = fields[name]
        head = f"  {env_name(name, field)} [{_default(field)}]"
        choices = _choices(field)
        if choices:
            head += f" {{{choices}}}"
        lines.append(head)
        if field.description:
            lines += textwrap.wrap(
                field.description,
                width=width,
                initial_indent="      ",
                subsequent_indent="      ",
            )
    return "\n".join(lines)


class EnvironmentHelp:
    """Wraps ``add_subparsers()``: each parser it adds ends its help with the
    environment variables the command reads (``command``'s, for the parsers of
    a command's own subcommands such as ``dlq list``)."""

    def __init__(self, subparsers: Any, command: str | None = None) -> None:
        self._subparsers = subparsers
        self._command = command

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = self._subparsers.add_parser(
            name,
            epilog=environment_help(self._command or name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
            **kwargs,
        )
        return parser
