"""bot.alerts.route: which channels an event goes to, with which mention, by table. Pure."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bot.alerts.route import route
from bot.domain.delivery import Route
from bot.domain.events import EventKind, JobEvent
from bot.domain.subscriptions import EventSet, Mention, MentionKind, Mute, Subscription, Target
from tests.notifier_helpers import job_event

NOW = datetime(2026, 12, 1, 14, 0, tzinfo=UTC)
ONCALL = Mention(kind=MentionKind.GROUP, id="S0ONCALL", label="@data-oncall")
ANA = Mention(kind=MentionKind.USER, id="U0ANA", label="ana")


def sub(
    channel: str, target: str, events: EventSet = EventSet.FAILURES, mention: Mention | None = None
) -> Subscription:
    return Subscription(
        channel=channel, target=Target(value=target), events=events, mention=mention
    )


def mute(channel: str, target: str, until: datetime) -> Mute:
    return Mute(channel=channel, target=Target(value=target), until=until)


def event(kind: EventKind = EventKind.FAILED, connector: str = "pg-orders") -> JobEvent:
    return job_event(1, kind, connector_id=connector)


FAILED, OK, CANCELLED, STARTED, FINISHED = (
    EventKind.FAILED,
    EventKind.SUCCEEDED,
    EventKind.CANCELLED,
    EventKind.STARTED,
    EventKind.FINISHED,
)

CASES: list[tuple[str, JobEvent, list[Subscription], list[Mute], list[Route]]] = [
    ("nobody subscribed", event(), [], [], []),
    ("a connector", event(), [sub("C1", "pg-orders")], [], [Route(channel="C1")]),
    ("another connector", event(), [sub("C1", "stripe")], [], []),
    ("a pattern", event(), [sub("C1", "pg-*")], [], [Route(channel="C1")]),
    ("a pattern that does not match", event(), [sub("C1", "s3-*")], [], []),
    ("a ? pattern", event(connector="pg-1"), [sub("C1", "pg-?")], [], [Route(channel="C1")]),
    ("all", event(), [sub("C1", "all")], [], [Route(channel="C1")]),
    ("failures get failures", event(FAILED), [sub("C1", "all")], [], [Route(channel="C1")]),
    ("failures get cancellations", event(CANCELLED), [sub("C1", "all")], [], [Route(channel="C1")]),
    (
        "failures get a success only as a recovery",
        event(OK),
        [sub("C1", "all")],
        [],
        [Route(channel="C1", recovery_only=True)],
    ),
    (
        "a channel that wants successes gets them fully",
        event(OK),
        [sub("C1", "all"), sub("C1", "pg-orders", EventSet.FINISHED)],
        [],
        [Route(channel="C1")],
    ),
    (
        "a recovery to a muted failures channel is marked muted",
        event(OK),
        [sub("C1", "all")],
        [mute("C1", "all", NOW + timedelta(hours=1))],
        [Route(channel="C1", muted="all", recovery_only=True)],
    ),
    (
        "failures get stalls",
        event(EventKind.STALLED),
        [sub("C1", "all")],
        [],
        [Route(channel="C1")],
    ),
    (
        "a stall pings on-call",
        event(EventKind.STALLED),
        [sub("C1", "all", mention=ONCALL)],
        [],
        [Route(channel="C1", mention="<!subteam^S0ONCALL>")],
    ),
    ("failures skip starts", event(STARTED), [sub("C1", "all")], [], []),
    (
        "finished gets successes",
        event(OK),
        [sub("C1", "all", EventSet.FINISHED)],
        [],
        [Route(channel="C1")],
    ),
    (
        "finished gets unknown ends",
        event(FINISHED),
        [sub("C1", "all", EventSet.FINISHED)],
        [],
        [Route(channel="C1")],
    ),
    ("finished skips starts", event(STARTED), [sub("C1", "all", EventSet.FINISHED)], [], []),
    (
        "all gets starts",
        event(STARTED),
        [sub("C1", "all", EventSet.ALL)],
        [],
        [Route(channel="C1")],
    ),
    (
        "a channel gets an event once, however many subscriptions want it",
        event(),
        [sub("C1", "all"), sub("C1", "pg-*"), sub("C1", "pg-orders")],
        [],
        [Route(channel="C1")],
    ),
    (
        "two channels, each once",
        event(),
        [sub("C1", "pg-*"), sub("C2", "all"), sub("C1", "all")],
        [],
        [Route(channel="C1"), Route(channel="C2")],
    ),
    (
        "the most specific subscription decides the mention: the exact id",
        event(),
        [sub("C1", "all", mention=ANA), sub("C1", "pg-orders", mention=ONCALL), sub("C1", "pg-*")],
        [],
        [Route(channel="C1", mention="<!subteam^S0ONCALL>")],
    ),
    (
        "a pattern is more specific than all",
        event(),
        [sub("C1", "all", mention=ANA), sub("C1", "pg-*", mention=ONCALL)],
        [],
        [Route(channel="C1", mention="<!subteam^S0ONCALL>")],
    ),
    (
        "the more literal pattern wins",
        event(),
        [sub("C1", "p*", mention=ANA), sub("C1", "pg-or*", mention=ONCALL)],
        [],
        [Route(channel="C1", mention="<!subteam^S0ONCALL>")],
    ),
    (
        "a specific subscription that does not want the kind does not decide",
        event(OK),
        [sub("C1", "pg-orders", mention=ONCALL), sub("C1", "all", EventSet.FINISHED, mention=ANA)],
        [],
        [Route(channel="C1")],  # a success: no mention either way
    ),
    (
        "mentions only on failures: a success",
        event(OK),
        [sub("C1", "all", EventSet.FINISHED, mention=ONCALL)],
        [],
        [Route(channel="C1")],
    ),
    (
        "mentions only on failures: a cancellation",
        event(CANCELLED),
        [sub("C1", "all", mention=ONCALL)],
        [],
        [Route(channel="C1")],
    ),
    (
        "a user mention",
        event(),
        [sub("C1", "all", mention=ANA)],
        [],
        [Route(channel="C1", mention="<@U0ANA>")],
    ),
    (
        "@here",
        event(),
        [sub("C1", "all", mention=Mention(kind=MentionKind.HERE))],
        [],
        [Route(channel="C1", mention="<!here>")],
    ),
    (
        "a mute holds the channel back (and only that channel)",
        event(),
        [sub("C1", "all"), sub("C2", "all")],
        [mute("C1", "pg-*", NOW + timedelta(minutes=1))],
        [Route(channel="C1", muted="pg-*"), Route(channel="C2")],
    ),
    (
        "a mute of another connector",
        event(),
        [sub("C1", "all")],
        [mute("C1", "stripe", NOW + timedelta(hours=1))],
        [Route(channel="C1")],
    ),
    (
        "a mute ending exactly now has ended",
        event(),
        [sub("C1", "all")],
        [mute("C1", "all", NOW)],
        [Route(channel="C1")],
    ),
    (
        "a mute that ended",
        event(),
        [sub("C1", "all")],
        [mute("C1", "all", NOW - timedelta(seconds=1))],
        [Route(channel="C1")],
    ),
    (
        "a mute starting now holds",
        event(),
        [sub("C1", "all")],
        [mute("C1", "all", NOW + timedelta(milliseconds=1))],
        [Route(channel="C1", muted="all")],
    ),
    (
        "the most specific mute is named",
        event(),
        [sub("C1", "all")],
        [
            mute("C1", "all", NOW + timedelta(hours=1)),
            mute("C1", "pg-orders", NOW + timedelta(hours=1)),
        ],
        [Route(channel="C1", muted="pg-orders")],
    ),
    (
        "a muted failure keeps no mention",
        event(),
        [sub("C1", "all", mention=ONCALL)],
        [mute("C1", "all", NOW + timedelta(hours=1))],
        [Route(channel="C1", mention="<!subteam^S0ONCALL>", muted="all")],
    ),
]


@pytest.mark.parametrize(
    ("name", "given", "subscriptions", "mutes", "expected"), CASES, ids=[c[0] for c in CASES]
)
def test_route(
    name: str,
    given: JobEvent,
    subscriptions: list[Subscription],
    mutes: list[Mute],
    expected: list[Route],
) -> None:
    assert route(given, subscriptions, mutes, NOW) == expected


def test_a_pattern_of_many_stars_matches_quickly() -> None:
    crowded = Target(value="*a*a*a*a*a*a*a*a*a*b")  # ten wildcards: the most a pattern may have
    assert not crowded.matches("a" * 5000)  # no catastrophic backtracking
    assert crowded.matches("x" + "a" * 9 + "b")
