"""What `/jobs status` reads, in one place: the poll heartbeat, the jobs tracked, the outbox,
dead letters, the workspace pause, who holds the leases, the replicas alive, the delivering
replica's figures (`Keys.status`), open incidents and raised ops alerts."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from bot.domain.incidents import Incident
from bot.domain.notices import OpsSubject
from storage.connection import Redis
from storage.gates import parse_workspace_pause
from storage.heartbeat import last_poll
from storage.incidents import IncidentStore
from storage.keys import Keys
from storage.ops import OpsState
from storage.replicas import Replicas
from storage.snapshot_codec import BUCKETS


@dataclass(frozen=True)
class StatusFigures:
    last_poll: datetime | None
    jobs_tracked: int
    backlog: int
    dead_letters: int
    workspace_paused: str
    poller: str
    notifier: str
    replicas: list[str]
    incidents: list[Incident]
    raised: list[OpsSubject]
    delivery: dict[str, Any] | None = field(default=None)  # the delivering replica's figures


def _holder(raw: Any) -> str:
    if not raw:
        return ""
    try:
        return str(json.loads(raw)["replica"])
    except (ValueError, KeyError, TypeError):
        return ""


class StatusReader:
    def __init__(self, redis: Redis, keys: Keys, replicas: Replicas) -> None:
        self._redis = redis
        self._keys = keys
        self._replicas = replicas
        self._incidents = IncidentStore(redis, keys)
        self._ops = OpsState(redis, keys)

    async def read(self) -> StatusFigures:
        k = self._keys
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.xlen(k.outbox)
            pipe.xlen(k.dead_letter)
            pipe.get(k.slack_pause)
            pipe.get(k.poller_lease)
            pipe.get(k.notifier_lease)
            pipe.hlen(k.snapshot)  # the format before issue 11, until it is migrated
            for bucket in range(BUCKETS):  # one round trip: the buckets share a hash tag
                pipe.hlen(k.snapshot_bucket(bucket))
            backlog, dead, paused, poller, notifier, legacy, *buckets = await pipe.execute()
        tracked = sum(int(n or 0) for n in buckets) or int(legacy or 0)
        pause = parse_workspace_pause(paused)
        members = await self._replicas.members()
        table = await self._incidents.table()
        _, _, raised = await self._ops.read()
        return StatusFigures(
            last_poll=await last_poll(self._redis, k),
            jobs_tracked=tracked,
            backlog=int(backlog or 0),
            dead_letters=int(dead or 0),
            workspace_paused=f"{pause.reason}: {pause.hint}" if pause else "",
            poller=_holder(poller),
            notifier=_holder(notifier),
            replicas=[
                f"{m.replica} ({', '.join(m.roles) or 'no roles'})" for m in members if m.alive
            ],
            incidents=list(table.incidents.values()),
            raised=sorted(raised),
            delivery=await self._ops.status(),
        )
