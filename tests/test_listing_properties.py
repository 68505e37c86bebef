"""Property tests from the contract: listings generated from `docs/timbal-openapi.yaml`
(hypothesis-jsonschema), then mutated (hostile text, missing or mistyped fields, extra
fields), and command text of any shape. Whatever comes in: parsing and rendering never
raise, the blocks are valid Block Kit within Slack's limits (the fake Slack's `block_errors`
oracle and slack_sdk's own validation), and no mention or link reaches Slack unescaped."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema
from slack_sdk.models.blocks import Block

from bot.domain.models import Job
from bot.domain.states import StateClassifier
from bot.jobs.listing import RenderedMessage, render_jobs_listing, render_usage
from bot.jobs.query import HelpRequest, JobsQuery, QueryError, parse_jobs_command
from bot.sim.slack_api import block_errors
from bot.timbal import TimbalBadResponse, parse_listing
from tests.strategies import NASTY

CONTRACT = Path(__file__).resolve().parent.parent / "docs" / "timbal-openapi.yaml"
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
CLASSIFIER = StateClassifier()
# The only markup we write ourselves: Slack date tokens `<!date^…|…>`.
OWN_MARKUP = re.compile(r"<!date\^-?\d+\^\{date_short_pretty\} \{time\}\|[^<>]*>")
ANY_MARKUP = re.compile(r"<[^>]*>?")


def _resolve(node: Any, components: dict[str, Any]) -> Any:
    """The schema with `$ref`s inlined, and formats hypothesis-jsonschema does not know
    (int64, double: OpenAPI's, not JSON Schema's) dropped."""
    if isinstance(node, dict):
        if "$ref" in node:
            return _resolve(components[node["$ref"].rsplit("/", 1)[1]], components)
        return {
            k: _resolve(v, components)
            for k, v in node.items()
            if not (k == "format" and v in ("int64", "double")) and k != "description"
        }
    if isinstance(node, list):
        return [_resolve(v, components) for v in node]
    return node


def contract() -> dict[str, Any]:
    spec = yaml.safe_load(CONTRACT.read_text(encoding="utf-8"))
    components = spec["components"]["schemas"]
    resolved: dict[str, Any] = _resolve(components["ListJobsRes"], components)
    return resolved


def test_the_model_is_the_contract() -> None:
    """Job has exactly JobView's fields, and the same ones are required."""
    job_view = yaml.safe_load(CONTRACT.read_text(encoding="utf-8"))["components"]["schemas"][
        "JobView"
    ]
    assert set(Job.model_fields) == set(job_view["properties"])
    required = {name for name, field in Job.model_fields.items() if field.is_required()}
    assert required == set(job_view["required"])


def schema_strategy(schema: dict[str, Any]) -> st.SearchStrategy[Any]:
    """hypothesis-jsonschema for every leaf of the contract; objects and arrays assembled here,
    because its object strategy (0.23) relies on Hypothesis internals current Hypothesis lacks."""
    if schema.get("type") == "object":
        properties = schema.get("properties", {})
        required = set(schema.get("required", []))
        return st.fixed_dictionaries(
            {k: schema_strategy(v) for k, v in properties.items() if k in required},
            optional={k: schema_strategy(v) for k, v in properties.items() if k not in required},
        )
    if schema.get("type") == "array":
        return st.lists(schema_strategy(schema["items"]), max_size=30)
    return from_schema(schema)


listings = schema_strategy(contract())
hostile = st.one_of(st.sampled_from(NASTY), st.text(max_size=30), st.sampled_from(["", " "]))


@st.composite
def mutated_listings(draw: st.DrawFn) -> Any:
    """A contract listing with some items changed: hostile strings, a field dropped, a field
    of the wrong type, an extra field; sometimes the whole answer has the wrong shape."""
    payload = draw(listings)
    for item in payload["jobs"]:
        for _ in range(draw(st.integers(0, 3))):
            name = draw(st.sampled_from(sorted(item)))
            change = draw(st.sampled_from(["hostile", "drop", "wrong_type", "extra"]))
            if change == "hostile":
                if isinstance(item[name], str) or item[name] is None:
                    item[name] = draw(hostile)
            elif change == "drop":
                item.pop(name)
            elif change == "wrong_type":
                item[name] = draw(st.sampled_from([1, "1", None, [], {}, True, 1.5]))
            else:
                item[draw(st.text(min_size=1, max_size=10))] = draw(hostile)
    return draw(st.sampled_from([payload, payload, payload, {"jobs": None}, [payload], {}]))


