"""Socket Mode, the default for users (SLACK_APP_TOKEN set), over a real WebSocket.

The fake's own contract is checked with slack_sdk's SocketModeClient; then the running bot
connects to it, answers `/jobs` delivered as an envelope, acks first, and reconnects.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from slack_sdk.errors import SlackApiError
from slack_sdk.socket_mode.aiohttp import SocketModeClient
from slack_sdk.socket_mode.request import SocketModeRequest
from slack_sdk.socket_mode.response import SocketModeResponse
from slack_sdk.web.async_client import AsyncWebClient

from bot.app.config import Settings, load_settings
from bot.app.runtime import Runtime, StartupError, running
from bot.sim.socket_mode import DEFAULT_APP_TOKEN, FakeSocketMode
from tests.fakes import FakeSlack, FakeTimbal, make_job
from tests.proc import clean_env, run_cli
from tests.waiting import wait_until


async def ack_empty(client: SocketModeClient, req: SocketModeRequest) -> None:
    await client.send_socket_mode_response(SocketModeResponse(envelope_id=req.envelope_id))


@pytest.fixture
async def socket_mode(fake_slack: FakeSlack) -> FakeSocketMode:
    return await fake_slack.start_socket_mode()


@pytest.fixture
async def sdk_client(
    fake_slack: FakeSlack, socket_mode: FakeSocketMode
) -> AsyncIterator[SocketModeClient]:
    """slack_sdk's own client (the one Bolt uses), pointed at the fake, not yet connected."""
    web = AsyncWebClient(base_url=fake_slack.base_url)
    client = SocketModeClient(app_token=socket_mode.app_token, web_client=web, ping_interval=1)
    yield client
    await client.close()  # type: ignore[no-untyped-call]


# --- the fake, against slack_sdk's client ---------------------------------------------------


async def test_the_client_connects_gets_hello_and_acks(
    fake_slack: FakeSlack, socket_mode: FakeSocketMode, sdk_client: SocketModeClient
) -> None:
    seen: list[dict[str, Any]] = []

    async def record(client: SocketModeClient, message: dict[str, Any], raw: str | None) -> None:
        seen.append(message)

    sdk_client.message_listeners.append(record)  # type: ignore[arg-type]
    sdk_client.socket_mode_request_listeners.append(ack_empty)  # type: ignore[arg-type]
    assert not socket_mode.connected
    await sdk_client.connect()  # type: ignore[no-untyped-call]
    await socket_mode.wait_connected()
    assert await sdk_client.is_connected()
    (opened,) = fake_slack.calls_to("apps.connections.open")
    assert "token" not in opened.body  # the app token travels as a bearer header
    await wait_until(lambda: any(m.get("type") == "hello" for m in seen), what="hello")

    envelope_id = await socket_mode.send_slash_command("postgres-main", "http://x/response/r1")
    ack = await socket_mode.wait_for_ack(envelope_id)
    assert ack.payload is None and ack.connection == 1
    envelope = socket_mode.envelopes[envelope_id]
    assert envelope["type"] == "slash_commands" and envelope["accepts_response_payload"] is True
    payload = envelope["payload"]
    assert payload["command"] == "/jobs" and payload["text"] == "postgres-main"
    assert payload["response_url"] == "http://x/response/r1"
    assert {"user_id", "channel_id", "team_id", "trigger_id", "api_app_id"} <= payload.keys()
    assert socket_mode.unexpected == []


async def test_an_ack_with_a_payload_is_recorded_and_a_stray_message_is_not_an_ack(
    socket_mode: FakeSocketMode, sdk_client: SocketModeClient
) -> None:
    async def ack_with_text(client: SocketModeClient, req: SocketModeRequest) -> None:
        await client.send_socket_mode_response(
            SocketModeResponse(envelope_id=req.envelope_id, payload={"text": "on it"})
        )
        await client.send_socket_mode_response({"envelope_id": req.envelope_id})  # again
        await client.send_message("not json")
        await client.send_message(json.dumps({"envelope_id": "never-sent"}))

    sdk_client.socket_mode_request_listeners.append(ack_with_text)  # type: ignore[arg-type]
    await sdk_client.connect()  # type: ignore[no-untyped-call]
    envelope_id = await socket_mode.send_slash_command("", "http://x/response/r1")
    ack = await socket_mode.wait_for_ack(envelope_id)
    assert ack.payload == {"text": "on it"}
    await wait_until(lambda: len(socket_mode.unexpected) == 3, what="the stray messages")
    assert socket_mode.unexpected[1] == "not json"
    assert list(socket_mode.acks) == [envelope_id]  # the second ack did not replace the first


