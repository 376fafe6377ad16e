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
    ("CARNET_LOG_FORMAT", "xml"),
    ("CARNET_ISSUER_INTERNAL_URL", "idp:8000/idp"),
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


def test_notification_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CARNET_PUBLIC_URL", raising=False)
    settings = Settings()
    assert settings.smtp_url is None
    assert settings.mail_from == "Carnet <no-reply@carnet.localhost>"
    assert settings.dispatcher_enabled is True
    assert settings.dispatcher_inbox_writes == 8
    assert (settings.dispatcher_poll_seconds, settings.dispatcher_max_attempts,
            settings.dispatcher_backoff_seconds, settings.webhook_timeout_seconds) == (
        1.0, 8, 2.0, 10.0)
    assert settings.portal_url == "http://127.0.0.1:8000/portal"


def test_the_portal_lives_under_the_public_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARNET_PUBLIC_URL", "https://carnet.example.fr/")
    assert Settings().portal_url == "https://carnet.example.fr/portal"


def test_a_good_smtp_url_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARNET_SMTP_URL", "smtps://user:p%40ss@mail.example.fr")
    assert Settings().smtp_url == "smtps://user:p%40ss@mail.example.fr"


@pytest.mark.parametrize(("value", "why"), [
    ("http://mail.example.fr", "unsupported SMTP URL scheme"),
    ("smtp://", "names no host"),
    ("smtp://mail?starttls=perhaps", "unknown SMTP URL option"),
])
def test_a_bad_smtp_url_fails_at_start(value: str, why: str,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARNET_SMTP_URL", value)
    with pytest.raises(ValidationError, match=why) as raised:
        Settings()
    assert "smtp_url" in str(raised.value)


@pytest.mark.parametrize(("variable", "value"), [
    ("CARNET_DISPATCHER_POLL_SECONDS", "0.01"),
    ("CARNET_DISPATCHER_POLL_SECONDS", "61"),
    ("CARNET_DISPATCHER_MAX_ATTEMPTS", "0"),
    ("CARNET_DISPATCHER_MAX_ATTEMPTS", "101"),
    ("CARNET_DISPATCHER_BACKOFF_SECONDS", "0.001"),
    ("CARNET_DISPATCHER_BACKOFF_SECONDS", "3601"),
    ("CARNET_DISPATCHER_INBOX_WRITES", "0"),
    ("CARNET_DISPATCHER_INBOX_WRITES", "101"),
    ("CARNET_WEBHOOK_TIMEOUT_SECONDS", "0"),
    ("CARNET_DISPATCHER_ENABLED", "sometimes"),
])
def test_bad_dispatcher_settings_are_refused(variable: str, value: str,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert variable.removeprefix("CARNET_").lower() in str(raised.value)


def test_the_dispatcher_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARNET_DISPATCHER_ENABLED", "false")
    monkeypatch.setenv("CARNET_DISPATCHER_BACKOFF_SECONDS", "0.5")
    monkeypatch.setenv("CARNET_DISPATCHER_INBOX_WRITES", "3")
    settings = Settings()
    assert settings.dispatcher_enabled is False
    assert settings.dispatcher_backoff_seconds == 0.5
    assert settings.dispatcher_inbox_writes == 3


@pytest.mark.parametrize("value", ["Carnet", "no-reply", "Carnet <>"])
def test_the_mail_sender_must_be_an_address(value: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARNET_MAIL_FROM", value)
    with pytest.raises(ValidationError) as raised:
        Settings()
    assert "mail_from" in str(raised.value)


def test_a_bad_setting_is_named_without_echoing_its_value() -> None:
    """A mistyped SMTP URL must not print its password in the start-up error."""
    with pytest.raises(ValidationError) as refused:
        Settings(smtp_url="smtpx://mailer:s3cret-pass@mail.example:25")
    assert "smtp_url" in str(refused.value)
    assert "s3cret-pass" not in str(refused.value)


def test_the_issuer_back_channel(monkeypatch: pytest.MonkeyPatch) -> None:
    """Browsers and the tokens' iss use the public issuer; the service's own calls may go
    through the container network."""
    monkeypatch.setenv("CARNET_ISSUER_URL", "http://localhost:8001/idp")
    assert Settings().issuer_backchannel == "http://localhost:8001/idp"
    assert Settings().effective_jwks_url == "http://localhost:8001/idp/jwks"
    monkeypatch.setenv("CARNET_ISSUER_INTERNAL_URL", "http://idp:8000/idp/")
    settings = Settings()
    assert settings.effective_issuer == "http://localhost:8001/idp"
    assert settings.issuer_backchannel == "http://idp:8000/idp"
    assert settings.effective_jwks_url == "http://idp:8000/idp/jwks"
