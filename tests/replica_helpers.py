"""Replicas for tests: identities whose heartbeat is alive (or lapses when told to)."""

from __future__ import annotations

import itertools

from storage.connection import Redis
from storage.keys import Keys
from storage.replicas import Identity, Replicas

_nonces = itertools.count(1)


def identity(replica: str = "r1") -> Identity:
    return Identity(replica=replica, nonce=f"n{next(_nonces)}")


async def alive(
    redis: Redis, keys: Keys, who: Identity | str = "r1", *, ttl_ms: int = 600_000
) -> Replicas:
    """Register `who` with a heartbeat that lasts `ttl_ms` (no beating needed in a test)."""
    replicas = Replicas(
        redis, keys, who if isinstance(who, Identity) else identity(who), ttl_ms=ttl_ms
    )
    await replicas.register(roles=["test"], wait=False)
    return replicas


async def die(redis: Redis, keys: Keys, who: Identity) -> None:
    """The replica's heartbeat lapses now (as if it had been killed TTL seconds ago)."""
    await redis.hdel(keys.replicas, who.replica)