async def test_wait_for_ack_times_out_naming_what_it_saw(
    socket_mode: FakeSocketMode, sdk_client: SocketModeClient
) -> None:
    await sdk_client.connect()  # type: ignore[no-untyped-call]  # no listener: nothing acks
    envelope_id = await socket_mode.send_slash_command("", "http://x/response/r1")
    with pytest.raises(TimeoutError, match=f"no an ack of {envelope_id}.*connections=1"):
        await socket_mode.wait_for_ack(envelope_id, within=0.3)


async def test_sending_without_a_connection_is_an_error(socket_mode: FakeSocketMode) -> None:
    with pytest.raises(RuntimeError, match="no open Socket Mode connection"):
        await socket_mode.send_slash_command("", "http://x/response/r1")


@pytest.mark.parametrize(
    ("token", "error"),
    [
        ("xapp-1-A0APP-1-wrong", "invalid_auth"),
        ("xoxb-test-token", "not_allowed_token_type"),  # the bot token is not an app token
        ("", "not_authed"),
    ],
)
async def test_apps_connections_open_refuses_a_bad_app_token(
    fake_slack: FakeSlack, socket_mode: FakeSocketMode, token: str, error: str
) -> None:
    web = AsyncWebClient(base_url=fake_slack.base_url)
    with pytest.raises(SlackApiError) as refused:
        await web.apps_connections_open(app_token=token)
    assert refused.value.response.data == {"ok": False, "error": error}
    assert socket_mode.tickets == []
    good = await web.apps_connections_open(app_token=DEFAULT_APP_TOKEN)
    assert str(good["url"]).startswith("ws://127.0.0.1:")
    assert len(socket_mode.tickets) == 1


async def test_a_websocket_without_a_ticket_is_refused(socket_mode: FakeSocketMode) -> None:
    base = socket_mode.new_url().partition("?")[0].replace("ws://", "http://", 1)
    async with httpx.AsyncClient() as http:
        forged = await http.get(base + "?ticket=forged")
    assert forged.status_code == 401
    assert socket_mode.connections == 0


async def test_the_bot_token_methods_still_want_the_bot_token(
    fake_slack: FakeSlack, socket_mode: FakeSocketMode
) -> None:
    web = AsyncWebClient(base_url=fake_slack.base_url, token=socket_mode.app_token)
    with pytest.raises(SlackApiError) as refused:
        await web.auth_test()
    assert refused.value.response["error"] == "invalid_auth"


@pytest.mark.parametrize("how", ["close_frame", "refresh_requested", "dead_tcp"])
async def test_the_client_reconnects_to_a_new_url(
    fake_slack: FakeSlack, socket_mode: FakeSocketMode, sdk_client: SocketModeClient, how: str
) -> None:
    sdk_client.socket_mode_request_listeners.append(ack_empty)  # type: ignore[arg-type]
    await sdk_client.connect()  # type: ignore[no-untyped-call]
    await socket_mode.wait_connected()
    if how == "refresh_requested":
        await socket_mode.request_refresh()
    else:
        await socket_mode.drop(clean=how == "close_frame")
    await socket_mode.wait_connected(connections=2, within=30)
    assert len(fake_slack.calls_to("apps.connections.open")) == 2  # a fresh URL each time
    envelope_id = await socket_mode.send_slash_command("", "http://x/response/r1")
    ack = await socket_mode.wait_for_ack(envelope_id)
    assert ack.connection == 2
    await wait_until(lambda: socket_mode.open_connections == [2], what="the old one closed")


