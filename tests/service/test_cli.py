"""The ``carnet`` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from jose import jwt

from auth.keys import KeyStore
from fhir_profiles.ins import nir_problem
from service.cli import main, shared_metrics
from service.demo import DOCUMENTS
from service.ops.metrics import MULTIPROCESS_DIR_VARIABLE


def test_help_lists_the_sub_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "migrate", "seed", "blobs"):
        assert command in result.output


def test_seed_demo_is_idempotent_and_prints_json(tmp_path: Path) -> None:
    env = {"CARNET_DATA_DIR": str(tmp_path)}
    first = CliRunner().invoke(main, ["seed", "--demo", "--json"], env=env)
    second = CliRunner().invoke(main, ["seed", "--demo", "--json"], env=env)
    assert first.exit_code == 0, first.output
    seeded, again = json.loads(first.stdout), json.loads(second.stdout)
    assert seeded == again  # same resources, same ids: nothing created twice
    assert len(seeded["patients"]) == 3
    assert all(nir_problem(p["ins"]) is None for p in seeded["patients"])
    professions = sorted(p["profession_code"] for p in seeded["professionals"])
    assert professions == ["10", "10", "21", "60", "70"]
    doctors = {p["rpps"] for p in seeded["professionals"] if p["profession_code"] == "10"}
    assert seeded["attending_doctors"] and all(
        link["rpps"] in doctors for link in seeded["attending_doctors"])
    assert seeded["apps"][0]["client_id"] == "demo-app"
    assert len(seeded["documents"]) == len(DOCUMENTS)
    assert (tmp_path / "carnet.db").exists()


def test_blobs_gc_removes_only_unreferenced_blobs(tmp_path: Path) -> None:
    env = {"CARNET_DATA_DIR": str(tmp_path)}
    CliRunner().invoke(main, ["seed", "--demo"], env=env)
    blob_files = sorted(p for p in (tmp_path / "blobs").rglob("*")
                        if p.is_file() and "tmp" not in p.relative_to(tmp_path).parts)
    assert len(blob_files) == len(DOCUMENTS)  # the demo documents' bytes
    orphan = tmp_path / "blobs" / "00" / "00" / ("0" * 64)
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"left by a failed transaction")
    written = orphan.stat().st_mtime - 10
    os.utime(orphan, (written, written))
    recent = CliRunner().invoke(main, ["blobs", "gc"], env=env)  # within the grace period
    assert recent.exit_code == 0, recent.output
    assert orphan.exists()
    result = CliRunner().invoke(main, ["blobs", "gc", "--grace", "0"], env=env)
    assert result.exit_code == 0, result.output
    assert "removed 1 unreferenced blob(s)" in result.output
    assert not orphan.exists()
    assert all(p.exists() for p in blob_files)


def test_token_commands_print_tokens_the_server_accepts(tmp_path: Path) -> None:
    env = {"CARNET_DATA_DIR": str(tmp_path)}
    seeded = json.loads(CliRunner().invoke(main, ["seed", "--demo", "--json"], env=env).stdout)
    rpps = seeded["professionals"][0]["rpps"]
    runs = {
        "professional": ["token", "professional", "--rpps", rpps],
        "patient": ["token", "patient", "--ins", seeded["patients"][0]["ins"]],
        "app": ["token", "app", "--client-id", "demo-app", "--scope", "system/Patient.rs"],
    }
    for kind, args in runs.items():
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code == 0, result.output
        claims = jwt.get_unverified_claims(result.stdout.strip())
        assert claims["iss"] == "http://127.0.0.1:8000/idp", kind
    professional = jwt.get_unverified_claims(
        CliRunner().invoke(main, runs["professional"], env=env).stdout.strip())
    assert professional["SubjectNameID"] == "8" + rpps
    assert professional["SubjectRefPro"]["exercices"][0]["codeProfession"] == "10"


@pytest.mark.parametrize("args, message", [
    (["token", "professional", "--rpps", "19999999999"], "not in the directory"),
    (["token", "app", "--client-id", "nobody", "--scope", "system/Patient.rs"],
     "no registered app"),
    (["token", "app", "--client-id", "demo-app", "--scope", "system/AuditEvent.d"],
     "none of the scopes"),
    (["token", "app", "--client-id", "demo-app", "--scope", "system/Patient.xyz"], "perm"),
])
def test_token_commands_refuse_clearly(tmp_path: Path, args: list[str], message: str) -> None:
    env = {"CARNET_DATA_DIR": str(tmp_path)}
    CliRunner().invoke(main, ["seed", "--demo"], env=env)
    result = CliRunner().invoke(main, args, env=env)
    assert result.exit_code != 0
    assert message in result.output


def test_keys_rotate_adds_a_signing_key_and_keeps_the_old_one_published(tmp_path: Path) -> None:
    env = {"CARNET_DATA_DIR": str(tmp_path)}
    store = KeyStore(tmp_path / "keys")
    old = store.signing_key().kid
    result = CliRunner().invoke(main, ["keys", "rotate"], env=env)
    assert result.exit_code == 0, result.output
    assert store.signing_key().kid != old
    assert old in {key["kid"] for key in store.jwks()["keys"]}


def test_bad_configuration_is_reported_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["migrate"], env={
        "CARNET_DATABASE_URL": "mysql://root:hunter2@x/y", "CARNET_LOG_FORMAT": "xml"})
    assert result.exit_code != 0
    assert "CARNET_DATABASE_URL: Value error, unsupported database URL scheme" in result.output
    assert "CARNET_LOG_FORMAT: Input should be 'json' or 'text'" in result.output
    assert "hunter2" not in result.output


def test_several_workers_share_one_metrics_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(MULTIPROCESS_DIR_VARIABLE, raising=False)
    with shared_metrics(workers=1):
        assert MULTIPROCESS_DIR_VARIABLE not in os.environ
    with shared_metrics(workers=3):
        directory = Path(os.environ[MULTIPROCESS_DIR_VARIABLE])
        assert directory.is_dir()
    assert MULTIPROCESS_DIR_VARIABLE not in os.environ
    assert not directory.exists()


@pytest.mark.parametrize("module", ["service.cli"])
def test_console_entry_point_runs(module: str) -> None:
    completed = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                               text=True, check=False, timeout=60)
    assert completed.returncode == 0
    assert "serve" in completed.stdout
