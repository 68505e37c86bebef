"""Build slash-command and interactivity requests exactly as Slack sends them: signed form
posts.

Used by the demo's prompt and by the tests.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from slack_sdk.signature import SignatureVerifier


@dataclass(frozen=True, slots=True)
class SignedRequest:
    body: str
    headers: dict[str, str]


def slash_command_body(
    *,
    text: str,
    response_url: str,
    command: str = "/jobs",
    user_id: str = "U0USER",
    user_name: str = "ada",
    channel_id: str = "C0GENERAL",
    channel_name: str = "general",
    team_id: str = "T0TEST",
) -> str:
    return urlencode(
        {
            "token": "deprecated-verification-token",
            "team_id": team_id,
            "team_domain": "timbal-test",
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name,
            "command": command,
            "text": text,
            "api_app_id": "A0APP",
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": "1234.5678.abcdef",
        }
    )


def sign(body: str, signing_secret: str, *, timestamp: int | None = None) -> SignedRequest:
    """Headers Slack would send: `X-Slack-Request-Timestamp` and the v0 `X-Slack-Signature`."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = SignatureVerifier(signing_secret).generate_signature(timestamp=ts, body=body)
    assert signature is not None
    return SignedRequest(
        body=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": signature,
        },
    )


def block_actions_body(
    *,
    action_id: str,
    block_id: str,
    response_url: str,
    channel_id: str,
    message_ts: str,
    value: str | None = None,
    selected: str | None = None,
    user_id: str = "U0USER",
    user_name: str = "ada",
    team_id: str = "T0TEST",
) -> str:
    """A click on a message's button (`value`) or static select (`selected`), as Slack posts
    it to the interactivity URL: a form with one field, `payload`, holding the JSON."""
    action: dict[str, Any] = {
        "action_id": action_id,
        "block_id": block_id,
        "type": "static_select" if selected is not None else "button",
        "action_ts": f"{time.time():.6f}",
    }
    if value is not None:
        action["value"] = value
    if selected is not None:
        action["selected_option"] = {
            "value": selected,
            "text": {"type": "plain_text", "text": selected},
        }
    payload = {
        "type": "block_actions",
        "token": "deprecated-verification-token",
        "api_app_id": "A0APP",
        "team": {"id": team_id, "domain": "timbal-test"},
        "user": {"id": user_id, "username": user_name, "name": user_name, "team_id": team_id},
        "channel": {"id": channel_id, "name": channel_id.lower()},
        "container": {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        },
        "message": {"type": "message", "ts": message_ts},
        "trigger_id": "1234.5678.abcdef",
        "response_url": response_url,
        "actions": [action],
    }
    return urlencode({"payload": json.dumps(payload)})
