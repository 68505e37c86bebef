"""Settings problems in words a person can act on: every problem at once, each variable named,
with what a valid value looks like, and a pointer to `.env.example`.

pydantic finds the problems; its wording ("Field required", "Input should be…", "Value
error,") is for programmers, so `explain()` says the same in plain words, from `HINTS`.
The checks that span several variables (`cross_problems`) are pure functions of the raw
values, so they are reported even when single variables are wrong too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, SecretStr, ValidationError

PROBLEM_SEPARATOR = "\n"
ENV_EXAMPLE = (
    "Every setting, what it is for and an example value: .env.example "
    "(cp .env.example .env, fill it in, then: set -a; . ./.env; set +a)."
)
SECRET_FIELDS = frozenset(
    {"timbal_api_key", "slack_bot_token", "slack_signing_secret", "slack_app_token", "redis_url"}
)
SECONDS = "a number of seconds"
# What a valid value looks like, by setting; completes "use …" (or "set it to …" when missing).
HINTS: dict[str, str] = {
    "timbal_api_url": "an http(s) URL, e.g. https://api.timbal.ai",
    "timbal_api_key": "the API key from the Timbal platform settings",
    "timbal_org_id": "your organisation's id: letters, digits and _ . : - (e.g. org_acme)",
    "timbal_timeout_seconds": f"{SECONDS} above 0 and at most 120, e.g. 10",
    "timbal_max_response_mb": "a whole number of megabytes from 1 to 4096, e.g. 256",
    "slack_bot_token": "the Bot User OAuth Token (xoxb-…, from OAuth & Permissions)",
    "slack_signing_secret": "the Signing Secret (Basic Information > App Credentials)",
    "slack_app_token": "an app-level token (xapp-…) with the connections:write scope",
    "slack_api_url": "an http(s) URL, e.g. https://slack.com/api/",
    "slack_mode": "socket or http (unset: socket, or http when only SLACK_SIGNING_SECRET is set)",
    "port": "a whole number from 0 to 65535, e.g. 3000",
    "host": "an IP address or a host name to listen on, e.g. 0.0.0.0 or 127.0.0.1",
    "jobs_cache_seconds": f"{SECONDS} from 0 to 300, e.g. 5",
    "redis_url": "redis://HOST:6379/0, rediss://… (TLS) or unix:///path/to/redis.sock",
    "redis_prefix": "1 to 40 letters, digits, _ . or -, e.g. tjb",
    "redis_cluster": "true (REDIS_URL is a node of a Redis Cluster) or false",
    "replica_id": "1 to 100 letters, digits, _ . : @ or -, one per replica (unset: the host name)",
    "heartbeat_ttl_seconds": f"{SECONDS} from 1 to 60, e.g. 3",
    "slack_timeout_seconds": f"{SECONDS} from 1 to 60, e.g. 10",
    "delivery_max_attempts": "a whole number from 1 to 100, e.g. 5",
    "alert_channel": "a channel id, e.g. C0123ABCD (from the channel's details)",
    "alert_events": "failures, finished (every terminal event) or all (started too)",
    "subscription_admins": "Slack user ids separated by commas, e.g. U0123ABCD,U0456EFGH",
    "poll_interval_seconds": f"{SECONDS} from 1 to 3600, e.g. 15",
    "backfill_seconds": f"{SECONDS}, 0 or more, e.g. 0",
    "vanish_grace_seconds": f"{SECONDS}, 0 or more, e.g. 3600",
    "alert_on_started": "true or false",
    "oncall_mention": "a user id (U… or W…), a user group id (S…), here or channel",
    "digest_threshold": "a whole number from 1 to 1000, e.g. 5",
    "channel_min_interval_seconds": f"{SECONDS} from 0 to 60, e.g. 1",
    "escalate_after_seconds": f"{SECONDS} from 1 to 604800, e.g. 900",
    "long_running_after_seconds": f"{SECONDS}, 0 (off) or more, e.g. 7200",
    "stall_after_seconds": f"{SECONDS}, 0 (off) or more, e.g. 900",
    "ops_channel": "a channel id, e.g. C0123ABCD (unset: ALERT_CHANNEL)",
    "ops_alert_after_polls": "a whole number from 1 to 1000, e.g. 4",
    "ops_slack_pause_seconds": f"{SECONDS}, from 1 to 86400, e.g. 60",
    "failure_states": "state names separated by commas, e.g. failed,error,timed_out",
    "cancelled_states": "state names separated by commas, e.g. cancelled,canceled",
    "success_states": "state names separated by commas, e.g. succeeded,done",
    "log_level": "DEBUG, INFO, WARNING, ERROR or CRITICAL",
    "log_format": "text or json",
}
NO_SLACK = (
    "No way to reach Slack is set: set SLACK_APP_TOKEN (Socket Mode, the default) "
    "or SLACK_SIGNING_SECRET with SLACK_MODE=http."
)
STATE_SETS = ("failure_states", "cancelled_states", "success_states")


def effective_mode(mode: Any, has_app_token: bool, has_signing_secret: bool) -> str:
    """SLACK_MODE, or when unset: http if only SLACK_SIGNING_SECRET is set, else socket."""
    if mode is not None:
        return str(getattr(mode, "value", mode)).strip().lower()
    return "http" if has_signing_secret and not has_app_token else "socket"


def _present(value: Any) -> bool:
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    return value is not None and str(value).strip() != ""


def _states(value: Any) -> frozenset[str] | None:
    if isinstance(value, str):
        return frozenset(s.strip().lower() for s in value.split(",") if s.strip())
    return frozenset(value) if isinstance(value, frozenset | set | list | tuple) else None


def cross_problems(values: Mapping[str, Any], *, slack: bool) -> list[str]:
    """Problems no single variable has: the Slack mode without its token, a state in two sets,
    a cluster without its address.

    `slack`: the settings are the bot's, which must reach Slack (not one command's part).
    """
    problems: list[str] = []
    if slack:
        raw_mode = values.get("slack_mode")
        app_token = _present(values.get("slack_app_token"))
        secret = _present(values.get("slack_signing_secret"))
        mode = effective_mode(raw_mode if _present(raw_mode) else None, app_token, secret)
        if not app_token and not secret:
            problems.append(NO_SLACK)
        elif mode == "socket" and not app_token:
            problems.append(
                f"SLACK_MODE=socket needs SLACK_APP_TOKEN: {HINTS['slack_app_token']} "
                "(or set SLACK_MODE=http to use SLACK_SIGNING_SECRET)."
            )
        elif mode == "http" and not secret:
            problems.append(
                f"SLACK_MODE=http needs SLACK_SIGNING_SECRET: {HINTS['slack_signing_secret']}."
            )
    cluster = str(values.get("redis_cluster", "")).strip().lower() in ("1", "true", "yes", "on")
    if cluster and not _present(values.get("redis_url")):
        problems.append(
            "REDIS_CLUSTER=true needs REDIS_URL: the address of any node of the cluster, "
            f"e.g. {HINTS['redis_url'].split(',')[0]}."
        )
    sets = {name: _states(values[name]) for name in STATE_SETS if name in values}
    for i, first in enumerate(STATE_SETS):
        for second in STATE_SETS[i + 1 :]:
            a, b = sets.get(first), sets.get(second)
            if a is not None and b is not None and a & b:
                both = ", ".join(sorted(a & b))
                problems.append(
                    f"{first.upper()} and {second.upper()} both contain {both}: "
                    "a state may be in one set only."
                )
    return problems


def needs_slack(kind: type[BaseModel]) -> bool:
    return "slack_bot_token" in kind.model_fields


def _shown(value: Any) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value))
    return text if len(text) <= 60 else text[:59] + "…"


def _raw(kind: type[BaseModel], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The values as given (environment, then overrides), unvalidated, for `cross_problems`."""
    env = {name.lower(): value for name, value in os.environ.items() if value.strip()}
    raw = {name: env[name] for name in kind.model_fields if name in env}
    raw.update({k: v for k, v in overrides.items() if k in kind.model_fields and v is not None})
    for name in STATE_SETS:  # a set left at its default can still overlap one that was given
        if name in kind.model_fields and name not in raw:
            raw[name] = kind.model_fields[name].default
    return raw


