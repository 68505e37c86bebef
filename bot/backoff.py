"""One back-off and one `Retry-After` parser, for the poller, the notifier and the Timbal client.

Pure: the randomness comes in as `jitter` (a number in [0, 1)), so callers and tests choose.
Hand-written because the callers are schedulers (when to try next), not a call to wrap in a
retry decorator, which is what stamina and tenacity offer.
"""

from __future__ import annotations

import math
from datetime import datetime
from email.utils import parsedate_to_datetime


def backoff(failures: int, *, base: float, cap: float, jitter: float = 1.0) -> float:
    """Seconds to wait after `failures` consecutive failures (1 = the first).

    Exponential from `base`, capped at `cap`; "equal jitter": between half and all of the
    step (`jitter` picks where), so replicas do not retry in lockstep and a wait is never
    near zero. `failures <= 0` waits nothing.
    """
    if failures <= 0:
        return 0.0
    step = min(base * 2.0 ** min(failures - 1, 62), cap)
    return step * (0.5 + 0.5 * min(max(jitter, 0.0), 1.0))


def retry_after(value: str | None, now: datetime, *, cap: float) -> float | None:
    """A `Retry-After` header as seconds from `now`: delta-seconds or an HTTP date, clamped
    to [0, cap]. None when absent or unreadable (the caller falls back to its back-off)."""
    if value is None or not value.strip():
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        try:
            seconds = (parsedate_to_datetime(value.strip()) - now).total_seconds()
        except (TypeError, ValueError, IndexError):
            return None
    if math.isnan(seconds):
        return None
    return min(max(seconds, 0.0), cap)
