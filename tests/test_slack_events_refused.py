"""Forged and malformed requests to POST /slack/events: each refused with the right status,
before any parsing; no listener, no reply to the body's response_url, no call to Timbal or
Slack, one log line and no traceback."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

import httpx
import pytest
from slack_sdk.signature import Clock, SignatureVerifier

from bot.app.config import load_settings
from bot.app.runtime import Runtime, running
from bot.app.slack_signing import Refusal, Unreadable, read_body, verify
from bot.sim.slash import slash_command_body
from tests.fakes import FakeSlack, FakeTimbal, make_job

SECRET = "test-signing-secret"  # the bot_env fixture's
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Forged:
    """A request body, how to sign it, and the headers to send or override."""

    body: bytes
    sign: str | None = SECRET  # None: no signature headers at all
    skew: int = 0  # seconds added to the timestamp that is signed
    content_type: str = FORM
    headers: dict[str, bytes] = field(default_factory=dict)  # sent as-is, after signing
    drop: tuple[str, ...] = ()

    def to_headers(self) -> dict[bytes, bytes]:
        out: dict[str, bytes] = {"Content-Type": self.content_type.encode()}
        if self.sign is not None:
            ts = str(int(time.time()) + self.skew)
            # By hand (Slack's v0 scheme), so that a body that is not UTF-8 can be signed too.
            base = b"v0:" + ts.encode() + b":" + self.body
            signature = "v0=" + hmac.new(self.sign.encode(), base, hashlib.sha256).hexdigest()
            out["X-Slack-Request-Timestamp"] = ts.encode()
            out["X-Slack-Signature"] = signature.encode()
        out.update(self.headers)
        for name in self.drop:
            out.pop(name, None)
        return {name.encode(): value for name, value in out.items()}


def command_body(response_url: str) -> bytes:
    """A slash command whose response_url is the fake Slack's: any reply would be seen."""
    return slash_command_body(text="", response_url=response_url).encode()


TS = "X-Slack-Request-Timestamp"
SIG = "X-Slack-Signature"
WELL_FORMED_WRONG_SIG = b"v0=" + b"0" * 64


def cases(url: str) -> list[tuple[str, Forged, int]]:
    body = command_body(url)
    payload_broken = urlencode({"payload": '{"type": "block_actions", '}).encode()
    return [
        # --- unsigned, or signed wrong: 401 whatever the body is ------------------------
        ("no signature headers", Forged(body, sign=None), 401),
        ("no timestamp", Forged(body, drop=(TS,)), 401),
        ("no signature", Forged(body, drop=(SIG,)), 401),
        ("timestamp not a number", Forged(body, headers={TS: b"abc"}), 401),
        ("timestamp empty", Forged(body, headers={TS: b""}), 401),
        ("timestamp of 5,000 digits", Forged(body, headers={TS: b"9" * 5000}), 401),
        ("timestamp negative", Forged(body, headers={TS: b"-1"}), 401),
        ("timestamp with spaces", Forged(body, headers={TS: b"1700 000000"}), 401),
        ("timestamp non-ASCII digits", Forged(body, headers={TS: "١٧٠٠".encode()}), 401),
        ("signature empty", Forged(body, headers={SIG: b""}), 401),
        ("signature non-ASCII", Forged(body, headers={SIG: ("v0=" + "é" * 64).encode()}), 401),
        ("signature not v0", Forged(body, headers={SIG: b"v1=" + b"a" * 64}), 401),
        ("signature well-formed, wrong", Forged(body, headers={SIG: WELL_FORMED_WRONG_SIG}), 401),
        ("signed with another secret", Forged(body, sign="another-secret"), 401),
        ("stale timestamp", Forged(body, skew=-6 * 60), 401),
        ("future timestamp", Forged(body, skew=6 * 60), 401),
        (
            "unsigned JSON",
            Forged(b'{"type": "x"}', sign=None, content_type="application/json"),
            401,
        ),
        ("unsigned [1,2]", Forged(b"[1,2]", sign=None, content_type="application/json"), 401),
        ("unsigned {", Forged(b"{", sign=None), 401),
        ("unsigned invalid UTF-8", Forged(b"text=\xff\xfe", sign=None), 401),
        (
            "unsigned unknown charset",
            Forged(body, sign=None, content_type=FORM + "; charset=x-no"),
            401,
        ),
        ("unsigned broken payload", Forged(payload_broken, sign=None), 401),
        # --- signed, but not a body Bolt can read: 400 --------------------------------------
        ("signed [1,2]", Forged(b"[1,2]", content_type="application/json"), 400),
        ("signed { as JSON", Forged(b"{", content_type="application/json"), 400),
        ("signed { as a form", Forged(b"{"), 400),
        # slack_sdk's verifier signs text: a body that is not UTF-8 cannot be verified
        ("signed invalid UTF-8", Forged(b"text=\xff\xfe"), 401),
        ("signed unknown charset", Forged(body, content_type=FORM + "; charset=x-no"), 400),
        ("signed broken payload", Forged(payload_broken), 400),
        # --- signed and readable, but nothing listens for it: Bolt's 404, no listener ----
        ("signed JSON object", Forged(b'{"type": "x"}', content_type="application/json"), 404),
    ]


CASE_NAMES = [name for name, _, _ in cases("http://x/")]
OVERSIZED = 1024 * 1024 + 1


@pytest.fixture
async def rt(bot_env: dict[str, str], redis_url: str) -> AsyncIterator[Runtime]:
    assert bot_env["SLACK_SIGNING_SECRET"] == SECRET
    settings = load_settings(port=0, redis_url=redis_url, host="127.0.0.1")
    async with running(settings, poller=False, notifier=False) as runtime:
        yield runtime


