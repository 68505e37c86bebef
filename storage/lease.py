"""Leases: which replica polls an org, which one delivers its alerts.

A lease is a STRING naming its holder (replica id and nonce) with a TTL, taken and renewed by
one script that reads Redis time. Only a replica whose own heartbeat is alive may hold one,
and it is taken over at once when its holder's heartbeat has lapsed (see `storage.replicas`):
a killed or restarted holder costs seconds, not the TTL. The TTL only covers a holder that is
alive but stuck. Hand-written rather than redis-py's `Lock`
because a Lock cannot be taken over when its holder is known to be dead.

Correctness never rests on a lease alone: commits are idempotent by event id, and every Slack
call is fenced by its own claim (`storage.records`).
"""

from __future__ import annotations

import json
import logging

from storage.connection import Redis
from storage.keys import Keys
from storage.lua import script
from storage.replicas import Identity

log = logging.getLogger(__name__)

LEASE_TTL_INTERVALS = 2.5  # the poller's lease TTL, in poll intervals

# KEYS: lease, replicas; ARGV: replica, nonce, ttl ms
ACQUIRE = script("""
local now = now_ms()
if not alive(KEYS[2], ARGV[1], ARGV[2], now) then return {0, 'not_alive'} end
local current = decode(redis.call('GET', KEYS[1]))
local mine = cjson.encode({replica = ARGV[1], nonce = ARGV[2]})
if current then
  if current.replica == ARGV[1] and current.nonce == ARGV[2] then
    redis.call('PEXPIRE', KEYS[1], ARGV[3])
    return {1, 'renewed'}
  end
  if alive(KEYS[2], current.replica, current.nonce, now) then
    return {0, str(current.replica) or ''}
  end
  redis.call('SET', KEYS[1], mine, 'PX', ARGV[3])
  return {1, 'taken_over', str(current.replica) or ''}
end
redis.call('SET', KEYS[1], mine, 'PX', ARGV[3])
return {1, 'acquired'}
""")

# KEYS: lease; ARGV: replica, nonce
RELEASE = script("""
local current = decode(redis.call('GET', KEYS[1]))
if current and current.replica == ARGV[1] and current.nonce == ARGV[2] then
  redis.call('DEL', KEYS[1])
  return 1
end
return 0
""")


class Lease:
    def __init__(
        self, redis: Redis, keys: Keys, *, key: str, identity: Identity, ttl: float
    ) -> None:
        if ttl <= 0:
            raise ValueError("the lease needs a positive TTL")
        self._redis = redis
        self._keys = keys
        self.key = key
        self.identity = identity
        self.ttl_ms = max(int(ttl * 1000), 1)
        self.held = False
        self._acquire = redis.register_script(ACQUIRE)
        self._release = redis.register_script(RELEASE)

    @property
    def name(self) -> str:
        return self.key.rsplit(":", 1)[-1]

    async def acquire_or_renew(self) -> bool:
        """True when this process holds the lease for another TTL (renewed, or just taken)."""
        who = self.identity
        reply = await self._acquire(
            keys=[self.key, self._keys.replicas], args=[who.replica, who.nonce, self.ttl_ms]
        )
        held, how = bool(int(reply[0])), str(reply[1])
        if held and how == "taken_over":
            log.info(
                "%s lease taken over from %s (its heartbeat lapsed) org=%s replica=%s",
                self.name,
                reply[2] or "?",
                self._keys.org_id,
                who.replica,
            )
        elif held and how == "acquired" and not self.held:
            log.info("%s lease taken org=%s replica=%s", self.name, self._keys.org_id, who.replica)
        elif not held and self.held:
            log.warning(
                "%s lease lost to %s org=%s replica=%s",
                self.name,
                how,
                self._keys.org_id,
                who.replica,
            )
        self.held = held
        return held

    async def release(self) -> None:
        """Give the lease up (on shutdown) so another replica takes over at once."""
        if await self._release(keys=[self.key], args=[self.identity.replica, self.identity.nonce]):
            log.info(
                "%s lease released org=%s replica=%s",
                self.name,
                self._keys.org_id,
                self.identity.replica,
            )
        self.held = False

    async def current_holder(self) -> str | None:
        """The replica id holding the lease now, if any."""
        raw = await self._redis.get(self.key)
        if raw is None:
            return None
        try:
            return str(json.loads(raw)["replica"])
        except (ValueError, KeyError, TypeError):
            return None
