"""Settings come from CARNET_* variables and are validated at start."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_defaults_use_sqlite_in_the_data_directory(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARNET_DATA_DIR", str(tmp_path))
    settings = Settings()
    assert settings.effective_database_url == f"sqlite+aiosqlite:///{tmp_path / 'carnet.db'}"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)


@pytest.mark.parametrize(("given", "expected"), [
    ("postgresql://u@h/db", "postgresql+asyncpg://u@h/db"),
    ("postgres://u@h/db", "postgresql+asyncpg://u@h/db"),
    ("postgresql+asyncpg://u@h/db", "postgresql+asyncpg://u@h/db"),
    ("sqlite:////tmp/x.db", "sqlite+aiosqlite:////tmp/x.db"),
])
def test_database_urls_select_an_async_driver(given: str, expected: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARNET_DATABASE_URL", given)
    assert Settings().effective_database_url == expected


@pytest.mark.parametrize(("variable", "value"), [
    ("CARNET_DATABASE_URL", "mysql://u@h/db"),
    ("CARNET_DATABASE_URL", "not a url"),
    ("CARNET_PORT", "99999"),
    ("CARNET_MAX_PAGE_SIZE", "0"),
    ("CARNET_LOG_LEVEL", "chatty"),
])
def test_bad_values_are_refused_with_the_variable_named(variable: str, value: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert variable.removeprefix("CARNET_").lower() in str(raised.value)


def test_public_url_loses_its_trailing_slash(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARNET_PUBLIC_URL", "https://carnet.example.fr/")
    assert Settings().public_url == "https://carnet.example.fr"


def test_untested_postgresql_drivers_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARNET_DATABASE_URL", "postgresql+psycopg://u@h/db")
    with pytest.raises(ValidationError, match="unsupported database URL scheme"):
        Settings()