def commands_answered(rt: Runtime) -> float:
    total = 0.0
    for metric in rt.metrics.registry.collect():
        for sample in metric.samples:
            if sample.name == "tjb_slash_commands_total":
                total += sample.value
    return total


@pytest.mark.parametrize("name", CASE_NAMES)
async def test_a_forged_or_malformed_request_is_refused_and_nothing_follows(
    rt: Runtime,
    fake_slack: FakeSlack,
    fake_timbal: FakeTimbal,
    caplog: pytest.LogCaptureFixture,
    name: str,
) -> None:
    fake_timbal.jobs = [make_job("j1")]
    (forged, status) = next((f, s) for n, f, s in cases(fake_slack.response_url("r")) if n == name)
    slack_calls_before = list(fake_slack.calls)  # auth.test at start-up
    with caplog.at_level(logging.DEBUG):
        async with httpx.AsyncClient() as http:
            answer = await http.post(
                rt.base_url + "/slack/events", content=forged.body, headers=forged.to_headers()
            )
            assert answer.status_code == status, answer.text
    assert fake_slack.calls == slack_calls_before, "Slack was called"
    assert fake_timbal.requests == [], "Timbal was called"
    assert commands_answered(rt) == 0, "a listener ran"
    assert "Traceback" not in caplog.text
    refused = [r for r in caplog.records if r.name == "bot.app.runtime" and "refused" in r.message]
    if status in (400, 401):
        assert len(refused) == 1 and refused[0].exc_info is None
        assert SECRET not in caplog.text


@pytest.mark.parametrize("signed", [True, False])
async def test_an_oversized_body_gets_413(
    rt: Runtime,
    fake_slack: FakeSlack,
    fake_timbal: FakeTimbal,
    caplog: pytest.LogCaptureFixture,
    signed: bool,
) -> None:
    body = b"text=" + b"a" * OVERSIZED
    forged = Forged(body, sign=SECRET if signed else None)
    before = list(fake_slack.calls)
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            rt.base_url + "/slack/events", content=body, headers=forged.to_headers()
        )
    assert answer.status_code == 413
    assert fake_slack.calls == before and fake_timbal.requests == []
    assert "Traceback" not in caplog.text


# --- the two pure decisions, by table ----------------------------------------------------


class FixedClock(Clock):
    def __init__(self, now: float) -> None:
        self.at = now

    def now(self) -> float:
        return self.at


def test_verify_names_every_refusal() -> None:
    now = 1_700_000_000.0
    verifier = SignatureVerifier(SECRET, clock=FixedClock(now))
    body = b"a=1"
    good = verifier.generate_signature(timestamp=str(int(now)), body=body)
    assert good is not None

    def check(headers: dict[str, str]) -> Refusal:
        return verify(body, headers, verifier, now)

    ts = str(int(now))
    assert check({TS: ts, SIG: good}) is Refusal.NONE
    assert check({TS: ts}) is Refusal.MISSING_HEADERS
    assert check({SIG: good}) is Refusal.MISSING_HEADERS
    for bad in ("", "abc", "9" * 5000, "١٢", " 1", "1.5", "-1"):
        assert check({TS: bad, SIG: good}) is Refusal.MALFORMED_TIMESTAMP, bad
    for bad in ("", "v0=", "v0=" + "é" * 64, "v1=" + "a" * 64, good.upper(), good + "0"):
        assert check({TS: ts, SIG: bad}) is Refusal.MALFORMED_SIGNATURE, bad
    assert check({TS: str(int(now) - 301), SIG: good}) is Refusal.OUT_OF_WINDOW
    assert check({TS: str(int(now) + 301), SIG: good}) is Refusal.OUT_OF_WINDOW
    assert check({TS: ts, SIG: "v0=" + "0" * 64}) is Refusal.BAD_SIGNATURE
    assert verify(body + b" ", {TS: ts, SIG: good}, verifier, now) is Refusal.BAD_SIGNATURE
    assert verify(b"a=\xff", {TS: ts, SIG: good}, verifier, now) is Refusal.NOT_UTF8


@pytest.mark.parametrize(
    ("body", "content_type", "charset", "expected"),
    [
        (b"a=1&b=", FORM, None, Unreadable.NONE),
        (b"a=1", FORM, "UTF-8", Unreadable.NONE),
        (b"", FORM, None, Unreadable.NONE),
        (b'payload={"type":"block_actions"}', FORM, None, Unreadable.NONE),
        (b'{"type": "x"}', "application/json", None, Unreadable.NONE),
        (b"a=1", FORM, "x-no", Unreadable.CHARSET),
        (b"a=\xff", FORM, None, Unreadable.NOT_UTF8),
        (b"{", FORM, None, Unreadable.NOT_A_FORM),
        (b"payload={", FORM, None, Unreadable.BAD_PAYLOAD),
        (b"payload=[1]", FORM, None, Unreadable.BAD_PAYLOAD),
        (b"payload={}&payload={}", FORM, None, Unreadable.BAD_PAYLOAD),
        (b"[1,2]", "application/json", None, Unreadable.NOT_AN_OBJECT),
        (b"{", "application/json", None, Unreadable.NOT_AN_OBJECT),
        (b"[" * 100_000, "application/json", None, Unreadable.NOT_AN_OBJECT),
    ],
)
def test_read_body(
    body: bytes, content_type: str, charset: str | None, expected: Unreadable
) -> None:
    why, text = read_body(body, content_type, charset)
    assert why is expected
    assert (text == body.decode()) if expected is Unreadable.NONE else text == ""
