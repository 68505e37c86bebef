"""The poller the benchmarks measure: the bot's own, against the bench's listing server."""

from __future__ import annotations

import redis.asyncio as aioredis
from pydantic import SecretStr

from bench.listing_server import API_KEY, ORG
from bot.alerts.poller import Poller
from bot.app.metrics import Metrics
from bot.domain.states import StateClassifier
from bot.timbal import TimbalClient
from storage.keys import Keys
from tests.replica_helpers import alive, identity


async def bench_poller(
    redis: aioredis.Redis, name: str, base_url: str
) -> tuple[Poller, TimbalClient]:
    """A poller under the key prefix `name`, its replica alive; the caller closes the client."""
    keys = Keys(name, ORG)
    who = identity(name)
    await alive(redis, keys, who)
    timbal = TimbalClient(base_url=base_url, api_key=SecretStr(API_KEY), org_id=ORG, timeout=60.0)
    poller = Poller(
        redis=redis,
        timbal=timbal,
        keys=keys,
        classifier=StateClassifier(),
        org_id=ORG,
        interval=60.0,
        metrics=Metrics(),
        identity=who,
    )
    return poller, timbal
