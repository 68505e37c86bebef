"""The poller lease: which replica polls an org.

redis-py's `Lock` does the work (SET NX PX to take it, a token-checked Lua script to renew or
release it), with the replica id as the token so `current_holder()` can name the leader. The
holder renews on every cycle; with a TTL of about 2.5 poll intervals, a replica that dies is
replaced within a few intervals. Correctness never depends on the lease: commits are
idempotent, so a stale leader finishing its last cycle only produces `duplicates`.
"""

from __future__ import annotations

import logging

import redis.asyncio as aioredis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, LockNotOwnedError

from storage.keys import Keys

log = logging.getLogger(__name__)

LEASE_TTL_INTERVALS = 2.5  # lease TTL, in poll intervals


class PollerLease:
    def __init__(self, redis: aioredis.Redis, keys: Keys, *, holder: str, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("the lease needs a positive TTL")
        self.holder = holder
        self._redis = redis
        self._keys = keys
        self._lock = Lock(redis, keys.poller_lease, timeout=ttl, blocking=False, thread_local=False)

    async def acquire_or_renew(self) -> bool:
        """True when this holder has the lease for another TTL (renewed, or just taken)."""
        if self._lock.local.token is not None:
            try:
                await self._lock.reacquire()
                return True
            except LockNotOwnedError:
                log.warning("poller lease lost org=%s holder=%s", self._keys.org_id, self.holder)
                self._lock.local.token = None
        acquired = await self._lock.acquire(blocking=False, token=self.holder)
        if acquired:
            log.info("poller lease taken org=%s holder=%s", self._keys.org_id, self.holder)
        return bool(acquired)

    async def release(self) -> None:
        """Give the lease up (on shutdown) so another replica takes over at once."""
        try:
            await self._lock.release()
        except LockError:  # never held, or already expired / taken over: nothing to give up
            return
        log.info("poller lease released org=%s holder=%s", self._keys.org_id, self.holder)

    async def current_holder(self) -> str | None:
        value = await self._redis.get(self._keys.poller_lease)
        return None if value is None else str(value)
