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

__all__ = ["AnyRedis", "redis_client", "sync_redis_client"]

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
