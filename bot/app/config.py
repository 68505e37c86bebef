"""Settings: read once from the environment into one typed, validated object.

A missing or malformed variable stops start-up with one message that names every problem
(`SettingsError`, worded by `bot.app.explain`). Secrets are `SecretStr`, so `repr()` and logs
show `**********`. `TimbalSettings` and `StoreSettings` are the parts a single command needs
(`jobs`, `dead-letters`); `Settings` is all of it, for the bot.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from enum import StrEnum
from typing import Annotated, Any, TypeVar
from urllib.parse import urlsplit

from pydantic import (
    AnyHttpUrl,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from redis.asyncio.connection import parse_url

from bot.app.explain import (
    PROBLEM_SEPARATOR,
    cross_problems,
    effective_mode,
    explain,
    needs_slack,
)
from bot.domain.states import (
    DEFAULT_CANCELLED_STATES,
    DEFAULT_FAILURE_STATES,
    DEFAULT_SUCCESS_STATES,
)
from bot.domain.subscriptions import ALL, EventSet, Mention, MentionKind, Subscription, Target

StateSet = Annotated[frozenset[str], NoDecode]
UserIds = Annotated[frozenset[str], NoDecode]
USER_PATTERN = re.compile(r"^[UW][A-Z0-9]{2,20}$")
# A user (U…/W…), a user group (S…), or `here` / `channel`.
ONCALL_PATTERN = r"^([UWS][A-Z0-9]{2,20}|here|channel)$"
HOSTNAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


class SlackMode(StrEnum):
    SOCKET = "socket"
    HTTP = "http"


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


def _password(redis_url: str | None) -> list[str]:
    password = urlsplit(redis_url).password if redis_url else None
    return [password] if password else []


class SettingsError(Exception):
    """The environment does not hold a usable configuration; the message names the variables."""


class CommonSettings(BaseSettings):
    """What every command reads: the org, and how to log."""

    model_config = SettingsConfigDict(
        env_file=None, case_sensitive=False, extra="ignore", frozen=True, env_ignore_empty=True
    )

    timbal_org_id: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9_.:-]+$")
    log_level: str = "INFO"
    log_format: LogFormat = LogFormat.TEXT

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        level = value.strip().upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level

    @model_validator(mode="after")
    def _check_together(self) -> CommonSettings:
        problems = cross_problems(self.model_dump(), slack=needs_slack(type(self)))
        if problems:
            raise ValueError(PROBLEM_SEPARATOR.join(problems))
        return self

    @property
    def secrets(self) -> list[str]:
        return []


class TimbalSettings(CommonSettings):
    """What `timbal-jobs-bot jobs` needs: the Timbal API, and the state classes."""

    timbal_api_url: AnyHttpUrl = AnyHttpUrl("https://api.timbal.ai")
    timbal_api_key: SecretStr
    timbal_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    timbal_max_response_mb: int = Field(default=256, ge=1, le=4096)
    failure_states: StateSet = DEFAULT_FAILURE_STATES
    cancelled_states: StateSet = DEFAULT_CANCELLED_STATES
    success_states: StateSet = DEFAULT_SUCCESS_STATES

    @field_validator("failure_states", "cancelled_states", "success_states", mode="before")
    @classmethod
    def _split_states(cls, value: Any) -> Any:
        if isinstance(value, str):
            return frozenset(s.strip().lower() for s in value.split(",") if s.strip())
        return value

    @property
    def secrets(self) -> list[str]:
        key = self.timbal_api_key.get_secret_value()
        return [key] if key else []


class StoreSettings(CommonSettings):
    """What `timbal-jobs-bot dead-letters` needs: where the org's state lives."""

    redis_url: str | None = None
    redis_cluster: bool = False
    redis_prefix: str = Field(
        default="tjb", min_length=1, max_length=40, pattern=r"^[A-Za-z0-9_.-]+$"
    )

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        try:  # redis-py's own parser, so a bad port or option fails here, by name
            parse_url(value)
        except ValueError as exc:  # its messages name the part, never the password
            raise ValueError(f"is not a usable Redis URL ({exc})") from None
        return value

    @property
    def secrets(self) -> list[str]:
        return _password(self.redis_url)


