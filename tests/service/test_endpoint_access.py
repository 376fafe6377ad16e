"""Every endpoint the app serves, classified by what opens it, and each one tried without it.

``ROUTES`` names every (path template, method) of ``create_app(...)`` - the FHIR API, the
notifications, the operations endpoints, the portal and the embedded identity provider - with
the credential it needs. The first test fails when the app serves a route the table does not
classify (a new endpoint cannot arrive unseen) or when the table names a route that is gone.
The others call each non-public route without its credential and with bad ones, and expect
the refusal that kind of route gives: a 401 OperationOutcome with a Bearer challenge (FHIR,
notifications), an OAuth error (the provider), a redirect to the login (portal pages).

Pinned to SQLite: every refusal here is decided before the first query (token, cookie or
client credentials), so the back-end changes nothing while PostgreSQL would double the time;
what the credentials open, per back-end, is the access tests' subject (tests/service/access/).
"""

from __future__ import annotations

import base64
import itertools
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from jose import jwt
from pydantic import SecretStr

from service.app import create_app
from service.portal.session import COOKIE, register_client
from service.settings import Settings
from storage.db import Database
from tests.factories import file_document, ins_patient
from tests.reliability import figures
from tests.service.access.conftest import STRANGER, as_professional
from tests.service.messaging.conftest import message, sent
from tests.service.test_bearer_tokens import (  # noqa: F401 - foreign_pem is a fixture
    app_claims,
    assert_refused,
    foreign_pem,
    kid,
)
from tests.tokens import Tokens, bearer

pytestmark = pytest.mark.parametrize("session_database", ["sqlite"], indirect=True)

PUBLIC = "public"                  # anyone: probes, discovery, documentation, login pages
BEARER = "bearer"                  # an access token of this issuer, for this audience
PORTAL = "portal-session"          # the portal's session cookie (else: to the login)
CLIENT = "client-auth"             # OAuth client authentication (secret, or PKCE's public id)
METRICS = "metrics-token"          # CARNET_METRICS_TOKEN, when set
LOGIN_FORM = "login-form"          # the provider's login form: its own CSRF cookie

