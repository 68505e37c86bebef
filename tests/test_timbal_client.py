"""The Timbal client: httpx.MockTransport (a plain handler function) for the unit cases,
FakeTimbal over real HTTP for the wire, the timeout and `from_settings`."""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from pydantic import SecretStr

from bot import __version__
from bot.app.config import load_settings
from bot.app.runtime import build_timbal
from bot.domain.models import Job
from bot.timbal import (
    MAX_ERROR_BODY_BYTES,
    MAX_RETRY_DELAY,
    JobCount,
    JobListing,
    TimbalAuthError,
    TimbalBadResponse,
    TimbalClient,
    TimbalError,
    TimbalResponseTooLarge,
    TimbalUnavailable,
    parse_listing,
    retry_after_seconds,
)
from tests.fakes import FakeTimbal, make_job

API_KEY = "tbl-live-9f8e7d6c5b4a"
ORG = "org_test"
BASE = "https://timbal.test"
JOBS_PATH = f"/orgs/{ORG}/connectors/jobs"

Answer = Callable[[httpx.Request], httpx.Response]


# --- a scripted server: each request takes the next answer; the last one repeats ---------


@dataclass
class Server:
    answers: list[Answer]
    requests: list[httpx.Request] = field(default_factory=list)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers[min(len(self.requests), len(self.answers)) - 1]
        return answer(request)


