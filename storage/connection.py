"""Open the Redis the bot uses: a real server from REDIS_URL, or an embedded in-process store.

The embedded store is fakeredis (it supports streams, transactions and Lua), for the demo and
single-process use; it persists nothing, and start-up says so.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis

log = logging.getLogger(__name__)


def open_redis(url: str | None) -> aioredis.Redis:
    """A client with `decode_responses=True`; `url=None` gives the embedded store."""
    if url is None:
        import fakeredis  # imported lazily: only the embedded mode needs it

        log.warning(
            "REDIS_URL is not set: using an embedded in-process store; state is NOT persisted "
            "and only this process sees it"
        )
        client: aioredis.Redis = fakeredis.FakeAsyncRedis(decode_responses=True)
        return client
    # socket_timeout: a connection that dies silently must fail the call, not hang a worker;
    # it is well above the notifier's 1 s blocking read.
    return aioredis.Redis.from_url(
        url,
        decode_responses=True,
        health_check_interval=30,
        socket_connect_timeout=5,
        socket_timeout=15,
    )