# --- the running bot ------------------------------------------------------------------------


def socket_settings(redis_url: str, app_token: str = DEFAULT_APP_TOKEN) -> Settings:
    return load_settings(
        port=0,
        host="127.0.0.1",
        redis_url=redis_url,
        slack_mode="socket",
        slack_app_token=app_token,
    )


@pytest.fixture
async def rt(
    bot_env: dict[str, str], redis_url: str, socket_mode: FakeSocketMode
) -> AsyncIterator[Runtime]:
    async with running(socket_settings(redis_url), poller=False, notifier=False) as runtime:
        yield runtime


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


def seed(fake_timbal: FakeTimbal) -> None:
    fake_timbal.jobs = [
        make_job("j-run", state="running", started_at="2025-03-01T11:00:00Z"),
        make_job(
            "j-fail",
            state="failed",
            finished_at="2025-03-01T10:05:00Z",
            message="<!channel> disk full",
        ),
        make_job("j-ok", state="succeeded", finished_at="2025-03-01T09:00:00Z"),
    ]


async def slack_check(http: httpx.AsyncClient, rt: Runtime) -> tuple[int, dict[str, Any]]:
    answer = await http.get(f"{rt.base_url}/readyz")
    check: dict[str, Any] = answer.json()["checks"]["slack"]
    return answer.status_code, check


async def test_the_bot_connects_and_readyz_says_so(
    rt: Runtime, http: httpx.AsyncClient, fake_slack: FakeSlack, socket_mode: FakeSocketMode
) -> None:
    assert socket_mode.connected and socket_mode.connections == 1
    status, check = await slack_check(http, rt)
    assert (status, check) == (200, {"ok": True, "detail": "connected"})
    (opened,) = fake_slack.calls_to("apps.connections.open")
    assert opened.path == "/api/apps.connections.open"
    # Socket Mode does not verify signatures, so it must not serve the HTTP events endpoint.
    assert (
        await http.post(f"{rt.base_url}/slack/events", content=b"command=/jobs")
    ).status_code == 404


async def test_jobs_over_the_socket_is_acked_and_answered(
    rt: Runtime, fake_slack: FakeSlack, fake_timbal: FakeTimbal, socket_mode: FakeSocketMode
) -> None:
    seed(fake_timbal)
    envelope_id = await socket_mode.send_slash_command("", fake_slack.response_url("r1"))
    ack = await socket_mode.wait_for_ack(envelope_id)
    assert ack.payload is None  # an empty ack: the answer goes to the response URL
    await fake_slack.wait_for(lambda f: len(f.calls_to("response_url")) >= 1)
    (reply,) = fake_slack.calls_to("response_url")
    assert reply.path == "/response/r1"
    assert reply.body["response_type"] == "ephemeral"
    rendered = json.dumps(reply.body["blocks"])
    for job_id in ("j-run", "j-fail", "j-ok"):
        assert f"job `{job_id}`" in rendered
    assert "&lt;!channel&gt; disk full" in rendered and "<!channel>" not in rendered
    assert reply.body["text"].startswith("3 jobs in org `org_test`")
    assert [r["query"] for r in fake_timbal.requests] == [{}]
    assert socket_mode.unexpected == []


async def test_a_connector_filter_and_bad_input_over_the_socket(
    rt: Runtime, fake_slack: FakeSlack, fake_timbal: FakeTimbal, socket_mode: FakeSocketMode
) -> None:
    seed(fake_timbal)
    first = await socket_mode.send_slash_command("s3-archive", fake_slack.response_url("r1"))
    second = await socket_mode.send_slash_command("limit=99", fake_slack.response_url("r2"))
    await socket_mode.wait_for_ack(first)
    await socket_mode.wait_for_ack(second)
    await fake_slack.wait_for(lambda f: len(f.calls_to("response_url")) >= 2)
    replies = {c.path: c.body for c in fake_slack.calls_to("response_url")}
    assert replies["/response/r1"]["text"] == "No jobs for connector `s3-archive`."
    assert "`limit` must be a whole number" in json.dumps(replies["/response/r2"]["blocks"])
    # The connector's listing was empty, so the org's was read for ids close to it.
    assert [r["query"] for r in fake_timbal.requests] == [{"connector_id": "s3-archive"}, {}]