queries = st.builds(
    JobsQuery,
    connector_id=st.one_of(st.none(), hostile),
    state=st.one_of(
        st.none(), st.sampled_from(["failed", "active", "running", "bogus", "other"]), hostile
    ),
    limit=st.integers(-5, 100),
)


def assert_fit_for_slack(message: RenderedMessage) -> None:
    assert block_errors(message.blocks) == []
    for data in message.blocks:
        model = Block.parse(data)
        assert model is not None
        model.validate_json()  # slack_sdk's own limits; raises when broken
    assert 0 < len(message.text) <= 3000
    json.dumps(message.blocks)
    for text in [message.text, *texts(message.blocks)]:
        stray = [m for m in ANY_MARKUP.findall(OWN_MARKUP.sub("", text))]
        assert stray == [], (stray, text[:300])
        assert "&" not in re.sub(r"&(amp|lt|gt);", "", text), text[:300]


def texts(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["text"]] if isinstance(node.get("text"), str) else []
        return found + [t for v in node.values() for t in texts(v)]
    if isinstance(node, list):
        return [t for v in node for t in texts(v)]
    return []


PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(payload=mutated_listings(), query=queries, skipped=st.integers(0, 10**6))
def test_any_answer_renders_as_valid_escaped_block_kit(
    payload: Any, query: JobsQuery, skipped: int
) -> None:
    try:
        listing = parse_listing(payload)
    except TimbalBadResponse:
        return  # a wrong shape is a typed error, which /jobs turns into one sentence
    message = render_jobs_listing(
        listing.jobs,
        query=query,
        classifier=CLASSIFIER,
        now=NOW,
        org_id="org_x",
        skipped=listing.skipped + skipped,
        suggestions=[j.connector_id for j in listing.jobs][:3],
    )
    assert_fit_for_slack(message)


words = st.one_of(
    hostile,
    st.sampled_from(["help", "state=", "limit=", "connector=", "=", "state=failed", "limit=5"]),
    st.builds(lambda k, v: f"{k}={v}", st.sampled_from(["state", "limit", "connector"]), hostile),
)
command_texts = st.one_of(st.text(max_size=200), st.lists(words, max_size=6).map(" ".join))


@PROPERTY
@given(text=command_texts, payload=listings)
def test_any_command_text_gets_a_valid_answer(text: str, payload: Any) -> None:
    parsed = parse_jobs_command(text)
    if isinstance(parsed, HelpRequest):
        message = render_usage()
    elif isinstance(parsed, QueryError):
        message = render_usage(parsed.message)
    else:
        listing = parse_listing(payload) if payload["jobs"] else None
        jobs = listing.jobs if listing is not None else []
        message = render_jobs_listing(
            jobs, query=parsed, classifier=CLASSIFIER, now=NOW, org_id="org_x"
        )
    assert_fit_for_slack(message)


@pytest.mark.parametrize(
    "mention", ["<!channel>", "<!here>", "<@U123>", "<#C1|x>", "<https://e|x>"]
)
def test_a_mention_in_every_field_stays_text(mention: str) -> None:
    fields = {
        "id": mention,
        "connector_id": mention,
        "kb_uid": mention,
        "dest_table": mention,
        "mode": mention,
        "state": mention,
        "message": mention,
        "sync_id": mention,
    }
    job = Job.model_validate(
        {"rows_emitted": 1, "created_at": NOW, "updated_at": NOW, "finished_at": NOW} | fields
    )
    for query in (JobsQuery(), JobsQuery(connector_id=mention, state=mention)):
        message = render_jobs_listing(
            [job], query=query, classifier=CLASSIFIER, now=NOW, org_id=mention
        )
        assert_fit_for_slack(message)
