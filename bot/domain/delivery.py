"""The delivery core's vocabulary: routes, actions, plans and the record of each action.

An outbox entry (one event) is *routed* to channels, and each (event, channel) is *planned*
into actions: post a message, reply in a thread, update a message in place. A plan is stored
once per entry, so a crash, a restart or a change of subscriptions never changes what an
entry means. Every action goes out exactly once: it is claimed, sent, then recorded, and its
`ActionRecord` says where it stands. Times are Redis server milliseconds (one clock for every
replica).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Route(BaseModel):
    """One channel an event goes to, with the mention (Slack markup) its alert carries.

    `muted` is the target of the channel's mute that holds the event back ("" when it is not
    muted): nothing is posted, and the event is counted for the mute's summary instead.
    `recovery_only`: the channel wants failures, not successes; a success reaches it only to
    close the connector's open incident there (and is dropped when none is open).
    """

    model_config = ConfigDict(frozen=True)

    channel: str
    mention: str | None = None
    muted: str = ""
    recovery_only: bool = False


class ActionKind(StrEnum):
    POST = "post"  # chat.postMessage, top level
    REPLY = "reply"  # chat.postMessage with thread_ts: the target's ts
    UPDATE = "update"  # chat.update of the target's ts


class Message(BaseModel):
    """What Slack is sent: the notification `text` and Block Kit `blocks` (possibly none)."""

    model_config = ConfigDict(frozen=True)

    text: str
    blocks: list[dict[str, Any]] = Field(default_factory=list)


class Action(BaseModel):
    """One Slack call to make exactly once.

    `id` is stable: `{event_id}|{channel}|{slot}`, so the same entry always plans the same ids
    and a record or a message's metadata names the action unambiguously. `target` is the id
    of the action whose message a REPLY threads under or an UPDATE rewrites; it always comes
    earlier in the same channel's queue. A `digestible` post may be merged with its
    neighbours into one digest message during a storm; `event_ids` are the events it reports.
    `fallback`: when the target's message is gone (deleted in Slack, never posted, or only in a
    digest), post this message top-level instead; for an UPDATE of an incident's card, the new
    message becomes the card (the target's record is moved to it).
    """

    model_config = ConfigDict(frozen=True)

    id: str
    channel: str
    kind: ActionKind
    message: Message
    target: str | None = None
    event_ids: list[str] = Field(default_factory=list)
    digestible: bool = False
    mention: str | None = None  # the route's mention (already in `message` where it belongs)
    fallback: bool = False


class HeldBack(BaseModel):
    """An event a channel's mute kept out of it, counted for the mute's summary."""

    model_config = ConfigDict(frozen=True)

    channel: str
    target: str  # the mute's target
    tally: str  # "failures", "successes" or "others"
    last_failure: str = ""  # for a failure: a one-line description (JSON-safe text)


class IncidentWrite(BaseModel):
    """A change of one incident that a plan makes, stored with the plan in one step and only
    if the incident is still at `expect` (its version; 0: no incident open). `value` is the
    incident's JSON after the change; "" closes it (and drops what the card's buttons set)."""

    model_config = ConfigDict(frozen=True)

    key: str
    expect: int
    value: str
    card: str  # the card's action id


class Plan(BaseModel):
    """Everything one outbox entry asks for, in the order it must happen per channel, what
    muted channels held back of it (counted once, when the plan is stored), and the incidents
    it opens, changes or closes (written in the same step)."""

    model_config = ConfigDict(frozen=True)

    entry_id: str
    event_id: str
    actions: list[Action]
    held_back: list[HeldBack] = Field(default_factory=list)
    incidents: list[IncidentWrite] = Field(default_factory=list)


def action_id(event_id: str, channel: str, slot: str) -> str:
    return f"{event_id}|{channel}|{slot}"


class RecordState(StrEnum):
    IN_FLIGHT = "in_flight"  # claimed at least once, not finished
    SENT = "sent"  # Slack answered ok (or our message was found afterwards)
    DEAD = "dead"  # given up: in the dead-letter stream
    SKIPPED = "skipped"  # deliberately not sent (its parent was never posted, or digested)

    @property
    def final(self) -> bool:
        return self is not RecordState.IN_FLIGHT


class ActionRecord(BaseModel):
    """What Redis knows about one action (written by storage.records' scripts).

    `holder`/`nonce`/`token` name the current claim; `lease_until` is when it lapses.
    `sending` is set just before the Slack call; a record found `sending` by the next claim,
    or released as "maybe posted", is in `doubt`: the next attempt looks for its message in
    the channel before sending (`doubt_since` bounds that search), and when the call was cut
    off (`interrupted`: a crash, a timeout) only once it could no longer be reaching Slack.
    `strikes` counts calls that never finished, bugs, and failures Slack kept answering this
    message only; too many and the action is quarantined.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    state: RecordState
    holder: str | None = None
    nonce: str | None = None
    token: int = 0
    lease_until: int = 0
    first_at: int = 0
    attempt_at: int = 0
    strikes: int = 0
    sending: bool = False
    doubt: bool = False
    doubt_since: int = 0
    interrupted: bool = False  # the doubtful call was cut off: it may still be reaching Slack
    ts: str | None = None
    reason: str | None = None
    done_at: int = 0

    @property
    def final(self) -> bool:
        return self.state.final
