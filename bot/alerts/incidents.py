"""The incident lifecycle: (open incident, event, route) -> a named step. Pure.

One incident per connector and channel, from its first failure to its next success:

    event            incident here   route        step
    failure-like     none            posts        OPEN     its alert becomes the card
    failure-like     open            posts        JOIN     card updated, failure in its thread
    failure-like     any             muted        HOLD     counted for the mute's summary
                                                           (and the open incident's count)
    succeeded        open            posts        RECOVER  card resolved, "Recovered…" reply
    succeeded        open            muted        RECOVER_QUIETLY  card resolved, no reply
    succeeded        none            posts        PLAIN    the success alert as it is
                                                           (DROP for a recovery-only route)
    progressing      open            posts        NOTE     "progressing again" in the thread,
                                                           the card says so (no escalation)
    cancelled, etc.  open            posts        NOTE     said in the thread
    anything else                                 PLAIN / HOLD / DROP

Failure-like: failed, stalled, long-running (`INCIDENT_KINDS`). A cancelled run does not open
an incident, and a platform retry of the same sync is one more failure of the same incident.
An event the incident counted already (a replayed dead letter) takes the same step again and
changes nothing, so its actions (same ids) go out where they did not.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from bot.domain.delivery import Route
from bot.domain.events import EventKind, JobEvent
from bot.domain.incidents import INCIDENT_KINDS, SEEN_EVENTS, Incident
from bot.domain.models import Timestamp


class Step(StrEnum):
    OPEN = "open"
    JOIN = "join"
    HOLD = "hold"
    RECOVER = "recover"
    RECOVER_QUIETLY = "recover_quietly"
    NOTE = "note"
    PLAIN = "plain"
    DROP = "drop"


@dataclass(frozen=True, slots=True)
class Outcome:
    step: Step
    before: Incident | None  # the incident open here when the event came
    after: Incident | None  # the incident after it (None: none open, or it closed)

    @property
    def changed(self) -> bool:
        return self.before != self.after


def happened_at(event: JobEvent) -> Timestamp:
    """When the event's trouble began: a failure's finish, a stall's last progress, a long
    run's start; else when it was seen."""
    if event.kind is EventKind.STALLED:
        return event.since or event.detected_at
    if event.kind is EventKind.LONG_RUNNING:
        return event.job.started_at or event.job.created_at
    if event.kind is EventKind.PROGRESSING:
        return event.detected_at
    return event.job.finished_at or event.detected_at


def opened(event: JobEvent, route: Route, card: str, now: datetime) -> Incident:
    at = happened_at(event)
    return Incident(
        channel=route.channel,
        connector=event.job.connector_id,
        card=card,
        opened_at=at,
        noticed_at=now,  # escalation counts from when the bot opened it, not from the job
        last_at=at,
        last=event,
        mention=route.mention,
        seen=[event.event_id],
    )


def joined(incident: Incident, event: JobEvent) -> Incident:
    return incident.model_copy(
        update={
            "failures": incident.failures + 1,
            "last": event,
            "moving_since": None,
            "last_at": max(incident.last_at, happened_at(event)),
            "version": incident.version + 1,
            "seen": [*incident.seen, event.event_id][-SEEN_EVENTS:],
        }
    )


def moving(incident: Incident, event: JobEvent) -> Incident:
    """The hung run moves again: the card says so, and on-call is not reminded of it."""
    return incident.model_copy(
        update={
            "moving_since": event.detected_at,
            "version": incident.version + 1,
            "seen": [*incident.seen, event.event_id][-SEEN_EVENTS:],
        }
    )


def step(
    incident: Incident | None, event: JobEvent, route: Route, *, card: str, now: datetime
) -> Outcome:
    """What `event` does to the connector's incident in `route.channel`; `card` is the id the
    card would get if this event opened one; `now` is when it is planned."""
    kind, muted = event.kind, bool(route.muted)
    if incident is not None and event.event_id in incident.seen:
        # Counted already (a dead letter replayed): the same step again, nothing changes.
        if kind is EventKind.PROGRESSING:  # not counted by a mute's summary either
            return Outcome(Step.DROP if muted else Step.NOTE, incident, incident)
        again = Step.OPEN if incident.card == card else Step.JOIN
        return Outcome(Step.HOLD if muted else again, incident, incident)
    if kind in INCIDENT_KINDS:
        if muted:
            return Outcome(Step.HOLD, incident, joined(incident, event) if incident else None)
        if incident is None:
            return Outcome(Step.OPEN, None, opened(event, route, card, now))
        return Outcome(Step.JOIN, incident, joined(incident, event))
    if kind is EventKind.SUCCEEDED:
        if incident is not None:
            return Outcome(Step.RECOVER_QUIETLY if muted else Step.RECOVER, incident, None)
        if route.recovery_only:
            return Outcome(Step.DROP, None, None)
        return Outcome(Step.HOLD if muted else Step.PLAIN, None, None)
    if kind is EventKind.PROGRESSING:
        if incident is None or muted:
            return Outcome(Step.DROP, incident, incident)
        last = incident.last
        if last.kind is EventKind.STALLED and last.job.id == event.job.id:
            return Outcome(Step.NOTE, incident, moving(incident, event))
        # Another run's progress (or a stall since superseded by a failure): said in the
        # thread; the card and its escalation stay with what the incident is about now.
        return Outcome(Step.NOTE, incident, incident)
    if muted:
        return Outcome(Step.HOLD, incident, incident)
    if incident is not None and kind in (EventKind.CANCELLED, EventKind.FINISHED):
        return Outcome(Step.NOTE, incident, incident)
    return Outcome(Step.PLAIN, incident, incident)
