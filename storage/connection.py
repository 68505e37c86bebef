"""Open the Redis the bot uses: a server, a Redis Cluster, or an embedded in-process store.

- `REDIS_URL` set: a standalone server (`redis.asyncio.Redis`), or with `REDIS_CLUSTER=true` a
  Redis Cluster (`redis.asyncio.RedisCluster`) reached through any node of it. Every key of an
  org shares one hash tag, so each script and pipeline of the bot runs on one node; the code
  uses no MULTI and reads the time inside scripts (Cluster clients refuse `TIME` in a pipeline).
- unset: fakeredis (streams, Lua and all), for the demo and single-process use; it persists
  nothing, and start-up says so.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

log = logging.getLogger(__name__)

# Everything the bot calls exists on both; `Redis` is what the stores are typed against.
Redis = aioredis.Redis | RedisCluster

# socket_timeout: a connection that dies silently must fail the call, not hang a worker;
# it is well above the notifier's 1 s blocking read.
TIMEOUTS = {"socket_connect_timeout": 5.0, "socket_timeout": 15.0}


def open_redis(url: str | None, *, cluster: bool = False) -> Redis:
    """A client with `decode_responses=True`; `url=None` gives the embedded store."""
    if url is None:
        import fakeredis  # imported lazily: only the embedded mode needs it

        log.warning(
            "REDIS_URL is not set: using an embedded in-process store; state is NOT persisted "
            "and only this process sees it"
        )
        client: aioredis.Redis = fakeredis.FakeAsyncRedis(decode_responses=True)
        return client
    if cluster:
        return RedisCluster.from_url(url, decode_responses=True, **TIMEOUTS)
    return aioredis.Redis.from_url(url, decode_responses=True, health_check_interval=30, **TIMEOUTS)  # type: ignore[arg-type]


def mode_of(client: Redis) -> str:
    """ "cluster", "standalone" or "embedded", for `check` and the start-up line."""
    if isinstance(client, RedisCluster):
        return "cluster"
    if type(client).__module__.startswith("fakeredis"):
        return "embedded"
    return "standalone"
