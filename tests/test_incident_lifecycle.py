"""The incident lifecycle as a table: (incident open here, event, route) -> step and incident."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bot.alerts.cards import render_card, render_recovered, status_line
from bot.alerts.incidents import Step, happened_at, step
from bot.alerts.plan import held_back
from bot.domain.delivery import Route
from bot.domain.events import EventKind, JobEvent
from bot.domain.incidents import OVERLAY_FIELDS, Incident
from bot.domain.models import Job
from tests.fakes import make_job

T0 = datetime(2026, 3, 1, 14, 2, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)
CH = "C0ALERTS"
CARD = "evt|C0ALERTS|post"


def event(kind: EventKind, minute: int = 0, connector: str = "pg-orders", **job: Any) -> JobEvent:
    at = T0 + timedelta(minutes=minute)
    fields: dict[str, Any] = {
        "connector_id": connector,
        "state": {"failed": "failed", "succeeded": "succeeded"}.get(kind.value, "running"),
        "created_at": T0.isoformat(),
        "updated_at": at.isoformat(),
        "started_at": T0.isoformat(),
        "finished_at": at.isoformat() if kind in (EventKind.FAILED, EventKind.SUCCEEDED) else None,
        "rows_emitted": 10,
        "message": "permission denied" if kind is EventKind.FAILED else None,
    } | job
    return JobEvent(
        org_id="org",
        kind=kind,
        job=Job.model_validate(make_job(f"job_{minute}", **fields)),
        detected_at=at + timedelta(seconds=5),
    )


OPEN = Incident(
    channel=CH,
    connector="pg-orders",
    card=CARD,
    opened_at=T0,
    noticed_at=T0 + timedelta(seconds=5),
    last_at=T0,
    failures=1,
    last=event(EventKind.FAILED),
    mention="<!subteam^S1>",
    version=3,
)
STALL_OPEN = OPEN.model_copy(update={"last": event(EventKind.STALLED)})
POSTS = Route(channel=CH, mention="<!subteam^S1>")
MUTED = Route(channel=CH, muted="pg-orders")
RECOVERY_ONLY = Route(channel=CH, recovery_only=True)

F, S = EventKind.FAILED, EventKind.SUCCEEDED
ROWS: list[tuple[str, Incident | None, JobEvent, Route, Step, str]] = [
    # name, incident, event, route, step, what happens to the incident
    ("first failure opens", None, event(F), POSTS, Step.OPEN, "opened"),
    ("further failure joins", OPEN, event(F, 5), POSTS, Step.JOIN, "joined"),
    ("a stall opens", None, event(EventKind.STALLED), POSTS, Step.OPEN, "opened"),
    ("a stall joins", OPEN, event(EventKind.STALLED, 7), POSTS, Step.JOIN, "joined"),
    ("running long opens", None, event(EventKind.LONG_RUNNING), POSTS, Step.OPEN, "opened"),
    ("muted failure: held, no incident", None, event(F), MUTED, Step.HOLD, "none"),
    ("muted failure joins quietly", OPEN, event(F, 9), MUTED, Step.HOLD, "joined"),
    ("success recovers", OPEN, event(S, 42), POSTS, Step.RECOVER, "closed"),
    ("muted success recovers quietly", OPEN, event(S, 42), MUTED, Step.RECOVER_QUIETLY, "closed"),
    (
        "success to a failures channel recovers",
        OPEN,
        event(S),
        RECOVERY_ONLY,
        Step.RECOVER,
        "closed",
    ),
    ("plain success", None, event(S), POSTS, Step.PLAIN, "none"),
    ("success nobody asked for", None, event(S), RECOVERY_ONLY, Step.DROP, "none"),
    ("muted success, no incident", None, event(S), MUTED, Step.HOLD, "none"),
    (
        "a stall progressing again",
        STALL_OPEN,
        event(EventKind.PROGRESSING),
        POSTS,
        Step.NOTE,
        "moving",
    ),
    # Another run's progress, or a stall a failure has joined since: said in the thread only.
    ("progressing after a failure", OPEN, event(EventKind.PROGRESSING), POSTS, Step.NOTE, "same"),
    (
        "another run progressing",
        STALL_OPEN,
        event(EventKind.PROGRESSING, 3),
        POSTS,
        Step.NOTE,
        "same",
    ),
    (
        "a stall after progress joins",
        OPEN.model_copy(update={"moving_since": T0}),
        event(EventKind.STALLED, 30),
        POSTS,
        Step.JOIN,
        "joined",
    ),
    ("progressing, nothing open", None, event(EventKind.PROGRESSING), POSTS, Step.DROP, "none"),
    ("progressing while muted", OPEN, event(EventKind.PROGRESSING), MUTED, Step.DROP, "same"),
    ("cancelled while open", OPEN, event(EventKind.CANCELLED), POSTS, Step.NOTE, "same"),
    ("cancelled opens nothing", None, event(EventKind.CANCELLED), POSTS, Step.PLAIN, "none"),
    ("unknown end while open", OPEN, event(EventKind.FINISHED), POSTS, Step.NOTE, "same"),
    ("started is plain", OPEN, event(EventKind.STARTED), POSTS, Step.PLAIN, "same"),
    ("muted cancellation", OPEN, event(EventKind.CANCELLED), MUTED, Step.HOLD, "same"),
]


@pytest.mark.parametrize(
    ("name", "incident", "given", "route", "expected", "effect"), ROWS, ids=[r[0] for r in ROWS]
)
def test_lifecycle(
    name: str,
    incident: Incident | None,
    given: JobEvent,
    route: Route,
    expected: Step,
    effect: str,
) -> None:
    outcome = step(incident, given, route, card=CARD, now=NOW)
    assert outcome.step is expected
    assert outcome.before == incident
    after = outcome.after
    if effect == "none":
        assert after is None
    elif effect == "closed":
        assert incident is not None and after is None
    elif effect == "same":
        assert after == incident and not outcome.changed
    elif effect == "opened":
        assert after is not None and after.failures == 1 and after.card == CARD
        assert after.version == 1 and after.mention == route.mention
        assert after.opened_at == happened_at(given) and after.last == given
        assert after.noticed_at == NOW
    elif effect == "moving":
        assert incident is not None and after is not None and outcome.changed
        assert after.moving_since == given.detected_at and after.failures == incident.failures
        assert after.version == incident.version + 1 and given.event_id in after.seen
    else:
        assert effect == "joined" and incident is not None and after is not None
        assert after.moving_since is None  # a new failure: it is not moving any more
        assert after.failures == incident.failures + 1 and after.last == given
        assert after.version == incident.version + 1 and after.card == incident.card
        assert after.opened_at == incident.opened_at and after.mention == incident.mention


def test_every_step_has_a_row() -> None:
    assert {r[4] for r in ROWS} == set(Step)


def test_a_platform_retry_of_the_same_sync_is_one_more_failure() -> None:
    first = step(None, event(F, 0, sync_id="sync_1"), POSTS, card=CARD, now=NOW).after
    retry = step(first, event(F, 3, sync_id="sync_1"), POSTS, card="other|card", now=NOW).after
    assert retry is not None and retry.card == CARD and retry.failures == 2


def test_what_the_buttons_set_is_never_stored_by_the_lifecycle() -> None:
    acked = OPEN.model_copy(update={"acked_by": "U1", "acked_name": "ana", "escalated": True})
    stored = acked.stored()
    assert not any(f'"{name}"' in stored for name in OVERLAY_FIELDS)
    assert Incident.model_validate_json(stored).card == CARD


def test_a_replayed_event_takes_the_same_step_and_counts_nothing() -> None:
    first = event(F, 0)
    opened = step(None, first, POSTS, card=CARD, now=NOW).after
    assert opened is not None
    again = step(opened, first, POSTS, card=CARD, now=NOW)
    assert again.step is Step.OPEN and again.after == opened and not again.changed
    second = event(F, 5)
    joined = step(opened, second, POSTS, card="second|card", now=NOW).after
    assert joined is not None
    replayed = step(joined, second, POSTS, card="second|card", now=NOW)
    assert replayed.step is Step.JOIN and replayed.after == joined


def test_a_hang_opens_its_incident_when_the_trouble_began() -> None:
    stall = event(EventKind.STALLED, 30).model_copy(update={"since": T0 + timedelta(minutes=12)})
    opened = step(None, stall, POSTS, card=CARD, now=NOW).after
    assert opened is not None and opened.opened_at == T0 + timedelta(minutes=12)  # last moved
    long_run = event(EventKind.LONG_RUNNING, 120)
    opened = step(None, long_run, POSTS, card=CARD, now=NOW).after
    assert opened is not None and opened.opened_at == T0  # the run's start
    assert happened_at(event(EventKind.PROGRESSING, 40)) == T0 + timedelta(minutes=40, seconds=5)


@pytest.mark.parametrize(
    ("kind", "failures", "status", "recovered"),
    [
        (EventKind.FAILED, 1, "Failed once since", "Recovered after 1 failure over"),
        (EventKind.FAILED, 3, "Failed 3 times since", "Recovered after 3 failures over"),
        (EventKind.STALLED, 1, "Stalled: no progress since", "Recovered after a stall over"),
        (
            EventKind.LONG_RUNNING,
            1,
            "longer than expected",
            "Recovered after a long run over",
        ),
        (EventKind.STALLED, 2, "2 failures since", "Recovered after 2 failures over"),
    ],
)
def test_the_card_says_what_the_incident_was(
    kind: EventKind, failures: int, status: str, recovered: str
) -> None:
    incident = OPEN.model_copy(update={"last": event(kind, 9), "failures": failures})
    assert status in status_line(incident)
    done = render_recovered(incident, event(EventKind.SUCCEEDED, 50))
    assert recovered in done.text


def test_the_card_of_a_stall_that_moves_again_says_so() -> None:
    stall = event(EventKind.STALLED, 9)
    moving = OPEN.model_copy(update={"last": stall, "moving_since": T0 + timedelta(minutes=20)})
    line = status_line(moving)
    assert (
        line.startswith(":arrow_forward: Progressing again since") and "after a stall from" in line
    )
    several = moving.model_copy(update={"failures": 3})
    assert "3 failures since" in status_line(several) and "the last: stalled" in status_line(
        several
    )


def test_a_muted_stall_is_summed_up_from_when_it_stopped_moving() -> None:
    stall = event(EventKind.STALLED, 30).model_copy(update={"since": T0 + timedelta(minutes=12)})
    held = held_back(stall, MUTED)
    assert held.tally == "failures" and held.last_failure is not None
    last = json.loads(held.last_failure)
    assert last["at"] == (T0 + timedelta(minutes=12)).isoformat()
    assert last["message"] == "stalled, no progress"


def test_the_card_of_a_stall_that_moved_keeps_the_figures_of_when_it_moved() -> None:
    stall = event(EventKind.STALLED).model_copy(update={"since": T0})
    moved = T0 + timedelta(minutes=20)
    incident = OPEN.model_copy(update={"last": stall, "moving_since": moved})
    later = render_card(incident, now=moved + timedelta(hours=3))
    shown = later.text + json.dumps(later.blocks)
    assert "No progress for*\\n20m" in shown  # not 3h 20m: it moved at 20m
