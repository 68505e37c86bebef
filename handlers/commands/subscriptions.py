"""`/jobs subscribe|unsubscribe|subscriptions|mute|unmute|settings|status`: where a channel's
alerts go, from Slack (`settings` and `status` are answered by `handlers.commands.status`).

Called by `handlers.commands.jobs` once the text parsed as a subcommand (`bot.jobs.subcommands`).
Each answers ephemerally; a change also leaves a short visible note in the channel. Changes
are for `SUBSCRIPTION_ADMINS` when that is set; reading is for everyone. Before subscribing,
the bot checks with `conversations.info` that it can post (and read back) in the channel, so
no subscription fails silently.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.alerts.slack_errors import error_code
from bot.app.services import Services
from bot.domain.notices import MuteEnd
from bot.domain.subscriptions import Mute, Subscription
from bot.jobs.listing import RenderedMessage
from bot.jobs.status_view import threads_note
from bot.jobs.subcommands import (
    ChannelSettingsRequest,
    ListSubscriptions,
    MuteRequest,
    StatusRequest,
    Subcommand,
    SubcommandHelp,
    Subscribe,
    Unmute,
    Unsubscribe,
)
from bot.jobs.subscription_views import (
    muted_note,
    render_cannot_post,
    render_limit,
    render_muted,
    render_not_admin,
    render_subcommand_usage,
    render_subscribed,
    render_subscriptions,
    render_unmuted,
    render_unsubscribed,
    subscribed_note,
    unmuted_note,
    unsubscribed_note,
)
from handlers.commands.status import answer_status, set_threads, show_settings
from storage.subscriptions import Put

log = logging.getLogger(__name__)

INVITE = "invite me with `/invite @Timbal Jobs`, then subscribe again"


async def cannot_post(client: AsyncWebClient, channel: str) -> str | None:
    """Why the bot cannot post alerts in `channel` (and read them back), or None."""
    try:
        info = await client.conversations_info(channel=channel)
    except SlackApiError as exc:
        code = error_code(exc)
        if code == "channel_not_found":
            return f"I cannot see this channel (a private one I am not in): {INVITE}."
        if code == "missing_scope":
            return (
                "The app may not look channels up (it lacks channels:read or groups:read): "
                "reinstall it from slack-app-manifest.yml."
            )
        return f"Slack would not tell me about this channel ({code}); try again later."
    except (aiohttp.ClientError, TimeoutError, OSError):
        return "Slack is not answering right now; try again in a minute."
    found: dict[str, Any] = info.get("channel") or {}
    if found.get("is_im") or found.get("is_mpim"):
        return "Subscribe in a channel, not in a direct message."
    if found.get("is_archived"):
        return "This channel is archived: nothing can be posted in it."
    if not found.get("is_member"):
        return (
            "I am not in this channel, so I could not post alerts here or find them again "
            f"after a restart: {INVITE}."
        )
    return None


async def _note(client: AsyncWebClient, channel: str, text: str) -> None:
    """A short visible note of a change; a failure to post it changes nothing else."""
    try:
        await client.chat_postMessage(
            channel=channel, text=text, unfurl_links=False, unfurl_media=False
        )
    except (SlackApiError, aiohttp.ClientError, TimeoutError, OSError) as exc:
        log.warning("could not post the note of a subscription change in %s: %s", channel, exc)


async def answer_subcommand(
    parsed: Subcommand,
    command: dict[str, Any],
    services: Services,
    client: AsyncWebClient,
    now: datetime,
) -> tuple[str, RenderedMessage]:
    """(metrics outcome, ephemeral reply) for a subcommand; changes post a note."""
    channel = str(command.get("channel_id") or "")
    user_id = str(command.get("user_id") or "")
    user = str(command.get("user_name") or user_id)
    store = services.subscriptions
    if isinstance(parsed, SubcommandHelp):
        return "usage", render_subcommand_usage(parsed.subcommand, parsed.problem)
    if isinstance(parsed, ListSubscriptions):
        table = await store.table()
        subs = list(table.subscriptions)
        if services.builtin is not None:
            subs = sorted([services.builtin, *subs], key=lambda s: (s.channel, s.target.value))
        where = None if parsed.every_channel else channel
        return "ok", render_subscriptions(subs, table.mutes, channel=where, now=now)
    if isinstance(parsed, StatusRequest):
        return await answer_status(services, now)
    if isinstance(parsed, ChannelSettingsRequest) and parsed.threads is None:
        return await show_settings(services, channel)
    admins = services.settings.subscription_admins or frozenset()
    if admins and user_id not in admins:
        return "not_admin", render_not_admin(admins)
    if isinstance(parsed, ChannelSettingsRequest):
        assert parsed.threads is not None
        result = await set_threads(services, channel, parsed.threads)
        await _note(client, channel, threads_note(parsed.threads, user))
        return result
    if isinstance(parsed, Subscribe):
        why = await cannot_post(client, channel)
        if why is not None:
            return "cannot_post", render_cannot_post(why)
        sub = Subscription(
            channel=channel,
            target=parsed.target,
            events=parsed.events,
            mention=parsed.mention,
            by=user_id,
            at=now,
        )
        put = await store.subscribe(sub)
        if put is Put.LIMIT:
            return "limit", render_limit(store.limit, "subscription")
        await _note(client, channel, subscribed_note(sub, user))
        return "ok", render_subscribed(sub, replaced=put is Put.REPLACED)
    if isinstance(parsed, Unsubscribe):
        found = await store.unsubscribe(channel, parsed.target)
        builtin = services.builtin
        is_builtin = (
            builtin is not None
            and builtin.channel == channel
            and builtin.target.value == parsed.target.value
        )
        if found:
            await _note(client, channel, unsubscribed_note(parsed.target, user))
        return "ok", render_unsubscribed(parsed.target, found=found, builtin=is_builtin)
    if isinstance(parsed, MuteRequest):
        mute = Mute(
            channel=channel, target=parsed.target, until=now + parsed.duration, by=user_id, at=now
        )
        put = await store.mute(mute)
        if put is Put.LIMIT:
            return "limit", render_limit(store.limit, "mute")
        await _note(client, channel, muted_note(mute, user))
        return "ok", render_muted(mute, extended=put is Put.REPLACED)
    assert isinstance(parsed, Unmute)
    ended = await store.end_mute(channel, parsed.target, MuteEnd.UNMUTED, by=user)
    if ended.ended:
        await _note(client, channel, unmuted_note(parsed.target, user))
    return "ok", render_unmuted(
        parsed.target,
        found=ended.ended,
        failures=ended.failures,
        successes=ended.successes,
        others=ended.others,
    )
