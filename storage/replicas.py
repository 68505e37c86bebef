"""Replica heartbeats: who is alive, by Redis time, so a dead replica's work is taken at once.

Each process has an `Identity`: its stable replica id (`REPLICA_ID`, the host name by default;
also its Redis Streams consumer name) and a nonce drawn at start. The replicas HASH maps each
replica id to its heartbeat: the nonce and the Redis time it is alive until. Every claim,
lease and fencing check compares the holder's nonce with the heartbeat, so

- a replica whose heartbeat lapsed (killed, frozen, cut off from Redis) holds nothing: another
  replica takes its work without waiting for any idle time or lease;
- a restarted process (same replica id, new nonce) holds nothing of its previous life either,
  and resumes its own pending entries at once.

`register()` refuses an id that a live process with another nonce still beats for (two
replicas configured with one REPLICA_ID), after waiting out one TTL in case that process has
just died; a heartbeat left by this host's previous life (same host name, its process gone,
as after a container restart) is replaced at once. A process whose entry was overwritten by
another stops beating (`beat()` is False). Entries dead for a day are pruned.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from storage.connection import Redis
from storage.keys import Keys
from storage.lua import script

DEFAULT_TTL_MS = 3000
PRUNE_AFTER_MS = 24 * 3600 * 1000

# KEYS: replicas; ARGV: replica, nonce, ttl ms, "register" | "replace" | "beat", extra (JSON)
BEAT = script("""
local now = now_ms()
local raw = redis.call('HGET', KEYS[1], ARGV[1])
local current = decode(raw)
if current and current.nonce ~= ARGV[2] then
  if ARGV[4] == 'beat' then return {'replaced', now} end
  if ARGV[4] == 'register' and num(current.alive_until, 0) > now then
    return {'taken', now, raw}
  end
end
local beat = decode(ARGV[5]) or {}
beat.nonce = ARGV[2]
beat.alive_until = now + tonumber(ARGV[3])
beat.seen = now
if current and current.nonce == ARGV[2] then beat.started = num(current.started, now)
else beat.started = now end
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(beat))
return {'ok', now}
""")

# KEYS: replicas; ARGV: replica, nonce
LEAVE = script("""
local current = decode(redis.call('HGET', KEYS[1], ARGV[1]))
if current and current.nonce == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) return 1 end
return 0
""")

# KEYS: replicas; ARGV: dead for longer than (ms)
PRUNE = script("""
local now = now_ms()
local fields = redis.call('HGETALL', KEYS[1])
local removed = 0
for i = 1, #fields, 2 do
  local beat = decode(fields[i + 1])
  if not beat or num(beat.alive_until, 0) < now - tonumber(ARGV[1]) then
    redis.call('HDEL', KEYS[1], fields[i])
    removed = removed + 1
  end
end
return removed
""")

# KEYS: replicas
LIST = script("""
return {now_ms(), redis.call('HGETALL', KEYS[1])}
""")


def previous_life(heartbeat: str) -> bool:
    """Whether a live-looking heartbeat was left by a process of this host that is gone: a
    restarted container (same host name; its PIDs start over, so its old PID may be ours)."""
    try:
        beat = json.loads(heartbeat)
        host, pid = str(beat["host"]), int(beat["pid"])
    except (ValueError, KeyError, TypeError):
        return False
    if host != socket.gethostname():
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process: alive
        return False
    return False


class ReplicaIdInUse(Exception):
    """Another live process beats for this replica id."""


@dataclass(frozen=True, slots=True)
class Identity:
    replica: str  # REPLICA_ID: stable across restarts; the stream consumer name
    nonce: str  # this process

    @property
    def holder(self) -> str:
        return f"{self.replica}#{self.nonce}"


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    replica: str
    alive: bool
    alive_for_ms: int  # < 0: lapsed that long ago
    started: int  # Redis ms
    roles: list[str]


class Replicas:
    def __init__(
        self, redis: Redis, keys: Keys, identity: Identity, *, ttl_ms: int = DEFAULT_TTL_MS
    ) -> None:
        if ttl_ms <= 0:
            raise ValueError("a heartbeat needs a positive TTL")
        self._redis = redis
        self._keys = keys
        self.identity = identity
        self.ttl_ms = ttl_ms
        self._beat = redis.register_script(BEAT)
        self._leave = redis.register_script(LEAVE)
        self._prune = redis.register_script(PRUNE)
        self._list = redis.register_script(LIST)

    async def register(self, *, roles: list[str], wait: bool = True) -> None:
        """Start beating; wait out a lapsing heartbeat of this id, refuse a live one."""
        deadline = time.monotonic() + (2 * self.ttl_ms / 1000 if wait else 0)
        me = {"roles": roles, "host": socket.gethostname(), "pid": os.getpid()}
        while True:
            reply = await self._call("register", me)
            if reply[0] == "ok":
                return
            if previous_life(str(reply[2])):
                await self._call("replace", me)
                return
            if time.monotonic() >= deadline:
                raise ReplicaIdInUse(
                    f"REPLICA_ID {self.identity.replica!r} is in use by another live process; "
                    "give each replica its own REPLICA_ID (the default is the host name)"
                )
            await asyncio.sleep(min(0.1, self.ttl_ms / 10000))

    async def beat(self) -> bool:
        """Renew the heartbeat; False when another process has taken this replica id."""
        reply = await self._call("beat", {})
        return bool(reply[0] == "ok")

    async def leave(self) -> None:
        """Stop being alive at once (a clean shutdown), so nobody waits for the TTL."""
        await self._leave(keys=[self._keys.replicas], args=list(self._ids()))

    async def members(self) -> list[ReplicaInfo]:
        reply: list[Any] = await self._list(keys=[self._keys.replicas], args=[])
        now, flat = reply
        found: list[ReplicaInfo] = []
        for name, raw in zip(flat[::2], flat[1::2], strict=True):
            try:
                beat: dict[str, Any] = json.loads(raw)
                until = int(beat.get("alive_until", 0))
            except (ValueError, TypeError, AttributeError):
                continue
            found.append(
                ReplicaInfo(
                    replica=str(name),
                    alive=until > int(now),
                    alive_for_ms=until - int(now),
                    started=int(beat.get("started", 0)),
                    roles=[str(r) for r in beat.get("roles") or []],
                )
            )
        return sorted(found, key=lambda r: r.replica)

    async def prune(self, *, dead_for_ms: int = PRUNE_AFTER_MS) -> int:
        return int(await self._prune(keys=[self._keys.replicas], args=[dead_for_ms]))

    def _ids(self) -> tuple[str, str]:
        return self.identity.replica, self.identity.nonce

    async def _call(self, mode: str, extra: dict[str, Any]) -> list[Any]:
        reply: list[Any] = await self._beat(
            keys=[self._keys.replicas],
            args=[*self._ids(), self.ttl_ms, mode, json.dumps(extra)],
        )
        return reply
