"""Settings errors a person can act on: every problem in one message, in plain words, each
variable named with what a valid value looks like, ending with a pointer to .env.example."""

from __future__ import annotations

import os

import pytest

from bot.app.config import (
    Settings,
    SettingsError,
    SlackMode,
    StoreSettings,
    TimbalSettings,
    load_part,
    load_settings,
)
from bot.app.explain import NO_SLACK
from tests.proc import clean_env, run_cli

JARGON = (
    "Value error",
    "Field required",
    "Input should be",
    "validation error",
    "pydantic",
    "type=",
    "[type",
    "errors.pydantic.dev",
)
FULL = {
    "TIMBAL_API_KEY": "tbl-secret-key-123",
    "TIMBAL_ORG_ID": "org_1",
    "SLACK_BOT_TOKEN": "xoxb-secret-bot-token",
    "SLACK_APP_TOKEN": "xapp-secret-app-token",
}
SECRETS = [v for k, v in FULL.items() if k != "TIMBAL_ORG_ID"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper() in {f.upper() for f in Settings.model_fields}:
            monkeypatch.delenv(name)


def problems(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as info:
        load_settings()
    return str(info.value)


def assert_plain(message: str) -> None:
    for word in JARGON:
        assert word not in message, word
    assert message.rstrip().splitlines()[-1].startswith("Every setting")
    assert ".env.example" in message.splitlines()[-1]
    for secret in SECRETS:
        assert secret not in message


def test_nothing_set_names_everything_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    message = problems({}, monkeypatch)
    assert message.startswith("4 settings to fix:")
    for name in ("TIMBAL_API_KEY", "TIMBAL_ORG_ID", "SLACK_BOT_TOKEN"):
        assert f"  - {name} is not set: set it to " in message
    assert NO_SLACK in message
    assert "set SLACK_APP_TOKEN (Socket Mode, the default) or SLACK_SIGNING_SECRET" in message
    assert "required in HTTP mode" not in message  # nobody asked for HTTP mode
    assert_plain(message)


@pytest.mark.parametrize("missing", list(FULL))
def test_one_variable_missing_is_the_one_problem(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    message = problems({k: v for k, v in FULL.items() if k != missing}, monkeypatch)
    assert message.startswith("1 setting to fix:"), message
    if missing == "SLACK_APP_TOKEN":
        assert NO_SLACK in message
    else:
        assert f"{missing} is not set" in message
    assert_plain(message)


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"PORT": "abc"}, 'PORT="abc" is not valid: use a whole number from 0 to 65535'),
        ({"PORT": "70000"}, 'PORT="70000" is not valid'),
        ({"POLL_INTERVAL_SECONDS": "0.5"}, 'POLL_INTERVAL_SECONDS="0.5" is not valid: use a'),
        ({"TIMBAL_API_URL": "not a url"}, 'TIMBAL_API_URL="not a url" is not valid: use an http'),
        ({"TIMBAL_TIMEOUT_SECONDS": "-1"}, "above 0 and at most 120"),
        ({"SLACK_MODE": "carrier-pigeon"}, 'SLACK_MODE="carrier-pigeon" is not valid: use socket'),
        ({"LOG_LEVEL": "LOUD"}, "use DEBUG, INFO, WARNING, ERROR or CRITICAL"),
        ({"ONCALL_MENTION": "@oncall"}, "a user id (U… or W…), a user group id (S…), here or"),
        ({"ALERT_ON_STARTED": "maybe"}, 'ALERT_ON_STARTED="maybe" is not valid: use true or false'),
        ({"REDIS_URL": "http://:pw-secret@redis"}, "REDIS_URL is not valid: use redis://"),
        ({"SLACK_MODE": "http"}, "SLACK_MODE=http needs SLACK_SIGNING_SECRET"),
        ({"FAILURE_STATES": "failed,done"}, "FAILURE_STATES and SUCCESS_STATES both contain done"),
    ],
)
def test_a_malformed_value_is_named_with_what_would_do(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], line: str
) -> None:
    message = problems(FULL | env, monkeypatch)
    assert message.startswith("1 setting to fix:"), message
    assert line in message
    assert "pw-secret" not in message
    assert_plain(message)


def test_several_malformed_values_and_a_cross_problem_come_together(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {k: v for k, v in FULL.items() if k != "SLACK_APP_TOKEN"}
    message = problems(env | {"PORT": "x", "LOG_FORMAT": "xml"}, monkeypatch)
    assert message.startswith("3 settings to fix:")
    assert 'PORT="x"' in message and 'LOG_FORMAT="xml"' in message and NO_SLACK in message
    assert_plain(message)


@pytest.mark.parametrize(
    ("env", "mode"),
    [
        ({"SLACK_APP_TOKEN": "xapp-1"}, SlackMode.SOCKET),
        ({"SLACK_SIGNING_SECRET": "s3cret"}, SlackMode.HTTP),
        ({"SLACK_APP_TOKEN": "xapp-1", "SLACK_SIGNING_SECRET": "s3cret"}, SlackMode.SOCKET),
        (
            {"SLACK_APP_TOKEN": "xapp-1", "SLACK_SIGNING_SECRET": "s", "SLACK_MODE": "http"},
            SlackMode.HTTP,
        ),
    ],
)
def test_the_default_mode_is_socket(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], mode: SlackMode
) -> None:
    base = {k: v for k, v in FULL.items() if k != "SLACK_APP_TOKEN"}
    for name, value in (base | env).items():
        monkeypatch.setenv(name, value)
    assert load_settings().effective_slack_mode is mode


def test_a_part_needs_only_its_own_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TIMBAL_API_KEY", "k-123")
    monkeypatch.setenv("TIMBAL_ORG_ID", "org_1")
    assert load_part(TimbalSettings).timbal_org_id == "org_1"
    assert load_part(StoreSettings).redis_url is None
    monkeypatch.delenv("TIMBAL_API_KEY")
    with pytest.raises(SettingsError) as info:
        load_part(TimbalSettings)
    assert str(info.value).startswith("1 setting to fix:\n  - TIMBAL_API_KEY is not set")
    assert "SLACK" not in str(info.value)


async def test_run_with_nothing_set_says_it_all_in_one_message() -> None:
    done = await run_cli("run", env=clean_env())
    assert done.code == 2
    assert done.stdout == ""
    assert done.stderr.startswith("timbal-jobs-bot: 4 settings to fix:")
    assert NO_SLACK in done.stderr
    assert "Traceback" not in done.stderr
    assert_plain(done.stderr)