ROUTES: dict[tuple[str, str], str] = {
    # FastAPI's documentation of the API (no data)
    ("/openapi.json", "GET"): PUBLIC,
    ("/docs", "GET"): PUBLIC,
    ("/docs/oauth2-redirect", "GET"): PUBLIC,
    ("/redoc", "GET"): PUBLIC,
    # operations
    ("/health", "GET"): PUBLIC,
    ("/ready", "GET"): PUBLIC,
    ("/metrics", "GET"): METRICS,
    # FHIR: discovery is public, everything else needs the token
    ("/fhir/metadata", "GET"): PUBLIC,
    ("/fhir/.well-known/smart-configuration", "GET"): PUBLIC,
    ("/fhir/Patient/$ins-lookup", "POST"): BEARER,
    ("/fhir/Patient/$summary", "GET"): BEARER,
    ("/fhir/Patient/$summary", "POST"): BEARER,
    ("/fhir/Patient/{patient_id}/$summary", "GET"): BEARER,
    ("/fhir", "POST"): BEARER,
    ("/fhir/", "POST"): BEARER,
    ("/fhir/{resource_type}", "GET"): BEARER,
    ("/fhir/{resource_type}", "POST"): BEARER,
    ("/fhir/{resource_type}", "PUT"): BEARER,
    ("/fhir/{resource_type}", "DELETE"): BEARER,
    ("/fhir/{resource_type}/_search", "GET"): BEARER,
    ("/fhir/{resource_type}/_search", "POST"): BEARER,
    ("/fhir/{resource_type}/_history", "GET"): BEARER,
    ("/fhir/{resource_type}/{resource_id}", "GET"): BEARER,
    ("/fhir/{resource_type}/{resource_id}", "PATCH"): BEARER,
    ("/fhir/{resource_type}/{resource_id}", "PUT"): BEARER,
    ("/fhir/{resource_type}/{resource_id}", "DELETE"): BEARER,
    ("/fhir/{resource_type}/{resource_id}/_history", "GET"): BEARER,
    ("/fhir/{resource_type}/{resource_id}/_history/{version_id}", "GET"): BEARER,
    # notifications
    ("/notifications/stream", "GET"): BEARER,
    ("/notifications/deliveries", "GET"): BEARER,
    # the portal: a landing page, the login round trip, then the patient's pages
    ("/portal/static", "*"): PUBLIC,
    ("/portal", "GET"): PUBLIC,
    ("/portal/", "GET"): PUBLIC,
    ("/portal/connexion", "GET"): PUBLIC,
    ("/portal/callback", "GET"): PUBLIC,  # opens nothing without its own pending login
    ("/portal/deconnexion", "POST"): PORTAL,
    ("/portal/evenements", "GET"): PORTAL,
    ("/portal/documents", "GET"): PORTAL,
    ("/portal/documents/{document_id}", "GET"): PORTAL,
    ("/portal/documents/{document_id}/contenu", "GET"): PORTAL,
    ("/portal/documents/{document_id}/masquage", "POST"): PORTAL,
    ("/portal/confidentialite", "GET"): PORTAL,
    ("/portal/confidentialite/dossier", "POST"): PORTAL,
    ("/portal/confidentialite/urgence", "POST"): PORTAL,
    ("/portal/confidentialite/bloquer", "POST"): PORTAL,
    ("/portal/confidentialite/debloquer", "POST"): PORTAL,
    ("/portal/historique", "GET"): PORTAL,
    ("/portal/messages", "GET"): PORTAL,
    ("/portal/messages/{message_id}", "GET"): PORTAL,
    ("/portal/messages/{message_id}/reponse", "POST"): PORTAL,
    ("/portal/ajouter", "GET"): PORTAL,
    ("/portal/ajouter", "POST"): PORTAL,
    # the embedded identity provider
    ("/idp/.well-known/openid-configuration", "GET"): PUBLIC,
    ("/idp/jwks", "GET"): PUBLIC,
    ("/idp/authorize", "GET"): PUBLIC,
    ("/idp/authorize", "POST"): LOGIN_FORM,
    ("/idp/token", "POST"): CLIENT,
    ("/idp/revoke", "POST"): CLIENT,
    ("/idp/userinfo", "GET"): BEARER,
    ("/idp/userinfo", "POST"): BEARER,
}

METRICS_SECRET = "metrics-secret-for-the-tests"