def body(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Answer:
    return lambda request: httpx.Response(status, json=payload, headers=headers)


def raw(content: str | bytes, status: int = 200, content_type: str = "text/html") -> Answer:
    return lambda request: httpx.Response(
        status, content=content, headers={"Content-Type": content_type}
    )


def fail(error: type[httpx.TransportError]) -> Answer:
    def answer(request: httpx.Request) -> httpx.Response:
        raise error("scripted failure", request=request)

    return answer


def listing(*jobs: dict[str, Any]) -> Answer:
    return body({"jobs": list(jobs)})


@dataclass
class Sleeps:
    """The injected sleep: records each delay, waits for nothing."""

    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


Connect = Callable[..., TimbalClient]


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
async def connect(sleeps: Sleeps) -> AsyncIterator[Connect]:
    clients: list[httpx.AsyncClient] = []

    def make(server: Server, **options: Any) -> TimbalClient:
        http = httpx.AsyncClient(transport=httpx.MockTransport(server))
        clients.append(http)
        options = {"base_url": BASE, "org_id": ORG, "sleep": sleeps, **options}
        return TimbalClient(api_key=SecretStr(API_KEY), http=http, **options)

    yield make
    for http in clients:
        await http.aclose()


FULL = make_job(
    "j-full",
    connector_id="postgres-main",
    state="failed",
    rows_emitted=1234,
    created_at="2025-03-01T10:00:00Z",
    updated_at="2025-03-01T10:06:00+02:00",
    started_at="2025-03-01T10:01:00.123456Z",
    finished_at="2025-03-01T10:05:00Z",
    duration_ms=240000,
    message="disk <full> & more",
    rows_per_sec=5.25,
    sync_id="sync_9",
)
NULLS = make_job("j-nulls", created_at="2025-03-01T09:00:00", updated_at="2025-03-01T09:00:00Z")


# --- the happy path ---------------------------------------------------------------------


async def test_lists_every_field_with_nulls_and_aware_datetimes(connect: Connect) -> None:
    server = Server([listing(FULL, NULLS)])
    result = await connect(server).list_jobs_detailed()
    assert result == JobListing(
        jobs=[Job.model_validate(FULL), Job.model_validate(NULLS)], skipped=0
    )
    full, nulls = result.jobs
    assert (full.id, full.state, full.rows_emitted, full.duration_ms) == (
        "j-full",
        "failed",
        1234,
        240000,
    )
    assert (full.message, full.rows_per_sec, full.sync_id) == ("disk <full> & more", 5.25, "sync_9")
    assert full.finished_at == datetime(2025, 3, 1, 10, 5, tzinfo=UTC)
    assert full.updated_at == datetime(2025, 3, 1, 8, 6, tzinfo=UTC)
    assert full.started_at == datetime(2025, 3, 1, 10, 1, 0, 123456, tzinfo=UTC)
    assert nulls.finished_at is None and nulls.started_at is None and nulls.message is None
    assert nulls.duration_ms is None and nulls.rows_per_sec is None
    assert nulls.created_at == datetime(2025, 3, 1, 9, tzinfo=UTC)  # naive is taken as UTC
    for dt in (full.created_at, full.updated_at, full.started_at, nulls.created_at):
        assert dt is not None and dt.tzinfo is not None

    (request,) = server.requests
    assert request.method == "GET"
    assert str(request.url) == f"{BASE}{JOBS_PATH}"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.headers["User-Agent"] == f"timbal-jobs-bot/{__version__}"
    assert request.headers["Accept"] == "application/json"


async def test_list_jobs_returns_the_jobs_alone(connect: Connect) -> None:
    assert await connect(Server([listing(FULL)])).list_jobs() == [Job.model_validate(FULL)]
    assert await connect(Server([listing()])).list_jobs() == []


async def test_unknown_fields_are_ignored_at_item_and_top_level(connect: Connect) -> None:
    item = {**FULL, "priority": 3, "labels": {"team": "data"}, "rows_emitted_v2": "x"}
    server = Server([body({"jobs": [item], "next_cursor": "abc", "meta": {"total": 1}})])
    assert await connect(server).list_jobs_detailed() == JobListing(
        jobs=[Job.model_validate(FULL)], skipped=0
    )


# --- malformed items are skipped, not fatal -------------------------------------------------


def without(job: dict[str, Any], name: str) -> dict[str, Any]:
    return {k: v for k, v in job.items() if k != name}


@pytest.mark.parametrize(
    ("bad", "logged_id", "logged_field"),
    [
        (make_job("b1", rows_emitted="12"), "'b1'", "rows_emitted"),
        (make_job("b2", rows_emitted=1.5), "'b2'", "rows_emitted"),
        (without(make_job("b3"), "state"), "'b3'", "state"),
        (without(make_job("b4"), "created_at"), "'b4'", "created_at"),
        (make_job("b5", created_at="yesterday"), "'b5'", "created_at"),
        (make_job("b6", finished_at="2025-13-45T99:00:00Z"), "'b6'", "finished_at"),
        (make_job("b7", rows_per_sec="fast"), "'b7'", "rows_per_sec"),
        ({**make_job("x"), "id": 7}, "7", "id"),
        (without(make_job("x"), "id"), "None", "id"),
        ("not an object", "None", "<item>"),
        (42, "None", "<item>"),
        (None, "None", "<item>"),
        ([make_job("b8")], "None", "<item>"),
    ],
)
async def test_a_malformed_item_is_skipped_and_logged(
    connect: Connect,
    caplog: pytest.LogCaptureFixture,
    bad: Any,
    logged_id: str,
    logged_field: str,
) -> None:
    good1, good2 = make_job("g1"), make_job("g2")
    with caplog.at_level(logging.WARNING, logger="bot.timbal.client"):
        result = await connect(Server([listing(good1, bad, good2)])).list_jobs_detailed()
    assert [job.id for job in result.jobs] == ["g1", "g2"]
    assert result.skipped == 1
    (record,) = [r for r in caplog.records if r.name == "bot.timbal.client"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert f"item 1 (id={logged_id})" in message
    assert f"{logged_field}:" in message


async def test_a_listing_of_only_malformed_items_is_a_bad_response(connect: Connect) -> None:
    server = Server([listing({"id": 1}, make_job("b", rows_emitted="many"))])
    with pytest.raises(TimbalBadResponse, match="2 jobs, none in the documented shape"):
        await connect(server).list_jobs()
    assert len(server.requests) == 1  # a bad body is not retried


def test_parse_listing_is_pure_and_redacts_what_it_logs(caplog: pytest.LogCaptureFixture) -> None:
    payload = {"jobs": [make_job("ok"), {"id": "leaked-key"}]}
    with caplog.at_level(logging.WARNING, logger="bot.timbal.client"):
        result = parse_listing(payload, redact=lambda s: s.replace("leaked-key", "***"))
    assert [j.id for j in result.jobs] == ["ok"] and result.skipped == 1
    assert "leaked-key" not in caplog.text and "id='***'" in caplog.text


# --- statuses that are answers, not outages: no retry -----------------------------------------


@pytest.mark.parametrize(
    ("answer", "error", "status", "reason"),
    [
        (body({"error": "unauthorized"}, 401), TimbalAuthError, 401, "rejected the API key"),
        (body({"error": "forbidden"}, 403), TimbalAuthError, 403, f"for org {ORG} (403)"),
        (body({"error": "not found"}, 404), TimbalBadResponse, 404, "unexpected 404"),
        (body({"error": "bad"}, 400), TimbalBadResponse, 400, "unexpected 400"),
        (raw("", 301, "text/plain"), TimbalBadResponse, 301, "unexpected 301"),
    ],
)
async def test_non_retryable_statuses(
    connect: Connect,
    sleeps: Sleeps,
    answer: Answer,
    error: type[TimbalError],
    status: int,
    reason: str,
) -> None:
    server = Server([answer, listing(FULL)])
    with pytest.raises(error) as caught:
        await connect(server).list_jobs()
    assert type(caught.value) is error
    assert caught.value.status == status
    assert reason in caught.value.reason and str(caught.value) == caught.value.reason
    assert len(server.requests) == 1 and sleeps.delays == []


async def test_a_redirect_is_not_followed(connect: Connect) -> None:
    moved = lambda request: httpx.Response(302, headers={"Location": "https://evil.test/steal"})  # noqa: E731
    server = Server([moved, listing(FULL)])
    with pytest.raises(TimbalBadResponse):
        await connect(server).list_jobs()
    assert [r.url.host for r in server.requests] == ["timbal.test"]


# --- outages: bounded retries with back-off -------------------------------------------------

OUTAGES: list[Any] = [
    pytest.param(body({}, 500), "answered 500", id="500"),
    pytest.param(raw("<html>bad gateway</html>", 502), "answered 502", id="502"),
    pytest.param(raw("down", 503, "text/plain"), "answered 503", id="503"),
    pytest.param(body({}, 504), "answered 504", id="504"),
    pytest.param(body({}, 429), "answered 429", id="429"),
    pytest.param(fail(httpx.ReadTimeout), "did not answer in time", id="read-timeout"),
    pytest.param(fail(httpx.ConnectTimeout), "did not answer in time", id="connect-timeout"),
    pytest.param(fail(httpx.PoolTimeout), "did not answer in time", id="pool-timeout"),
    pytest.param(fail(httpx.ConnectError), "could not be reached", id="connect-error"),
    pytest.param(fail(httpx.ReadError), "could not be reached", id="read-error"),
    pytest.param(fail(httpx.RemoteProtocolError), "could not be reached", id="disconnected"),
]


@pytest.mark.parametrize(("outage", "reason"), OUTAGES)
async def test_an_outage_then_success_is_retried(
    connect: Connect, sleeps: Sleeps, outage: Answer, reason: str
) -> None:
    server = Server([outage, listing(FULL)])
    assert await connect(server).list_jobs() == [Job.model_validate(FULL)]
    assert len(server.requests) == 2
    assert len(sleeps.delays) == 1


@pytest.mark.parametrize("retries", [0, 1, 3])
@pytest.mark.parametrize(("outage", "reason"), OUTAGES)
async def test_an_outage_that_lasts_is_unavailable_after_the_retries(
    connect: Connect, sleeps: Sleeps, outage: Answer, reason: str, retries: int
) -> None:
    server = Server([outage])
    with pytest.raises(TimbalUnavailable) as caught:
        await connect(server, retries=retries, backoff=0.5).list_jobs()
    assert reason in caught.value.reason
    assert len(server.requests) == retries + 1
    assert len(sleeps.delays) == retries
    for attempt, delay in enumerate(sleeps.delays):  # exponential, jittered in [half, whole]
        assert 0.5 * 0.5 * 2**attempt <= delay <= 0.5 * 2**attempt


async def test_the_cause_of_an_outage_is_kept(connect: Connect) -> None:
    with pytest.raises(TimbalUnavailable) as caught:
        await connect(Server([fail(httpx.ConnectTimeout)])).list_jobs()
    assert isinstance(caught.value.__cause__, httpx.ConnectTimeout)


async def test_the_back_off_is_capped(connect: Connect, sleeps: Sleeps) -> None:
    with pytest.raises(TimbalUnavailable):
        await connect(Server([body({}, 500)]), retries=8, backoff=1.0).list_jobs()
    assert len(sleeps.delays) == 8 and max(sleeps.delays) == MAX_RETRY_DELAY


@pytest.mark.parametrize(
    ("status", "retry_after", "expected"),
    [
        (429, "3", 3.0),
        (503, "2", 2.0),
        (429, "0.5", 0.5),
        (429, "9999", MAX_RETRY_DELAY),
        (503, "-4", 0.0),
    ],
)
async def test_retry_after_is_honoured_on_429_and_503(
    connect: Connect, sleeps: Sleeps, status: int, retry_after: str, expected: float
) -> None:
    server = Server([body({}, status, {"Retry-After": retry_after}), listing(FULL)])
    assert await connect(server).list_jobs() == [Job.model_validate(FULL)]
    assert sleeps.delays == [expected]


@pytest.mark.parametrize(
    ("status", "retry_after"), [(500, "7"), (502, "7"), (429, "soon"), (429, ""), (503, "nan")]
)
async def test_retry_after_is_ignored_elsewhere_or_when_unreadable(
    connect: Connect, sleeps: Sleeps, status: int, retry_after: str
) -> None:
    server = Server([body({}, status, {"Retry-After": retry_after}), listing(FULL)])
    await connect(server, backoff=0.25).list_jobs()
    (delay,) = sleeps.delays
    assert 0.125 <= delay <= 0.25


NOW = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("  ", None),
        ("later", None),
        ("nan", None),
        ("5", 5.0),
        (" 1.5 ", 1.5),
        ("-1", 0.0),
        ("86400", MAX_RETRY_DELAY),
        ("Sat, 01 Mar 2025 12:00:04 GMT", 4.0),
        ("Sat, 01 Mar 2025 11:00:00 GMT", 0.0),
        ("Sun, 02 Mar 2025 12:00:00 GMT", MAX_RETRY_DELAY),
    ],
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert retry_after_seconds(value, NOW) == expected


# --- bodies that are not the documented listing ---------------------------------------------


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        pytest.param("<html><body>Maintenance</body></html>", "not JSON", id="html"),
        pytest.param('{"jobs": [{"id": "j1", "state": ', "not JSON", id="truncated"),
        pytest.param("", "not JSON", id="empty"),
        pytest.param(b"\xff\xfe\x00garbage", "not JSON", id="not-utf8"),
        pytest.param("[" * 100_000 + "]" * 100_000, "not JSON", id="too-deep"),
        pytest.param(json.dumps([make_job("j1")]), "without a list of jobs", id="list"),
        pytest.param(json.dumps({"jobs": make_job("j1")}), "without a list", id="jobs-object"),
        pytest.param('{"jobs": null}', "without a list of jobs", id="jobs-null"),
        pytest.param('{"jobs": "j1,j2"}', "without a list of jobs", id="jobs-string"),
        pytest.param('{"items": []}', "without a list of jobs", id="no-jobs-key"),
        pytest.param('"jobs"', "without a list of jobs", id="json-string"),
        pytest.param("null", "without a list of jobs", id="json-null"),
    ],
)
async def test_a_body_that_is_not_a_listing_is_a_bad_response(
    connect: Connect, sleeps: Sleeps, content: str | bytes, reason: str
) -> None:
    server = Server([raw(content, 200, "application/json"), listing(FULL)])
    with pytest.raises(TimbalBadResponse) as caught:
        await connect(server).list_jobs()
    assert reason in caught.value.reason
    assert len(server.requests) == 1 and sleeps.delays == []


