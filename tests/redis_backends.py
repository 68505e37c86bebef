"""Storage tests run on every backend the bot supports: the real redis-server of the test
session, a real 3-master Redis Cluster (`REDIS_CLUSTER=true`), and fakeredis (the embedded
store, `storage.connection.open_redis(None)`)."""

from __future__ import annotations

from dataclasses import dataclass, field

import fakeredis
import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection

from storage.connection import Redis

BACKENDS = ["redis", "cluster", "fakeredis"]


@dataclass
class Backend:
    """Makes clients that all talk to one store (several clients = several replicas)."""

    kind: str
    url: str
    server: fakeredis.FakeServer = field(default_factory=fakeredis.FakeServer)
    clients: list[Redis] = field(default_factory=list)

    def client(self) -> Redis:
        made: Redis
        if self.kind == "redis":
            made = aioredis.Redis.from_url(self.url, decode_responses=True)
        elif self.kind == "cluster":
            made = RedisCluster.from_url(self.url, decode_responses=True)
        else:
            made = fakeredis.FakeAsyncRedis(server=self.server, decode_responses=True)
        self.clients.append(made)
        return made

    async def aclose(self) -> None:
        for made in self.clients:
            await made.aclose()


@dataclass
class RoundTrips:
    """Counts requests written to Redis: a pipeline or a script call is one, whatever it does.

    (INFO's `total_commands_processed` cannot tell: it also counts the commands a script runs.)
    """

    count: int = 0


def count_round_trips(monkeypatch: pytest.MonkeyPatch) -> RoundTrips:
    counter = RoundTrips()
    original = AbstractConnection.send_packed_command

    async def counting(
        self: AbstractConnection, command: object, check_health: bool = True
    ) -> None:
        counter.count += 1
        await original(self, command, check_health)  # type: ignore[arg-type]

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return counter
