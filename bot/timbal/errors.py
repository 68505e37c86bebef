"""What can go wrong when listing Timbal jobs, httpx-style: one tree, `.reason` safe to show.

Exceptions (`.reason` is short, safe to show a user, and never holds the API key):

    TimbalError
    ├── TimbalAuthError    401 (key rejected) or 403 (key cannot list this org); `.status`
    ├── TimbalUnavailable  timeout, connection error, 5xx or 429, after the retries; `.status`
    └── TimbalBadResponse  not JSON, wrong shape, or another status (404, 3xx…)
        └── TimbalResponseTooLarge  larger than the ceiling (TIMBAL_MAX_RESPONSE_MB); `.limit`
"""

from __future__ import annotations


class TimbalError(Exception):
    """Listing jobs failed; `reason` is one short sentence, safe to show a user."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class TimbalAuthError(TimbalError):
    """401: the API key was rejected. 403: the key cannot list jobs for the org."""

    status: int

    def __init__(self, reason: str, *, status: int) -> None:
        super().__init__(reason, status=status)


class TimbalUnavailable(TimbalError):
    """Timbal did not answer usefully (timeout, connection, 5xx, 429) after the retries."""


class TimbalBadResponse(TimbalError):
    """Timbal answered, but not with the documented listing."""


class TimbalResponseTooLarge(TimbalBadResponse):
    """The answer grew past the ceiling (`limit` bytes, TIMBAL_MAX_RESPONSE_MB): refused
    rather than read, so an org outgrowing the setting is told so, not silently cut."""

    def __init__(self, limit: int, *, status: int | None = None) -> None:
        megabytes = limit / (1024 * 1024)
        super().__init__(
            f"Timbal's answer is larger than the {megabytes:g} MB the bot accepts "
            "(TIMBAL_MAX_RESPONSE_MB).",
            status=status,
        )
        self.limit = limit