HUGE_PAGE = "<html><title>Oops</title>" + "<p>stack frame</p>" * 200_000 + "</html>"  # ~3.6 MB


@pytest.mark.parametrize(("status", "error"), [(200, TimbalBadResponse), (502, TimbalUnavailable)])
async def test_a_huge_html_page_is_logged_as_a_short_excerpt(
    connect: Connect, caplog: pytest.LogCaptureFixture, status: int, error: type[TimbalError]
) -> None:
    with caplog.at_level(logging.DEBUG, logger="bot.timbal.client"), pytest.raises(error) as caught:
        await connect(Server([raw(HUGE_PAGE, status)])).list_jobs()
    assert "<html" not in caught.value.reason and "stack frame" not in str(caught.value)
    excerpts = [r.getMessage() for r in caplog.records if "<html>" in r.getMessage()]
    assert excerpts
    for line in excerpts:
        excerpt = line[line.index("'<html>") :]
        assert len(excerpt) <= 200 + 2  # the quotes of the repr


@dataclass
class Endless:
    """A body that never ends, streamed in chunks; counts how many were pulled."""

    chunk: bytes = b"x" * 65536
    start: bytes = b""
    pulled: int = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        if self.start:
            yield self.start
        while True:
            self.pulled += 1
            yield self.chunk


