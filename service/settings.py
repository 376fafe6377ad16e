"""Settings: one typed object read from ``CARNET_*`` environment variables."""

from __future__ import annotations

from email.utils import parseaddr
from functools import cached_property
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, IPvAnyNetwork, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.notify.email import parse_smtp_url

_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
}
_SUPPORTED_URL_SCHEMES = ("sqlite+aiosqlite", "postgresql+asyncpg")


class Settings(BaseSettings):
    """Every setting Carnet reads; see the README's configuration table."""

    # A bad value is named in the error, never echoed: URLs may carry passwords.
    model_config = SettingsConfigDict(env_prefix="CARNET_", extra="ignore",
                                      hide_input_in_errors=True)

    data_dir: Path = Field(default=Path("carnet-data"),
                           description="Where the embedded database and blobs live.")
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: SQLite file in the data directory. "
                    "postgresql://... selects asyncpg.")
    public_url: str | None = Field(
        default=None,
        description="Base URL clients use (e.g. https://carnet.example.fr); default: "
                    "taken from each request.")
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    default_page_size: int = Field(default=20, ge=1, le=1000)
    max_page_size: int = Field(default=500, ge=1, le=10_000)
    max_body_bytes: int = Field(default=20 * 1024 * 1024, ge=1024,
                                description="Largest JSON request body accepted (413 above).")
    max_bundle_entries: int = Field(
        default=1000, ge=1, le=100_000,
        description="Most entries a transaction or batch Bundle may hold (413 above): one "
                    "transaction holds its write lock until every entry is filed.")
    max_binary_bytes: int = Field(default=100 * 1024 * 1024, ge=1024,
                                  description="Largest raw document upload (POST /fhir/Binary "
                                              "with the document's own content type).")
    blob_url: str | None = Field(
        default=None,
        description="Where document bytes live: default the data directory; file:///path or "
                    "s3://bucket/prefix (credentials and endpoint from the AWS_* variables).")
    blob_gc_grace: int = Field(default=3600, ge=0, le=30 * 86_400,
                               description="Seconds an unreferenced blob is kept before the "
                                           "garbage collector removes it.")
    blob_gc_interval: int = Field(default=600, ge=0, le=86_400,
                                  description="Seconds between two sweeps of unreferenced blobs "
                                              "by each API process (0: never; see carnet blobs "
                                              "gc).")
    emergency_access_seconds: int = Field(
        default=2 * 3600, ge=60, le=86_400,
        description="How long an emergency access (bris de glace, centre 15) stays open for "
                    "the professional who opened it.")
    operator_clients: list[str] = Field(
        default_factory=list,
        description="OAuth client ids whose client-credentials tokens act as Carnet's "
                    "operators (migration, reconciliation): every record is open to them, "
                    "within their scopes, and every access is audited. Empty by default: an "
                    "app otherwise reads a record only with the patient's grant. JSON list, "
                    "e.g. [\"ops-tool\"].")
    db_pool_size: int = Field(default=20, ge=1, le=500)
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = Field(
        default="json", description="json: one JSON object per line (request id, route, "
                                    "status, duration; never a name, an INS or a content); "
                                    "text: for a terminal.")
    metrics_token: SecretStr | None = Field(
        default=None, description="When set, GET /metrics requires 'Authorization: Bearer "
                                  "<this token>'; unset, the metrics are public (they hold "
                                  "counts, routes and statuses, no health data).")
    issuer_url: str | None = Field(
        default=None,
        description="OIDC issuer whose tokens the FHIR API accepts; default: the embedded "
                    "mock Pro Santé Connect at <public URL>/idp.")
    issuer_internal_url: str | None = Field(
        default=None,
        description="Where this service itself reaches the issuer (token, revocation, JWKS) "
                    "when that differs from the issuer URL browsers and tokens use (e.g. "
                    "http://idp:8000/idp inside a container network); default: the issuer URL.")
    jwks_url: str | None = Field(default=None, description="Where the issuer publishes its "
                                 "keys; default: <issuer (internal) URL>/jwks.")
    idp_enabled: bool = Field(default=True, description="Mount the mock identity provider "
                              "at /idp.")
    token_audience: str = Field(default="carnet", min_length=1,
                                description="The aud claim access tokens must carry.")
    keys_dir: Path | None = Field(default=None, description="Where the identity provider's "
                                  "signing keys live; default: <data dir>/keys.")
    access_token_ttl: int = Field(default=900, ge=30, le=86_400,
                                  description="Access-token lifetime in seconds.")
    refresh_token_ttl: int = Field(default=8 * 3600, ge=60, le=90 * 86_400,
                                   description="Refresh-token lifetime in seconds.")
    token_cache_seconds: int = Field(default=60, ge=0, le=600,
                                     description="How long a verified token is remembered "
                                                 "per process (0: verify every request).")
    token_leeway: int = Field(default=30, ge=0, le=300,
                              description="Clock skew tolerated on exp/nbf/iat, in seconds.")
    smtp_url: str | None = Field(
        default=None,
        description="Where patient e-mails are handed over: smtp://[user:password@]host[:port]"
                    "[?starttls=true] or smtps://... (implicit TLS); default: no e-mail.")
    mail_from: str = Field(default="Carnet <no-reply@carnet.localhost>", min_length=3,
                           description="The From of patient e-mails.")
    dispatcher_enabled: bool = Field(default=True, description="Run the outbox dispatcher "
                                     "(inbox, e-mail, app Subscriptions) inside carnet serve.")
    dispatcher_poll_seconds: float = Field(default=1.0, ge=0.05, le=60,
                                           description="How often the dispatcher looks for "
                                                       "new events and due deliveries.")
    dispatcher_max_attempts: int = Field(default=8, ge=1, le=100,
                                         description="Attempts of one delivery before it is "
                                                     "marked failed.")
    dispatcher_backoff_seconds: float = Field(default=2.0, ge=0.01, le=3600,
                                              description="Delay before the first retry, "
                                                          "doubled after each failed attempt.")
    dispatcher_inbox_writes: int = Field(default=8, ge=1, le=100,
                                         description="Inbox notifications one process writes "
                                                     "at once (each on a database connection "
                                                     "of its own).")
    webhook_allowed_networks: list[IPvAnyNetwork] = Field(
        default_factory=list,
        description="Non-public networks (loopback, private, link-local...) an app's "
                    "Subscription endpoint may be in, as a JSON list of CIDRs; public "
                    "addresses are always allowed. Default: none (no request forgery into "
                    "the operator's network).")
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=300,
                                           description="How long one notification (an app's "
                                                       "endpoint, the SMTP server) may take.")

    portal_enabled: bool = Field(default=True, description="Serve the patient portal at "
                                 "/portal (an OAuth client of the issuer, 'carnet-portal').")
    portal_client_secret: SecretStr | None = Field(
        default=None, description="Makes the portal a confidential client of the issuer; "
                                  "without it the portal is a public client (PKCE only).")
    portal_session_seconds: int = Field(default=8 * 3600, ge=300, le=7 * 86_400,
                                        description="How long a portal login lasts at most.")

    rate_limit_token: int = Field(
        default=20, ge=0, le=1_000_000,
        description="Failed client authentications a minute per client id and address at "
                    "the token endpoint before it answers 429 (0: no limit).")
    rate_limit_login: int = Field(
        default=20, ge=0, le=1_000_000,
        description="Refused logins at the identity provider, and portal logins started but "
                    "not completed, a minute per address before 429 (0: no limit).")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Browser origins allowed to call the FHIR API cross-origin (CORS), as a "
                    "JSON list, e.g. [\"https://app.example.fr\"]; empty: no CORS headers.")

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, url: str | None) -> str | None:
        if url is None:
            return None
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ValueError("CARNET_DATABASE_URL must look like postgresql://user@host/db")
        scheme = _ASYNC_DRIVERS.get(scheme, scheme)
        if scheme not in _SUPPORTED_URL_SCHEMES:
            raise ValueError(f"unsupported database URL scheme {scheme!r}; "
                             f"use one of {', '.join(_SUPPORTED_URL_SCHEMES)}")
        return f"{scheme}://{rest}"

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, url: str | None) -> str | None:
        """A bad address fails at start, not at the first e-mail."""
        if url:
            parse_smtp_url(url)
        return url or None

    @field_validator("mail_from")
    @classmethod
    def _mail_address(cls, sender: str) -> str:
        if "@" not in parseaddr(sender)[1] or any(c in sender for c in "\r\n"):
            raise ValueError("must be an e-mail address, e.g. Carnet <no-reply@carnet.example.fr>")
        return sender

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, origins: list[str]) -> list[str]:
        """Exact origins only: a wildcard or a path would not mean what it seems to."""
        cleaned = []
        for origin in origins:
            parts = urlsplit(origin.rstrip("/"))
            if (parts.scheme not in ("http", "https") or not parts.hostname or parts.path
                    or parts.query or parts.fragment or "*" in origin or "@" in parts.netloc):
                raise ValueError("each origin must look like https://app.example.fr[:port]")
            cleaned.append(f"{parts.scheme}://{parts.netloc.lower()}")
        return cleaned

    @field_validator("public_url", "issuer_url", "issuer_internal_url", "jwks_url")
    @classmethod
    def _no_trailing_slash(cls, url: str | None) -> str | None:
        if url and not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return url.rstrip("/") if url else url

    @property
    def local_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def portal_url(self) -> str:
        """The patient portal's address, the only link a patient e-mail carries."""
        return f"{self.local_url}/portal"

    @property
    def embedded_issuer(self) -> str:
        return f"{self.local_url}/idp"

    @property
    def effective_issuer(self) -> str:
        return self.issuer_url or self.embedded_issuer

    @property
    def issuer_backchannel(self) -> str:
        """The issuer's base URL for this service's own calls (token, revocation, JWKS)."""
        return self.issuer_internal_url or self.effective_issuer

    @property
    def effective_jwks_url(self) -> str:
        return self.jwks_url or f"{self.issuer_backchannel}/jwks"

    @property
    def issuer_is_embedded(self) -> bool:
        return self.idp_enabled and self.effective_issuer == self.embedded_issuer

    @property
    def effective_keys_dir(self) -> Path:
        return self.keys_dir or self.data_dir / "keys"

    @cached_property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'carnet.db').resolve()}"
