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
just died. It replaces a live-looking heartbeat at once only when its writer is provably gone:

- it was written by this very process (its `life`: a random id drawn once per process), or
- this process now holds the replica's *life lock*, and the heartbeat names the lock's
  previous holder. The life lock (`LifeLock`) is an exclusive `flock` on a file in the temp
  directory named after the replica; whoever takes it writes a fresh random id into the file
  and into its heartbeat. The kernel drops a lock when its holder exits, however it dies
  (SIGKILL, the OOM killer), so a process that gets the lock and finds the heartbeat's id in
  the file knows the heartbeat's writer is dead: a process restarted in place, or a
  container restarted with its file system.

Nothing else counts, not the host name and not the pid: two containers given one `hostname:`
(so one default REPLICA_ID) both run the bot as pid 1, and each would take the other's
heartbeat for its own previous life. A live twin holds its own lock in its own file system
(or, sharing the file, the very lock the newcomer would need), so its heartbeat never
matches: the newcomer waits, is refused, and never replaces it. Where the lock cannot be had
or its file did not survive the restart (a read-only file system, a tmpfs /tmp as in
docker-compose.yml), the newcomer waits for the old heartbeat to lapse: at most
`HEARTBEAT_TTL_SECONDS` after the old process stopped beating. A beat keeps what registering
wrote (roles, life, lock). A process whose entry was overwritten by another stops beating
(`beat()` is False). Entries dead for a day are pruned.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import json
import os
import secrets
import socket
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
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
-- A beat keeps what registering wrote (roles, host, life, lock); a new nonce starts afresh.
local beat = {}
if current and current.nonce == ARGV[2] then beat = current end
for key, value in pairs(decode(ARGV[5]) or {}) do beat[key] = value end
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


_lives: dict[int, str] = {}  # pid -> the random id of this process's life


def this_life() -> str:
    """A random id of this process, drawn on first use (a forked child draws its own)."""
    return _lives.setdefault(os.getpid(), secrets.token_hex(16))


def previous_life(heartbeat: str, *, life: str, unlocked: str) -> bool:
    """Whether a live-looking heartbeat's writer is provably gone: it is this process (`life`)
    or the previous holder of the life lock this process now holds (`unlocked`: the id that
    holder left in the lock file; "" when this process holds no lock)."""
    try:
        beat = json.loads(heartbeat)
    except ValueError:
        return False
    if not isinstance(beat, dict):
        return False
    if beat.get("life") == life:
        return True
    return bool(unlocked) and beat.get("lock") == unlocked


class LifeLock:
    """An exclusive `flock` on one file, held from `acquire()` to `release()` (or until this
    object is collected, or the process exits). `token` is what this holder wrote into the
    file, `previous` what the holder before it had written ("" when unknown)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.token = ""
        self.previous = ""
        self._closer: weakref.finalize[[int], LifeLock] | None = None

    @property
    def held(self) -> bool:
        return self._closer is not None and self._closer.alive

    def acquire(self) -> bool:
        """Take the lock if no other holder has it; False when it cannot be had."""
        if self.held:
            return True
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError:  # no temp directory, a read-only file system, a symlink planted
            return False
        try:
            if os.fstat(fd).st_uid != os.getuid():  # another user's file proves nothing
                raise PermissionError(self.path)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            previous = os.pread(fd, 256, 0).decode(errors="replace").strip()
            token = secrets.token_hex(16)
            os.ftruncate(fd, 0)
            os.pwrite(fd, token.encode(), 0)
        except OSError:  # held by a live process (BlockingIOError), or not ours
            os.close(fd)
            return False
        self.token, self.previous = token, previous
        self._closer = weakref.finalize(self, os.close, fd)  # closing it drops the lock
        return True

    def release(self) -> None:
        if self._closer is not None:
            self._closer()
        self._closer = None
        self.token = self.previous = ""


def lock_path(lock_dir: Path, keys: Keys, replica: str) -> Path:
    """The life lock of one replica id of one org (the name says nothing of either)."""
    digest = hashlib.sha256(f"{keys.replicas}\0{replica}".encode()).hexdigest()[:24]
    return lock_dir / f"timbal-jobs-bot-{digest}.lock"


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
        self,
        redis: Redis,
        keys: Keys,
        identity: Identity,
        *,
        ttl_ms: int = DEFAULT_TTL_MS,
        lock_dir: Path | None = None,
    ) -> None:
        """`lock_dir`: where the life lock lives (default: the temp directory); it is taken
        by `register()` and given back by `leave()`."""
        if ttl_ms <= 0:
            raise ValueError("a heartbeat needs a positive TTL")
        self._redis = redis
        self._keys = keys
        self.identity = identity
        self.ttl_ms = ttl_ms
        where = lock_dir if lock_dir is not None else Path(tempfile.gettempdir())
        self._lock = LifeLock(lock_path(where, keys, identity.replica))
        self._beat = redis.register_script(BEAT)
        self._leave = redis.register_script(LEAVE)
        self._prune = redis.register_script(PRUNE)
        self._list = redis.register_script(LIST)

    async def register(self, *, roles: list[str], wait: bool = True) -> None:
        """Start beating; wait out a lapsing heartbeat of this id, refuse a live one."""
        deadline = time.monotonic() + (2 * self.ttl_ms / 1000 if wait else 0)
        unlocked = self._lock.previous if self._lock.acquire() else ""
        me = {
            "roles": roles,
            "host": socket.gethostname(),  # for people reading the hash; proves nothing
            "pid": os.getpid(),
            "life": this_life(),
            "lock": self._lock.token,
        }
        while True:
            reply = await self._call("register", me)
            if reply[0] == "ok":
                return
            if previous_life(str(reply[2]), life=this_life(), unlocked=unlocked):
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
        """Stop being alive at once (a clean shutdown), so nobody waits for the TTL; then
        give the life lock back (not before: a newcomer holding it may replace the entry)."""
        await self._leave(keys=[self._keys.replicas], args=list(self._ids()))
        self._lock.release()

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