async def test_a_slow_timbal_still_gets_the_envelope_acked_first(
    rt: Runtime, fake_slack: FakeSlack, fake_timbal: FakeTimbal, socket_mode: FakeSocketMode
) -> None:
    seed(fake_timbal)
    fake_timbal.delay = 4.0
    envelope_id = await socket_mode.send_slash_command("", fake_slack.response_url("r1"))
    ack = await socket_mode.wait_for_ack(envelope_id, within=30)
    assert fake_slack.calls_to("response_url") == []  # nothing answered yet when the ack came
    await fake_slack.wait_for(lambda f: len(f.calls_to("response_url")) >= 1, within=30)
    (reply,) = fake_slack.calls_to("response_url")
    assert ack.at < reply.at
    assert "*3 jobs*" in json.dumps(reply.body["blocks"])


@pytest.mark.parametrize("how", ["close_frame", "refresh_requested", "dead_tcp"])
async def test_the_bot_reconnects_and_keeps_answering(
    rt: Runtime,
    http: httpx.AsyncClient,
    fake_slack: FakeSlack,
    fake_timbal: FakeTimbal,
    socket_mode: FakeSocketMode,
    how: str,
) -> None:
    seed(fake_timbal)
    if how == "refresh_requested":
        await socket_mode.request_refresh()
    else:
        await socket_mode.drop(clean=how == "close_frame")
    # A dead TCP connection is found by slack_sdk's session monitor (every 10 s in Bolt).
    await socket_mode.wait_connected(connections=2, within=60)

    async def ready() -> bool:
        status, check = await slack_check(http, rt)
        return status == 200 and check["ok"] is True

    await wait_until(ready, within=30, what="readyz: slack connected again")
    envelope_id = await socket_mode.send_slash_command("", fake_slack.response_url("r2"))
    ack = await socket_mode.wait_for_ack(envelope_id)
    assert ack.connection == 2
    await fake_slack.wait_for(lambda f: len(f.calls_to("response_url")) >= 1)
    assert "*3 jobs*" in json.dumps(fake_slack.calls_to("response_url")[0].body["blocks"])
    assert len(fake_slack.calls_to("apps.connections.open")) == 2


async def test_a_bad_app_token_fails_start_up_clearly(
    bot_env: dict[str, str],
    redis_url: str,
    fake_slack: FakeSlack,
    socket_mode: FakeSocketMode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """slack_sdk would retry a refused `apps.connections.open` forever; the runtime asks once
    first, so a revoked SLACK_APP_TOKEN stops start-up with a message that says what to fix."""
    bad = "xapp-1-A0APP-1-revoked-secret"
    runtime = Runtime(socket_settings(redis_url, app_token=bad), poller=False, notifier=False)
    try:
        with pytest.raises(StartupError) as info:
            await runtime.start()
    finally:
        await runtime.close()
    assert "SLACK_APP_TOKEN" in str(info.value)
    assert "invalid_auth" in str(info.value)
    assert bad not in str(info.value) + caplog.text
    assert socket_mode.connections == 0
    assert socket_mode.tickets == []


async def test_run_exits_with_the_reason_on_a_bad_app_token(
    bot_env: dict[str, str], redis_url: str, fake_slack: FakeSlack, socket_mode: FakeSocketMode
) -> None:
    env = clean_env(
        **{
            **bot_env,
            "REDIS_URL": redis_url,
            "SLACK_MODE": "socket",
            "SLACK_APP_TOKEN": "xapp-1-A0APP-1-revoked-secret",
            "PORT": "0",
            "HOST": "127.0.0.1",
        }
    )
    done = await run_cli("run", env=env, within=30)
    assert done.code == 2
    assert "Slack refused SLACK_APP_TOKEN" in done.stderr
    assert "revoked-secret" not in done.stdout + done.stderr
