"""Slack gates in Redis, shared by every replica and judged by Redis time.

- A channel's **pause** (`Keys.channel_pause`): a 429's Retry-After, or a back-off after a
  failure; the value says why (`rate_limited`, `backoff`). Extended, never shortened, except
  that `clear_backoffs()` lifts back-off pauses at once when Slack is seen healthy again.
- A channel's **pace** (`Keys.channel_pace`): set by `ActionRecords.begin()` just before each
  call, so a channel gets at most one message per interval across replicas.
- The **workspace pause** (`Keys.slack_pause`): a token or scope problem stops all delivery;
  the value (JSON) holds the Slack error, a hint for the operator and since when. It has no
  TTL: it is cleared when `auth.test` works again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from storage.connection import Redis
from storage.keys import Keys
from storage.lua import script

BACKOFF = "backoff"
RATE_LIMITED = "rate_limited"

# Extend a pause, never shorten it (PEXPIRE ... GT needs Redis 7.0; the bot supports 6.2).
# KEYS: pause; ARGV: ms, reason
PAUSE = """
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
  return 1
end
return 0
"""

# KEYS: pauses...; ARGV: the reason to lift
LIFT = """
local lifted = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    lifted = lifted + 1
  end
end
return lifted
"""

# KEYS: pauses... -> their values (false where absent); a script, so it routes by slot
VALUES = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('GET', key) or '' end
return out
"""

# KEYS: slack pause; ARGV: reason, hint, needed scopes -> sets it, keeping the first `since`
PAUSE_WORKSPACE = script("""
local now = now_ms()
local current = decode(redis.call('GET', KEYS[1]))
local since = now
if current and current.reason == ARGV[1] then since = num(current.since, now) end
redis.call('SET', KEYS[1], cjson.encode({reason = ARGV[1], hint = ARGV[2], since = since,
                                         needed = ARGV[3]}))
return since
""")


@dataclass(frozen=True, slots=True)
class WorkspacePause:
    reason: str  # Slack's error code (`token_revoked`, `missing_scope`, …)
    hint: str  # what the operator should do
    since: int  # Redis ms
    needed: str = ""  # missing_scope: the scope(s) Slack said the call needs (comma-separated)


def parse_workspace_pause(raw: str | None) -> WorkspacePause | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)
        return WorkspacePause(
            reason=str(value.get("reason") or "unknown"),
            hint=str(value.get("hint") or ""),
            since=int(value.get("since") or 0),
            needed=str(value.get("needed") or ""),
        )
    except (ValueError, AttributeError, TypeError):
        return WorkspacePause(reason="unknown", hint="", since=0)


class SlackGates:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._pause = redis.register_script(PAUSE)
        self._lift = redis.register_script(LIFT)
        self._pause_workspace = redis.register_script(PAUSE_WORKSPACE)
        self._values = redis.register_script(VALUES)

    async def pause(self, channel: str, ms: int, reason: str) -> None:
        """The channel waits `ms` (a longer pause already set stays)."""
        await self._pause(keys=[self._keys.channel_pause(channel)], args=[max(ms, 1), reason])

    async def pause_left(self, channel: str) -> int:
        return max(int(await self._redis.pttl(self._keys.channel_pause(channel))), 0)

    async def clear_backoffs(self, channels: Iterable[str]) -> int:
        """Lift back-off pauses (not rate limits) of these channels: Slack works again."""
        keys = [self._keys.channel_pause(ch) for ch in channels]
        total = 0
        # All keys of one org share a slot; batches keep each call small.
        for start in range(0, len(keys), 100):
            total += int(await self._lift(keys=keys[start : start + 100], args=[BACKOFF]))
        return total

    async def backed_off(self, channels: Iterable[str]) -> list[str]:
        """The channels among these that wait out a back-off (not a rate limit)."""
        wanted = list(channels)
        if not wanted:
            return []
        keys = [self._keys.channel_pause(ch) for ch in wanted]
        values = await self._values(keys=keys, args=[])
        return [ch for ch, value in zip(wanted, values, strict=True) if value == BACKOFF]

    async def pause_workspace(self, reason: str, hint: str, needed: str = "") -> int:
        """Pause all delivery; returns since when (Redis ms) it has been paused for `reason`."""
        return int(
            await self._pause_workspace(keys=[self._keys.slack_pause], args=[reason, hint, needed])
        )

    async def resume_workspace(self) -> bool:
        return bool(await self._redis.delete(self._keys.slack_pause))

    async def workspace_pause(self) -> WorkspacePause | None:
        raw = await self._redis.get(self._keys.slack_pause)
        return parse_workspace_pause(None if raw is None else str(raw))
