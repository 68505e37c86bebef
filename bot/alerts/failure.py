"""What a failed Slack call was, as plain data (pure; `bot.alerts.slack_errors` classifies).

- `RATE_LIMITED`: HTTP 429, `ratelimited`, or chat.postMessage's own `rate_limited`; Slack
  did not act. Wait `retry_after`.
- `RETRY`: 5xx, Slack's transient errors, timeouts, connection errors, an answer without
  Slack's error code that is not a 4xx. `maybe_sent` says whether Slack may have acted
  anyway (a timeout or a 5xx may follow a post that went through; a refused connection not).
- `INVALID`: `invalid_blocks` / `msg_too_long`: the content was refused; retry once as text.
- `PERMANENT`: anything else Slack answered. `scope` says what it condemns: this message,
  every message to this channel, or every call with this token (the workspace). A refusal
  that only concerns threading (`THREAD_ERRORS`: the channel takes no replies, the parent
  cannot have any) condemns this thread, never the channel: it is `MESSAGE`-scoped, so the
  thread's other replies are skipped and the channel's top-level posts still go out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FailureKind(StrEnum):
    RATE_LIMITED = "rate_limited"
    RETRY = "retry"
    INVALID = "invalid"
    PERMANENT = "permanent"


class Scope(StrEnum):
    MESSAGE = "message"  # this message only
    CHANNEL = "channel"  # every message for this channel would fail the same way
    WORKSPACE = "workspace"  # every call with this token would fail the same way


TRANSIENT_ERRORS = frozenset(
    {
        "internal_error",
        "fatal_error",
        "service_unavailable",
        "request_timeout",
        "timeout",
        "team_added_to_org",  # an Enterprise migration: "intermittently unavailable"
    }
)
RATE_LIMIT_ERRORS = frozenset({"ratelimited", "rate_limited"})
INVALID_ERRORS = frozenset({"invalid_blocks", "invalid_blocks_format", "msg_too_long"})
CHANNEL_ERRORS = frozenset(
    {
        "channel_not_found",
        "not_in_channel",
        "is_archived",
        "restricted_action",
        "restricted_action_read_only_channel",
        "restricted_action_thread_only_channel",
        "team_access_not_granted",
        "ekm_access_denied",
    }
)
# A reply refused for being a reply: top-level posts to the same channel still work.
THREAD_ERRORS = frozenset(
    {
        "restricted_action_non_threadable_channel",
        "restricted_action_thread_locked",
        "cannot_reply_to_message",
        "thread_not_found",
    }
)
TOKEN_ERRORS = frozenset(
    {
        "invalid_auth",
        "not_authed",
        "account_inactive",
        "token_revoked",
        "token_expired",
        "missing_scope",
        "no_permission",
        "not_allowed_token_type",
        "org_login_required",
    }
)
DEFAULT_RETRY_AFTER = 1.0
MAX_RETRY_AFTER = 3600.0

HINTS = {
    "invalid_auth": "SLACK_BOT_TOKEN is not a valid bot token; copy it again from the app's "
    "OAuth & Permissions page",
    "not_authed": "SLACK_BOT_TOKEN is missing from the requests; check the setting",
    "account_inactive": "the bot user or its workspace was deactivated; reinstall the app",
    "token_revoked": "SLACK_BOT_TOKEN was revoked (the app was uninstalled?); reinstall the "
    "app and set the new token",
    "token_expired": "SLACK_BOT_TOKEN expired (token rotation is on); set a fresh token",
    "missing_scope": "the app lacks a scope it needs; add it under OAuth & Permissions "
    "(see slack-app-manifest.yml) and reinstall the app",
    "no_permission": "the token may not do this; check the app's scopes and reinstall",
    "not_allowed_token_type": "SLACK_BOT_TOKEN must be a bot token (xoxb-…)",
    "org_login_required": "the workspace was migrated to an Enterprise org; log in and "
    "reinstall the app",
}


CHANNEL_HINT = "invite the bot to the channel (/invite @Timbal Jobs) or fix the channel id"
THREAD_HINT = (
    "the alert itself was posted; Slack takes no thread replies there, so the full error "
    "text stays in the dead letter"
)


def hint_for(reason: str) -> str:
    """What an operator should do about a Slack error code."""
    if reason in CHANNEL_ERRORS:
        return CHANNEL_HINT
    if reason in THREAD_ERRORS:
        return THREAD_HINT
    if reason in TOKEN_ERRORS:
        return HINTS.get(reason, "check SLACK_BOT_TOKEN and the app's scopes")
    return "Slack refused this message; the dead letter keeps it for a replay"


@dataclass(frozen=True, slots=True)
class SlackFailure:
    kind: FailureKind
    reason: str  # Slack's error code, `http_<status>`, or the exception's type
    retry_after: float | None = None  # seconds, for RATE_LIMITED
    scope: Scope = Scope.MESSAGE
    maybe_sent: bool = False  # RETRY: Slack may have acted before the failure
    needed: str = ""  # missing_scope: the scope Slack says is needed
