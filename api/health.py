"""Liveness and readiness of the API.

``GET /healthz`` answers 200 while the process serves (liveness: restart only
a process that stopped answering). ``GET /readyz`` runs the readiness checks
concurrently, each bounded by a timeout:

``redis``       PING the read model's Redis
``read_model``  the read model has been materialized (its marker key exists,
                :meth:`infra.read_model.keys.ReadModelKeys.materialized`); not
                checked while Redis is unreachable
``broker``      the Kafka cluster's metadata can be fetched (only when the API
                has a broker for its ingest endpoints)
``broker_log``  no worker reported that the broker lost data, and
``worker``      a worker's heartbeat is fresh (both with a broker, both need
                Redis: api/broker_loss.py)

and answers 200 with every check's result, or 503 in the project's error
format naming the failing dependencies in ``details.failing``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from api.errors import ServiceUnavailable, redact_addresses
from api.metrics import ApiMetrics
from infra.kafka_security import refusal_reason
from infra.read_model import Generation, ReadModelKeys

__all__ = ["BrokerProbe", "NotReady", "Readiness", "redis_checks"]

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]


class NotReady(ServiceUnavailable):
    """A dependency the API needs is unavailable (``/readyz`` answers 503)."""

    code = "not_ready"


class CheckFailed(Exception):
    """A readiness check's failure, with the reason shown to the operator."""


@dataclass
class Readiness:
    """Named checks; a check raises to fail. ``depends`` skips a check while
    the one it depends on failed (no point reading keys from a dead Redis)."""

    checks: dict[str, Check] = field(default_factory=dict)
    depends: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 2.0
    retry_after_s: int = 5

    async def _run(self, check: Check) -> str | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await check()
        except TimeoutError:
            return f"no answer within {self.timeout_s:g} s"
        except (CheckFailed, RedisError, KafkaError, OSError) as exc:
            # The body of /readyz is public: the reason without addresses.
            log.warning("readiness check failed: %s", exc)
            return redact_addresses(str(exc)) or type(exc).__name__
        return None

    async def report(self) -> dict[str, Any]:
        """``{"status": "ready", "checks": {name: "ok"}}``, else :class:`NotReady`."""
        first = [n for n in self.checks if n not in self.depends]
        results = dict(
            zip(
                first,
                await asyncio.gather(*(self._run(self.checks[n]) for n in first)),
                strict=True,
            )
        )
        skipped: dict[str, str] = {}
        for name, needs in self.depends.items():
            if results.get(needs) is None:
                results[name] = await self._run(self.checks[name])
            else:
                skipped[name] = f"not checked: {needs} failed"
        failing = [name for name, problem in results.items() if problem is not None]
        checks = {name: problem or "ok" for name, problem in results.items()}
        checks |= skipped
        if failing:
            raise NotReady(
                f"not ready: {', '.join(failing)} unavailable",
                details={"failing": failing, "checks": checks},
                retry_after_s=self.retry_after_s,
            )
        return {"status": "ready", "checks": checks}


def redis_checks(
    redis: Redis, metrics: ApiMetrics, keys: ReadModelKeys | None = None
) -> tuple[dict[str, Check], dict[str, str]]:
    """The ``redis`` and ``read_model`` checks (and their dependency)."""
    generation = Generation(redis, keys)

    async def ping() -> None:
        await metrics.timed_redis("ping", redis.ping())

    async def marker_present() -> bool:
        # The marker of the *current* generation (a deployment-wide pointer,
        # then the marker: two keys of two slots, read one after the other).
        current = await generation.current()
        return bool(await redis.exists(current.materialized()))

    async def read_model() -> None:
        if not await metrics.timed_redis("readiness_marker", marker_present()):
            raise CheckFailed(
                "the read model is missing (no 'meta:materialized' in the current "
                "generation): Redis was emptied "
                "or no worker has materialized it yet; run `mastery rebuild` or "
                "start a worker"
            )

    return {"redis": ping, "read_model": read_model}, {"read_model": "redis"}


class BrokerProbe:
    """Fetches the cluster's metadata through one long-lived admin client,
    started on first use and again after a failure."""

    def __init__(
        self, bootstrap: str, *, client_kwargs: Mapping[str, Any] | None = None
    ) -> None:
        self._bootstrap = bootstrap
        self._client_kwargs = dict(client_kwargs or {})
        self._admin: AIOKafkaAdminClient | None = None
        self._lock = asyncio.Lock()

    def _new_admin(self) -> AIOKafkaAdminClient:
        return AIOKafkaAdminClient(
            bootstrap_servers=self._bootstrap,
            request_timeout_ms=2000,
            **self._client_kwargs,
        )

    async def __call__(self) -> None:
        async with self._lock:
            try:
                if self._admin is None:
                    admin = self._new_admin()
                    self._admin = admin
                    await admin.start()
                cluster = await self._admin.describe_cluster()
            except KafkaConnectionError as exc:
                await self.close()
                # A refused password or certificate, not "Unable to bootstrap".
                reason = await refusal_reason(
                    exc, self._bootstrap, self._client_kwargs, timeout_s=1.0
                )
                raise CheckFailed(reason or str(exc)) from exc
            except BaseException:
                await self.close()
                raise
        if not cluster.get("brokers"):
            raise CheckFailed("the cluster reported no brokers")

    async def close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            with contextlib.suppress(KafkaError, OSError, RuntimeError):
                await admin.close()
