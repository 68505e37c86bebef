"""The fakes behave like the services they stand in for (the rest of the suite relies on it)."""

from __future__ import annotations

import httpx
import pytest
import redis.asyncio as aioredis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes import FakeSlack, FakeTimbal, make_job


async def test_redis_is_our_own(redis_client: aioredis.Redis, redis_url: str) -> None:
    assert not redis_url.endswith(":6379/0")
    await redis_client.set("k", "v")
    assert await redis_client.get("k") == "v"


async def test_fake_slack_checks_token_and_limits(fake_slack: FakeSlack) -> None:
    client = AsyncWebClient(token=fake_slack.bot_token, base_url=fake_slack.base_url)
    auth = await client.auth_test()
    assert auth["user_id"] == fake_slack.bot_user_id
    bad = AsyncWebClient(token="xoxb-wrong", base_url=fake_slack.base_url)
    with pytest.raises(SlackApiError) as bad_auth:
        await bad.auth_test()
    assert bad_auth.value.response["error"] == "invalid_auth"
    too_many = [{"type": "divider"}] * 51
    with pytest.raises(SlackApiError) as bad_blocks:
        await client.chat_postMessage(channel="C1", text="x", blocks=too_many)
    assert bad_blocks.value.response["error"] == "invalid_blocks"
    await client.chat_postMessage(channel="C1", text="hello")
    assert [m["text"] for m in fake_slack.posted("C1")] == ["hello"]


async def test_fake_timbal_auth_and_filter(fake_timbal: FakeTimbal) -> None:
    fake_timbal.jobs = [make_job("j1", connector_id="a"), make_job("j2", connector_id="b")]
    url = f"{fake_timbal.base_url}/orgs/{fake_timbal.org_id}/connectors/jobs"
    async with httpx.AsyncClient() as http:
        assert (await http.get(url)).status_code == 401
        headers = {"Authorization": f"Bearer {fake_timbal.api_key}"}
        other = url.replace(fake_timbal.org_id, "other")
        assert (await http.get(other, headers=headers)).status_code == 403
        res = await http.get(url, headers=headers, params={"connector_id": "b"})
        assert [j["id"] for j in res.json()["jobs"]] == ["j2"]
