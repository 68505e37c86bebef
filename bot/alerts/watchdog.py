"""Watching the watcher: is the bot itself in trouble? Pure: figures in, named changes out.

Three subjects, each raised once and recovered once (the raised state lives in Redis, so a
takeover neither repeats nor forgets it):

- `timbal`: the listing failed `polls` polls in a row (OPS_ALERT_AFTER_POLLS); well again at
  the next successful poll.
- `slack`: delivery has been paused longer than `slack_pause` seconds
  (OPS_SLACK_PAUSE_SECONDS): the workspace pause (a
  token or scope problem), or a channel with alerts waiting that has not delivered since
  (429s, back-offs); well again once nothing has waited on Slack for half that long (so a
  back-off that lets one message through is not "resumed", and a replica that has just taken
  over, knowing nothing yet, does not call a pause over).
- `backlog`: the outbox grew at every one of the last `backlog_samples` samples (one a
  minute) and holds at least `backlog_min` entries; well again once it shrinks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from bot.domain.notices import OpsSubject


@dataclass(frozen=True, slots=True)
class Thresholds:
    polls: int = 4
    slack_pause: float = 60.0  # seconds
    backlog_samples: int = 5  # consecutive growths, one sample a minute
    backlog_min: int = 50


@dataclass(frozen=True, slots=True)
class Health:
    timbal_failures: int = 0  # failed polls in a row
    timbal_error: str = ""  # the last one, one line (redacted by the poller)
    slack_paused: float = 0.0  # seconds delivery has been held by Slack (0: not)
    slack_reason: str = ""
    slack_well_for: float = math.inf  # seconds nothing has waited on Slack (while watched)
    backlog: Sequence[int] = ()  # outbox lengths, one a minute, oldest first


@dataclass(frozen=True, slots=True)
class Change:
    subject: OpsSubject
    raised: bool  # True: in trouble now; False: well again
    detail: str = ""


def _growing(samples: Sequence[int], t: Thresholds) -> bool:
    window = list(samples)[-(t.backlog_samples + 1) :]
    if len(window) < t.backlog_samples + 1 or window[-1] < t.backlog_min:
        return False
    return all(b > a for a, b in itertools.pairwise(window))


def _shrinking(samples: Sequence[int]) -> bool:
    window = list(samples)
    return len(window) >= 2 and window[-1] < window[-2]


def watch(health: Health, raised: frozenset[OpsSubject], t: Thresholds) -> list[Change]:
    """What changed: subjects to raise (in trouble, not raised yet) and to recover."""
    changes: list[Change] = []
    timbal = OpsSubject.TIMBAL in raised
    if not timbal and health.timbal_failures >= t.polls:
        detail = f"{health.timbal_failures} polls in a row failed"
        if health.timbal_error:
            detail += f"; last: {health.timbal_error}"
        changes.append(Change(OpsSubject.TIMBAL, True, detail))
    elif timbal and health.timbal_failures == 0:
        changes.append(Change(OpsSubject.TIMBAL, False))
    slack = OpsSubject.SLACK in raised
    if not slack and health.slack_paused > t.slack_pause:
        detail = f"nothing delivered for {int(health.slack_paused)}s"
        if health.slack_reason:
            detail += f" ({health.slack_reason})"
        changes.append(Change(OpsSubject.SLACK, True, detail))
    elif slack and health.slack_paused == 0 and health.slack_well_for >= t.slack_pause / 2:
        changes.append(Change(OpsSubject.SLACK, False))
    backlog = OpsSubject.BACKLOG in raised
    if not backlog and _growing(health.backlog, t):
        changes.append(
            Change(
                OpsSubject.BACKLOG,
                True,
                f"{health.backlog[-1]} alerts waiting, more each minute for "
                f"{t.backlog_samples} minutes",
            )
        )
    elif backlog and _shrinking(health.backlog):
        changes.append(Change(OpsSubject.BACKLOG, False, f"{health.backlog[-1]} waiting"))
    return changes
