"""Domain models. `Job` mirrors the API's `JobView` exactly: the contract is kept in the
repository as `docs/timbal-openapi.yaml` (a copy of Timbal's OpenAPI for the endpoint), and
`tests/test_listing_properties.py` generates listings from it.

Scalars are strict (a string where an integer belongs is a malformed item, not a silent
coercion); timestamps are parsed into aware datetimes (a naive one is taken as UTC);
unknown extra fields are ignored, so the API may grow without breaking us.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictInt, StrictStr


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


Timestamp = Annotated[datetime, AfterValidator(_aware)]
Number = Annotated[float, Field(strict=True)]


class Job(BaseModel):
    """One connector job run, as `GET /orgs/{org_id}/connectors/jobs` lists it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: StrictStr
    connector_id: StrictStr
    kb_uid: StrictStr
    dest_table: StrictStr
    mode: StrictStr
    state: StrictStr
    rows_emitted: StrictInt
    created_at: Timestamp
    updated_at: Timestamp
    duration_ms: StrictInt | None = None
    finished_at: Timestamp | None = None
    message: StrictStr | None = None
    rows_per_sec: Number | None = None
    started_at: Timestamp | None = None
    sync_id: StrictStr | None = None
