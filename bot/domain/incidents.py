"""Incidents: one per connector and channel, from its first failure until its next success.

The first failure's alert is the incident's *card*; further failures go into the card's thread
and update the card; the next success closes it with a recovery reply. The incident remembers
the card by the id of the action that posted it (its Slack ts is in that action's record),
who acknowledged it, whether on-call was reminded, and the last failure, to render the card.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict

from bot.domain.events import EventKind, JobEvent
from bot.domain.models import Timestamp

SEEN_EVENTS = 50

# Events that open an incident or join the open one.
INCIDENT_KINDS = frozenset({EventKind.FAILED, EventKind.STALLED, EventKind.LONG_RUNNING})


def incident_key(channel: str, connector: str) -> str:
    return f"{channel}|{connector}"


class Incident(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    channel: str
    connector: str
    card: str  # the id of the action that posted the card
    opened_at: Timestamp  # when the first failure happened
    noticed_at: Timestamp  # when the bot saw it (escalation counts from here)
    last_at: Timestamp  # when the last one did
    failures: int = 1
    last: JobEvent  # the last failure, as the card shows it
    mention: str | None = None  # Slack markup of who escalation reminds
    acked_by: str = ""  # a Slack user id
    acked_name: str = ""  # their name, shown without pinging
    acked_at: Timestamp | None = None
    escalated: bool = False
    moving_since: Timestamp | None = None  # a stalled run moves again (no reminder then)
    muted_until: Timestamp | None = None
    muted_by: str = ""  # a name, shown without pinging
    version: int = 1
    seen: list[str] = []  # the last SEEN_EVENTS events it counted (a replay counts nothing)

    @property
    def key(self) -> str:
        return incident_key(self.channel, self.connector)

    @property
    def ref(self) -> str:
        """A short, stable reference to this incident (its card), for the card's buttons."""
        return card_ref(self.card)

    def stored(self) -> str:
        """The JSON the lifecycle stores: what the card's buttons set is kept apart."""
        return self.model_dump_json(exclude=set(OVERLAY_FIELDS))


# Set from the card's buttons and by escalation, each in its own field next to the incident
# (first acknowledger wins, one reminder): the lifecycle's writes never touch them.
OVERLAY_FIELDS = (
    "acked_by",
    "acked_name",
    "acked_at",
    "escalated",
    "muted_until",
    "muted_by",
)


def card_ref(card: str) -> str:
    return hashlib.sha256(card.encode()).hexdigest()[:20]
