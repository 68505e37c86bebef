"""Plans: what each outbox entry asks for, stored the first time it is planned.

HASH `Keys.plans`: outbox entry id -> Plan JSON. `save()` is HSETNX: the first plan stored for
an entry wins, so a crash, a restart, a second replica or a change of subscriptions in between
never changes which actions an entry means (their ids, channels and messages). Plans are
deleted with their entry (`OutboxConsumer.finish`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pydantic import ValidationError

from bot.domain.delivery import Plan
from storage.connection import Redis
from storage.keys import Keys

log = logging.getLogger(__name__)

# KEYS: plans; ARGV: entry id, plan JSON -> the stored plan (ours or an earlier one)
SAVE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then return ARGV[2] end
return redis.call('HGET', KEYS[1], ARGV[1])
"""


class PlanStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._save = redis.register_script(SAVE)

    async def load(self, entry_ids: Iterable[str]) -> dict[str, Plan]:
        """Stored plans by entry id; an unreadable one is logged and left out (re-planned)."""
        wanted = list(dict.fromkeys(entry_ids))
        if not wanted:
            return {}
        raw = await self._redis.hmget(self._keys.plans, wanted)
        plans: dict[str, Plan] = {}
        for entry_id, value in zip(wanted, raw, strict=True):
            if value is None:
                continue
            try:
                plans[entry_id] = Plan.model_validate_json(value)
            except ValidationError:
                log.warning("ignoring an unreadable plan for outbox entry %s", entry_id)
        return plans

    async def save(self, plan: Plan) -> Plan:
        """Store `plan` unless one is stored already; the stored one is returned either way."""
        stored = await self._save(
            keys=[self._keys.plans], args=[plan.entry_id, plan.model_dump_json()]
        )
        try:
            return Plan.model_validate_json(stored)
        except ValidationError:  # an unreadable earlier plan: ours replaces it
            await self._redis.hset(self._keys.plans, plan.entry_id, plan.model_dump_json())
            return plan
