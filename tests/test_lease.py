"""storage.lease, storage.replicas and storage.heartbeat, on every backend."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from storage.connection import Redis
from storage.heartbeat import HEARTBEAT_TTL, last_poll, record_poll
from storage.keys import Keys
from storage.lease import Lease
from storage.replicas import Identity, LifeLock, ReplicaIdInUse, Replicas
from tests.redis_backends import Backend
from tests.replica_helpers import alive, die, identity
from tests.waiting import wait_until

KEYS = Keys("tjb", "org_l")
NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


# --- lease ------------------------------------------------------------------------------------


async def lease_for(r: Redis, replica: str, *, ttl: float = 30) -> Lease:
    who = identity(replica)
    await alive(r, KEYS, who)
    return Lease(r, KEYS, key=KEYS.poller_lease, identity=who, ttl=ttl)


async def test_one_holder_at_a_time_and_the_holder_renews(backend: Backend) -> None:
    a = await lease_for(backend.client(), "replica-a")
    b = await lease_for(backend.client(), "replica-b")
    assert await a.acquire_or_renew() is True
    assert await b.acquire_or_renew() is False
    assert await a.acquire_or_renew() is True  # renewal
    assert await b.acquire_or_renew() is False
    assert await b.current_holder() == "replica-a"


async def test_renewal_resets_the_ttl(r: Redis) -> None:
    lease = await lease_for(r, "replica-a")
    assert await lease.acquire_or_renew()
    await r.pexpire(KEYS.poller_lease, 1000)  # as if most of the TTL had passed
    assert await lease.acquire_or_renew()
    ttl_ms = await r.pttl(KEYS.poller_lease)
    assert 1000 < ttl_ms <= 30_000


async def test_a_dead_holders_lease_is_taken_over_at_once(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    a = await lease_for(backend.client(), "replica-a", ttl=3600)  # a long TTL...
    b = await lease_for(backend.client(), "replica-b", ttl=3600)
    assert await a.acquire_or_renew()
    assert await b.acquire_or_renew() is False
    await die(backend.client(), KEYS, a.identity)  # ...does not matter once a is dead
    with caplog.at_level(logging.INFO, logger="storage.lease"):
        assert await b.acquire_or_renew() is True
    assert "taken over from replica-a" in caplog.text
    assert await b.current_holder() == "replica-b"


async def test_takeover_after_a_live_holder_stops_renewing(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    a = await lease_for(backend.client(), "replica-a", ttl=0.3)
    b = await lease_for(backend.client(), "replica-b", ttl=0.3)
    assert await a.acquire_or_renew()
    assert await b.acquire_or_renew() is False
    # a is alive but stuck: it stops renewing. b keeps trying, as its loop would.
    await wait_until(b.acquire_or_renew, within=5, what="the lease was taken over")
    assert await b.current_holder() == "replica-b"
    # a comes back: it has lost the lease and says so, and cannot take it from b
    with caplog.at_level(logging.WARNING, logger="storage.lease"):
        assert await a.acquire_or_renew() is False
    assert "poller lease lost to replica-b org=org_l replica=replica-a" in caplog.text
    assert await b.acquire_or_renew() is True


async def test_a_replica_that_is_not_alive_cannot_take_a_lease(r: Redis) -> None:
    nobody = Lease(r, KEYS, key=KEYS.poller_lease, identity=identity("ghost"), ttl=30)
    assert await nobody.acquire_or_renew() is False
    assert await nobody.current_holder() is None


async def test_a_restarted_holder_takes_its_own_lease_back_at_once(r: Redis) -> None:
    before = await lease_for(r, "pod-1", ttl=3600)
    assert await before.acquire_or_renew()
    await die(r, KEYS, before.identity)
    after = await lease_for(r, "pod-1", ttl=3600)  # same replica id, new process
    assert await after.acquire_or_renew() is True


async def test_release_hands_over_at_once(backend: Backend) -> None:
    a = await lease_for(backend.client(), "replica-a", ttl=60)
    b = await lease_for(backend.client(), "replica-b", ttl=60)
    assert await a.acquire_or_renew()
    await a.release()
    assert await a.current_holder() is None
    assert await b.acquire_or_renew() is True


async def test_release_never_frees_someone_elses_lease(backend: Backend) -> None:
    a = await lease_for(backend.client(), "replica-a", ttl=60)
    b = await lease_for(backend.client(), "replica-b", ttl=60)
    await b.release()  # never held: nothing happens
    assert await a.acquire_or_renew()
    await b.release()
    assert await b.current_holder() == "replica-a"
    await backend.client().delete(KEYS.poller_lease)  # a's lease expires ...
    assert await b.acquire_or_renew()  # ... and b takes it
    await a.release()  # a's stale release leaves b's lease alone
    assert await a.current_holder() == "replica-b"


async def test_a_lease_needs_a_positive_ttl(r: Redis) -> None:
    with pytest.raises(ValueError, match="positive TTL"):
        Lease(r, KEYS, key=KEYS.poller_lease, identity=identity("x"), ttl=0)


# --- replica heartbeats -------------------------------------------------------------------------


async def test_a_live_replica_id_is_refused_to_a_second_process(r: Redis) -> None:
    first = Replicas(r, KEYS, Identity("pod-1", "a"), ttl_ms=60_000)
    await first.register(roles=["poller"])
    beat = json.loads(str(await r.hget(KEYS.replicas, "pod-1")))
    beat["life"] = "another process"  # the first is another live process of this host
    await r.hset(KEYS.replicas, "pod-1", json.dumps(beat))
    second = Replicas(r, KEYS, Identity("pod-1", "b"), ttl_ms=60_000)
    with pytest.raises(ReplicaIdInUse, match="REPLICA_ID 'pod-1' is in use"):
        await second.register(roles=["poller"], wait=False)
    assert await first.beat()


async def test_a_lapsing_heartbeat_of_the_same_id_is_waited_out(r: Redis) -> None:
    old = Replicas(r, KEYS, Identity("pod-1", "old"), ttl_ms=300)
    await old.register(roles=["notifier"])
    new = Replicas(r, KEYS, Identity("pod-1", "new"), ttl_ms=300)
    started = time.monotonic()
    await new.register(roles=["notifier"])  # waits for the old heartbeat to lapse
    assert time.monotonic() - started < 1.0
    assert not await old.beat()  # the old process learns it was replaced
    assert await new.beat()


async def test_a_twin_with_the_same_host_name_and_pid_is_never_replaced(
    r: Redis, tmp_path: Path
) -> None:
    # Two containers given one `hostname:` (so one default REPLICA_ID), each running the bot
    # as pid 1: the other's heartbeat names our host and our pid, and it is alive.
    twin = {"nonce": "twin", "alive_until": 2**50, "host": socket.gethostname(),
            "pid": os.getpid(), "life": "the twin", "lock": "the twin's own lock"}  # fmt: skip
    await r.hset(KEYS.replicas, "pod-1", json.dumps(twin))
    newcomer = Replicas(r, KEYS, Identity("pod-1", "new"), ttl_ms=200, lock_dir=tmp_path)
    with pytest.raises(ReplicaIdInUse):
        await newcomer.register(roles=["poller"])  # waits the twin out, then gives up
    assert json.loads(str(await r.hget(KEYS.replicas, "pod-1"))) == twin


# A replica in a process of its own: registers, beats once, says so, and lives on until killed.
REPLICA = """
import asyncio, sys
from pathlib import Path
import redis.asyncio as aioredis
from storage.keys import Keys
from storage.replicas import Identity, Replicas

