"""Settings fail loudly and by name; secrets never reach a log line."""

from __future__ import annotations

import logging

import pytest

from bot.app.config import SettingsError, SlackMode, load_settings
from bot.app.logs import REDACTED, JsonFormatter, RedactSecrets

BASE = {
    "timbal_api_key": "tbl-secret-key-123",
    "timbal_org_id": "org_1",
    "slack_bot_token": "xoxb-secret-bot-token",
    "slack_signing_secret": "signing-secret-456",
}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("TIMBAL_", "SLACK_", "REDIS_", "POLL_")) or name in ("PORT", "HOST"):
            monkeypatch.delenv(name)


def test_defaults_and_mode() -> None:
    s = load_settings(**BASE)
    assert str(s.timbal_api_url) == "https://api.timbal.ai/"
    assert str(s.slack_api_url) == "https://slack.com/api/"
    assert s.poll_interval_seconds == 15
    assert s.port == 3000
    assert s.effective_slack_mode is SlackMode.HTTP
    socket = load_settings(**BASE, slack_app_token="xapp-1")
    assert socket.effective_slack_mode is SlackMode.SOCKET


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"POLL_INTERVAL_SECONDS": "0.5"}, "POLL_INTERVAL_SECONDS"),
        ({"POLL_INTERVAL_SECONDS": "soon"}, "POLL_INTERVAL_SECONDS"),
        ({"PORT": "70000"}, "PORT"),
        ({"TIMBAL_API_URL": "not a url"}, "TIMBAL_API_URL"),
        ({"REDIS_URL": "http://redis"}, "REDIS_URL"),
        ({"SLACK_MODE": "carrier-pigeon"}, "SLACK_MODE"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"HOST": "0.0.0.0:80"}, "HOST"),
        ({"HOST": "not a host"}, "HOST"),
        ({"TIMBAL_ORG_ID": "org/../x"}, "TIMBAL_ORG_ID"),
        ({"SLACK_MODE": "socket"}, "SLACK_APP_TOKEN"),
        ({"FAILURE_STATES": "failed,done"}, "FAILURE_STATES and SUCCESS_STATES both contain done"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], named: str
) -> None:
    for key, value in {k.upper(): v for k, v in BASE.items()}.items():
        monkeypatch.setenv(key, value)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert named in str(info.value)
    for secret in BASE.values():
        assert secret not in str(info.value)


def test_missing_required_are_all_named() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings()
    for name in ("TIMBAL_API_KEY", "TIMBAL_ORG_ID", "SLACK_BOT_TOKEN"):
        assert name in str(info.value)


def test_state_sets_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAILURE_STATES", " Failed, BROKEN ,")
    s = load_settings(**BASE)
    assert s.failure_states == frozenset({"failed", "broken"})


def test_secrets_are_redacted_from_logs() -> None:
    s = load_settings(**BASE, redis_url="redis://:hunter2pass@redis:6379/0")
    assert "hunter2pass" in s.secrets
    assert "tbl-secret-key-123" not in repr(s)
    logger = logging.getLogger("test.redaction")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep()
    handler.addFilter(RedactSecrets(s.secrets))
    logger.addHandler(handler)
    try:
        logger.warning("calling with %s and %s", "Bearer tbl-secret-key-123", s.redis_url)
        try:
            raise RuntimeError("token xoxb-secret-bot-token rejected")
        except RuntimeError:
            logger.exception("boom")
    finally:
        logger.removeHandler(handler)
    text = " ".join(JsonFormatter().format(r) + logging.Formatter().format(r) for r in records)
    for secret in s.secrets:
        assert secret not in text
    assert REDACTED in text
    assert "rejected" in text


def test_blank_values_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    # A `.env` copied from `.env.example` leaves optional settings blank: that means "unset".
    monkeypatch.setenv("SLACK_APP_TOKEN", "")
    monkeypatch.setenv("SLACK_MODE", "")
    monkeypatch.setenv("REDIS_URL", "")
    s = load_settings(**BASE)
    assert s.slack_app_token is None
    assert s.effective_slack_mode is SlackMode.HTTP
    assert s.redis_url is None


@pytest.mark.parametrize("host", ["0.0.0.0", "127.0.0.1", "::", "::1", "localhost", "bot.internal"])  # noqa: S104
def test_hosts_to_listen_on(host: str) -> None:
    assert load_settings(**BASE, host=host).host == host


@pytest.mark.parametrize(
    ("value", "markup"),
    [
        ("U0ONCALL1", "<@U0ONCALL1>"),
        ("W0ENTUSER", "<@W0ENTUSER>"),
        ("S0ONCALL1", "<!subteam^S0ONCALL1>"),
        ("here", "<!here>"),
        ("channel", "<!channel>"),
    ],
)
def test_oncall_mention_markup(monkeypatch: pytest.MonkeyPatch, value: str, markup: str) -> None:
    monkeypatch.setenv("ONCALL_MENTION", value)
    assert load_settings(**BASE).oncall_markup == markup


@pytest.mark.parametrize("value", ["<@U0ONCALL1>", "@bob", "u0oncall1", "everyone", "S1 S2"])
def test_a_bad_oncall_mention_is_named(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("ONCALL_MENTION", value)
    with pytest.raises(SettingsError) as info:
        load_settings(**BASE)
    assert "ONCALL_MENTION" in str(info.value)
