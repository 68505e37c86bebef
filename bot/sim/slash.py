"""Build a slash-command request exactly as Slack sends it: a signed form post.

Used by the demo's prompt and by the tests.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
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
