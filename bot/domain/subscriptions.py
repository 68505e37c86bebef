"""Who hears about what: subscriptions, mutes and mentions, as channels set them from Slack.

A `Target` names connectors: one connector id, a glob pattern on connector ids (`pg-*`), or
every connector (`all`). A subscription sends a channel the events of an `EventSet`, with an
optional `Mention` rendered on failure alerts only; a mute holds a channel's alerts for a
target back until a time, and what it held back is summed up when it ends.
"""

from __future__ import annotations

import fnmatch
import re
from enum import StrEnum
from functools import lru_cache

from pydantic import BaseModel, ConfigDict

from bot.domain.events import EventKind
from bot.domain.models import Timestamp

ALL = "all"


class EventSet(StrEnum):
    FAILURES = "failures"  # failed, cancelled, hung (stalled, long-running), and recoveries
    FINISHED = "finished"  # every terminal event
    ALL = "all"  # finished, and started

    def wants(self, kind: EventKind) -> bool:
        return kind in EVENT_SETS[self]


# A job that hangs is a failure nobody hears about: it is routed like one.
HUNG_KINDS = frozenset({EventKind.STALLED, EventKind.LONG_RUNNING, EventKind.PROGRESSING})
FAILURE_KINDS = frozenset({EventKind.FAILED, EventKind.CANCELLED}) | HUNG_KINDS
TERMINAL_KINDS = (
    frozenset({EventKind.FAILED, EventKind.CANCELLED, EventKind.SUCCEEDED, EventKind.FINISHED})
    | HUNG_KINDS
)
EVENT_SETS: dict[EventSet, frozenset[EventKind]] = {
    EventSet.FAILURES: FAILURE_KINDS,
    EventSet.FINISHED: TERMINAL_KINDS,
    EventSet.ALL: TERMINAL_KINDS | {EventKind.STARTED},
}
# Alerts that page on-call: the mention is rendered on these only.
MENTION_KINDS = frozenset({EventKind.FAILED, EventKind.STALLED, EventKind.LONG_RUNNING})
# A success closes an open incident: every set that wants failures receives it as the
# incident's recovery, even when it does not want plain successes (`Route.recovery_only`).
RECOVERY_KIND = EventKind.SUCCEEDED


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern))


class Target(BaseModel):
    """A connector id, a glob pattern on connector ids, or `all`."""

    model_config = ConfigDict(frozen=True)

    value: str

    @property
    def is_all(self) -> bool:
        return self.value == ALL

    @property
    def is_pattern(self) -> bool:
        return not self.is_all and any(ch in self.value for ch in "*?[")

    def matches(self, connector_id: str) -> bool:
        if self.is_all:
            return True
        if self.is_pattern:
            return _compiled(self.value).fullmatch(connector_id) is not None
        return self.value == connector_id

    @property
    def specificity(self) -> tuple[int, int]:
        """Higher is more specific: an exact id, then patterns by their literal characters,
        then `all`."""
        if self.is_all:
            return (0, 0)
        if self.is_pattern:
            literal = sum(1 for ch in self.value if ch not in "*?[]")
            return (1, literal)
        return (2, len(self.value))


class MentionKind(StrEnum):
    USER = "user"
    GROUP = "group"
    HERE = "here"
    CHANNEL = "channel"


class Mention(BaseModel):
    """Who a failure pings: a user, a user group, or @here / @channel. `label` is what people
    see when the mention is shown but must not ping (listings, confirmations)."""

    model_config = ConfigDict(frozen=True)

    kind: MentionKind
    id: str = ""  # U…/W… or S…; empty for here / channel
    label: str = ""

    @property
    def markup(self) -> str:
        """The live mention, for failure alerts."""
        if self.kind is MentionKind.USER:
            return f"<@{self.id}>"
        if self.kind is MentionKind.GROUP:
            return f"<!subteam^{self.id}>"
        return f"<!{self.kind.value}>"

    @property
    def shown(self) -> str:
        """How to show it without pinging anyone (plain text, not escaped)."""
        if self.kind in (MentionKind.HERE, MentionKind.CHANNEL):
            return f"@{self.kind.value}"
        name = self.label.lstrip("@") or self.id
        return f"@{name}"


class Subscription(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    channel: str
    target: Target
    events: EventSet = EventSet.FAILURES
    mention: Mention | None = None
    by: str = ""  # the user who set it (a Slack user id), "" for a built-in one
    at: Timestamp | None = None
    builtin: bool = False  # ALERT_CHANNEL: configured, not set from Slack


class Mute(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    channel: str
    target: Target
    until: Timestamp
    by: str = ""
    at: Timestamp | None = None
