"""Notices: messages the bot owes a channel that are not a job's transition.

A notice travels through the outbox like an event (field `notice` instead of `event`), so it
is delivered exactly once by the same core. Today: the summary of what a mute held back,
written in the same atomic step that ends the mute (`storage.subscriptions`).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class MuteEnd(StrEnum):
    EXPIRED = "expired"
    UNMUTED = "unmuted"


class MuteSummary(BaseModel):
    """What a mute of `target` in `channel` held back until it ended at `ended_at` (ms)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: str = "mute_summary"
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
