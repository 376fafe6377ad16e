"""The ``carnet`` command."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from service.cli import main


def test_help_lists_the_sub_commands() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "migrate", "seed"):
        assert command in result.output


def test_seed_demo_is_idempotent_and_prints_json(tmp_path: Path) -> None:
    env = {"CARNET_DATA_DIR": str(tmp_path)}
    first = CliRunner().invoke(main, ["seed", "--demo", "--json"], env=env)
    second = CliRunner().invoke(main, ["seed", "--demo", "--json"], env=env)
    assert first.exit_code == 0, first.output
    first_statuses = {e["response"]["status"] for e in json.loads(first.stdout)["entry"]}
    second_statuses = {e["response"]["status"] for e in json.loads(second.stdout)["entry"]}
    assert first_statuses == {"201 Created"}
    assert second_statuses == {"200 OK"}
    assert (tmp_path / "carnet.db").exists()


def test_bad_configuration_is_reported_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["migrate"], env={"CARNET_DATABASE_URL": "mysql://x/y"})
    assert result.exit_code != 0
    assert "unsupported database URL scheme" in result.output


@pytest.mark.parametrize("module", ["service.cli"])
def test_console_entry_point_runs(module: str) -> None:
    completed = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                               text=True, check=False, timeout=60)
    assert completed.returncode == 0
    assert "serve" in completed.stdout
