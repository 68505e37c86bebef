"""Incidents and per-channel settings, under the org's hash tag.

`Keys.incidents` is one HASH:

- `inc:{channel}|{connector}` -> the open incident's JSON (`Incident.stored()`), written only
  by the plan that opens, changes or closes it (`storage.plans`), version-checked;
- `ack:{card}` -> who acknowledged it first (HSETNX: the first acknowledger wins);
- `esc:{card}` -> set once when on-call was reminded (escalation happens once);
- `mute:{card}` -> who muted the connector from the card, and until when.

The three side fields are set by the card's buttons and the escalation sweep, each in one
script that also adds the notice that updates the card (or reminds on-call) to the outbox, so
the card changes exactly once through the delivery core. Closing an incident deletes its side
fields with it. `Keys.channel_settings` is a HASH channel -> ChannelSettings JSON.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from bot.domain.incidents import Incident
from bot.domain.models import Timestamp
from bot.domain.notices import CardRefresh, Escalation
from storage.connection import Redis
from storage.keys import Keys
from storage.lua import script

log = logging.getLogger(__name__)

INCIDENT = "inc:"
ACK = "ack:"
ESCALATED = "esc:"
MUTED = "mute:"

# KEYS: incidents, outbox; ARGV: incident key, card, ack JSON, notice event id, notice JSON
# -> {'acked'} | {'already', ack JSON} | {'closed'}
ACKNOWLEDGE = script("""
local inc = decode(redis.call('HGET', KEYS[1], 'inc:' .. ARGV[1]))
if not inc or inc.card ~= ARGV[2] then return {'closed'} end
local first = redis.call('HGET', KEYS[1], 'ack:' .. ARGV[2])
if first then return {'already', first} end
redis.call('HSET', KEYS[1], 'ack:' .. ARGV[2], ARGV[3])
redis.call('XADD', KEYS[2], '*', 'event_id', ARGV[4], 'notice', ARGV[5])
return {'acked'}
""")

# KEYS: incidents, outbox; ARGV: incident key, card, mute JSON, notice event id, notice JSON
# -> 1 when noted on the open incident, 0 when it closed meanwhile
NOTE_MUTE = script("""
local inc = decode(redis.call('HGET', KEYS[1], 'inc:' .. ARGV[1]))
if not inc or inc.card ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'mute:' .. ARGV[2], ARGV[3])
redis.call('XADD', KEYS[2], '*', 'event_id', ARGV[4], 'notice', ARGV[5])
return 1
""")

# KEYS: incidents, outbox; ARGV: incident key, card, notice event id, notice JSON
# -> 1 when the reminder was queued (once per incident, never after an acknowledgement)
ESCALATE = script("""
local inc = decode(redis.call('HGET', KEYS[1], 'inc:' .. ARGV[1]))
if not inc or inc.card ~= ARGV[2] then return 0 end
if redis.call('HEXISTS', KEYS[1], 'ack:' .. ARGV[2]) == 1 then return 0 end
if redis.call('HSETNX', KEYS[1], 'esc:' .. ARGV[2], '1') == 0 then return 0 end
redis.call('XADD', KEYS[2], '*', 'event_id', ARGV[3], 'notice', ARGV[4])
return 1
""")


class Acked(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    by: str  # Slack user id
    name: str = ""
    at: Timestamp


class MutedHere(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    until: Timestamp
    by: str = ""  # a name, shown without pinging


class ChannelSettings(BaseModel):
    """What a channel set with `/jobs settings`."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    threads: bool = True  # further failures of an open incident go into the card's thread


class AckOutcome(StrEnum):
    ACKED = "acked"  # this user is the acknowledger
    ALREADY = "already"  # someone was first (`by`)
    CLOSED = "closed"  # the incident recovered (or its card was replaced) meanwhile


@dataclass(frozen=True, slots=True)
class AckResult:
    outcome: AckOutcome
    first: Acked | None = None


@dataclass
class IncidentTable:
    incidents: dict[str, Incident] = field(default_factory=dict)  # by key
    settings: dict[str, ChannelSettings] = field(default_factory=dict)  # by channel

    def threads(self, channel: str) -> bool:
        return self.settings.get(channel, ChannelSettings()).threads

    def by_ref(self, ref: str) -> Incident | None:
        return next((i for i in self.incidents.values() if i.ref == ref), None)


def _parse(model: type[Any], raw: str, what: str) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError:
        log.warning("ignoring an unreadable %s in the incidents hash", what)
        return None


