"""Rendering notices (pure): the summary a channel gets when a mute ends, and the bot's own
health alerts for OPS_CHANNEL.

"3 failures, 2 successes while muted; last failure 14:02: `pg-orders`: permission denied".
Everything that came from the API or from people (targets, connector ids, messages) is
escaped; times are Slack date tokens.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from slack_sdk.models.blocks import Block, ContextBlock, SectionBlock

from bot.alerts.render import AlertMessage
from bot.blockkit import clip, date_token, escape, fit_blocks, inline_code, mrkdwn, truncate
from bot.domain.notices import MuteEnd, MuteSummary, OpsAlert, OpsSubject

TARGET_CHARS = 80  # connector ids and targets, as the listing clips them
MESSAGE_CHARS = 300


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _tallies(summary: MuteSummary) -> str:
    parts = []
    if summary.failures:
        parts.append(_plural(summary.failures, "failure"))
    if summary.successes:
        parts.append(_plural(summary.successes, "success", "successes"))
    if summary.others:
        parts.append(_plural(summary.others, "other alert"))
    return ", ".join(parts) or "nothing"


def _last_failure(raw: str) -> str:
    """ "last failure <time>: `connector`: message" (escaped), or "" when there was none."""
    if not raw:
        return ""
    try:
        last = json.loads(raw)
        when = datetime.fromisoformat(str(last["at"]))
        connector, message = str(last["connector"]), str(last.get("message") or "")
    except (ValueError, KeyError, TypeError):
        return ""
    when = when if when.tzinfo is not None else when.replace(tzinfo=UTC)
    line = f"last failure {date_token(when, '{time}')}: {inline_code(connector, TARGET_CHARS)}"
    return line + (f": {clip(message, MESSAGE_CHARS)}" if message else "")


def render_mute_summary(summary: MuteSummary) -> AlertMessage:
    target = (
        "all connectors" if summary.target == "all" else inline_code(summary.target, TARGET_CHARS)
    )
    if summary.reason is MuteEnd.EXPIRED:
        why = "expired"
    else:  # `by` is the user's name as Slack sent it, shown without pinging them
        why = f"was lifted by @{clip(summary.by, 40)}" if summary.by else "was lifted"
    head = f":bell: The mute of {target} {why}: {_tallies(summary)} while muted"
    last = _last_failure(summary.last_failure)
    text = head + (f"; {last}" if last else "")
    blocks: list[Block] = [SectionBlock(text=mrkdwn(truncate(text, 2900)))]
    ended = datetime.fromtimestamp(summary.ended_at / 1000, UTC)
    blocks.append(ContextBlock(elements=[mrkdwn(f"mute ended {date_token(ended)}")]))
    plain = f"The mute of {escape(summary.target)} {why}: {_tallies(summary)} while muted"
    return AlertMessage(text=truncate(plain, 3000), blocks=fit_blocks(blocks))


OPS_RAISED = {
    OpsSubject.TIMBAL: ":satellite_antenna: Timbal is failing: the bot cannot list jobs",
    OpsSubject.SLACK: ":pause_button: Slack delivery is paused: alerts are waiting",
    OpsSubject.BACKLOG: ":inbox_tray: The alert backlog keeps growing",
}
OPS_RECOVERED = {
    OpsSubject.TIMBAL: ":white_check_mark: Timbal answers again: job alerts are flowing",
    OpsSubject.SLACK: ":white_check_mark: Slack delivery resumed",
    OpsSubject.BACKLOG: ":white_check_mark: The alert backlog is shrinking again",
}


def render_ops(alert: OpsAlert) -> AlertMessage:
    """The bot's own health: in trouble, or well again. `detail` is the bot's own text (already
    redacted and cut where it quotes an error) and is escaped here."""
    head = (OPS_RAISED if alert.raised else OPS_RECOVERED)[alert.subject]
    text = head + (f": {clip(alert.detail, 500)}" if alert.detail else "")
    at = datetime.fromtimestamp(alert.at / 1000, UTC)
    blocks: list[Block] = [
        SectionBlock(text=mrkdwn(truncate(text, 2900))),
        ContextBlock(elements=[mrkdwn(f"timbal-jobs-bot · {date_token(at)}")]),
    ]
    plain = head + (f": {escape(alert.detail)}" if alert.detail else "")
    return AlertMessage(text=truncate(plain, 3000), blocks=fit_blocks(blocks))
