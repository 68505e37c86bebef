"""bot.timbal.listing.read_listing: the listing parsed as it streams agrees with decoding it
whole (`json.loads` + `parse_listing`) for any answer and wherever the chunks are cut, and
refuses what is not a listing the same way."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.timbal import JobCount, JobList, JobListing, TimbalBadResponse, parse_listing
from bot.timbal.errors import TimbalResponseTooLarge
from bot.timbal.listing import read_listing
from tests.fakes import make_job
from tests.test_listing_properties import mutated_listings

NO_LIMIT = 1 << 40


async def chunked(body: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    """`body` cut into pieces of the given sizes, in turn (the last size repeats)."""
    at, turn = 0, 0
    while at < len(body):
        size = sizes[min(turn, len(sizes) - 1)]
        yield body[at : at + size]
        at, turn = at + size, turn + 1


async def streamed(body: bytes, sizes: list[int], limit: int = NO_LIMIT) -> JobListing:
    scan = await read_listing(chunked(body, sizes), JobList(), limit=limit)
    return JobListing(jobs=scan.sink.jobs, skipped=scan.skipped)


def whole(body: bytes) -> JobListing | str:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        return "Timbal's answer was not JSON."
    try:
        return parse_listing(payload)
    except TimbalBadResponse as exc:
        return exc.reason


async def outcome(body: bytes, sizes: list[int]) -> JobListing | str:
    try:
        return await streamed(body, sizes)
    except TimbalBadResponse as exc:
        return exc.reason


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    payload=mutated_listings(),
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=6),
    indent=st.sampled_from([None, 0, 2]),
)
async def test_streaming_agrees_with_decoding_whole_for_any_answer_and_any_cut(
    payload: Any, sizes: list[int], indent: int | None
) -> None:
    body = json.dumps(payload, indent=indent).encode()
    assert await outcome(body, sizes) == whole(body)


@pytest.mark.parametrize("size", [1, 2, 3, 5, 64, 1 << 16])
@pytest.mark.parametrize(
    "body",
    [
        b'{"jobs": []}',
        b'  {"meta": {"n": [1, 2.5e3, -0, true, null]}, "jobs": [] , "x": "\\"}]"}  ',
        b'\xef\xbb\xbf{"jobs": []}',  # a UTF-8 byte order mark, as json.loads(bytes) allows
        b'{"jobs": [1234567, 12.5e-1, "\\u00e9\\ud83d\\ude80", true]}',
        json.dumps({"jobs": [make_job("j1", message='a "quoted" ] } \\ message é 🚀')]}).encode(),
        b'{"jobs": [] "x": 1}',
        b'{"jobs": [], }',
        b'{"jobs": [{}]} trailing',
        b'{"jobs": [{"id": "j1"',
        b"[" * 100_000 + b"]" * 100_000,
        b'{"jobs": ' + b"[" * 100_000,
        b'{"jobs": [' + b'{"a": ' * 100_000,
        b'{"jobs": [12',
        b'{"jobs": [tru',
        b"",
        b"   ",
        b'{"jobs": [], "jobs": null}',
    ],
)
async def test_edge_bodies_stream_as_they_decode_whole(body: bytes, size: int) -> None:
    assert await outcome(body, [size]) == whole(body)


async def test_a_ceiling_counts_the_bytes_as_they_arrive() -> None:
    body = json.dumps({"jobs": [make_job(f"j{i}") for i in range(100)]}).encode()
    assert len((await streamed(body, [512], limit=len(body))).jobs) == 100
    with pytest.raises(TimbalResponseTooLarge):
        await streamed(body, [512], limit=len(body) - 1)


async def test_the_stream_keeps_no_job_the_sink_does_not() -> None:
    body = json.dumps({"jobs": [make_job(f"j{i}") for i in range(500)]}).encode()
    scan = await read_listing(chunked(body, [4096]), JobCount(), limit=NO_LIMIT)
    assert (scan.sink.jobs, scan.jobs, scan.skipped, scan.size) == (500, 500, 0, len(body))