def compose(fields: dict[str, str]) -> dict[str, Incident]:
    """The open incidents, each with what its card's buttons and escalation set."""
    incidents: dict[str, Incident] = {}
    for name, raw in fields.items():
        if not name.startswith(INCIDENT):
            continue
        incident: Incident | None = _parse(Incident, raw, "incident")
        if incident is None:
            continue
        overlay: dict[str, Any] = {}
        ack = fields.get(ACK + incident.card)
        acked: Acked | None = _parse(Acked, ack, "acknowledgement") if ack else None
        if acked is not None:
            overlay |= {"acked_by": acked.by, "acked_name": acked.name, "acked_at": acked.at}
        if ESCALATED + incident.card in fields:
            overlay["escalated"] = True
        mute = fields.get(MUTED + incident.card)
        muted: MutedHere | None = _parse(MutedHere, mute, "mute note") if mute else None
        if muted is not None:
            overlay |= {"muted_until": muted.until, "muted_by": muted.by}
        incidents[name.removeprefix(INCIDENT)] = (
            incident.model_copy(update=overlay) if overlay else incident
        )
    return incidents


def _ms(now: datetime) -> int:
    return int(now.timestamp() * 1000)


def _refresh(incident: Incident, why: str, now: datetime) -> CardRefresh:
    """The notice that redraws `incident`'s card after a button changed it."""
    return CardRefresh(
        channel=incident.channel,
        connector=incident.connector,
        card=incident.card,
        why=why,
        at=_ms(now),
    )


class IncidentStore:
    def __init__(self, redis: Redis, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._ack = redis.register_script(ACKNOWLEDGE)
        self._note_mute = redis.register_script(NOTE_MUTE)
        self._escalate = redis.register_script(ESCALATE)

    async def table(self) -> IncidentTable:
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self._keys.incidents)
            pipe.hgetall(self._keys.channel_settings)
            fields, raw_settings = await pipe.execute()
        settings: dict[str, ChannelSettings] = {}
        for channel, raw in (raw_settings or {}).items():
            parsed = _parse(ChannelSettings, raw, "channel setting")
            if parsed is not None:
                settings[str(channel)] = parsed
        return IncidentTable(incidents=compose(dict(fields or {})), settings=settings)

    async def acknowledge(
        self, incident: Incident, *, user_id: str, name: str, now: datetime
    ) -> AckResult:
        """Record `user_id` as the acknowledger unless someone was first; on success the card
        is refreshed through the outbox (escalation stops: it checks the same field)."""
        ack = Acked(by=user_id, name=name, at=now)
        refresh = _refresh(incident, "acknowledged", now)
        reply: list[Any] = await self._ack(
            keys=[self._keys.incidents, self._keys.outbox],
            args=[
                incident.key,
                incident.card,
                ack.model_dump_json(),
                refresh.event_id,
                refresh.model_dump_json(),
            ],
        )
        outcome = AckOutcome(str(reply[0]))
        first = _parse(Acked, str(reply[1]), "acknowledgement") if len(reply) > 1 else None
        return AckResult(outcome, first)

    async def note_mute(
        self, incident: Incident, *, until: datetime, by: str, now: datetime
    ) -> bool:
        """Show on the card that its connector is muted here (the mute itself is the
        subscription store's); False when the incident closed meanwhile."""
        note = MutedHere(until=until, by=by)
        refresh = _refresh(incident, "muted", now)
        done = await self._note_mute(
            keys=[self._keys.incidents, self._keys.outbox],
            args=[
                incident.key,
                incident.card,
                note.model_dump_json(),
                refresh.event_id,
                refresh.model_dump_json(),
            ],
        )
        return bool(done)

    async def escalate(self, incident: Incident, *, waited: int) -> bool:
        """Queue the one reminder of an unacknowledged incident; False when it was sent before,
        someone acknowledged, or the incident closed."""
        notice = Escalation(
            channel=incident.channel,
            connector=incident.connector,
            card=incident.card,
            waited=waited,
        )
        done = await self._escalate(
            keys=[self._keys.incidents, self._keys.outbox],
            args=[incident.key, incident.card, notice.event_id, notice.model_dump_json()],
        )
        return bool(done)

    async def set_threads(self, channel: str, on: bool) -> None:
        settings = ChannelSettings(threads=on)
        await self._redis.hset(self._keys.channel_settings, channel, settings.model_dump_json())
