"""The Timbal API client (`client`) and its errors (`errors`)."""

from bot.timbal.client import (
    HEADERS,
    MAX_BODY_BYTES,
    MAX_ERROR_BODY_BYTES,
    MAX_RETRY_DELAY,
    JobListing,
    JobsSource,
    TimbalClient,
    parse_listing,
    retry_after_seconds,
)
from bot.timbal.errors import TimbalAuthError, TimbalBadResponse, TimbalError, TimbalUnavailable

__all__ = [
    "HEADERS",
    "MAX_BODY_BYTES",
    "MAX_ERROR_BODY_BYTES",
    "MAX_RETRY_DELAY",
    "JobListing",
    "JobsSource",
    "TimbalAuthError",
    "TimbalBadResponse",
    "TimbalClient",
    "TimbalError",
    "TimbalUnavailable",
    "parse_listing",
    "retry_after_seconds",
]