CEILING = 1024 * 1024
ENDLESS_LISTING = Endless(
    start=b'{"jobs": [', chunk=(json.dumps(make_job("j")) + ",").encode() * 200
)


@pytest.mark.parametrize(
    ("status", "stream", "error", "limit"),
    [
        (200, ENDLESS_LISTING, TimbalResponseTooLarge, CEILING),
        (500, Endless(), TimbalUnavailable, MAX_ERROR_BODY_BYTES),
    ],
    ids=["listing", "error-page"],
)
async def test_an_endless_body_is_read_only_to_a_bound(
    connect: Connect, status: int, stream: Endless, error: type[TimbalError], limit: int
) -> None:
    endless = lambda request: httpx.Response(status, content=stream)  # noqa: E731
    client = connect(Server([endless]), retries=0, max_response_bytes=CEILING)
    with pytest.raises(error):
        await client.list_jobs()
    assert stream.pulled <= limit // len(stream.chunk) + 2


async def test_a_listing_past_the_ceiling_is_refused_clearly_and_not_retried(
    connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    jobs = [make_job(f"j{i}") for i in range(3000)]  # ~1.4 MB
    server = Server([listing(*jobs)])
    with (
        caplog.at_level(logging.WARNING, logger="bot.timbal.client"),
        pytest.raises(TimbalResponseTooLarge) as caught,
    ):
        await connect(server, max_response_bytes=CEILING).list_jobs()
    assert caught.value.limit == CEILING
    assert "larger than the 1 MB the bot accepts (TIMBAL_MAX_RESPONSE_MB)" in caught.value.reason
    assert isinstance(caught.value, TimbalBadResponse)  # still a bad answer to older callers
    assert len(server.requests) == 1
    assert "TIMBAL_MAX_RESPONSE_MB" in caplog.text


async def test_a_declared_length_past_the_ceiling_is_refused_before_reading(
    connect: Connect,
) -> None:
    stream = Endless(start=b'{"jobs": [')
    answer = lambda request: httpx.Response(  # noqa: E731
        200, content=stream, headers={"Content-Length": str(CEILING + 1)}
    )
    with pytest.raises(TimbalResponseTooLarge):
        await connect(Server([answer]), max_response_bytes=CEILING).list_jobs()
    assert stream.pulled == 0


async def test_a_listing_larger_than_any_old_cap_is_read_whole(connect: Connect) -> None:
    # 45,000 jobs, ~17.6 MB: more than the 16 MB that once refused large orgs outright.
    jobs = [make_job(f"j{i:05d}", message="m" * 40) for i in range(45_000)]
    answer = listing(*jobs)
    scanned = await connect(Server([answer])).scan_jobs(JobCount)
    assert scanned.sink.jobs == scanned.jobs == 45_000
    assert scanned.size > 16 * 1024 * 1024
    assert scanned.skipped == 0


# --- the URL: org quoted in the path, connector only ever in the query ------------------------


@pytest.mark.parametrize(
    "connector",
    [
        "postgres-main",
        "../../admin?x=1#",
        "a/b/c",
        "..",
        "%2e%2e%2fadmin",
        "x&connector_id=y",
        "ünïcødé 🚀 connector",
        "   ",
        "",
    ],
)
async def test_the_connector_id_only_travels_as_a_query_parameter(
    connect: Connect, connector: str
) -> None:
    server = Server([listing(make_job("j1", connector_id=connector))])
    jobs = await connect(server).list_jobs(connector)
    assert [j.connector_id for j in jobs] == [connector]
    (request,) = server.requests
    assert request.url.path == JOBS_PATH
    assert request.url.raw_path.split(b"?")[0] == JOBS_PATH.encode()
    assert request.url.params.multi_items() == [("connector_id", connector)]
    assert request.url.fragment == ""


async def test_without_a_connector_there_is_no_query(connect: Connect) -> None:
    server = Server([listing()])
    await connect(server).list_jobs(None)
    assert server.requests[0].url.query == b""


@pytest.mark.parametrize(
    "org_id", ["org_test", "org with space", "a/b", "a?b#c", "ünï", "org:1.2-x_y", "%41"]
)
async def test_the_org_id_is_quoted_into_one_path_segment(connect: Connect, org_id: str) -> None:
    server = Server([listing()])
    await connect(server, org_id=org_id).list_jobs()
    url = server.requests[0].url
    assert url.raw_path == f"/orgs/{quote(org_id, safe='')}/connectors/jobs".encode()
    assert url.path == f"/orgs/{org_id}/connectors/jobs"


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://timbal.test", f"https://timbal.test{JOBS_PATH}"),
        ("https://timbal.test/", f"https://timbal.test{JOBS_PATH}"),
        ("https://timbal.test/api/v2", f"https://timbal.test/api/v2{JOBS_PATH}"),
        ("https://timbal.test/api/v2/", f"https://timbal.test/api/v2{JOBS_PATH}"),
        ("https://timbal.test/api//", f"https://timbal.test/api{JOBS_PATH}"),
        ("http://127.0.0.1:8080/x?ignored=1", f"http://127.0.0.1:8080/x{JOBS_PATH}"),
    ],
)
async def test_the_base_url_may_have_a_prefix_and_a_slash(
    connect: Connect, base_url: str, expected: str
) -> None:
    server = Server([listing()])
    await connect(server, base_url=base_url).list_jobs("c1")
    assert str(server.requests[0].url) == f"{expected}?connector_id=c1"


