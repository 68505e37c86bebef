"""Watching the watcher, pure: `watch` (figures -> ops changes, once each way) and
`render_status` (the bot's health for `/jobs status`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from bot.alerts.watchdog import Change, Health, Thresholds, watch
from bot.domain.events import EventKind, JobEvent
from bot.domain.incidents import Incident
from bot.domain.models import Job
from bot.domain.notices import OpsSubject
from bot.jobs.status_view import StatusReport, Waiting, render_status
from tests.fakes import make_job

T = Thresholds(polls=4, slack_pause=60.0, backlog_samples=3, backlog_min=10)
NONE: frozenset[OpsSubject] = frozenset()
TIMBAL, SLACK, BACKLOG = OpsSubject.TIMBAL, OpsSubject.SLACK, OpsSubject.BACKLOG


@pytest.mark.parametrize(
    ("health", "raised", "expected"),
    [
        (Health(), NONE, []),
        (Health(timbal_failures=3), NONE, []),
        (
            Health(timbal_failures=4, timbal_error="503 from Timbal"),
            NONE,
            [Change(TIMBAL, True, "4 polls in a row failed; last: 503 from Timbal")],
        ),
        (Health(timbal_failures=9), frozenset({TIMBAL}), []),  # raised once
        (Health(timbal_failures=0), frozenset({TIMBAL}), [Change(TIMBAL, False)]),
        (Health(slack_paused=60.0), NONE, []),  # "longer than"
        (
            Health(slack_paused=61.5, slack_reason="rate limited"),
            NONE,
            [Change(SLACK, True, "nothing delivered for 61s (rate limited)")],
        ),
        (Health(slack_paused=30.0), frozenset({SLACK}), []),  # still waiting: not well yet
        (Health(slack_paused=0.0), frozenset({SLACK}), [Change(SLACK, False)]),
        # Well again only after half the pause window without anything held: one message
        # let through between two long back-offs, or a replica that has just taken over and
        # has not tried yet, does not call it over.
        (Health(slack_paused=0.0, slack_well_for=5.0), frozenset({SLACK}), []),
        (Health(slack_paused=0.0, slack_well_for=30.0), frozenset({SLACK}), [Change(SLACK, False)]),
        (
            Health(backlog=[5, 8, 11, 14]),
            NONE,
            [Change(BACKLOG, True, "14 alerts waiting, more each minute for 3 minutes")],
        ),
        (Health(backlog=[1, 2, 3, 4]), NONE, []),  # growing, but small
        (Health(backlog=[20, 30, 30, 40]), NONE, []),  # not at every sample
        (Health(backlog=[30, 40]), NONE, []),  # too few samples
        (
            Health(backlog=[40, 50, 45]),
            frozenset({BACKLOG}),
            [Change(BACKLOG, False, "45 waiting")],
        ),
        (Health(backlog=[40, 50, 60]), frozenset({BACKLOG}), []),
        (
            Health(timbal_failures=0, slack_paused=0.0, backlog=[9, 8]),
            frozenset({TIMBAL, SLACK, BACKLOG}),
            [Change(TIMBAL, False), Change(SLACK, False), Change(BACKLOG, False, "8 waiting")],
        ),
    ],
)
def test_watch(health: Health, raised: frozenset[OpsSubject], expected: list[Change]) -> None:
    assert watch(health, raised, T) == expected


NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def incident(connector: str, channel: str, *, acked: str = "", failures: int = 1) -> Incident:
    job = Job.model_validate(
        make_job("j1", connector_id=connector, state="failed", finished_at=NOW.isoformat())
    )
    event = JobEvent(org_id="org", kind=EventKind.FAILED, job=job, detected_at=NOW)
    return Incident(
        channel=channel,
        connector=connector,
        card=f"evt|{channel}|post",
        opened_at=NOW - timedelta(minutes=42),
        noticed_at=NOW - timedelta(minutes=42),
        last_at=NOW,
        failures=failures,
        last=event,
        acked_by="U0ANA" if acked else "",
        acked_name=acked,
    )


def shown(report: StatusReport) -> str:
    message = render_status(report)
    return message.text + json.dumps(message.blocks, ensure_ascii=False)


def test_status_shows_every_figure_on_call_needs() -> None:
    report = StatusReport(
        now=NOW,
        org_id="org_acme",
        last_poll=NOW - timedelta(seconds=4),
        jobs_tracked=12_345,
        backlog=7,
        waiting=[Waiting("C0PAY", 5, "rate_limited"), Waiting("C0DATA", 2, "")],
        status_at=NOW - timedelta(seconds=2),
        dead_letters=3,
        poller="pod-a/1234",
        notifier="pod-b/99",
        replicas=["pod-a/1234 (poller)", "pod-b/99 (notifier)"],
        incidents=[
            incident("pg-orders", "C0DATA", failures=3),
            incident("stripe", "C0PAY", acked="ana"),
        ],
        raised=["slack"],
    )
    text = shown(report)
    assert "*Last successful poll*" in text and "4.0s ago" in text
    assert "*12,345* jobs tracked" in text
    assert "*Alerts waiting*: 7" in text
    assert "<#C0PAY>: 5 message(s) (rate limited)" in text and "<#C0DATA>: 2 message(s)" in text
    assert "*Dead letters*: 3" in text and "dead-letters" in text
    assert "`pod-a/1234`" in text and "`pod-b/99`" in text
    assert "*Replicas alive* (2)" in text
    assert "*Open incidents* (2)" in text
    assert "`pg-orders` in <#C0DATA>: 3 failure(s)" in text and "not acknowledged" in text
    assert "acknowledged by @ana" in text
    assert "ops alerts raised: slack" in text
    assert render_status(report).text.startswith("timbal-jobs-bot: polling, 7 alert(s) waiting")


def test_status_of_a_bot_that_never_polled_and_is_paused() -> None:
    text = shown(
        StatusReport(
            now=NOW,
            org_id="org_acme",
            last_poll=None,
            jobs_tracked=0,
            backlog=0,
            workspace_paused="token_revoked: the bot token was revoked",
        )
    )
    assert "*Last poll*: never" in text
    assert "*All delivery is paused*: token_revoked" in text
    assert "*Open incidents*: none" in text and "_nobody_" in text


def test_status_escapes_what_it_did_not_write() -> None:
    hostile = "<!channel> *pg*"
    text = shown(
        StatusReport(
            now=NOW,
            org_id="org",
            last_poll=NOW - timedelta(hours=1),
            jobs_tracked=1,
            backlog=1,
            waiting=[Waiting("C0X", 1, "<!here>")],
            incidents=[incident(hostile, "C0X")],
        )
    )
    assert "<!channel>" not in text and "<!here>" not in text
    assert ":red_circle:" in text  # an hour since the last poll