def served_routes(app: FastAPI) -> set[tuple[str, str]]:
    """(path template, method) of every route, included routers flattened; a mount is "*".
    HEAD, which Starlette adds to every GET, is the GET's."""
    served: set[tuple[str, str]] = set()
    for route in iter_route_contexts(app.routes):
        assert route.path is not None
        for method in (route.methods or {"*"}) - {"HEAD"}:
            served.add((route.path, method))
    return served


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The metrics need their token here (without CARNET_METRICS_TOKEN they are public)."""
    return settings.model_copy(update={"metrics_token": SecretStr(METRICS_SECRET)})


@dataclass
class Seeded:
    http: httpx.AsyncClient
    values: dict[str, str]  # path parameter -> an existing resource's id
    resources: dict[str, str]  # resource type -> an existing id

    def url(self, template: str) -> str:
        return template.format(**self.values)

    def urls(self, template: str) -> list[str]:
        """A FHIR route's URL for each kind of resource seeded (the Binary route serves
        bytes, not JSON: it is checked as well as the others)."""
        if "{resource_type}" not in template:
            return [self.url(template)]
        return [template.format(**{**self.values, "resource_type": resource_type,
                                   "resource_id": resource_id})
                for resource_type, resource_id in self.resources.items()]


@pytest.fixture
async def seeded(settings: Settings, database: Database, client: httpx.AsyncClient,
                 tokens: Tokens) -> AsyncIterator[Seeded]:
    """A patient with a document and a message, and a client with no credential at all."""
    patient_id = await ins_patient(client, database, "LEROY", "Julie", gender="female",
                                   birth_date="1985-05-12")
    document = await file_document(client, patient_id)
    to_her = await sent(client, as_professional(tokens, STRANGER), message(patient_id))
    app = create_app(settings, database)
    await register_client(database, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=settings.local_url) as http:
        yield Seeded(http, {"resource_type": "DocumentReference", "resource_id": document["id"],
                            "version_id": "1", "patient_id": patient_id,
                            "document_id": document["id"], "message_id": to_her["id"]},
                     {"DocumentReference": document["id"], "Patient": patient_id,
                      "Communication": to_her["id"], "Binary": document["content"][0][
                          "attachment"]["url"].rpartition("/")[2]})


@pytest.fixture
async def http(settings: Settings, database: Database) -> AsyncIterator[httpx.AsyncClient]:
    """No credential at all, on an app with nothing in it (for the routes without ids)."""
    app = create_app(settings, database)
    await register_client(database, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=settings.local_url) as client:
        yield client


def test_every_route_is_classified_and_every_classified_route_exists(
        settings: Settings, database: Database) -> None:
    served = served_routes(create_app(settings, database))
    unclassified = sorted(served - ROUTES.keys())
    assert unclassified == [], "classify these routes in ROUTES (who may call them?)"
    gone = sorted(ROUTES.keys() - served)
    assert gone == [], "these classified routes are no longer served"
    figures.add("access.routes_classified", len(served))


def bad_bearers(tokens: Tokens, foreign_pem: bytes) -> dict[str, str]:  # noqa: F811
    """Tokens the API must refuse, by what is wrong with them, and the reason it names."""
    return {
        "token expired": tokens.signed(app_claims(tokens, exp=int(time.time()) - 600)),
        "signature": jwt.encode(app_claims(tokens), foreign_pem, algorithm="RS256",
                                headers={"kid": kid(tokens)}),
        "audience": tokens.signed(app_claims(tokens, aud="https://elsewhere.example/fhir")),
    }


def of(kind: str) -> list[tuple[str, str]]:
    return sorted(key for key, value in ROUTES.items() if value == kind)


async def test_bearer_routes_refuse_no_token_and_bad_tokens(
        seeded: Seeded, tokens: Tokens, foreign_pem: bytes) -> None:  # noqa: F811
    """Each is called with no token, an expired one, one signed by another key and one for
    another audience: a 401 with the challenge, never an answer, a 403 or a 400 first (the
    body is left empty: the token is checked before the request is read)."""
    attempts: dict[str, dict[str, str]] = {"no bearer token": {}}
    for reason, token in bad_bearers(tokens, foreign_pem).items():
        attempts[reason] = bearer(token)
    refused = 0
    for template, method in of(BEARER):
        for url, (reason, headers) in itertools.product(seeded.urls(template),
                                                        attempts.items()):
            answer = await seeded.http.request(method, url, headers=headers)
            where = f"{method} {url} ({reason})"
            if template.startswith("/idp/"):  # OAuth's own error shape (RFC 6750)
                assert answer.status_code == 401, (where, answer.text)
                assert answer.json()["error"] == "invalid_token", where
                assert answer.headers["www-authenticate"].startswith("Bearer "), where
            else:
                assert answer.status_code == 401, (where, answer.text)
                assert_refused(answer, headers.get("Authorization", "")[7:] or None,
                               reason if reason in ("no bearer token", "token expired")
                               else None)
            refused += 1
    figures.add("access.unauthenticated_refusals", refused)


async def test_portal_pages_send_a_stranger_to_the_login(seeded: Seeded,
                                                         tokens: Tokens) -> None:
    """No cookie, a made-up cookie, or an API token instead of the cookie: the page is not
    served; a page redirects to the portal's home, the event stream answers 401."""
    attempts: list[tuple[str, dict[str, str]]] = [
        ("no cookie", {}),
        ("made-up cookie", {"Cookie": f"{COOKIE}=Zm9yZ2VkLXNlc3Npb24ta2V5"}),
        ("API token", bearer(tokens.patient())),
    ]
    refused = 0
    for template, method in of(PORTAL):
        url = seeded.url(template)
        for what, headers in attempts:
            answer = await seeded.http.request(method, url, headers=headers,
                                               data={"csrf": "x"} if method == "POST" else None)
            where = f"{method} {url} ({what})"
            if template.endswith("/evenements"):
                assert answer.status_code == 401, where
            else:
                assert answer.status_code == 303, (where, answer.status_code)
                assert answer.headers["location"].endswith("/portal/"), where
            refused += 1
    figures.add("access.unauthenticated_refusals", refused)


