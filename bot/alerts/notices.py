"""Rendering notices (pure): the summary a channel gets when a mute ends.

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
from bot.domain.notices import MuteEnd, MuteSummary

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