async def main():
    url, prefix, org, lock_dir, ttl = sys.argv[1:]
    redis = aioredis.Redis.from_url(url, decode_responses=True)  # as open_redis() does
    replicas = Replicas(redis, Keys(prefix, org), Identity("pod-1", "old"),
                        ttl_ms=int(ttl), lock_dir=Path(lock_dir))
    await replicas.register(roles=["poller"])
    assert await replicas.beat()
    print("ready", flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


@contextlib.asynccontextmanager
async def replica_process(
    redis_url: str, lock_dir: Path, *, ttl_ms: int
) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", REPLICA, redis_url, KEYS.prefix, KEYS.org_id, str(lock_dir),
        str(ttl_ms), stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
        yield proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_a_process_killed_in_place_is_replaced_at_once(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    async with replica_process(redis_url, tmp_path, ttl_ms=60_000) as old:
        newcomer = Replicas(redis_client, KEYS, Identity("pod-1", "new"), ttl_ms=60_000,
                            lock_dir=tmp_path)  # fmt: skip
        with pytest.raises(ReplicaIdInUse):  # alive: it holds the replica's lock
            await newcomer.register(roles=["poller"], wait=False)
        old.kill()  # SIGKILL: it leaves its heartbeat behind, alive for another minute
        await old.wait()
        started = time.monotonic()
        await newcomer.register(roles=["poller"])
        assert time.monotonic() - started < 0.5  # its lock was free: no waiting
    assert json.loads(str(await redis_client.hget(KEYS.replicas, "pod-1")))["nonce"] == "new"
    assert await newcomer.beat()


async def test_without_its_lock_file_a_dead_heartbeat_is_waited_out(
    redis_url: str, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    (tmp_path / "before").mkdir()
    async with replica_process(redis_url, tmp_path / "before", ttl_ms=1000) as old:
        old.kill()
        await old.wait()
        lapses = json.loads(str(await redis_client.hget(KEYS.replicas, "pod-1")))["alive_until"]
    # The restarted container got an empty /tmp (a tmpfs): nothing proves the old one dead.
    (tmp_path / "after").mkdir()
    newcomer = Replicas(redis_client, KEYS, Identity("pod-1", "new"), ttl_ms=1000,
                        lock_dir=tmp_path / "after")  # fmt: skip
    with pytest.raises(ReplicaIdInUse):
        await newcomer.register(roles=["poller"], wait=False)
    await newcomer.register(roles=["poller"])  # waits for the old heartbeat to lapse
    seconds, micros = await redis_client.time()
    assert seconds * 1000 + micros // 1000 >= lapses


def test_the_life_lock_is_exclusive_and_names_its_previous_holder(tmp_path: Path) -> None:
    first, second = LifeLock(tmp_path / "pod-1.lock"), LifeLock(tmp_path / "pod-1.lock")
    assert first.acquire()
    assert not second.acquire()  # held (by another process it would be the same)
    token = first.token
    first.release()
    assert second.acquire()
    assert second.previous == token and second.token != token


def test_the_life_lock_never_writes_through_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (tmp_path / "pod-1.lock").symlink_to(victim)
    assert not LifeLock(tmp_path / "pod-1.lock").acquire()
    assert victim.read_text() == "precious"


async def test_leave_and_members(backend: Backend) -> None:
    r = backend.client()
    a = Replicas(r, KEYS, Identity("a", "1"), ttl_ms=60_000)
    b = Replicas(r, KEYS, Identity("b", "1"), ttl_ms=60_000)
    await a.register(roles=["poller", "notifier"])
    await b.register(roles=["commands"])
    assert await a.beat()  # a beat keeps what registering said
    members = await a.members()
    assert [(m.replica, m.alive, m.roles) for m in members] == [
        ("a", True, ["poller", "notifier"]),
        ("b", True, ["commands"]),
    ]
    await b.leave()
    assert [m.replica for m in await a.members()] == ["a"]
    await r.hset(KEYS.replicas, "junk", "{")
    assert await a.prune(dead_for_ms=0) == 1  # the unreadable one; a is alive


# --- heartbeat --------------------------------------------------------------------------------


async def test_no_heartbeat_reads_as_never(r: Redis) -> None:
    assert await last_poll(r, KEYS) is None


async def test_heartbeat_round_trips_and_expires(r: Redis) -> None:
    await record_poll(r, KEYS, NOW)
    assert await last_poll(r, KEYS) == NOW
    ttl_ms = await r.pttl(KEYS.last_poll)
    assert 0 < ttl_ms <= HEARTBEAT_TTL.total_seconds() * 1000
    await record_poll(r, KEYS, NOW + timedelta(seconds=15), ttl=timedelta(seconds=5))
    assert await last_poll(r, KEYS) == NOW + timedelta(seconds=15)
    assert 0 < await r.pttl(KEYS.last_poll) <= 5000


async def test_unreadable_heartbeat_is_logged_and_reads_as_never(
    r: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    await r.set(KEYS.last_poll, "yesterday-ish")
    with caplog.at_level(logging.WARNING, logger="storage.heartbeat"):
        assert await last_poll(r, KEYS) is None
    assert "unreadable poll heartbeat org=org_l" in caplog.text


async def test_naive_heartbeat_is_taken_as_utc(r: Redis) -> None:
    await r.set(KEYS.last_poll, "2025-03-01T12:00:00")
    assert await last_poll(r, KEYS) == NOW
