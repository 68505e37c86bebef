"""What `/jobs subscribe|unsubscribe|subscriptions|mute|unmute` answer, and the notes they leave
in the channel. Pure: the clock comes in as `now`.

Mentions are shown without pinging anyone (`Mention.shown`, escaped), except the admins named
in an ephemeral refusal; targets are escaped inline code; times are Slack date tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from slack_sdk.models.blocks import Block, ContextBlock, SectionBlock

from bot.blockkit import (
    MAX_SECTION_TEXT,
    clip,
    date_token,
    escape,
    fit_blocks,
    inline_code,
    mrkdwn,
    truncate,
)
from bot.domain.subscriptions import EventSet, Mention, Mute, Subscription, Target
from bot.jobs.listing import RenderedMessage
from bot.jobs.subcommands import USAGES

ID_CHARS = 80
EVENTS_SAID = {
    EventSet.FAILURES: "failures",
    EventSet.FINISHED: "every finished run",
    EventSet.ALL: "every run, started and finished",
}


def _message(text: str, blocks: Sequence[Block]) -> RenderedMessage:
    return RenderedMessage(text=truncate(text, 3000), blocks=fit_blocks(blocks))


def _one(text: str) -> RenderedMessage:
    """A reply of one mrkdwn section (already escaped)."""
    return _message(text, [SectionBlock(text=mrkdwn(truncate(text, MAX_SECTION_TEXT)))])


def channel_link(channel: str) -> str:
    """A channel id as a link Slack shows by name; a name (`#general`) as it is."""
    return escape(channel) if channel.startswith("#") else f"<#{escape(channel)}>"


def target_text(target: Target) -> str:
    if target.is_all:
        return "every connector"
    return inline_code(target.value, ID_CHARS)


def mention_text(mention: Mention | None) -> str:
    return escape(mention.shown) if mention is not None else ""


def render_subcommand_usage(subcommand: str, problem: str = "") -> RenderedMessage:
    usage = escape(USAGES[subcommand])
    if not problem:
        return _one(usage)
    why = clip(problem, 500)
    blocks = [
        SectionBlock(text=mrkdwn(f":warning: {why}")),
        SectionBlock(text=mrkdwn(usage)),
    ]
    return _message(f"{why} {usage}", blocks)


def describe(sub: Subscription) -> str:
    """ "failures of `pg-*`, mentioning @data-oncall" (escaped)."""
    line = f"{EVENTS_SAID[sub.events]} of {target_text(sub.target)}"
    if sub.mention is not None:
        line += f", mentioning {mention_text(sub.mention)}"
    return line


def subscribed_note(sub: Subscription, user: str) -> str:
    """The visible note in the channel (plain mrkdwn, pings nobody)."""
    return f"@{clip(user, 40)} subscribed this channel to {describe(sub)}."


def render_subscribed(sub: Subscription, *, replaced: bool) -> RenderedMessage:
    verb = "Changed" if replaced else "Subscribed"
    return _one(f":white_check_mark: {verb}: this channel gets {describe(sub)}.")


def unsubscribed_note(target: Target, user: str) -> str:
    return f"@{clip(user, 40)} unsubscribed this channel from {target_text(target)}."


def render_unsubscribed(target: Target, *, found: bool, builtin: bool) -> RenderedMessage:
    if found:
        return _one(
            f":white_check_mark: This channel no longer gets alerts of {target_text(target)}."
        )
    if builtin:
        return _one(
            ":information_source: This channel gets every alert because `ALERT_CHANNEL` is set "
            "to it; change that setting to stop them."
        )
    return _one(
        f":information_source: This channel has no subscription to {target_text(target)}; "
        "`/jobs subscriptions` lists what it has."
    )


def muted_note(mute: Mute, user: str) -> str:
    return (
        f"@{clip(user, 40)} muted alerts of {target_text(mute.target)} here until "
        f"{date_token(mute.until)}."
    )


def render_muted(mute: Mute, *, extended: bool) -> RenderedMessage:
    verb = "Mute moved" if extended else "Muted"
    return _one(
        f":mute: {verb}: alerts of {target_text(mute.target)} are held back in this channel "
        f"until {date_token(mute.until)}; then one summary says what was held back."
    )


def render_unmuted(
    target: Target, *, found: bool, failures: int, successes: int, others: int
) -> RenderedMessage:
    if not found:
        return _one(f":information_source: Nothing of {target_text(target)} is muted here.")
    held = failures + successes + others
    if not held:
        return _one(f":bell: Unmuted {target_text(target)}: nothing was held back meanwhile.")
    return _one(
        f":bell: Unmuted {target_text(target)}: {held} alert{'s' if held != 1 else ''} "
        f"({failures} failed) were held back; their summary follows in the channel."
    )


def unmuted_note(target: Target, user: str) -> str:
    return f"@{clip(user, 40)} unmuted {target_text(target)} here."


def render_not_admin(admins: Iterable[str]) -> RenderedMessage:
    names = ", ".join(f"<@{escape(a)}>" for a in sorted(admins))
    return _one(
        f":lock: Only {names} can change where alerts go (`SUBSCRIPTION_ADMINS`); "
        "`/jobs subscriptions` shows what is set, for everyone."
    )


def render_cannot_post(why: str) -> RenderedMessage:
    return _one(f":warning: {clip(why, 1000)} Nothing was changed.")


def render_limit(limit: int, what: str) -> RenderedMessage:
    return _one(
        f":warning: This channel has {limit} {what}s already, the most it may have; remove "
        f"one first (`/jobs subscriptions` lists them)."
    )


def _sub_line(sub: Subscription) -> str:
    line = f"• {describe(sub)}"
    if sub.builtin:
        return line + " — built in (`ALERT_CHANNEL`)"
    return line + (f" — set by <@{escape(sub.by)}>" if sub.by else "")


def _mute_line(mute: Mute, now: datetime) -> str:
    if mute.until <= now:
        return f"• :mute: {target_text(mute.target)}, ending now"
    return f"• :mute: {target_text(mute.target)} until {date_token(mute.until)}"


def render_subscriptions(
    subscriptions: Sequence[Subscription],
    mutes: Sequence[Mute],
    *,
    channel: str | None,
    now: datetime,
) -> RenderedMessage:
    """This channel's (`channel` set) or every channel's subscriptions and mutes."""
    channels = sorted({s.channel for s in subscriptions} | {m.channel for m in mutes})
    if channel is not None:
        channels = [channel]
    blocks: list[Block] = []
    lines_all: list[str] = []
    for ch in channels:
        subs = [s for s in subscriptions if s.channel == ch]
        held = [m for m in mutes if m.channel == ch]
        lines = [_sub_line(s) for s in subs] + [_mute_line(m, now) for m in held]
        if not lines:
            lines = ["• nothing: this channel gets no alerts (`/jobs subscribe` adds some)"]
        head = "*This channel*" if channel is not None else f"*{channel_link(ch)}*"
        section = truncate(head + "\n" + "\n".join(lines), MAX_SECTION_TEXT)
        blocks.append(SectionBlock(text=mrkdwn(section)))
        lines_all += lines
    if not blocks:
        blocks.append(SectionBlock(text=mrkdwn("No channel gets alerts yet (`/jobs subscribe`).")))
    if len(blocks) > 45:
        blocks = [
            *blocks[:45],
            ContextBlock(elements=[mrkdwn(f"…and {len(channels) - 45} more channels")]),
        ]
    total = (
        len(subscriptions)
        if channel is None
        else len([s for s in subscriptions if s.channel == channel])
    )
    text = f"{total} subscription{'s' if total != 1 else ''}: " + " ".join(lines_all)[:500]
    return _message(text, blocks)
