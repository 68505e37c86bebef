"""Plans: what each outbox entry asks for, stored the first time it is planned.

HASH `Keys.plans`: outbox entry id -> Plan JSON. The first plan stored for an entry wins, so a
crash, a restart, a second replica or a change of subscriptions in between never changes
which actions an entry means (their ids, channels and messages). What a plan held back for a
muted channel is counted in the same script (`Keys.held`), so it is counted once. Plans are
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

# KEYS: plans, held, mutes; ARGV: entry id, plan JSON, then (mute field, tally, last failure)
# for each event held back -> the stored plan (ours or an earlier one), or '' when a mute the
# plan relies on has ended meanwhile (plan again: the event is no longer held back).
SAVE = """
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored then return stored end
for i = 3, #ARGV, 3 do
  if redis.call('HEXISTS', KEYS[3], ARGV[i]) == 0 then return '' end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
for i = 3, #ARGV, 3 do
  redis.call('HINCRBY', KEYS[2], ARGV[i] .. '|' .. ARGV[i + 1], 1)
  if ARGV[i + 2] ~= '' then redis.call('HSET', KEYS[2], ARGV[i] .. '|last', ARGV[i + 2]) end
end
return ARGV[2]
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

    async def save(self, plan: Plan) -> Plan | None:
        """Store `plan` unless one is stored already (the stored one is returned either way),
        and count what it held back for the mutes' summaries, in the same step. None: a mute
        the plan relies on has ended since it was routed; route and plan the entry again."""
        held: list[str] = []
        for h in plan.held_back:
            held += [f"{h.channel}|{h.target}", h.tally, h.last_failure]
        k = self._keys
        stored = await self._save(
            keys=[k.plans, k.held, k.mutes], args=[plan.entry_id, plan.model_dump_json(), *held]
        )
        if not stored:
            return None
        try:
            return Plan.model_validate_json(stored)
        except ValidationError:  # an unreadable earlier plan: ours replaces it
            await self._redis.hset(self._keys.plans, plan.entry_id, plan.model_dump_json())
            return plan
