"""Slash commands exactly as Slack sends them, signed or deliberately mis-signed.

The body and the v0 signature come from `bot.sim.slash` (slack_sdk's SignatureVerifier);
this adds what tests need on top: a forged signature and a stale timestamp.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs

import httpx

from bot.sim.slash import SignedRequest, block_actions_body, sign, slash_command_body

STALE_SECONDS = 6 * 60  # Slack's verifiers reject a timestamp older than 5 minutes


def slash_command(
    *,
    text: str,
    response_url: str,
    signing_secret: str,
    command: str = "/jobs",
    user_id: str = "U0USER",
    user_name: str = "ada",
    channel_id: str = "C0GENERAL",
    forge: bool = False,
    stale: bool = False,
) -> SignedRequest:
    """A signed `application/x-www-form-urlencoded` slash command.

    `forge=True` signs with another secret (a request that did not come from Slack);
    `stale=True` signs correctly but with a timestamp older than Slack's 5-minute window.
    """
    body = slash_command_body(
        text=text,
        response_url=response_url,
        command=command,
        user_id=user_id,
        user_name=user_name,
        channel_id=channel_id,
    )
    secret = signing_secret + "-forged" if forge else signing_secret
    timestamp = int(time.time()) - STALE_SECONDS if stale else None
    return sign(body, secret, timestamp=timestamp)


def form_fields(request: SignedRequest) -> dict[str, str]:
    """The decoded form, for assertions on what was sent."""
    return {k: v[0] for k, v in parse_qs(request.body, keep_blank_values=True).items()}


async def post(client: httpx.AsyncClient, url: str, request: SignedRequest) -> httpx.Response:
    return await client.post(url, content=request.body.encode(), headers=request.headers)


def block_action(
    *,
    action_id: str,
    block_id: str,
    response_url: str,
    signing_secret: str,
    channel_id: str,
    message_ts: str = "1.000001",
    value: str | None = None,
    selected: str | None = None,
    user_id: str = "U0USER",
    user_name: str = "ada",
    forge: bool = False,
    stale: bool = False,
) -> SignedRequest:
    """A signed `block_actions` interactivity payload: a click on a card's button or select."""
    body = block_actions_body(
        action_id=action_id,
        block_id=block_id,
        response_url=response_url,
        channel_id=channel_id,
        message_ts=message_ts,
        value=value,
        selected=selected,
        user_id=user_id,
        user_name=user_name,
    )
    secret = signing_secret + "-forged" if forge else signing_secret
    timestamp = int(time.time()) - STALE_SECONDS if stale else None
    return sign(body, secret, timestamp=timestamp)