class Settings(TimbalSettings, StoreSettings):
    """Every setting the bot reads. Names are the environment variables, upper-cased."""

    # Slack
    slack_bot_token: SecretStr
    slack_signing_secret: SecretStr | None = None
    slack_app_token: SecretStr | None = None
    slack_api_url: AnyHttpUrl = AnyHttpUrl("https://slack.com/api/")
    slack_mode: SlackMode | None = None
    port: int = Field(default=3000, ge=0, le=65535)
    host: str = "0.0.0.0"  # noqa: S104 - a server in a container listens on every interface
    jobs_cache_seconds: float = Field(default=5.0, ge=0.0, le=300.0)

    # Replicas and delivery
    replica_id: str | None = Field(
        default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:@-]+$"
    )
    heartbeat_ttl_seconds: float = Field(default=3.0, ge=1.0, le=60.0)
    slack_timeout_seconds: float = Field(default=10.0, ge=1.0, le=60.0)
    delivery_max_attempts: int = Field(default=5, ge=1, le=100)

    # Alerts
    alert_channel: str | None = None
    alert_events: EventSet = EventSet.FINISHED
    subscription_admins: UserIds | None = None  # unset: everyone may change subscriptions
    poll_interval_seconds: float = Field(default=15.0, ge=1.0, le=3600.0)
    backfill_seconds: float = Field(default=0.0, ge=0.0)
    vanish_grace_seconds: float = Field(default=3600.0, ge=0.0)
    alert_on_started: bool = False
    oncall_mention: str | None = Field(default=None, pattern=ONCALL_PATTERN)
    digest_threshold: int = Field(default=5, ge=1, le=1000)
    channel_min_interval_seconds: float = Field(default=1.0, ge=0.0, le=60.0)

    # Incidents, hung jobs and the bot's own health
    escalate_after_seconds: float = Field(default=900.0, ge=1.0, le=7 * 86400.0)
    long_running_after_seconds: float = Field(default=7200.0, ge=0.0)  # 0: off
    stall_after_seconds: float = Field(default=900.0, ge=0.0)  # 0: off
    ops_channel: str | None = None  # unset: ALERT_CHANNEL
    ops_alert_after_polls: int = Field(default=4, ge=1, le=1000)
    ops_slack_pause_seconds: float = Field(default=60.0, ge=1.0, le=86400.0)

    @field_validator("subscription_admins", mode="before")
    @classmethod
    def _split_admins(cls, value: Any) -> Any:
        if isinstance(value, str):
            ids = frozenset(s.strip() for s in value.split(",") if s.strip())
            bad = sorted(i for i in ids if not USER_PATTERN.fullmatch(i))
            if bad:
                raise ValueError(f"not Slack user ids: {', '.join(bad)}")
            return ids
        return value

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        host = value.strip()
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if not HOSTNAME.fullmatch(host):
                raise ValueError("must be an IP address or a host name to listen on") from None
        return host

    @property
    def effective_replica_id(self) -> str:
        """REPLICA_ID, or the host name: a restarted container keeps its name, so it resumes
        its own pending work at once."""
        if self.replica_id is not None:
            return self.replica_id
        name = re.sub(r"[^A-Za-z0-9_.:@-]", "-", socket.gethostname())[:100]
        return name or "timbal-jobs-bot"

    @property
    def effective_ops_channel(self) -> str | None:
        """Where the bot's own health alerts go: OPS_CHANNEL, else ALERT_CHANNEL."""
        return self.ops_channel or self.alert_channel

    @property
    def effective_slack_mode(self) -> SlackMode:
        return SlackMode(
            effective_mode(
                self.slack_mode,
                self.slack_app_token is not None,
                self.slack_signing_secret is not None,
            )
        )

    @property
    def oncall(self) -> Mention | None:
        """ONCALL_MENTION as a mention (rendered on failure alerts only)."""
        mention = self.oncall_mention
        if mention is None:
            return None
        if mention in ("here", "channel"):
            return Mention(kind=MentionKind(mention))
        kind = MentionKind.GROUP if mention.startswith("S") else MentionKind.USER
        return Mention(kind=kind, id=mention)

    @property
    def oncall_markup(self) -> str | None:
        """ONCALL_MENTION as Slack mention markup, for failure alerts."""
        return None if self.oncall is None else self.oncall.markup

    @property
    def builtin_subscription(self) -> Subscription | None:
        """ALERT_CHANNEL: a subscription of that channel to every connector, with ALERT_EVENTS
        and ONCALL_MENTION; configured, not set from Slack."""
        if self.alert_channel is None:
            return None
        return Subscription(
            channel=self.alert_channel,
            target=Target(value=ALL),
            events=self.alert_events,
            mention=self.oncall,
            builtin=True,
        )

    @property
    def secrets(self) -> list[str]:
        """Every secret value, for the log filter that redacts them."""
        values = [
            self.timbal_api_key,
            self.slack_bot_token,
            self.slack_signing_secret,
            self.slack_app_token,
        ]
        found = [v.get_secret_value() for v in values if v is not None and v.get_secret_value()]
        return found + _password(self.redis_url)


Part = TypeVar("Part", bound=CommonSettings)


def load_settings(**overrides: Any) -> Settings:
    """Read the environment (overrides win); raise `SettingsError` listing every problem at
    once, in plain words (`bot.app.explain`)."""
    return load_part(Settings, **overrides)


def load_part(kind: type[Part], **overrides: Any) -> Part:
    """Like `load_settings`, for the part one command needs (`TimbalSettings`, `StoreSettings`):
    a command asks for nothing it does not use."""
    try:
        return kind(**overrides)
    except ValidationError as exc:
        raise SettingsError(explain(exc, kind, overrides)) from None
