"""Lua pieces shared by the storage scripts.

Every script reads the time from Redis (`now_ms`), so leases, heartbeats and pauses are
judged by one clock whatever the replicas' clocks say. Values are JSON written by pydantic;
`decode` gives `nil` for a missing value and `false` for an unreadable one, and callers
check field types (JSON null decodes to `cjson.null`, which is truthy in Lua).
"""

from __future__ import annotations

PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function decode(raw)
  if not raw then return nil end
  local ok, value = pcall(cjson.decode, raw)
  if ok and type(value) == 'table' then return value end
  return false
end
local function num(value, default)
  if type(value) == 'number' then return value end
  return default
end
local function str(value)
  if type(value) == 'string' then return value end
  return nil
end
-- A replica is alive while its heartbeat (in the replicas hash) names this nonce and has
-- not lapsed; a restarted process registers a new nonce, so its old claims are dead at once.
local function alive(replicas, replica, nonce, now)
  if str(replica) == nil or str(nonce) == nil then return false end
  local beat = decode(redis.call('HGET', replicas, replica))
  return beat ~= nil and beat ~= false and beat.nonce == nonce
    and num(beat.alive_until, 0) > now
end
"""


def script(body: str) -> str:
    """A script with the prelude in front of it."""
    return PRELUDE + body