def basic(client_id: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{client_id}:{secret}".encode())
            .decode()}


async def test_token_and_revocation_endpoints_need_client_authentication(
        http: httpx.AsyncClient, tokens: Tokens) -> None:
    """A bearer token is no client authentication; an unknown client, or the portal's public
    client given a secret, is ``invalid_client`` (RFC 6749 5.2: 401)."""
    refused = 0
    for template, method in of(CLIENT):
        for what, headers, form in [
            ("nothing", {}, {"grant_type": "client_credentials", "token": "x"}),
            ("bearer token", bearer(tokens.app()),
             {"grant_type": "client_credentials", "token": "x"}),
            ("unknown client", basic("no-such-client", "guess"),
             {"grant_type": "client_credentials", "token": "x"}),
            ("public client with a secret", basic("carnet-portal", "guess"),
             {"grant_type": "refresh_token", "refresh_token": "x", "token": "x"}),
        ]:
            answer = await http.request(method, template, headers=headers, data=form)
            assert answer.status_code == 401, (template, what, answer.text)
            assert answer.json()["error"] == "invalid_client", (template, what)
            assert "access_token" not in answer.text
            refused += 1
    figures.add("access.unauthenticated_refusals", refused)


async def test_metrics_need_their_own_token(http: httpx.AsyncClient, tokens: Tokens) -> None:
    """An API token is not the metrics token; the metrics token opens them."""
    refused = 0
    for template, method in of(METRICS):
        for headers in ({}, bearer(tokens.app()), bearer("metrics-secret-guess")):
            answer = await http.request(method, template, headers=headers)
            assert answer.status_code == 401, (template, headers)
            assert answer.json()["resourceType"] == "OperationOutcome"
            assert answer.headers["www-authenticate"].startswith("Bearer "), template
            refused += 1
        opened = await http.request(method, template, headers=bearer(METRICS_SECRET))
        assert opened.status_code == 200, opened.text
    figures.add("access.unauthenticated_refusals", refused)


async def test_the_login_form_needs_the_csrf_cookie_of_its_page(http: httpx.AsyncClient) -> None:
    for template, method in of(LOGIN_FORM):
        answer = await http.request(method, template,
                                           data={"subject": "ins:x", "csrf": "guess"})
        assert answer.status_code == 403, answer.text
        assert "location" not in answer.headers  # no code was issued
    figures.add("access.unauthenticated_refusals", len(of(LOGIN_FORM)))


async def test_public_routes_answer_without_credentials(http: httpx.AsyncClient) -> None:
    """Nothing public asks for a login, and none of it fails on a bare request."""
    for template, method in of(PUBLIC):
        url = template
        if method == "*":
            url, method = f"{template}/portal.css", "GET"
        answer = await http.request(method, url)
        assert answer.status_code not in (401, 403), (url, answer.status_code)
        assert answer.status_code < 500, (url, answer.text)

