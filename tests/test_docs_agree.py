"""The code, README, .env.example and docs/deploy.md agree; the README links only to files
that are in the repository."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bot.app.config import ONCALL_PATTERN, SlackMode, load_settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = {name: (ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "docs/deploy.md")}
ENV_EXAMPLE = (ROOT / ".env.example").read_text(encoding="utf-8")
LINK = re.compile(r"\]\(([^)#]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_links_point_at_files_in_the_repository(doc: str) -> None:
    base = (ROOT / doc).parent
    for target in LINK.findall(DOCS[doc]):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        assert (base / target).exists(), f"{doc} links to {target}, which is not in the repository"


def test_the_readme_names_no_file_outside_the_repository() -> None:
    assert "DESIGN.md" not in DOCS["README.md"]


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_socket_mode_is_the_default_everywhere(doc: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert "Socket Mode (the default" in DOCS[doc]
    assert "Unset: socket (the default), or http when only SLACK_SIGNING_SECRET is set." in (
        ENV_EXAMPLE
    )
    for name in ("SLACK_MODE", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings(
        timbal_api_key="k-123",
        timbal_org_id="o",
        slack_bot_token="xoxb-1",
        slack_app_token="xapp-1",
        slack_signing_secret="s-123",
    )
    assert settings.effective_slack_mode is SlackMode.SOCKET  # both set, SLACK_MODE unset


@pytest.mark.parametrize("text", [*DOCS.values(), ENV_EXAMPLE], ids=[*DOCS, ".env.example"])
def test_oncall_mention_is_described_as_the_code_accepts_it(text: str) -> None:
    at = text.index("ONCALL_MENTION")
    about = text[max(at - 300, 0) : at + 300]  # .env.example explains before the line
    for kind in ("U…", "W…", "S…", "here", "channel"):
        assert kind.replace("…", "") in about, kind
    for example in ("U0ONCALL1", "W0ONCALL1", "S0ONCALL1", "here", "channel"):
        assert re.fullmatch(ONCALL_PATTERN, example)


def test_the_license_is_an_spdx_string_with_a_setuptools_that_reads_it() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert project["project"]["license"] == "MIT"
    floor = next(r for r in project["build-system"]["requires"] if r.startswith("setuptools"))
    assert floor == "setuptools>=77"  # the first to read an SPDX `license` string