@pytest.mark.parametrize(
    ("base_url", "org_id"),
    [
        ("ftp://timbal.test", ORG),
        ("https://user:pw@timbal.test", ORG),
        ("timbal.test", ORG),
        (BASE, ""),
        (BASE, "."),
        (BASE, ".."),
    ],
)
def test_an_unusable_base_url_or_org_is_refused(base_url: str, org_id: str) -> None:
    with pytest.raises(ValueError, match=r"base_url|org_id") as caught:
        TimbalClient(base_url=base_url, api_key=SecretStr(API_KEY), org_id=org_id)
    assert "pw" not in str(caught.value)


# --- the key never leaks ----------------------------------------------------------------------


def echo(status: int) -> Answer:
    """A server that echoes our headers into its page, as debug error pages do."""
    return lambda request: httpx.Response(
        status, text=f"<pre>{request.headers['Authorization']}</pre>"
    )


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(echo(401), id="401-echo"),
        pytest.param(echo(403), id="403-echo"),
        pytest.param(echo(404), id="404-echo"),
        pytest.param(echo(502), id="502-echo"),
        pytest.param(echo(200), id="200-html-echo"),
        pytest.param(
            lambda request: httpx.Response(
                200, json={"jobs": [{"id": request.headers["Authorization"]}]}
            ),
            id="echo-in-item",
        ),
        pytest.param(fail(httpx.ReadTimeout), id="timeout"),
        pytest.param(fail(httpx.ConnectError), id="connect-error"),
    ],
)
async def test_the_api_key_never_reaches_errors_or_logs(
    connect: Connect, caplog: pytest.LogCaptureFixture, answer: Answer
) -> None:
    with caplog.at_level(logging.DEBUG), pytest.raises(TimbalError) as caught:
        await connect(Server([answer])).list_jobs()
    assert caplog.records  # something was logged, and checked
    error = caught.value
    everything = [caplog.text, str(error), repr(error), error.reason]
    everything.append("".join(traceback.format_exception(error)))
    for text in everything:
        assert API_KEY not in text


