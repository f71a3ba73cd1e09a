"""Redis clients from ``REDIS_URL``: one server, or a Redis Cluster.

``MASTERY_REDIS_CLUSTER=1`` makes ``REDIS_URL`` name any node of a cluster
(redis-py's :class:`~redis.asyncio.cluster.RedisCluster` discovers the rest);
every read and script of the read model names keys of one slot
(docs/read-model.md). The URL carries TLS (``rediss://``) and an ACL user
(``rediss://user:password@host:port``) the same way for both; a cluster has
only database 0. An explicit switch, not a probe: the API and the CLI build
their clients before Redis answers (a Redis down at start is a 503, not a
refusal to start). docs/operations.md, "Redis".
"""

from __future__ import annotations

from typing import Any

from redis import Redis as SyncRedis
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.cluster import RedisCluster as SyncRedisCluster
from redis.exceptions import (
    ClusterDownError,
    MasterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["AnyRedis", "redis_client", "sync_redis_client", "transient_redis_error"]

#: What the read model and its readers accept.
AnyRedis = Redis | RedisCluster


def redis_client(url: str, *, cluster: bool = False, **kwargs: Any) -> Any:
    """An asyncio client (``Redis`` or ``RedisCluster``; both answer the
    commands the project sends, typed as the single-server client)."""
    if cluster:
        return RedisCluster.from_url(url, **kwargs)
    return Redis.from_url(url, **kwargs)


def sync_redis_client(url: str, *, cluster: bool = False, **kwargs: Any) -> Any:
    """A blocking client, for the CLI's one-off checks."""
    if cluster:
        return SyncRedisCluster.from_url(url, **kwargs)
    return SyncRedis.from_url(url, **kwargs)


#: Redis error replies that say the server cannot write now, not that the
#: command is wrong (the prefixes Redis and Valkey answer with).
_TRANSIENT_REPLIES = (
    "OOM",
    "READONLY",
    "LOADING",
    "BUSY",
    "MISCONF",
    "TRYAGAIN",
    "CLUSTERDOWN",
    "MASTERDOWN",
)


_TRANSIENT_CLASSES = (
    OutOfMemoryError,
    ReadOnlyError,
    TryAgainError,
    ClusterDownError,
    MasterDownError,
)


def transient_redis_error(exc: BaseException) -> bool:
    """True for a Redis failure that a retry can outlive."""
    if isinstance(exc, RedisConnectionError | RedisTimeoutError | OSError):
        return True
    if not isinstance(exc, ResponseError):
        return False
    if isinstance(exc, _TRANSIENT_CLASSES):
        return True
    # redis-py strips the code of the replies it has a class for, and keeps
    # it (and the ``status_code``) for the others.
    code = getattr(exc, "status_code", None) or str(exc).split(" ", 1)[0]
    return code in _TRANSIENT_REPLIES
