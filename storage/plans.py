"""Plans: what each outbox entry asks for, stored the first time it is planned.

HASH `Keys.plans`: outbox entry id -> Plan JSON. The first plan stored for an entry wins, so a
crash, a restart, a second replica or a change of subscriptions in between never changes
which actions an entry means (their ids, channels and messages). What a plan held back for a
muted channel is counted in the same script (`Keys.held`), so it is counted once, and what it
does to incidents (`Plan.incidents`) is written in the same script too, each only if the
incident is still at the version the plan was made from: a plan made from a stale view of an
incident (another replica's plan, a restart) is refused and the entry planned again. Plans
are deleted with their entry (`OutboxConsumer.finish`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from pydantic import ValidationError

from bot.domain.delivery import Plan
from storage.connection import Redis
from storage.keys import Keys
from storage.lua import script

log = logging.getLogger(__name__)

# KEYS: plans, held, mutes, incidents; ARGV: entry id, plan JSON, n held, then (mute field,
# tally, last failure) for each event held back, then (incident key, expected version, new
# JSON or '' to close, card) for each incident write -> the stored plan (ours or an earlier
# one), or '' when a mute the plan relies on has ended, or an incident it changes is not at
# the version it expects (plan again, from the state as it is now).
SAVE = script("""
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored then return stored end
local n_held = tonumber(ARGV[3])
local first_write = 4 + 3 * n_held
for i = 4, first_write - 1, 3 do
  if redis.call('HEXISTS', KEYS[3], ARGV[i]) == 0 then return '' end
end
for i = first_write, #ARGV, 4 do
  local current = decode(redis.call('HGET', KEYS[4], 'inc:' .. ARGV[i]))
  if current ~= false then  -- an unreadable incident is read as none: any plan replaces it
    local version = 0
    if current then version = num(current.version, 0) end
    if version ~= tonumber(ARGV[i + 1]) then return '' end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
for i = 4, first_write - 1, 3 do
  redis.call('HINCRBY', KEYS[2], ARGV[i] .. '|' .. ARGV[i + 1], 1)
  if ARGV[i + 2] ~= '' then redis.call('HSET', KEYS[2], ARGV[i] .. '|last', ARGV[i + 2]) end
end
for i = first_write, #ARGV, 4 do
  if ARGV[i + 2] ~= '' then
    redis.call('HSET', KEYS[4], 'inc:' .. ARGV[i], ARGV[i + 2])
  else
    local card = ARGV[i + 3]
    redis.call('HDEL', KEYS[4], 'inc:' .. ARGV[i], 'ack:' .. card, 'esc:' .. card,
               'mute:' .. card)
  end
end
return ARGV[2]
""")


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
        and count what it held back for the mutes' summaries and write its incident changes, in
        the same step. None: a mute the plan relies on has ended since it was routed, or an
        incident changed since it was read; route and plan the entry again."""
        args: list[str | int] = [plan.entry_id, plan.model_dump_json(), len(plan.held_back)]
        for h in plan.held_back:
            args += [f"{h.channel}|{h.target}", h.tally, h.last_failure]
        for w in plan.incidents:
            args += [w.key, w.expect, w.value, w.card]
        k = self._keys
        stored = await self._save(keys=[k.plans, k.held, k.mutes, k.incidents], args=args)
        if not stored:
            return None
        try:
            return Plan.model_validate_json(stored)
        except ValidationError:  # an unreadable earlier plan: ours replaces it
            await self._redis.hset(self._keys.plans, plan.entry_id, plan.model_dump_json())
            return plan