# --- the client's own HTTP client ---------------------------------------------------------------


async def test_aclose_closes_only_a_client_it_created() -> None:
    own = TimbalClient(base_url=BASE, api_key=SecretStr(API_KEY), org_id=ORG)
    await own.aclose()
    with pytest.raises(RuntimeError, match="client has been closed"):
        await own.list_jobs()
    injected = httpx.AsyncClient(transport=httpx.MockTransport(Server([listing()])))
    async with TimbalClient(base_url=BASE, api_key=SecretStr(API_KEY), org_id=ORG, http=injected):
        pass
    assert not injected.is_closed
    await injected.aclose()


# --- over real HTTP, against FakeTimbal ----------------------------------------------------------


async def test_against_fake_timbal_over_http(fake_timbal: FakeTimbal) -> None:
    fake_timbal.jobs = [make_job("j1", connector_id="a"), make_job("j2", connector_id="b")]
    fake_timbal.inject(status=503, body="warming up", content_type="text/plain")
    sleeps = Sleeps()
    async with TimbalClient(
        base_url=fake_timbal.base_url + "/",
        api_key=SecretStr(fake_timbal.api_key),
        org_id=fake_timbal.org_id,
        sleep=sleeps,
    ) as client:
        jobs = await client.list_jobs("b")  # the first answer is the injected 503: retried
        assert [j.id for j in jobs] == ["j2"]
        assert len(sleeps.delays) == 1
        assert [j.id for j in await client.list_jobs()] == ["j1", "j2"]
    assert [r["query"] for r in fake_timbal.requests] == [
        {"connector_id": "b"},
        {"connector_id": "b"},
        {},
    ]
    assert all(r["authorization"] == f"Bearer {fake_timbal.api_key}" for r in fake_timbal.requests)
    assert {r["org_id"] for r in fake_timbal.requests} == {fake_timbal.org_id}


