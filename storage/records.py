"""Action records: the claim that makes each Slack call happen once, fenced and by Redis time.

One HASH (`Keys.actions`) maps each action id to its `ActionRecord` JSON. Every change is one
script that reads Redis `TIME`, so no replica's clock matters:

- `claim()` takes actions for this process: records the holder, a fresh fencing token
  (`INCR Keys.fence`) and a lease, and carries any doubt forward (a previous attempt that was
  `sending` when it stopped may have posted). An action held by another
  live holder within its lease is reported `held`; a holder whose heartbeat lapsed holds
  nothing. A final record is reported `done`. The same reply carries the channel's gates
  (pause, pace) and the workspace pause, so one round trip gives `decide()` all its facts.
- `begin()` is the check just before the Slack call: the token is still ours, our heartbeat
  is alive, enough lease is left for the call, and the channel's pace gate is free (it is set
  here, atomically). It marks the actions `sending` and counts a *strike*: a call that never
  finishes (the process died in it) keeps its strike, so an action that kills the process
  again and again is quarantined; waiting or searching is never counted.
- `finish()` records the outcome (sent with its ts, dead, skipped), only with a valid token
  of an action still in flight (an outcome is recorded once).
  With `home`, an update's or a repost's ts also becomes where the target action's message
  lives (an incident card moved to a new message), in the same step.
- `release()` gives a claim back without a final outcome: `unused` (nothing was sent),
  `not_posted` (Slack refused: 429, a scoped error), `maybe_posted` (a 5xx: the next attempt
  searches first) and `interrupted` (a timeout or a stand-down cut the call off: the next
  attempt also waits until it could no longer reach Slack) refund the strike of the call,
  unless `keep_strike` (Slack failed this message while it answered everything else); `bug`
  keeps it, and counts one when the bug came before the call.
- `renew()` extends the lease of held actions (a history search waiting out a 429).
Records outlive their entry (a dead-letter replay finds them) and are pruned by age.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import ValidationError

from bot.domain.delivery import ActionRecord, Plan, RecordState
from storage.connection import Redis
from storage.keys import Keys
from storage.lua import script
from storage.replicas import Identity

IN_FLIGHT_RETENTION_FACTOR = 10
DAY_MS = 24 * 3600 * 1000

# KEYS: actions, replicas, fence, channel pause, channel pace, slack pause
# ARGV: replica, nonce, lease ms, action ids...
CLAIM = script("""
local now = now_ms()
local lease = tonumber(ARGV[3])
local out = {now, redis.call('PTTL', KEYS[4]), redis.call('GET', KEYS[4]) or '',
             redis.call('PTTL', KEYS[5]), redis.call('GET', KEYS[6]) or ''}
