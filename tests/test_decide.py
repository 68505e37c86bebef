"""bot.alerts.decide: every verdict by table. Pure: no Redis, no Slack, no clock."""

from __future__ import annotations

import pytest

from bot.alerts.decide import (
    AlreadyDone,
    DeadLetter,
    Facts,
    Parent,
    Policy,
    Quarantine,
    SearchFirst,
    Send,
    Skip,
    Stage,
    Verdict,
    Wait,
    WaitReason,
    decide,
)
from bot.alerts.failure import FailureKind, Scope, SlackFailure

NOW = 1_800_000_000_000
POLICY = Policy(
    max_strikes=5, history_margin_ms=60_000, settle_ms=10_000, backoff_base=1.0, backoff_cap=60.0
)

RATE_LIMITED = SlackFailure(FailureKind.RATE_LIMITED, "ratelimited", retry_after=7.0)
FIVE_XX = SlackFailure(FailureKind.RETRY, "http_503", maybe_sent=True)
INVALID = SlackFailure(FailureKind.INVALID, "invalid_blocks")
CHANNEL = SlackFailure(FailureKind.PERMANENT, "channel_not_found", scope=Scope.CHANNEL)
MESSAGE = SlackFailure(FailureKind.PERMANENT, "cant_update_message", scope=Scope.MESSAGE)
REVOKED = SlackFailure(FailureKind.PERMANENT, "token_revoked", scope=Scope.WORKSPACE)
NO_HISTORY = SlackFailure(FailureKind.PERMANENT, "missing_scope", scope=Scope.WORKSPACE)
NOT_MEMBER = SlackFailure(FailureKind.PERMANENT, "not_in_channel", scope=Scope.CHANNEL)
GONE = SlackFailure(FailureKind.PERMANENT, "message_not_found", scope=Scope.MESSAGE)


def facts(**changes: object) -> Facts:
    return Facts(**({"now": NOW, "jitter": 1.0} | changes))  # type: ignore[arg-type]


