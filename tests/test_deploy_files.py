"""The operational files: docker-compose.yml, Dockerfile, .dockerignore, the Slack app manifest
and .env.example.

No Docker engine runs here, so docker-compose.yml is validated against the Compose
Specification's JSON schema, as vendored by the `check-jsonschema` dev dependency (never
downloaded at test time), and the requirements that matter to us are asserted on top. Both
health-check commands are executed against a local HTTP server, so they are known to work.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import re
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Iterator
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft202012Validator
from pydantic import ValidationError

from bot.app.config import Settings

ROOT = Path(__file__).resolve().parent.parent
REQUIRED_SCOPES = {
    "commands",
    "chat:write",
    "chat:write.public",
    "channels:history",
    "channels:read",  # /jobs subscribe checks the channel (conversations.info)
}
DURATION = re.compile(r"^(\d+(\.\d+)?(us|ms|s|m|h))+$")  # Go's time.ParseDuration, as Compose


# --- loading ----------------------------------------------------------------------------------
@cache
def compose_schema() -> dict[str, Any]:
    resource = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema: dict[str, Any] = json.loads(resource.read_text(encoding="utf-8"))
    return schema


def compose_errors(document: Any) -> list[str]:
    validator = Draft202012Validator(compose_schema())
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


def load_yaml(name: str) -> dict[str, Any]:
    data = yaml.safe_load((ROOT / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml("docker-compose.yml")


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "Dockerfile ends in a line continuation"
    found = []
    for line in logical:
        keyword, _, args = line.partition(" ")
        found.append((keyword.upper(), args.strip()))
    return found


def instructions(keyword: str) -> list[str]:
    return [args for kw, args in dockerfile_instructions() if kw == keyword]


def env_example_assignments(text: str | None = None) -> list[tuple[str, str, bool]]:
    """(NAME, value, active) for `NAME=value` and commented `# NAME=value` lines."""
    if text is None:
        text = (ROOT / ".env.example").read_text(encoding="utf-8")
    pattern = re.compile(r"^(#\s)?([A-Z][A-Z0-9_]*)=(.*)$")
    found = []
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            found.append((match.group(2), match.group(3).strip(), match.group(1) is None))
    return found


# --- health checks, run for real ---------------------------------------------------------------
class _Health(BaseHTTPRequestHandler):
    status = 200
    paths: list[str]

    def do_GET(self) -> None:
        self.paths.append(self.path)
        code = self.status if self.path == "/healthz" else 404
        self.send_response(code)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[tuple[int, type[_Health]]]:
    handler = type("Handler", (_Health,), {"paths": [], "status": 200})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def run_exec_check(argv: list[str], port: int) -> int:
    assert argv[0] == "python", "the slim image has no curl: the check must use python"
    result = subprocess.run(
        [sys.executable, *argv[1:]],
        env={"PORT": str(port), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        timeout=20,
        check=False,
    )
    return result.returncode


def compose_bot_check(compose: dict[str, Any]) -> list[str]:
    test = compose["services"]["bot"]["healthcheck"]["test"]
    assert isinstance(test, list)
    assert test[0] == "CMD", "exec form: the container has python, no need for a shell"
    return [str(part) for part in test[1:]]


def dockerfile_check() -> list[str]:
    (args,) = instructions("HEALTHCHECK")
    options, sep, command = args.partition("CMD ")
    assert sep, "HEALTHCHECK must run a command"
    for option in shlex.split(options):
        name, _, value = option.removeprefix("--").partition("=")
        assert name in {"interval", "timeout", "start-period", "start-interval", "retries"}
        assert value.isdigit() if name == "retries" else DURATION.match(value), option
    argv = json.loads(command)
    assert isinstance(argv, list)
    return [str(part) for part in argv]


@pytest.mark.parametrize("source", ["compose", "dockerfile"])
def test_bot_health_check_asks_healthz_on_port(
    source: str, compose: dict[str, Any], health_server: tuple[int, type[_Health]]
) -> None:
    port, handler = health_server
    argv = compose_bot_check(compose) if source == "compose" else dockerfile_check()
    assert "/healthz" in " ".join(argv) and "127.0.0.1" in " ".join(argv)
    assert run_exec_check(argv, port) == 0
    assert handler.paths == ["/healthz"]
    handler.status = 503
    assert run_exec_check(argv, port) != 0


@pytest.mark.parametrize("source", ["compose", "dockerfile"])
def test_bot_health_check_fails_when_nothing_listens(source: str, compose: dict[str, Any]) -> None:
    with ThreadingHTTPServer(("127.0.0.1", 0), _Health) as server:
        closed_port = server.server_address[1]
    argv = compose_bot_check(compose) if source == "compose" else dockerfile_check()
    assert run_exec_check(argv, closed_port) != 0


# --- docker-compose.yml -----------------------------------------------------------------------
def test_compose_schema_is_the_compose_specification() -> None:
    schema = compose_schema()
    Draft202012Validator.check_schema(schema)
    assert schema["title"] == "Compose Specification"
    assert {"services", "volumes"} <= set(schema["properties"])


def test_compose_file_is_valid_against_the_specification(compose: dict[str, Any]) -> None:
    assert compose_errors(compose) == []


def _mutate(compose: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    broken = copy.deepcopy(compose)
    *parents, last = path.split(".")
    node = broken
    for key in parents:
        node = node[key]
    node[last] = value
    return broken


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("services.redis.healthcheck.intervall", "5s"),
        ("services.bot.depends_on.redis.condition", "service_ready"),
        ("services.bot.restart_policy", "always"),
        ("services.bot.ports", "3000:3000"),
        ("services.bot.env_file", 3),
        ("volumes.redis-data", {"driverr": "local"}),
    ],
)
def test_schema_rejects_a_broken_compose_file(
    compose: dict[str, Any], path: str, value: Any
) -> None:
    assert compose_errors(_mutate(compose, path, value)) != []


def _tag_major(image: str) -> int:
    name, _, tag = image.rpartition(":")
    assert name.endswith("redis"), image
    match = re.match(r"(\d+)", tag)
    assert match, f"pin a Redis version, not {tag!r}"
    return int(match.group(1))


def test_redis_is_current_persistent_and_health_checked(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert _tag_major(redis["image"]) >= 7
    command = redis["command"]
    words = command if isinstance(command, list) else shlex.split(command)
    assert words[words.index("--appendonly") + 1] == "yes"
    assert words[words.index("--maxmemory-policy") + 1] == "noeviction"
    mounts = {v.split(":")[0]: v.split(":")[1] for v in redis["volumes"]}
    volume = next(name for name, target in mounts.items() if target == "/data")
    assert volume in compose["volumes"], "the data volume must be a named volume"
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "ports" not in redis, "Redis stays on the compose network"


@pytest.mark.parametrize("service", ["bot", "worker"])
def test_bot_services_wiring(compose: dict[str, Any], service: str) -> None:
    bot = compose["services"][service]
    assert bot["build"]["dockerfile"] == "Dockerfile"
    assert (ROOT / bot["build"]["context"] / bot["build"]["dockerfile"]).is_file()
    env_files = bot["env_file"] if isinstance(bot["env_file"], list) else [bot["env_file"]]
    assert ".env" in env_files
    assert bot["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert bot["depends_on"]["redis"]["condition"] == "service_healthy"
    assert bot["restart"] == "unless-stopped"
    assert DURATION.match(bot["stop_grace_period"])
    assert "ALL" in bot["cap_drop"]


def test_bot_command_and_ports(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["bot"]["command"] == ["run"]
    assert services["worker"]["command"] == ["run", "--no-commands"]
    assert services["worker"]["profiles"] == ["workers"], "extra replicas are opt-in"
    assert "ports" not in services["worker"], "replicas cannot share the host port"
    (published,) = services["bot"]["ports"]
    host_ip, host_port, container_port = re.split(r":(?![^{]*\})", published)
    assert host_ip == "127.0.0.1", "publish /metrics on the host's loopback only"
    assert host_port == container_port == "${PORT:-3000}", "the port the bot listens on"
    assert Settings.model_fields["port"].default == 3000


def test_durations_are_compose_durations(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for key in ("interval", "timeout", "start_period"):
            value = service["healthcheck"][key]
            assert DURATION.match(value), f"{name}.healthcheck.{key}={value!r}"


# --- Dockerfile and .dockerignore ---------------------------------------------------------------
def test_dockerfile_runs_as_non_root_on_slim_python() -> None:
    (base,) = instructions("FROM")
    assert re.fullmatch(r"python:3\.1[1-9]-slim", base), base
    ordered = dockerfile_instructions()
    users = [args for kw, args in ordered if kw == "USER"]
    assert users, "the image must not run as root"
    user = users[-1].split(":")[0]
    assert user not in {"root", "0"}
    last_user = max(i for i, (kw, _) in enumerate(ordered) if kw == "USER")
    first_entry = min(i for i, (kw, _) in enumerate(ordered) if kw == "ENTRYPOINT")
    assert last_user < first_entry
    run_after_user = [i for i, (kw, _) in enumerate(ordered) if kw == "RUN" and i > last_user]
    assert not run_after_user, "install as root, then drop privileges"


def test_dockerfile_entrypoint_and_environment() -> None:
    assert json.loads(instructions("ENTRYPOINT")[0]) == ["timbal-jobs-bot"]
    assert json.loads(instructions("CMD")[0]) == ["run"]
    assert "3000" in instructions("EXPOSE")[0].split()
    env = " ".join(instructions("ENV"))
    assert "PYTHONUNBUFFERED=1" in env.split()
    assert any("pip install --no-cache-dir ." in run for run in instructions("RUN"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert "timbal-jobs-bot" in scripts


def _ignored(path: str, patterns: list[str]) -> bool:
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        if fnmatch.fnmatch(path, body) or fnmatch.fnmatch(path, body.removeprefix("**/")):
            ignored = not negate
    return ignored


def _dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")]


def test_dockerfile_copies_what_the_distribution_needs_and_dockerignore_keeps_it() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    sources: set[str] = set()
    for args in instructions("COPY"):
        *srcs, _dest = args.split()
        sources.update(s.rstrip("/") for s in srcs if not s.startswith("--"))
    packages = project["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = {p.rstrip("*") for p in packages} | {"pyproject.toml", project["project"]["readme"]}
    assert needed <= sources
    patterns = _dockerignore()
    for source in sorted(sources):
        assert (ROOT / source).exists(), source
        assert not _ignored(source, patterns), f".dockerignore drops {source}"


@pytest.mark.parametrize(
    "path", [".env", ".env.production", ".git", ".venv", "tests", "bot/__pycache__"]
)
def test_dockerignore_keeps_secrets_and_clutter_out(path: str) -> None:
    assert _ignored(path, _dockerignore())


def test_dockerignore_matcher_sees_negation() -> None:
    assert not _ignored(".env.example", _dockerignore())
    assert not _ignored("bot", ["tests", "!bot"])


# --- slack-app-manifest.yml ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    return load_yaml("slack-app-manifest.yml")


def test_manifest_display_and_bot_user(manifest: dict[str, Any]) -> None:
    info = manifest["display_information"]
    assert 0 < len(info["name"]) <= 35
    assert 0 < len(info["description"]) <= 140
    assert 175 <= len(info["long_description"]) <= 4000
    assert re.fullmatch(r"#[0-9a-fA-F]{6}", info["background_color"])
    bot_user = manifest["features"]["bot_user"]
    assert bot_user["display_name"] == info["name"] == "Timbal Jobs"  # /invite @Timbal Jobs


def test_manifest_jobs_command(manifest: dict[str, Any]) -> None:
    (command,) = manifest["features"]["slash_commands"]
    assert command["command"] == "/jobs"
    assert command["description"]
    assert command["usage_hint"].startswith("[connector] [state=failed] | subscribe")
    assert command["should_escape"] is True
    assert command["url"] == "https://YOUR-HOST/slack/events"


def test_manifest_scopes_and_settings(manifest: dict[str, Any]) -> None:
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    assert {*REQUIRED_SCOPES, "groups:history", "groups:read"} == scopes
    settings = manifest["settings"]
    assert settings["interactivity"]["is_enabled"] is True
    assert settings["interactivity"]["request_url"] == "https://YOUR-HOST/slack/events"
    assert settings["socket_mode_enabled"] is True
    assert settings["org_deploy_enabled"] is False
    assert settings["token_rotation_enabled"] is False


# --- .env.example -------------------------------------------------------------------------------
def test_env_example_names_every_setting_once() -> None:
    names = [name for name, _, _ in env_example_assignments()]
    assert len(names) == len(set(names)), "a setting is listed twice"
    assert set(names) == {field.upper() for field in Settings.model_fields}


def test_env_example_leaves_only_required_values_to_fill() -> None:
    required = {n.upper() for n, f in Settings.model_fields.items() if f.is_required()}
    active = {name: value for name, value, is_active in env_example_assignments() if is_active}
    assert required <= set(active), "required settings must be lines to fill in, not comments"
    assert all(value == "" for value in active.values()), "no secret or id in the example"
    assert set(active) - required <= {"SLACK_APP_TOKEN", "ALERT_CHANNEL"}


def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for field in Settings.model_fields:
        monkeypatch.delenv(field.upper(), raising=False)


DUMMIES = {
    "TIMBAL_API_KEY": "tbl-dummy",
    "TIMBAL_ORG_ID": "org_dummy",
    "SLACK_BOT_TOKEN": "xoxb-dummy",
    "SLACK_APP_TOKEN": "xapp-dummy",
    "ALERT_CHANNEL": "C0DUMMY",
}


def wrong_defaults(
    assignments: list[tuple[str, str, bool]], monkeypatch: pytest.MonkeyPatch
) -> list[str]:
    """Settings whose default the example does not show, or shows as another value.

    The example's non-empty values are loaded over dummy required values, as a user's copy
    would be; a value that does not validate raises.
    """
    _clean_env(monkeypatch)
    for name, value in DUMMIES.items():
        monkeypatch.setenv(name, value)
    baseline = Settings()  # required values come from the environment
    written = {name: value for name, value, _ in assignments if value}
    for name, value in written.items():
        monkeypatch.setenv(name, value)
    loaded = Settings()
    wrong = []
    for field, info in Settings.model_fields.items():
        if info.is_required() or info.default is None:
            continue
        if field.upper() not in written or getattr(loaded, field) != getattr(baseline, field):
            wrong.append(field.upper())
    return wrong


def test_env_example_values_load_and_show_the_real_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert wrong_defaults(env_example_assignments(), monkeypatch) == []


@pytest.mark.parametrize(
    ("line", "wrong"),
    [
        ("# POLL_INTERVAL_SECONDS=30", ["POLL_INTERVAL_SECONDS"]),
        ("# FAILURE_STATES=failed,error", ["FAILURE_STATES"]),
        ("# LOG_FORMAT=", ["LOG_FORMAT"]),  # an empty value shows no default
    ],
)
def test_a_wrong_documented_default_is_caught(
    monkeypatch: pytest.MonkeyPatch, line: str, wrong: list[str]
) -> None:
    name = line.removeprefix("# ").split("=")[0]
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    text = re.sub(rf"^# {name}=.*$", line, text, flags=re.MULTILINE)
    assert wrong_defaults(env_example_assignments(text), monkeypatch) == wrong


def test_an_invalid_documented_value_fails_to_load(monkeypatch: pytest.MonkeyPatch) -> None:
    assignments = [*env_example_assignments(), ("POLL_INTERVAL_SECONDS", "0.5", False)]
    with pytest.raises(ValidationError, match="poll_interval_seconds"):
        wrong_defaults(assignments, monkeypatch)


# --- docs/deploy.md stays true to the code ------------------------------------------------------
def test_deploy_doc_lists_every_redis_key_and_only_those() -> None:
    from storage.keys import Keys

    doc = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"`…(:[a-z:]+(?::<channel>)?)`", doc))
    keys = Keys("tjb", "org")
    base = "tjb:{org}"
    actual = {
        getattr(keys, name).removeprefix(base)
        for name in dir(Keys)
        if isinstance(getattr(Keys, name, None), property) and not name.startswith("_")
    }
    actual |= {keys.channel_pace("<channel>").removeprefix(base)}
    actual |= {keys.channel_pause("<channel>").removeprefix(base)}
    assert documented == actual


@pytest.mark.parametrize("flag", ["--no-poller", "--no-notifier", "--no-commands"])
def test_deploy_doc_role_flags_exist(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    from bot.cli import main

    assert flag in (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--help"])
    assert exit_info.value.code == 0
    assert flag in capsys.readouterr().out
