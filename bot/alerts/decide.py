"""What happens next to a unit of delivery: one pure decision, with a named verdict.

A *unit* is what goes out in one Slack call: one action, or several posts merged into a
digest. The notifier claims the unit (`storage.records`), hands `decide()` what the claim saw
(records, gates, Redis time) and, after a failed call, the failure; `decide()` says what to
do, and the shell only does I/O. In the manner of Alertmanager's `needsUpdate`.

Before a call, in this order:
    AlreadyDone   an action of the unit is final (sent, dead-lettered, skipped)
    Wait(HELD)    another live replica holds a claim on it, until its lease ends
    Quarantine    an action of it failed too often in ways that were not the channel's (a bug,
                  a process killed during the call, Slack failing it while answering others):
                  those actions only; the rest of the unit goes on
    Wait(WORKSPACE)  all delivery is paused (a token or scope problem), until it is lifted
    DeadLetter    Slack refused everything to this channel moments ago (`channel_not_found`)
    Wait(PAUSED)  the channel is paused (a 429's Retry-After, a back-off)
    Wait(PACED)   the channel got a message less than an interval ago
    Skip          a reply or an update whose parent message was never posted (unless it may
                  fall back to a top-level post: then Send(repost))
    Wait(SETTLE)  an earlier attempt's call was cut off (a crash, a timeout) less than
                  `settle_ms` after it began: it may still reach Slack, so wait before looking
    SearchFirst   an earlier attempt may have posted: look for it in the channel first
                  (an in-place update is made again instead: doing it twice is harmless)
    Send          make the call
After a failed call (`failure` given):
    Wait(RATE_LIMITED)  pause the channel for Retry-After (Slack did not act)
    Wait(BACKOFF)       pause the channel, exponentially longer each time
    Wait(WORKSPACE)     pause all delivery: the token or its scopes are wrong
    Send(plain_text)    Slack refused the blocks: once more as plain text
    Send(repost)        the message to update or reply under is gone (deleted in Slack) and
                        the action may fall back to a new top-level post
    DeadLetter(reason)  refused for good (this message, or everything to this channel)
After a failed history search: a 429 keeps the claim and the search resumes after
Retry-After (never "not found"); other failures wait like a failed call; `Send(unverified)`
when the history cannot be read at all (at least once beats never).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from bot.alerts.failure import FailureKind, Scope, SlackFailure
from bot.backoff import backoff


class WaitReason(StrEnum):
    HELD = "held"
    WORKSPACE = "workspace"
    PAUSED = "paused"
    PACED = "paced"
    RATE_LIMITED = "rate_limited"
    BACKOFF = "backoff"
    PARENT = "parent"  # a reply or update whose parent is not final yet
    SETTLE = "settle"  # an interrupted call may still reach Slack: look only after it would have


class Parent(StrEnum):
    NONE = "none"  # a top-level post: no parent
    SENT = "sent"  # the message to reply under / update is in Slack
    PENDING = "pending"  # not final yet (cannot happen in queue order; waits if it does)
    GONE = "gone"  # dead-lettered or skipped: there is nothing to reply to


class Stage(StrEnum):
    SEND = "send"
    SEARCH = "search"


# Slack errors that say the message to update or reply under is not there (any more).
GONE_ERRORS = frozenset({"message_not_found", "thread_not_found", "cant_update_message"})


@dataclass(frozen=True, slots=True)
class Policy:
    max_strikes: int = 5  # calls that never finished (killed), bugs, or failures Slack kept
    # answering while it answered everything else, per action
    history_margin_ms: int = 60_000  # search this much before the first doubtful attempt
    settle_ms: int = 3_000  # how long a request cut off on the wire may take to reach Slack
    backoff_base: float = 1.0  # seconds, doubling after each consecutive failure...
    backoff_cap: float = 60.0  # ...up to this
    parent_wait_ms: int = 1_000


@dataclass(frozen=True, slots=True)
class Facts:
    """What the claim saw for the unit, by Redis time (ms), plus the last failure if any."""

    now: int
    done: bool = False  # some action of the unit is final already
    held_until: int = 0  # > 0: another live holder's lease ends then
    strikes: tuple[tuple[str, int], ...] = ()  # (action id, strikes so far) of each claimed
    doubt_since: int = 0  # > 0: an attempt that began then may have posted unseen
    interrupted: bool = False  # that attempt's call was cut off: it may still reach Slack
    workspace_paused: bool = False
    pause_left: int = 0
    pace_left: int = 0
    channel_refused: str = ""  # Slack just refused everything to this channel (its error)
    parent: Parent = Parent.NONE
    failure: SlackFailure | None = None
    stage: Stage = Stage.SEND
    plain_text_tried: bool = False
    channel_failures: int = 0  # transient failures in a row before this one
    jitter: float = 1.0  # in [0, 1): where in the back-off window this retry lands
    fallback: bool = False  # the unit may become a top-level post when its parent is gone
    idempotent: bool = False  # an in-place update: making it twice is harmless
    reposting: bool = False  # this call was the fallback post already


@dataclass(frozen=True, slots=True)
class AlreadyDone:
    pass


@dataclass(frozen=True, slots=True)
class Wait:
    reason: WaitReason
    until: int | None  # Redis ms; None: until the workspace pause is lifted
    keep_claim: bool = False  # a search waiting out Slack: renew the claim, resume the search


@dataclass(frozen=True, slots=True)
class Quarantine:
    strikes: int
    action_ids: tuple[str, ...] = ()  # the actions at the limit (the rest of the unit goes on)


@dataclass(frozen=True, slots=True)
class Skip:
    reason: str


@dataclass(frozen=True, slots=True)
class SearchFirst:
    oldest: int  # Redis ms: from a margin before the first doubtful attempt, up to now


@dataclass(frozen=True, slots=True)
class Send:
    plain_text: bool = False
    unverified: bool = False  # the history could not be read: this may post a second time
    repost: bool = False  # the parent is gone: post top-level instead of replying / updating


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str


Verdict = AlreadyDone | Wait | Quarantine | Skip | SearchFirst | Send | DeadLetter


def decide(facts: Facts, policy: Policy) -> Verdict:
    """The next step for a claimed unit; see the module docstring for the order."""
    if facts.failure is not None:
        if facts.stage is Stage.SEARCH:
            return _after_search_failure(facts, facts.failure, policy)
        return _after_send_failure(facts, facts.failure, policy)
    if facts.done:
        return AlreadyDone()
    if facts.held_until > facts.now:
        return Wait(WaitReason.HELD, facts.held_until)
    struck = [(a, n) for a, n in facts.strikes if n >= policy.max_strikes]
    if struck:
        return Quarantine(max(n for _, n in struck), tuple(a for a, _ in struck))
    if facts.workspace_paused:
        return Wait(WaitReason.WORKSPACE, None)
    if facts.channel_refused:
        return DeadLetter(facts.channel_refused)
    if facts.pause_left > 0:
        return Wait(WaitReason.PAUSED, facts.now + facts.pause_left)
    if facts.pace_left > 0:
        return Wait(WaitReason.PACED, facts.now + facts.pace_left)
    gone = facts.parent is Parent.GONE
    if gone and not facts.fallback:
        return Skip("parent_not_posted")
    if facts.parent is Parent.PENDING:
        return Wait(WaitReason.PARENT, facts.now + policy.parent_wait_ms)
    if facts.doubt_since > 0 and not (facts.idempotent and not gone):
        settled = facts.doubt_since + policy.settle_ms
        if facts.interrupted and facts.now < settled:
            return Wait(WaitReason.SETTLE, settled)
        return SearchFirst(oldest=facts.doubt_since - policy.history_margin_ms)
    return Send(repost=gone)


def _backoff_until(facts: Facts, policy: Policy) -> int:
    seconds = backoff(
        facts.channel_failures + 1,
        base=policy.backoff_base,
        cap=policy.backoff_cap,
        jitter=facts.jitter,
    )
    return facts.now + int(seconds * 1000)


def _rate_limited_until(facts: Facts, failure: SlackFailure) -> int:
    return facts.now + max(int((failure.retry_after or 1.0) * 1000), 1)


def _after_send_failure(facts: Facts, failure: SlackFailure, policy: Policy) -> Verdict:
    if failure.kind is FailureKind.RATE_LIMITED:
        return Wait(WaitReason.RATE_LIMITED, _rate_limited_until(facts, failure))
    if failure.kind is FailureKind.RETRY:
        return Wait(WaitReason.BACKOFF, _backoff_until(facts, policy))
    if failure.kind is FailureKind.INVALID:
        if facts.plain_text_tried:
            return DeadLetter(failure.reason)
        return Send(plain_text=True, repost=facts.reposting)
    if failure.reason in GONE_ERRORS and facts.fallback and not facts.reposting:
        return Send(repost=True)
    if failure.scope is Scope.WORKSPACE:
        return Wait(WaitReason.WORKSPACE, None)
    return DeadLetter(failure.reason)


def _after_search_failure(facts: Facts, failure: SlackFailure, policy: Policy) -> Verdict:
    if failure.kind is FailureKind.RATE_LIMITED:
        return Wait(WaitReason.RATE_LIMITED, _rate_limited_until(facts, failure), keep_claim=True)
    if failure.kind is FailureKind.RETRY:  # Slack is failing: back off like any call
        return Wait(WaitReason.BACKOFF, _backoff_until(facts, policy))
    if failure.scope is Scope.WORKSPACE and failure.reason != "missing_scope":
        return Wait(WaitReason.WORKSPACE, None)
    # The history cannot be read here (no history scope, not a member, an odd answer):
    # posting may repeat an earlier post, never posting would lose the alert.
    return Send(unverified=True)