for i = 4, #ARGV do
  local id = ARGV[i]
  local raw = redis.call('HGET', KEYS[1], id)
  local rec = decode(raw)
  if rec == false then  -- unreadable: assume an attempt a day ago that may have posted
    rec = {state = 'in_flight', first_at = now - 86400000, doubt = true,
           doubt_since = now - 86400000, strikes = 0}
  end
  local status
  if rec and (rec.state == 'sent' or rec.state == 'dead' or rec.state == 'skipped') then
    status = 'done'
  elseif rec and str(rec.holder) and not (rec.holder == ARGV[1] and rec.nonce == ARGV[2])
      and num(rec.lease_until, 0) > now and alive(KEYS[2], rec.holder, rec.nonce, now) then
    status = 'held'
  else
    local prev = rec or {}
    local doubt = prev.doubt == true or prev.sending == true
    local since = 0
    local interrupted = false  -- the doubtful call was cut off: it may still reach Slack
    if prev.doubt == true then
      since = num(prev.doubt_since, 0)
      interrupted = prev.interrupted == true
    elseif prev.sending == true then
      since = num(prev.attempt_at, now)
      interrupted = true
    end
    local new = {state = 'in_flight', holder = ARGV[1], nonce = ARGV[2],
                 token = redis.call('INCR', KEYS[3]), lease_until = now + lease,
                 first_at = num(prev.first_at, now), attempt_at = num(prev.attempt_at, now),
                 strikes = num(prev.strikes, 0), sending = false,
                 doubt = doubt, doubt_since = since, interrupted = interrupted, done_at = 0}
    raw = cjson.encode(new)
    redis.call('HSET', KEYS[1], id, raw)
    status = 'claimed'
  end
  out[#out + 1] = status
  out[#out + 1] = raw or ''
end
return out
""")

# KEYS: actions, replicas, channel pace; ARGV: replica, nonce, min lease left ms, pace ms
# (-1: a retry of a refused call, which neither waits for nor sets the pace gate),
# then (action id, token) pairs
BEGIN = script("""
local now = now_ms()
if not alive(KEYS[2], ARGV[1], ARGV[2], now) then return {'lost', 'heartbeat'} end
local recs = {}
for i = 5, #ARGV, 2 do
  local rec = decode(redis.call('HGET', KEYS[1], ARGV[i]))
  if not rec or num(rec.token, -1) ~= tonumber(ARGV[i + 1]) or rec.nonce ~= ARGV[2] then
    return {'lost', ARGV[i]}
  end
  if num(rec.lease_until, 0) - now < tonumber(ARGV[3]) then return {'lost', 'lease'} end
  recs[#recs + 1] = {ARGV[i], rec}
end
local pace_ms = tonumber(ARGV[4])
if pace_ms >= 0 then
  local pace = redis.call('PTTL', KEYS[3])
  if pace > 0 then return {'paced', pace} end
end
for _, pair in ipairs(recs) do
  local rec = pair[2]
  rec.strikes = num(rec.strikes, 0) + 1
  rec.sending = true
  rec.doubt = false
  rec.doubt_since = 0
  rec.interrupted = false
  rec.attempt_at = now
  redis.call('HSET', KEYS[1], pair[1], cjson.encode(rec))
end
if pace_ms > 0 then redis.call('SET', KEYS[3], '1', 'PX', pace_ms) end
return {'ok', now}
""")

# KEYS: actions; ARGV: state, ts, reason, home (an action id, or ''), then (action id, token)
# pairs. With a home and a ts, once any pair is recorded, the home action's record says its
# message is at ts (sent, reason 'moved' when that changed it) and is kept fresh for pruning.
FINISH = script("""
local now = now_ms()
local lost = {}
local recorded = 0
for i = 5, #ARGV, 2 do
  local rec = decode(redis.call('HGET', KEYS[1], ARGV[i]))
  if rec and num(rec.token, -1) == tonumber(ARGV[i + 1]) and rec.state == 'in_flight' then
    rec.state = ARGV[1]
    if ARGV[2] ~= '' then rec.ts = ARGV[2] end
    if ARGV[3] ~= '' then rec.reason = ARGV[3] end
    rec.done_at = now
    rec.sending = false
    rec.holder = nil
    rec.nonce = nil
    rec.lease_until = 0
    redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(rec))
    recorded = recorded + 1
  else
    lost[#lost + 1] = ARGV[i]
  end
end
if recorded > 0 and ARGV[4] ~= '' and ARGV[2] ~= '' then
  local home = decode(redis.call('HGET', KEYS[1], ARGV[4]))
  if not home then home = {first_at = now, strikes = 0} end
  if home.ts ~= ARGV[2] or home.state ~= 'sent' then
    home.ts = ARGV[2]
    home.reason = 'moved'
  end
  home.state = 'sent'
  home.done_at = now
  home.sending = false
  home.doubt = false
  home.holder = nil
  home.nonce = nil
  home.lease_until = 0
  redis.call('HSET', KEYS[1], ARGV[4], cjson.encode(home))
end
return lost
""")

# KEYS: actions; ARGV: mode, keep strike ('1' or '0'), then (action id, token) pairs
RELEASE = script("""
local lost = {}
for i = 3, #ARGV, 2 do
  local rec = decode(redis.call('HGET', KEYS[1], ARGV[i]))
  if rec and num(rec.token, -1) == tonumber(ARGV[i + 1]) and rec.state == 'in_flight' then
    local mode = ARGV[1]
    if mode == 'maybe_posted' or mode == 'interrupted'
        or (mode == 'bug' and rec.sending == true) then
      if rec.doubt ~= true then rec.doubt_since = num(rec.attempt_at, 0) end
      rec.doubt = true
      if mode == 'interrupted' and rec.sending == true then rec.interrupted = true end
    end
    if mode == 'bug' and rec.sending ~= true then
      rec.strikes = num(rec.strikes, 0) + 1  -- a bug before the call: counted here
    elseif mode ~= 'bug' and rec.sending == true and ARGV[2] ~= '1' then
      rec.strikes = math.max(num(rec.strikes, 1) - 1, 0)  -- the call's strike, refunded
    end
    rec.sending = false
    rec.holder = nil
    rec.nonce = nil
    rec.lease_until = 0
    redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(rec))
  else
    lost[#lost + 1] = ARGV[i]
  end
end
return lost
""")

# KEYS: actions; ARGV: lease ms, then (action id, token) pairs
RENEW = script("""
local now = now_ms()
for i = 2, #ARGV, 2 do
  local rec = decode(redis.call('HGET', KEYS[1], ARGV[i]))
  if not rec or num(rec.token, -1) ~= tonumber(ARGV[i + 1]) or rec.state ~= 'in_flight' then
    return 0
  end
  rec.lease_until = now + tonumber(ARGV[1])
  redis.call('HSET', KEYS[1], ARGV[i], cjson.encode(rec))
end
return 1
""")


# KEYS: actions (for routing only)
NOW = script("return now_ms()")


class ClaimStatus(StrEnum):
    CLAIMED = "claimed"  # ours now (the record says whether an earlier attempt is in doubt)
    HELD = "held"  # another live holder is on it
    DONE = "done"  # final already


class Release(StrEnum):
    UNUSED = "unused"
    NOT_POSTED = "not_posted"
    MAYBE_POSTED = "maybe_posted"  # Slack answered a failure that may follow a post (a 5xx)
    INTERRUPTED = "interrupted"  # cut off (a timeout, a stand-down): it may still reach Slack
    BUG = "bug"


@dataclass(frozen=True, slots=True)
class Claimed:
    status: ClaimStatus
    record: ActionRecord


@dataclass(frozen=True, slots=True)
class Gates:
    """A channel's gates and the workspace's, as the claim saw them (Redis ms)."""

    now: int
    pause_left: int  # ms the channel is paused for (0: not paused)
    pause_reason: str
    pace_left: int  # ms before the channel may be posted to again
    workspace: str  # why all delivery is paused ("" when it is not): the pause's JSON


@dataclass(frozen=True, slots=True)
class ClaimReply:
    gates: Gates
    claims: dict[str, Claimed]


@dataclass(frozen=True, slots=True)
class BeginReply:
    ok: bool
    paced_for: int = 0  # ms, when the pace gate was closed
    lost: str = ""  # what was lost: "heartbeat", "lease", or an action id


def parse_record(raw: str | bytes | None) -> ActionRecord | None:
    if raw is None or raw == "":
        return None
    try:
        return ActionRecord.model_validate_json(raw)
    except ValidationError:
        return None


def _pairs(tokens: Iterable[tuple[str, int]]) -> list[str | int]:
    flat: list[str | int] = []
    for action, token in tokens:
        flat += [action, token]
    return flat


class ActionRecords:
    def __init__(self, redis: Redis, keys: Keys, identity: Identity) -> None:
        self._redis = redis
        self._keys = keys
        self.identity = identity
        self._claim = redis.register_script(CLAIM)
        self._begin = redis.register_script(BEGIN)
        self._finish = redis.register_script(FINISH)
        self._release = redis.register_script(RELEASE)
        self._renew = redis.register_script(RENEW)
        self._now = redis.register_script(NOW)

    async def now_ms(self) -> int:
        """Redis time, the clock every record is written in."""
        return int(await self._now(keys=[self._keys.actions], args=[]))

    async def claim(self, channel: str, action_ids: Sequence[str], *, lease_ms: int) -> ClaimReply:
        k = self._keys
        reply: list[Any] = await self._claim(
            keys=[
                k.actions,
                k.replicas,
                k.fence,
                k.channel_pause(channel),
                k.channel_pace(channel),
                k.slack_pause,
            ],
            args=[self.identity.replica, self.identity.nonce, lease_ms, *action_ids],
        )
        now, pause, reason, pace, workspace = reply[:5]
        gates = Gates(
            now=int(now),
            pause_left=max(int(pause), 0),
            pause_reason=str(reason),
            pace_left=max(int(pace), 0),
            workspace=str(workspace),
        )
        claims: dict[str, Claimed] = {}
        rest = reply[5:]
        for action, status, raw in zip(action_ids, rest[::2], rest[1::2], strict=True):
            record = parse_record(raw) or ActionRecord(state=RecordState.IN_FLIGHT)
            claims[action] = Claimed(ClaimStatus(str(status)), record)
        return ClaimReply(gates=gates, claims=claims)

    async def begin(
        self, channel: str, tokens: Sequence[tuple[str, int]], *, min_left_ms: int, pace_ms: int
    ) -> BeginReply:
        k = self._keys
        reply: list[Any] = await self._begin(
            keys=[k.actions, k.replicas, k.channel_pace(channel)],
            args=[
                self.identity.replica,
                self.identity.nonce,
                min_left_ms,
                pace_ms,
                *_pairs(tokens),
            ],
        )
        if reply[0] == "ok":
            return BeginReply(ok=True)
        if reply[0] == "paced":
            return BeginReply(ok=False, paced_for=int(reply[1]))
        return BeginReply(ok=False, lost=str(reply[1]))

    async def finish(
        self,
        tokens: Sequence[tuple[str, int]],
        state: RecordState,
        *,
        ts: str = "",
        reason: str = "",
        home: str = "",
    ) -> list[str]:
        """Record a final state; returns the actions whose claim was lost meanwhile. `home`:
        the action whose message now lives at `ts` (see the module docstring)."""
        lost: list[Any] = await self._finish(
            keys=[self._keys.actions], args=[state.value, ts, reason, home, *_pairs(tokens)]
        )
        return [str(a) for a in lost]

    async def release(
        self, tokens: Sequence[tuple[str, int]], mode: Release, *, keep_strike: bool = False
    ) -> list[str]:
        lost: list[Any] = await self._release(
            keys=[self._keys.actions],
            args=[mode.value, "1" if keep_strike else "0", *_pairs(tokens)],
        )
        return [str(a) for a in lost]

    async def renew(self, tokens: Sequence[tuple[str, int]], *, lease_ms: int) -> bool:
        return bool(await self._renew(keys=[self._keys.actions], args=[lease_ms, *_pairs(tokens)]))

    async def read(self, action_ids: Iterable[str]) -> dict[str, ActionRecord]:
        wanted = list(dict.fromkeys(action_ids))
        if not wanted:
            return {}
        raw = await self._redis.hmget(self._keys.actions, wanted)
        found = {a: parse_record(r) for a, r in zip(wanted, raw, strict=True)}
        return {a: r for a, r in found.items() if r is not None}

    async def forget_final(self, action_ids: Iterable[str], states: set[RecordState]) -> int:
        """Drop records in one of `states` (a dead-letter replay sends those actions again)."""
        records = await self.read(action_ids)
        drop = [a for a, r in records.items() if r.state in states]
        if drop:
            await self._redis.hdel(self._keys.actions, *drop)
        return len(drop)

    async def prune(self, *, now_ms: int, max_age_ms: int) -> int:
        """Delete final records older than `max_age_ms`, and unreadable ones. An in-flight
        record guards an entry that may still be pending (a long outage): kept ten times
        longer, only to clear leftovers of entries deleted by hand.

        Whatever their age, the records of an event that may still be delivered are kept: one
        with a dead letter (a replay sends it again, and its `sent` records are what keep the
        channels that got it from getting it twice), one with an outbox entry (pending, or a
        replay not planned yet), and every action a stored plan names or targets. The streams
        are read before the records, dead letters first: a replay moves a letter into the
        outbox in one script, so an event replayed meanwhile is seen in one or the other."""
        keep = await self._still_deliverable()
        stale: list[str] = []
        async for name, value in self._redis.hscan_iter(self._keys.actions, count=500):
            if text(name) in keep.actions or event_of(text(name)) in keep.events:
                continue
            record = parse_record(value)
            if record is None:
                stale.append(name)
                continue
            last = max(record.done_at, record.attempt_at, record.first_at)
            limit = max_age_ms if record.final else max_age_ms * IN_FLIGHT_RETENTION_FACTOR
            if now_ms - last > limit:
                stale.append(name)
        for start in range(0, len(stale), 500):
            await self._redis.hdel(self._keys.actions, *stale[start : start + 500])
        return len(stale)

    async def _still_deliverable(self) -> Deliverable:
        k = self._keys
        events = await stream_values(self._redis, k.dead_letter, "event_id")
        events |= await stream_values(self._redis, k.outbox, "event_id")
        actions: set[str] = set()
        async for _, raw in self._redis.hscan_iter(k.plans, count=100):
            try:
                plan = Plan.model_validate_json(raw)
            except ValidationError:  # the notifier plans that entry again
                continue
            actions |= {a.id for a in plan.actions} | {a.target for a in plan.actions if a.target}
        return Deliverable(events=events, actions=actions)


@dataclass(frozen=True, slots=True)
class Deliverable:
    """What may still be delivered: event ids, and action ids named by stored plans."""

    events: set[str]
    actions: set[str]


def event_of(action_id: str) -> str:
    """The event id of `{event_id}|{channel}|{slot}` (an event id may hold `|` itself)."""
    parts = action_id.rsplit("|", 2)
    return parts[0] if len(parts) == 3 else action_id


STREAM_PAGE = 500

# KEYS: a stream; ARGV: first id (inclusive), count, field -> {last id read ('' when none),
# rows read, the field's value in each row that has it}. Only the values cross the network:
# dead letters carry whole events.
STREAM_FIELD = """
local rows = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
local out = {'', #rows}
for _, row in ipairs(rows) do
  out[1] = row[1]
  local fields = row[2]
  for i = 1, #fields, 2 do
    if fields[i] == ARGV[3] then
      out[#out + 1] = fields[i + 1]
      break
    end
  end
end
return out
"""


async def stream_values(redis: Redis, stream: str, field: str) -> set[str]:
    """Every value of `field` in `stream`, one page of `STREAM_PAGE` entries per round trip."""
    read = redis.register_script(STREAM_FIELD)
    values: set[str] = set()
    start = "-"
    while True:
        reply: list[Any] = await read(keys=[stream], args=[start, STREAM_PAGE, field])
        last, rows = text(reply[0]), int(reply[1])
        values.update(text(v) for v in reply[2:])
        if rows < STREAM_PAGE:
            return values
        start = next_stream_id(last)


def text(value: Any) -> str:
    """A reply value as text, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def next_stream_id(entry_id: str) -> str:
    """The smallest stream id after `entry_id` (for an inclusive XRANGE that goes on)."""
    ms, _, seq = entry_id.partition("-")  # a stream id is `<ms>-<seq>`, both 64-bit
    if int(seq) == 2**64 - 1:
        return f"{int(ms) + 1}-0"
    return f"{ms}-{int(seq) + 1}"
