"""The Timbal API client (`client`) and its errors (`errors`)."""

from bot.timbal.client import (
    DEFAULT_MAX_RESPONSE_MB,
    HEADERS,
    MAX_ERROR_BODY_BYTES,
    MAX_RETRY_DELAY,
    JobsScanner,
    JobsSource,
    TimbalClient,
    retry_after_seconds,
    scan_jobs,
)
from bot.timbal.errors import (
    TimbalAuthError,
    TimbalBadResponse,
    TimbalError,
    TimbalResponseTooLarge,
    TimbalUnavailable,
)
from bot.timbal.listing import JobCount, JobList, JobListing, JobSink, Scan, parse_listing

__all__ = [
    "DEFAULT_MAX_RESPONSE_MB",
    "HEADERS",
    "MAX_ERROR_BODY_BYTES",
    "MAX_RETRY_DELAY",
    "JobCount",
    "JobList",
    "JobListing",
    "JobSink",
    "JobsScanner",
    "JobsSource",
    "Scan",
    "TimbalAuthError",
    "TimbalBadResponse",
    "TimbalClient",
    "TimbalError",
    "TimbalResponseTooLarge",
    "TimbalUnavailable",
    "parse_listing",
    "retry_after_seconds",
    "scan_jobs",
]
