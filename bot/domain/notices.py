"""Notices: messages the bot owes a channel that are not a job's transition.

A notice travels through the outbox like an event (field `notice` instead of `event`), so it
is delivered exactly once by the same core, in the channel's order:

- `MuteSummary`: what a mute held back, written in the step that ends the mute;
- `CardRefresh`: an incident changed (acknowledged, muted from its card): update the card;
- `Escalation`: an incident with a mention stayed unacknowledged: remind on-call once;
- `OpsAlert`: the bot itself is in trouble (Timbal failing, Slack paused, a growing backlog),
  or is well again.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class MuteEnd(StrEnum):
    EXPIRED = "expired"
    UNMUTED = "unmuted"


class MuteSummary(BaseModel):
    """What a mute of `target` in `channel` held back until it ended at `ended_at` (ms)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["mute_summary"] = "mute_summary"
    channel: str
    target: str
    reason: MuteEnd
    ended_at: int  # epoch ms
    failures: int = 0
    successes: int = 0
    others: int = 0
    last_failure: str = ""  # one line: when, which connector, the error's first line
    by: str = ""  # who lifted it: their name as Slack sent it (shown, never a mention)

    @property
    def event_id(self) -> str:
        return f"notice:mute:{self.channel}:{self.target}:{self.ended_at}"

    @property
    def total(self) -> int:
        return self.failures + self.successes + self.others


class CardRefresh(BaseModel):
    """Render the card `card` of an incident again from the incident as it is then (nothing,
    when it has closed meanwhile: the recovery rendered it last)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["card_refresh"] = "card_refresh"
    channel: str
    connector: str
    card: str  # the incident's card action
    why: str = ""  # "acknowledged", "muted"
    at: int  # epoch ms, when it was asked for

    @property
    def event_id(self) -> str:
        return f"notice:card:{self.card}:{self.why}:{self.at}"


class Escalation(BaseModel):
    """Remind on-call, once, of an incident nobody acknowledged."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["escalation"] = "escalation"
    channel: str
    connector: str
    card: str  # the incident's card action (one reminder per incident)
    waited: int  # seconds since the incident opened

    @property
    def event_id(self) -> str:
        return f"notice:escalate:{self.card}"


class OpsSubject(StrEnum):
    TIMBAL = "timbal"  # the listing failed poll after poll
    SLACK = "slack"  # delivery paused for over a minute
    BACKLOG = "backlog"  # the outbox keeps growing


class OpsAlert(BaseModel):
    """The bot's own health, for OPS_CHANNEL: in trouble (`raised`) or well again."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: Literal["ops"] = "ops"
    channel: str
    subject: OpsSubject
    raised: bool
    detail: str = ""
    at: int  # epoch ms

    @property
    def event_id(self) -> str:
        state = "raised" if self.raised else "recovered"
        return f"notice:ops:{self.subject.value}:{state}:{self.at}"


Notice = Annotated[MuteSummary | CardRefresh | Escalation | OpsAlert, Field(discriminator="kind")]
NOTICES: TypeAdapter[MuteSummary | CardRefresh | Escalation | OpsAlert] = TypeAdapter(Notice)


def parse_notice(raw: str) -> MuteSummary | CardRefresh | Escalation | OpsAlert:
    """A notice from its JSON; raises ValueError (pydantic's) when it is none of them."""
    return NOTICES.validate_json(raw)