CASES: list[tuple[str, Facts, Verdict]] = [
    # --- before a call --------------------------------------------------------------------
    ("fresh: send", facts(), Send()),
    ("final already", facts(done=True), AlreadyDone()),
    (
        "final wins over everything",
        facts(done=True, held_until=NOW + 5, strikes=(("a", 99),)),
        AlreadyDone(),
    ),
    (
        "held by another live replica",
        facts(held_until=NOW + 9_000),
        Wait(WaitReason.HELD, NOW + 9_000),
    ),
    ("a lapsed hold is no hold", facts(held_until=NOW), Send()),
    ("strikes within the limit", facts(strikes=(("a", 4),)), Send()),
    ("at the limit: quarantine", facts(strikes=(("a", 5),)), Quarantine(5, ("a",))),
    (
        "only the struck actions of a digest are quarantined",
        facts(strikes=(("a", 1), ("b", 7), ("c", 5))),
        Quarantine(7, ("b", "c")),
    ),
    (
        "quarantine before a pause",
        facts(strikes=(("a", 6),), workspace_paused=True),
        Quarantine(6, ("a",)),
    ),
    ("workspace paused", facts(workspace_paused=True), Wait(WaitReason.WORKSPACE, None)),
    (
        "workspace before channel pause",
        facts(workspace_paused=True, pause_left=5),
        Wait(WaitReason.WORKSPACE, None),
    ),
    (
        "channel refused just now",
        facts(channel_refused="channel_not_found"),
        DeadLetter("channel_not_found"),
    ),
    ("channel paused", facts(pause_left=2_500), Wait(WaitReason.PAUSED, NOW + 2_500)),
    ("pause before pace", facts(pause_left=10, pace_left=900), Wait(WaitReason.PAUSED, NOW + 10)),
    ("channel paced", facts(pace_left=900), Wait(WaitReason.PACED, NOW + 900)),
    ("reply to a sent parent", facts(parent=Parent.SENT), Send()),
    ("reply whose parent never went out", facts(parent=Parent.GONE), Skip("parent_not_posted")),
    (
        "a card update whose card is gone: post it anew",
        facts(parent=Parent.GONE, fallback=True),
        Send(repost=True),
    ),
    (
        "reply whose parent is not final",
        facts(parent=Parent.PENDING),
        Wait(WaitReason.PARENT, NOW + 1_000),
    ),
    (
        "an earlier attempt may have posted",
        facts(doubt_since=NOW - 5_000),
        SearchFirst(NOW - 65_000),
    ),
    (
        "a call cut off 5 s ago may still reach Slack: wait before looking",
        facts(doubt_since=NOW - 5_000, interrupted=True),
        Wait(WaitReason.SETTLE, NOW + 5_000),
    ),
    (
        "a call cut off a Slack timeout ago: look now",
        facts(doubt_since=NOW - 10_000, interrupted=True),
        SearchFirst(NOW - 70_000),
    ),
    (
        "an update in doubt is made again (twice is harmless)",
        facts(doubt_since=NOW - 5_000, parent=Parent.SENT, idempotent=True),
        Send(),
    ),
    (
        "a card update in doubt may have reposted the card: look first",
        facts(doubt_since=NOW - 20_000, parent=Parent.SENT, fallback=True),
        SearchFirst(NOW - 80_000),
    ),
    (
        "pace before search",
        facts(doubt_since=NOW - 5_000, pace_left=100),
        Wait(WaitReason.PACED, NOW + 100),
    ),
    # --- after a failed call ----------------------------------------------------------------
    (
        "429: pause the channel for Retry-After",
        facts(failure=RATE_LIMITED),
        Wait(WaitReason.RATE_LIMITED, NOW + 7_000),
    ),
    (
        "5xx: back off, first time 1 s",
        facts(failure=FIVE_XX),
        Wait(WaitReason.BACKOFF, NOW + 1_000),
    ),
    (
        "5xx: back off doubles",
        facts(failure=FIVE_XX, channel_failures=3),
        Wait(WaitReason.BACKOFF, NOW + 8_000),
    ),
    (
        "5xx: back off is capped",
        facts(failure=FIVE_XX, channel_failures=30),
        Wait(WaitReason.BACKOFF, NOW + 60_000),
    ),
    (
        "5xx: jitter lands in the upper half",
        facts(failure=FIVE_XX, channel_failures=3, jitter=0.0),
        Wait(WaitReason.BACKOFF, NOW + 4_000),
    ),
    ("invalid_blocks: once more as text", facts(failure=INVALID), Send(plain_text=True)),
    (
        "invalid twice: dead-letter",
        facts(failure=INVALID, plain_text_tried=True),
        DeadLetter("invalid_blocks"),
    ),
    ("channel_not_found: dead-letter", facts(failure=CHANNEL), DeadLetter("channel_not_found")),
    ("a message refused: dead-letter", facts(failure=MESSAGE), DeadLetter("cant_update_message")),
    ("card deleted in Slack: post it anew", facts(failure=GONE, fallback=True), Send(repost=True)),
    (
        "message gone, no fallback: dead-letter",
        facts(failure=GONE),
        DeadLetter("message_not_found"),
    ),
    (
        "the new post fails too: dead-letter, never a loop",
        facts(failure=GONE, fallback=True, reposting=True),
        DeadLetter("message_not_found"),
    ),
    (
        "token revoked: pause all, never dead-letter",
        facts(failure=REVOKED),
        Wait(WaitReason.WORKSPACE, None),
    ),
    (
        "missing scope on a post: pause all",
        facts(failure=NO_HISTORY),
        Wait(WaitReason.WORKSPACE, None),
    ),
    # --- after a failed history search ------------------------------------------------------
    (
        "history 429: keep the claim, search again",
        facts(failure=RATE_LIMITED, stage=Stage.SEARCH),
        Wait(WaitReason.RATE_LIMITED, NOW + 7_000, keep_claim=True),
    ),
    (
        "history 5xx: back off like a failed call",
        facts(failure=FIVE_XX, stage=Stage.SEARCH),
        Wait(WaitReason.BACKOFF, NOW + 1_000),
    ),
    (
        "history not readable (no scope): send at least once",
        facts(failure=NO_HISTORY, stage=Stage.SEARCH),
        Send(unverified=True),
    ),
    (
        "history of a channel we are not in: send at least once",
        facts(failure=NOT_MEMBER, stage=Stage.SEARCH),
        Send(unverified=True),
    ),
    (
        "history with a revoked token: pause all",
        facts(failure=REVOKED, stage=Stage.SEARCH),
        Wait(WaitReason.WORKSPACE, None),
    ),
]


@pytest.mark.parametrize(("name", "given", "expected"), CASES, ids=[c[0] for c in CASES])
def test_decide(name: str, given: Facts, expected: Verdict) -> None:
    assert decide(given, POLICY) == expected


def test_every_verdict_and_wait_reason_has_a_row() -> None:
    verdicts = {type(expected) for _, _, expected in CASES}
    assert verdicts == {AlreadyDone, Wait, Quarantine, Skip, SearchFirst, Send, DeadLetter}
    reasons = {e.reason for _, _, e in CASES if isinstance(e, Wait)}
    assert reasons == set(WaitReason)


def test_a_429_never_becomes_not_found() -> None:
    """Whatever the history answers with a rate limit, the verdict is to wait, never to send."""
    for retry_after in (0.0, 1.0, 60.0, 3600.0):
        failure = SlackFailure(FailureKind.RATE_LIMITED, "ratelimited", retry_after=retry_after)
        verdict = decide(facts(failure=failure, stage=Stage.SEARCH), POLICY)
        assert isinstance(verdict, Wait) and verdict.keep_claim