async def test_a_slow_fake_timbal_is_a_real_read_timeout(
    bot_env: dict[str, str], fake_timbal: FakeTimbal, caplog: pytest.LogCaptureFixture
) -> None:
    fake_timbal.jobs = [make_job("j1")]
    fake_timbal.delay = 2.0
    settings = load_settings(timbal_timeout_seconds=0.2)
    sleeps = Sleeps()
    with caplog.at_level(logging.DEBUG):
        async with build_timbal(settings, retries=1, sleep=sleeps) as client:
            with pytest.raises(TimbalUnavailable, match="did not answer in time") as caught:
                await client.list_jobs()
    # httpx's read timeout or the overall deadline, whichever fires first: both are 0.2 s
    assert isinstance(caught.value.__cause__, httpx.ReadTimeout | TimeoutError)
    assert len(sleeps.delays) == 1
    assert fake_timbal.api_key not in caplog.text
    fake_timbal.delay = 0.0
    async with build_timbal(settings) as client:
        assert [j.id for j in await client.list_jobs()] == ["j1"]


async def test_a_fake_timbal_that_refuses_the_org_is_an_auth_error(
    bot_env: dict[str, str], fake_timbal: FakeTimbal
) -> None:
    settings = load_settings(timbal_org_id="someone_else")
    sleeps = Sleeps()
    async with build_timbal(settings, sleep=sleeps) as client:
        with pytest.raises(TimbalAuthError) as caught:
            await client.list_jobs()
    assert caught.value.status == 403 and "someone_else" in caught.value.reason
    assert len(fake_timbal.requests) == 1 and sleeps.delays == []