def explain(exc: ValidationError, kind: type[BaseModel], overrides: Mapping[str, Any]) -> str:
    """Every problem of `exc` in plain words, one a line, then where to look."""
    lines: list[str] = []
    named: set[str] = set()
    cross_reported = False
    for error in exc.errors(include_url=False):
        loc = error["loc"]
        if not loc:  # our own cross-variable check, one problem a line
            lines += str(error["msg"]).removeprefix("Value error, ").split(PROBLEM_SEPARATOR)
            cross_reported = True
            continue
        field = str(loc[0])
        if field in named:
            continue
        named.add(field)
        name = field.upper()
        hint = HINTS.get(field, "a valid value (see .env.example)")
        if error["type"] == "missing":
            lines.append(f"{name} is not set: set it to {hint}.")
        elif field in SECRET_FIELDS:
            lines.append(f"{name} is not valid: use {hint}.")
        else:
            lines.append(f'{name}="{_shown(error.get("input"))}" is not valid: use {hint}.')
    if not cross_reported:
        lines += cross_problems(_raw(kind, overrides), slack=needs_slack(kind))
    count = f"{len(lines)} setting{'s' if len(lines) != 1 else ''} to fix"
    return f"{count}:\n  - " + "\n  - ".join(lines) + f"\n{ENV_EXAMPLE}"
