"""Verify a Slack request on its raw bytes, then read the verified body: two pure decisions.

`verify(body, headers, verifier, now)` runs before anything parses the body and names every way a
request can fail (`Refusal`); only `Refusal.NONE` may go further. slack_sdk's SignatureVerifier
does the HMAC and the 5-minute window; the header shapes are checked here first because it
raises on some of them (`int()` of a non-number, `compare_digest` of a non-ASCII string) and
accepts others it should not (`int(" ١٢ ")` is 12). `now` is the verifier's clock too.

`read_body(body, content_type, charset)` then says whether a verified body is one Bolt can
parse (a form, a form with a JSON `payload`, or a JSON object); anything else is a 400.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from urllib.parse import parse_qs

from slack_sdk.signature import SignatureVerifier

TIMESTAMP_HEADER = "X-Slack-Request-Timestamp"
SIGNATURE_HEADER = "X-Slack-Signature"
TIMESTAMP_RE = re.compile(r"[0-9]{1,12}")
SIGNATURE_RE = re.compile(r"v0=[0-9a-f]{64}")
WINDOW_SECONDS = 5 * 60  # Slack's; SignatureVerifier applies the same
UTF8_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})


class Refusal(StrEnum):
    """Why a request was refused (the log line says it), or NONE."""

    NONE = "verified"
    MISSING_HEADERS = "no signature or timestamp header"
    MALFORMED_TIMESTAMP = "timestamp header is not a number of seconds"
    MALFORMED_SIGNATURE = "signature header is not a v0 signature"
    OUT_OF_WINDOW = "timestamp is more than 5 minutes from now"
    NOT_UTF8 = "body is not UTF-8, so its signature cannot be checked"
    BAD_SIGNATURE = "signature does not match the body"


def verify(
    body: bytes, headers: Mapping[str, str], verifier: SignatureVerifier, now: float
) -> Refusal:
    """Is this request signed by Slack, now? Never raises."""
    timestamp = headers.get(TIMESTAMP_HEADER)
    signature = headers.get(SIGNATURE_HEADER)
    if timestamp is None or signature is None:
        return Refusal.MISSING_HEADERS
    if TIMESTAMP_RE.fullmatch(timestamp) is None:
        return Refusal.MALFORMED_TIMESTAMP
    if SIGNATURE_RE.fullmatch(signature) is None:
        return Refusal.MALFORMED_SIGNATURE
    if abs(now - int(timestamp)) > WINDOW_SECONDS:
        return Refusal.OUT_OF_WINDOW
    try:  # SignatureVerifier signs text; Slack only sends UTF-8, so anything else is forged
        body.decode("utf-8")
    except UnicodeDecodeError:
        return Refusal.NOT_UTF8
    try:
        valid = verifier.is_valid(body=body, timestamp=timestamp, signature=signature)
    except (ValueError, TypeError):  # not reachable after the checks above; refuse, never raise
        valid = False
    return Refusal.NONE if valid else Refusal.BAD_SIGNATURE


class Unreadable(StrEnum):
    """Why a verified body cannot be handed to Bolt, or NONE."""

    NONE = "readable"
    CHARSET = "charset is not UTF-8"
    NOT_UTF8 = "body is not UTF-8"
    NOT_A_FORM = "body is not a form"
    BAD_PAYLOAD = "payload is not a JSON object"
    NOT_AN_OBJECT = "body is not a JSON object"


def read_body(body: bytes, content_type: str, charset: str | None) -> tuple[Unreadable, str]:
    """(why not, "") or (Unreadable.NONE, the text) for a verified body. Never raises."""
    if charset is not None and charset.lower() not in UTF8_CHARSETS:
        return Unreadable.CHARSET, ""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return Unreadable.NOT_UTF8, ""
    if content_type == "application/json":
        return (Unreadable.NONE, text) if _json_object(text) else (Unreadable.NOT_AN_OBJECT, "")
    try:
        form = parse_qs(text, keep_blank_values=True, strict_parsing=True) if text else {}
    except ValueError:
        return Unreadable.NOT_A_FORM, ""
    payload = form.get("payload")
    if payload is not None and (len(payload) != 1 or not _json_object(payload[0])):
        return Unreadable.BAD_PAYLOAD, ""
    return Unreadable.NONE, text


def _json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False
