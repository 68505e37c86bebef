"""`/jobs status`: the bot's own health, for humans. Pure: figures in, a message out.

Last successful poll, jobs tracked, alerts waiting per channel (and what holds each back),
dead letters, paused delivery, who polls and who delivers, replicas alive, open incidents.
Channel ids are shown as channel links; connector ids and reasons are escaped.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from slack_sdk.models.blocks import Block, ContextBlock, HeaderBlock, PlainTextObject, SectionBlock

from bot.blockkit import (
    MAX_SECTION_TEXT,
    clip,
    date_token,
    escape,
    fit_blocks,
    fmt_count,
    fmt_duration_ms,
    inline_code,
    mrkdwn,
    truncate,
)
from bot.domain.incidents import Incident
from bot.jobs.listing import RenderedMessage
from bot.jobs.subscription_views import channel_link

MAX_LISTED = 15


@dataclass(frozen=True)
class Waiting:
    channel: str
    actions: int
    reason: str = ""  # "rate_limited", "backoff", "paced", "" (being delivered)


@dataclass(frozen=True)
class StatusReport:
    now: datetime
    org_id: str
    last_poll: datetime | None
    jobs_tracked: int
    backlog: int  # outbox entries not yet delivered
    waiting: Sequence[Waiting] = ()
    status_at: datetime | None = None  # when the delivering replica last reported
    dead_letters: int = 0
    workspace_paused: str = ""  # why all delivery is paused ("" when it is not)
    poller: str = ""  # the replica holding the poll lease ("" when none)
    notifier: str = ""  # the replica holding the delivery lease
    replicas: Sequence[str] = ()  # alive, with their roles
    incidents: Sequence[Incident] = field(default_factory=list)
    raised: Sequence[str] = ()  # ops alerts raised now


def _ago(now: datetime, then: datetime) -> str:
    return fmt_duration_ms(max(int((now - then).total_seconds() * 1000), 0))


def _poll_line(report: StatusReport) -> str:
    if report.last_poll is None:
        return ":grey_question: *Last poll*: never (the poller has not listed jobs yet)"
    age = (report.now - report.last_poll).total_seconds()
    emoji = ":large_green_circle:" if age < 300 else ":red_circle:"
    return (
        f"{emoji} *Last successful poll*: {date_token(report.last_poll)} "
        f"({_ago(report.now, report.last_poll)} ago) · "
        f"*{fmt_count(report.jobs_tracked)}* jobs tracked"
    )


def _delivery_lines(report: StatusReport) -> list[str]:
    lines = []
    if report.workspace_paused:
        lines.append(
            f":pause_button: *All delivery is paused*: {clip(report.workspace_paused, 300)}"
        )
    emoji = ":large_green_circle:" if not report.backlog else ":large_yellow_circle:"
    lines.append(f"{emoji} *Alerts waiting*: {fmt_count(report.backlog)}")
    for w in list(report.waiting)[:MAX_LISTED]:
        why = f" ({escape(w.reason.replace('_', ' '))})" if w.reason else ""
        lines.append(f"• {channel_link(w.channel)}: {fmt_count(w.actions)} message(s){why}")
    if len(report.waiting) > MAX_LISTED:
        lines.append(f"…and {len(report.waiting) - MAX_LISTED} more channels")
    letters = fmt_count(report.dead_letters)
    hint = " (`timbal-jobs-bot dead-letters` shows them)" if report.dead_letters else ""
    lines.append(f"*Dead letters*: {letters}{hint}")
    return lines


def _who_lines(report: StatusReport) -> list[str]:
    poller = inline_code(report.poller, 60) if report.poller else "_nobody_"
    notifier = inline_code(report.notifier, 60) if report.notifier else "_nobody_"
    alive = ", ".join(clip(r, 80) for r in list(report.replicas)[:MAX_LISTED]) or "_none_"
    return [
        f"*Polling*: {poller} · *Delivering*: {notifier}",
        f"*Replicas alive* ({len(report.replicas)}): {alive}",
    ]


def _incident_lines(report: StatusReport) -> list[str]:
    incidents = sorted(report.incidents, key=lambda i: i.opened_at)
    if not incidents:
        return [":white_check_mark: *Open incidents*: none"]
    lines = [f":rotating_light: *Open incidents* ({len(incidents)}):"]
    for i in incidents[:MAX_LISTED]:
        owner = (
            f"acknowledged by @{clip(i.acked_name or i.acked_by, 40)}"
            if i.acked_by
            else ("not acknowledged")
        )
        lines.append(
            f"• {inline_code(i.connector, 80)} in {channel_link(i.channel)}: "
            f"{fmt_count(i.failures)} failure(s) since {date_token(i.opened_at)}, {owner}"
        )
    if len(incidents) > MAX_LISTED:
        lines.append(f"…and {len(incidents) - MAX_LISTED} more")
    return lines


def _section(lines: list[str]) -> SectionBlock:
    return SectionBlock(text=mrkdwn(truncate("\n".join(lines), MAX_SECTION_TEXT)))


def render_status(report: StatusReport) -> RenderedMessage:
    blocks: list[Block] = [
        HeaderBlock(text=PlainTextObject(text="timbal-jobs-bot status", emoji=True)),
        _section([_poll_line(report)]),
        _section(_delivery_lines(report)),
        _section(_incident_lines(report)),
        _section(_who_lines(report)),
    ]
    footer = [f"org {inline_code(report.org_id, 60)}"]
    if report.raised:
        footer.append("ops alerts raised: " + ", ".join(escape(r) for r in report.raised))
    if report.status_at is not None:
        footer.append(f"delivery figures from {_ago(report.now, report.status_at)} ago")
    blocks.append(ContextBlock(elements=[mrkdwn(" · ".join(footer))]))
    poll = "never polled" if report.last_poll is None else "polling"
    text = (
        f"timbal-jobs-bot: {poll}, {report.backlog} alert(s) waiting, "
        f"{report.dead_letters} dead letter(s), {len(report.incidents)} open incident(s)"
    )
    return RenderedMessage(text=truncate(text, 3000), blocks=fit_blocks(blocks))


def render_channel_settings(threads: bool, *, changed: bool = False) -> RenderedMessage:
    """`/jobs settings [threads on|off]`: what this channel has set."""
    if threads:
        said = (
            "further failures of an open incident go into its card's thread "
            "(`/jobs settings threads off` posts them top-level)"
        )
    else:
        said = (
            "every failure is posted top-level; the incident's card is still updated "
            "(`/jobs settings threads on` threads them again)"
        )
    head = ":gear: Set: threads are " if changed else ":gear: This channel: threads are "
    text = head + ("on" if threads else "off") + f": {said}."
    section = SectionBlock(text=mrkdwn(truncate(text, MAX_SECTION_TEXT)))
    return RenderedMessage(text=truncate(text, 3000), blocks=fit_blocks([section]))


def threads_note(threads: bool, user: str) -> str:
    """The visible note a change of the setting leaves in the channel."""
    how = "in the incident card's thread" if threads else "top-level"
    return f"@{clip(user, 40)} set this channel's further failures of an incident to go {how}."
