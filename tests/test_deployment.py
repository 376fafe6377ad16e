"""The production deployment: docker-compose.yml (read back through the real Docker Compose
plugin, ``docker compose config``, which needs no engine), .env.example, the Dockerfile and
.dockerignore.

Without the Compose plugin the compose tests are skipped with the reason, unless
``CARNET_TEST_REQUIRE_COMPOSE=1`` (set by ``.ci/run`` once it has the plugin) makes that a
failure.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
PLUGIN = "/usr/libexec/docker/cli-plugins/docker-compose"  # also runs standalone

SERVICES = {"postgres", "minio", "mailpit", "idp", "api", "dispatcher", "migrate"}
SECRETS = {"CARNET_DB_PASSWORD", "MINIO_ROOT_PASSWORD", "CARNET_PORTAL_CLIENT_SECRET",
           "CARNET_METRICS_TOKEN"}
# Settings the lead is adding in the same change (log format, the /metrics token, the
# issuer's address inside the network): allowed before service.settings has them.
PENDING_FIELDS = {"log_format", "metrics_token", "issuer_internal_url"}
# Variables that configure the stack itself (compose interpolation), never a container.
COMPOSE_ONLY = {"CARNET_DB_PASSWORD", "CARNET_API_WORKERS"}
SETTING_NAMES = {f"CARNET_{name.upper()}" for name in {*Settings.model_fields, *PENDING_FIELDS}}


def _compose_command() -> list[str] | None:
    for command in (["docker", "compose"], [PLUGIN]):
        try:
            subprocess.run([*command, "version"], check=True, capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            continue
        return command
    return None


def _env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {name.strip(): value.strip() for name, value in pairs}


def _interpolated() -> set[str]:
    return set(re.findall(r"\$\{(\w+)", COMPOSE_FILE.read_text()))


@pytest.fixture(scope="module")
def compose() -> list[str]:
    command = _compose_command()
    if command is None:
        reason = "the Docker Compose plugin is missing (docker compose version fails)"
        if os.environ.get("CARNET_TEST_REQUIRE_COMPOSE") == "1":
            pytest.fail(f"CARNET_TEST_REQUIRE_COMPOSE=1 but {reason}")
        pytest.skip(reason)
    return command


def _config(compose: list[str], env_file: Path) -> subprocess.CompletedProcess[str]:
    # Neither the caller's environment nor a local .env may supply the variables.
    env = {k: v for k, v in os.environ.items()
           if k not in _interpolated() and not k.startswith("COMPOSE_")}
    return subprocess.run(
        [*compose, "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT),
         "--env-file", str(env_file), "config", "--format", "json"],
        capture_output=True, text=True, env=env, timeout=120, check=False)


@pytest.fixture(scope="module")
def config(compose: list[str]) -> dict[str, Any]:
    done = _config(compose, ENV_EXAMPLE)
    assert done.returncode == 0, done.stderr
    parsed: dict[str, Any] = json.loads(done.stdout)
    return parsed


def test_services_healthchecks_and_start_order(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) >= SERVICES
    for name, service in services.items():
        if name != "migrate":
            check = service.get("healthcheck", {})
            assert check.get("test") and not check.get("disable"), f"{name} has no healthcheck"
    migrate = services["migrate"]
    assert migrate["command"] == ["migrate"]
    assert migrate["restart"] == "no"
    for name in ("api", "dispatcher", "idp"):
        assert services[name]["depends_on"]["migrate"]["condition"] == \
            "service_completed_successfully", name
    assert services["idp"]["command"] == ["idp"]
    assert services["api"]["command"][0] == "serve"
    assert "/ready" in " ".join(services["api"]["healthcheck"]["test"])


def test_the_dispatcher_runs_apart_from_the_api(config: dict[str, Any]) -> None:
    services = config["services"]
    api = services["api"]["environment"]
    assert api["CARNET_DISPATCHER_ENABLED"] == "false"
    assert api["CARNET_IDP_ENABLED"] == "false"
    dispatchers = [s for s in services.values() if s.get("command") == ["dispatcher"]]
    assert dispatchers, "no service runs carnet dispatcher"
    for name in ("CARNET_DATABASE_URL", "CARNET_SMTP_URL", "CARNET_PUBLIC_URL"):
        assert all(d["environment"][name] == api[name] for d in dispatchers), name


def test_volumes_are_named_volumes(config: dict[str, Any]) -> None:
    declared = set(config.get("volumes", {}))
    mounts = [(name, mount) for name, service in config["services"].items()
              for mount in service.get("volumes", [])]
    assert {m["source"] for _, m in mounts} >= {"pgdata", "minio-data", "idp-keys"}
    for name, mount in mounts:
        assert mount["type"] == "volume" and mount["source"] in declared, (name, mount)


def test_service_environments_are_valid_settings(config: dict[str, Any],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def settings_of(name: str) -> Settings:
        for variable in [v for v in os.environ if v.startswith("CARNET_")]:
            monkeypatch.delenv(variable)
        for variable, value in config["services"][name]["environment"].items():
            monkeypatch.setenv(variable, value)
        return Settings()

    api, idp = settings_of("api"), settings_of("idp")
    assert api.effective_database_url.startswith("postgresql+asyncpg://carnet:")
    assert not api.idp_enabled and not api.dispatcher_enabled
    assert api.blob_url and api.blob_url.startswith("s3://")
    assert api.effective_issuer == idp.embedded_issuer  # the tokens' iss, as the API expects
    for name in ("dispatcher", "migrate"):
        assert settings_of(name).effective_database_url == api.effective_database_url, name


def test_every_secret_is_required(compose: list[str], tmp_path: Path) -> None:
    required = set(re.findall(r"\$\{(\w+):\?", COMPOSE_FILE.read_text()))
    assert required >= SECRETS
    example = _env_example()
    for missing in sorted(required):
        env_file = tmp_path / f"without-{missing}.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in example.items() if k != missing))
        done = _config(compose, env_file)
        assert done.returncode != 0 and missing in done.stderr, (missing, done.stderr)
    empty = tmp_path / "empty.env"
    empty.write_text("")
    done = _config(compose, empty)
    assert done.returncode != 0 and "required variable" in done.stderr, done.stderr


def test_env_example_names_what_compose_needs() -> None:
    assert set(_env_example()) == _interpolated()


def test_carnet_variables_are_settings(config: dict[str, Any]) -> None:
    passed = {variable for service in config["services"].values()
              for variable in service.get("environment") or {}}
    assert {v for v in passed if v.startswith("CARNET_")} <= SETTING_NAMES
    assert not passed & COMPOSE_ONLY
    stack = {v for v in {*_env_example(), *_interpolated()} if v.startswith("CARNET_")}
    assert stack <= SETTING_NAMES | COMPOSE_ONLY, stack - SETTING_NAMES - COMPOSE_ONLY


def test_no_literal_secret_in_compose_file() -> None:
    text = COMPOSE_FILE.read_text()
    assert "change-me" not in text
    required = r"\$\{\w+:\?[^}]*\}"
    secret_keys = re.findall(r"^\s*-?\s*([\w.-]*(?:password|secret|token)[\w.-]*)\s*[:=]\s*(.+)$",
                             text, re.IGNORECASE | re.MULTILINE)
    assert {key for key, _ in secret_keys} >= SECRETS - COMPOSE_ONLY
    for key, value in secret_keys:
        assert re.fullmatch(required, value.strip().strip("\"'")), (key, value)
    for password in re.findall(r"://[\w.-]+:([^@\n]+)@", text):
        assert re.fullmatch(required, password), password


def _final_stage() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    instructions = [tuple(line.strip().split(None, 1)) for line in text.splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    starts = [i for i, (keyword, *_) in enumerate(instructions) if keyword.upper() == "FROM"]
    assert len(starts) >= 2, "the Dockerfile is not multi-stage"
    return [(keyword.upper(), rest) for keyword, rest in instructions[starts[-1]:]]


def test_dockerfile_final_stage() -> None:
    stage = _final_stage()
    users = [rest.strip() for keyword, rest in stage if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in {"root", "0"}, users
    runs = " ".join(rest for keyword, rest in stage if keyword == "RUN")
    assert not re.search(r"\b(gcc|g\+\+|build-essential|clang|make)\b", runs), runs
    checks = [rest for keyword, rest in stage if keyword == "HEALTHCHECK"]
    assert checks and "NONE" not in checks[-1].upper() and "/health" in checks[-1]
    assert ("COPY", "--from=builder /opt/venv /opt/venv") in stage
    assert ("ENTRYPOINT", '["carnet"]') in stage


def test_dockerignore_keeps_secrets_and_data_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert ignored >= {".git", ".env", ".venv", "carnet-data", "test-artifacts",
                       "**/__pycache__"}
