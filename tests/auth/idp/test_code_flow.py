"""The authorization code flow with PKCE, as a professional and as a patient."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from auth.idp.app import standalone_app
from service.demo import seed_demo
from service.settings import Settings
from storage.blobs import open_blob_store
from storage.db import Database
from storage.oauth import CODES, OAuthClient, put_client
from tests.auth.idp.conftest import OTHER_AUTH
from tests.auth.idp.flow import (
    CLIENT_ID,
    DOCTOR,
    ISSUER,
    PATIENT,
    REDIRECT_URI,
    authorize_params,
    log_in,
    login_form,
    login_forms,
    pkce,
    query_of,
    redeem,
    tokens_for,
    verified,
)
from tests.tokens import Tokens, bearer


async def code_count(database: Database) -> int:
    async with database.read() as conn:
        return int((await conn.execute(select(func.count()).select_from(CODES))).scalar_one())


# ---- the login page ----------------------------------------------------------------------

async def test_the_login_page_offers_every_seeded_professional_and_patient(
        anonymous: httpx.AsyncClient) -> None:
    _, challenge = pkce()
    page = await anonymous.get("/idp/authorize", params=authorize_params("openid", challenge))
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    subjects = {f["subject"] for f in login_forms(page.text)}
    assert {f"ps:1000000000{i}" for i in range(1, 6)} <= subjects
    assert PATIENT in subjects
    assert "idp_csrf" in anonymous.cookies


async def test_every_login_form_carries_the_csrf_value_of_the_cookie_and_the_request(
        anonymous: httpx.AsyncClient) -> None:
    _, challenge = pkce()
    params = authorize_params("openid scope_all", challenge, nonce="n-1")
    page = await anonymous.get("/idp/authorize", params=params)
    cookie = anonymous.cookies["idp_csrf"]
    for form in login_forms(page.text):
        assert form["csrf"] == cookie
        assert form["client_id"] == CLIENT_ID
        assert form["redirect_uri"] == REDIRECT_URI
        assert form["code_challenge"] == challenge
        assert form["code_challenge_method"] == "S256"
        assert form["state"] == params["state"]
        assert form["nonce"] == "n-1"


# ---- as a professional -------------------------------------------------------------------

async def test_the_callback_gets_the_code_with_the_state_and_the_issuer(
        anonymous: httpx.AsyncClient) -> None:
    login = await log_in(anonymous, DOCTOR, "openid scope_all", state="xyz-123")
    assert login.code
    assert login.state == "xyz-123"
    assert login.iss == ISSUER


async def test_a_professional_gets_an_access_token_carrying_the_pro_sante_connect_claims(
        anonymous: httpx.AsyncClient) -> None:
    body = await tokens_for(anonymous, DOCTOR, "openid scope_all user/*.rs")
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] > 0
    claims = await verified(anonymous, body["access_token"])
    assert claims["SubjectNameID"] == "810000000001"
    assert claims["sub"] == "810000000001"
    exercice = claims["SubjectRefPro"]["exercices"][0]
    assert exercice["codeProfession"] == "10"
    assert claims["acr"] == "eidas1"
    assert claims["iss"] == ISSUER
    assert claims["aud"] == "carnet"
    assert claims["client_id"] == CLIENT_ID
    assert claims["exp"] > claims["iat"]
    assert claims["jti"]
    assert "ins" not in claims


async def test_each_access_token_has_its_own_jti(anonymous: httpx.AsyncClient) -> None:
    first = await verified(anonymous, (await tokens_for(anonymous, DOCTOR))["access_token"])
    second = await verified(anonymous, (await tokens_for(anonymous, DOCTOR))["access_token"])
    assert first["jti"] != second["jti"]


async def test_a_professional_gets_only_the_requested_allowed_user_scopes(
        anonymous: httpx.AsyncClient) -> None:
    body = await tokens_for(anonymous, DOCTOR, "openid scope_all user/Patient.rs patient/*.rs "
                            "system/Patient.rs email")
    expected = {"openid", "scope_all", "user/Patient.rs"}
    assert set(body["scope"].split()) == expected
    claims = await verified(anonymous, body["access_token"])
    assert set(claims["scope"].split()) == expected


async def test_a_professional_gets_no_more_than_the_client_registration_allows(
        anonymous: httpx.AsyncClient, public_client: OAuthClient) -> None:
    login = await log_in(anonymous, DOCTOR, "openid user/*.cruds user/Binary.d",
                         client_id="public-app", redirect_uri=public_client.redirect_uris[0])
    response = await redeem(anonymous, login, auth=None)
    assert response.status_code == 200, response.text
    assert set(response.json()["scope"].split()) == {"openid", "user/*.rs"}


async def test_the_id_token_carries_the_nonce_and_is_addressed_to_the_client(
        anonymous: httpx.AsyncClient) -> None:
    body = await tokens_for(anonymous, DOCTOR, "openid scope_all", nonce="nonce-42")
    id_claims = await verified(anonymous, body["id_token"], audience=CLIENT_ID)
    assert id_claims["nonce"] == "nonce-42"
    assert id_claims["sub"] == "810000000001"
    assert id_claims["iss"] == ISSUER
    assert id_claims["acr"] == "eidas1"


async def test_no_id_token_is_issued_without_the_openid_scope(
        anonymous: httpx.AsyncClient) -> None:
    body = await tokens_for(anonymous, DOCTOR, "scope_all", nonce="nonce-42")
    assert "id_token" not in body
    assert body["access_token"]


async def test_a_refresh_token_comes_with_the_access_token(
        anonymous: httpx.AsyncClient) -> None:
    body = await tokens_for(anonymous, DOCTOR, "openid scope_all offline_access")
    assert isinstance(body["refresh_token"], str)
    assert len(body["refresh_token"]) >= 32
    assert body["refresh_token"] != body["access_token"]


@pytest.mark.parametrize("scope", ["openid scope_all", "openid user/*.rs"])
async def test_a_professional_access_token_reads_the_fhir_api(
        anonymous: httpx.AsyncClient, scope: str) -> None:
    body = await tokens_for(anonymous, DOCTOR, scope)
    response = await anonymous.get("/fhir/Patient", headers=bearer(body["access_token"]))
    assert response.status_code == 200, response.text
    assert response.json()["resourceType"] == "Bundle"


async def test_the_fhir_api_refuses_the_id_token_as_an_access_token(
        anonymous: httpx.AsyncClient) -> None:
    body = await tokens_for(anonymous, DOCTOR, "openid scope_all")
    response = await anonymous.get("/fhir/Patient", headers=bearer(body["id_token"]))
    assert response.status_code == 401


# ---- as a patient ------------------------------------------------------------------------

async def test_a_patient_gets_a_token_carrying_the_ins(anonymous: httpx.AsyncClient) -> None:
    body = await tokens_for(anonymous, PATIENT, "openid patient/*.rs")
    claims = await verified(anonymous, body["access_token"])
    assert claims["ins"] == {"system": "urn:oid:1.2.250.1.213.1.4.10",
                             "value": "253072A07300443"}
    assert claims["sub"] == "253072A07300443"
    assert "SubjectNameID" not in claims
    assert "SubjectRefPro" not in claims


async def test_a_patient_keeps_only_patient_scopes_even_when_user_scopes_were_requested(
        anonymous: httpx.AsyncClient) -> None:
    body = await tokens_for(anonymous, PATIENT, "openid scope_all user/*.cruds patient/*.rs "
                            "system/Patient.rs")
    expected = {"openid", "patient/*.rs"}
    assert set(body["scope"].split()) == expected
    claims = await verified(anonymous, body["access_token"])
    assert set(claims["scope"].split()) == expected


# ---- a public client ---------------------------------------------------------------------

async def test_a_public_client_redeems_its_code_with_pkce_alone(
        anonymous: httpx.AsyncClient, public_client: OAuthClient) -> None:
    login = await log_in(anonymous, DOCTOR, "openid user/*.rs", client_id="public-app",
                         redirect_uri=public_client.redirect_uris[0])
    response = await redeem(anonymous, login, auth=None)
    assert response.status_code == 200, response.text
    claims = await verified(anonymous, response.json()["access_token"])
    assert claims["client_id"] == "public-app"


async def test_a_public_client_presenting_a_secret_is_refused(
        anonymous: httpx.AsyncClient, public_client: OAuthClient) -> None:
    login = await log_in(anonymous, DOCTOR, "openid user/*.rs", client_id="public-app",
                         redirect_uri=public_client.redirect_uris[0])
    response = await redeem(anonymous, login, auth=("public-app", "guess"))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"


# ---- errors at the authorization endpoint ------------------------------------------------

@pytest.mark.parametrize("overrides", [
    {"client_id": "no-such-app"},
    {"client_id": None},
    {"redirect_uri": "http://evil.example/callback"},
    {"redirect_uri": REDIRECT_URI + "/x"},
    {"redirect_uri": REDIRECT_URI + "?next=http://evil.example"},
    {"redirect_uri": None},
], ids=["unknown-client", "no-client", "foreign-uri", "longer-uri", "uri-with-query",
        "no-uri"])
async def test_an_untrusted_client_or_redirect_uri_gets_an_error_page_not_a_redirect(
        anonymous: httpx.AsyncClient, overrides: dict[str, str | None]) -> None:
    _, challenge = pkce()
    response = await anonymous.get("/idp/authorize",
                                   params=authorize_params("openid", challenge, **overrides))
    assert response.status_code == 400
    assert response.headers["content-type"].startswith("text/html")
    assert "location" not in response.headers
    assert "evil.example" not in response.text
    assert login_forms(response.text) == []


@pytest.mark.parametrize(("overrides", "error"), [
    ({"code_challenge": None, "code_challenge_method": None}, "invalid_request"),
    ({"code_challenge_method": None}, "invalid_request"),
    ({"code_challenge_method": "plain"}, "invalid_request"),
    ({"code_challenge": "short"}, "invalid_request"),
    ({"response_type": "token"}, "unsupported_response_type"),
    ({"response_type": None}, "unsupported_response_type"),
    ({"scope": "user/Patient.xyz"}, "invalid_scope"),
    ({"scope": "patient/Observation.c"}, "invalid_scope"),
    ({"scope": ""}, "invalid_scope"),
], ids=["no-pkce", "no-method", "plain", "short-challenge", "implicit", "no-response-type",
        "malformed-scope", "scope-not-allowed", "empty-scope"])
async def test_a_bad_request_from_a_trusted_client_is_redirected_back_with_the_state(
        anonymous: httpx.AsyncClient, overrides: dict[str, str | None], error: str) -> None:
    _, challenge = pkce()
    params = authorize_params("openid scope_all", challenge, state="s-77")
    params = {k: v for k, v in {**params, **overrides}.items() if v is not None}
    response = await anonymous.get("/idp/authorize", params=params)
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(REDIRECT_URI + "?")
    callback = query_of(location)
    assert callback["error"] == error
    assert callback["state"] == "s-77"
    assert callback["iss"] == ISSUER
    assert "code" not in callback


async def test_a_client_without_the_code_grant_is_sent_back_with_unauthorized_client(
        anonymous: httpx.AsyncClient, database: Database) -> None:
    async with database.write() as conn:
        await put_client(conn, OAuthClient("machine", "Machine", None, (REDIRECT_URI,),
                                           "system/*.rs", ("client_credentials",)))
    _, challenge = pkce()
    response = await anonymous.get("/idp/authorize", params=authorize_params(
        "system/*.rs", challenge, client_id="machine", state="s"))
    assert response.status_code == 303
    assert query_of(response.headers["location"])["error"] == "unauthorized_client"


# ---- the login POST ----------------------------------------------------------------------

async def _login_form(http: httpx.AsyncClient, subject: str = DOCTOR,
                      **overrides: str | None) -> dict[str, str]:
    _, challenge = pkce()
    page = await http.get("/idp/authorize",
                          params=authorize_params("openid scope_all", challenge, **overrides))
    assert page.status_code == 200
    return login_form(page.text, subject)


async def test_a_login_without_the_csrf_cookie_is_refused_and_issues_no_code(
        anonymous: httpx.AsyncClient, database: Database) -> None:
    form = await _login_form(anonymous)
    anonymous.cookies.clear()
    response = await anonymous.post("/idp/authorize", data=form)
    assert response.status_code == 403
    assert "location" not in response.headers
    assert await code_count(database) == 0


async def test_a_login_whose_csrf_value_differs_from_the_cookie_is_refused(
        anonymous: httpx.AsyncClient, database: Database) -> None:
    form = await _login_form(anonymous)
    response = await anonymous.post("/idp/authorize", data={**form, "csrf": "forged-value"})
    assert response.status_code == 403
    assert "location" not in response.headers
    assert await code_count(database) == 0


async def test_a_login_without_a_csrf_value_is_refused_even_with_the_cookie(
        anonymous: httpx.AsyncClient, database: Database) -> None:
    form = await _login_form(anonymous)
    del form["csrf"]
    response = await anonymous.post("/idp/authorize", data=form)
    assert response.status_code == 403
    assert await code_count(database) == 0


async def test_the_csrf_cookie_is_spent_by_a_login_so_the_form_cannot_be_replayed(
        anonymous: httpx.AsyncClient, database: Database) -> None:
    form = await _login_form(anonymous)
    first = await anonymous.post("/idp/authorize", data=form)
    assert first.status_code == 303
    assert "idp_csrf" not in anonymous.cookies
    second = await anonymous.post("/idp/authorize", data=form)
    assert second.status_code == 403
    assert await code_count(database) == 1


async def test_a_login_form_pointed_at_another_redirect_uri_issues_no_code(
        anonymous: httpx.AsyncClient, database: Database) -> None:
    form = await _login_form(anonymous)
    response = await anonymous.post("/idp/authorize",
                                    data={**form, "redirect_uri": "http://evil.example/cb"})
    assert response.status_code == 400
    assert "location" not in response.headers
    assert await code_count(database) == 0


async def test_a_login_as_an_unknown_identity_issues_no_code(
        anonymous: httpx.AsyncClient, database: Database) -> None:
    form = await _login_form(anonymous)
    response = await anonymous.post("/idp/authorize", data={**form, "subject": "ps:99999999999"})
    assert response.status_code == 400
    assert "location" not in response.headers
    assert await code_count(database) == 0


async def test_a_malformed_scope_slipped_into_the_login_form_is_sent_back_as_invalid_scope(
        anonymous: httpx.AsyncClient, database: Database) -> None:
    form = await _login_form(anonymous)
    response = await anonymous.post(
        "/idp/authorize", data={**form, "scope": "openid user/*.cruds user/Patient.xyz"})
    assert response.status_code == 303
    assert query_of(response.headers["location"])["error"] == "invalid_scope"
    assert await code_count(database) == 0


async def test_a_login_form_asking_scopes_outside_the_registration_gets_them_dropped(
        anonymous: httpx.AsyncClient, other_client: OAuthClient) -> None:
    verifier, challenge = pkce()
    page = await anonymous.get("/idp/authorize", params=authorize_params(
        "openid", challenge, client_id="other-app"))
    form = login_form(page.text, DOCTOR)
    response = await anonymous.post("/idp/authorize", data={
        **form, "scope": "openid user/*.cruds patient/DocumentReference.c system/*.cruds"})
    callback = query_of(response.headers["location"])
    response = await anonymous.post("/idp/token", auth=OTHER_AUTH, data={
        "grant_type": "authorization_code", "code": callback["code"],
        "redirect_uri": REDIRECT_URI, "code_verifier": verifier})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    assert set(body["scope"].split()) == {"openid", "user/*.cruds"}


async def test_a_non_ascii_csrf_value_is_refused_not_a_server_error(
        anonymous: httpx.AsyncClient, database: Database) -> None:
    form = await _login_form(anonymous)
    response = await anonymous.post("/idp/authorize", data={**form, "csrf": "jeton-é"})
    assert response.status_code == 403
    assert await code_count(database) == 0


async def test_a_repeated_authorize_parameter_gets_an_error_page_not_a_redirect(
        anonymous: httpx.AsyncClient) -> None:
    _, challenge = pkce()
    params = httpx.QueryParams(authorize_params("openid", challenge)).add(
        "redirect_uri", "http://localhost:8765/callback")
    response = await anonymous.get("/idp/authorize", params=params)
    assert response.status_code == 400
    assert "location" not in response.headers
    assert login_forms(response.text) == []


async def test_a_patient_asking_only_for_user_scopes_is_sent_back_with_invalid_scope(
        anonymous: httpx.AsyncClient, database: Database) -> None:
    _, challenge = pkce()
    page = await anonymous.get("/idp/authorize", params=authorize_params(
        "scope_all user/*.rs", challenge, state="s-9"))
    response = await anonymous.post("/idp/authorize", data=login_form(page.text, PATIENT))
    assert response.status_code == 303
    callback = query_of(response.headers["location"])
    assert callback["error"] == "invalid_scope"
    assert callback["state"] == "s-9"
    assert "code" not in callback
    assert await code_count(database) == 0


# ---- SMART launch context --------------------------------------------------------------------

async def test_a_patient_with_a_record_gets_it_as_the_patient_launch_context(
        anonymous: httpx.AsyncClient, database: Database, settings: Settings) -> None:
    seeded = await seed_demo(database, open_blob_store(settings.blob_url, settings.data_dir))
    record = next(p["id"] for p in seeded["patients"] if p["ins"] == "253072A07300443")
    body = await tokens_for(anonymous, PATIENT, "openid patient/*.rs")
    assert body["patient"] == record.removeprefix("Patient/")


async def test_no_launch_context_without_a_record_nor_for_a_professional(
        anonymous: httpx.AsyncClient) -> None:
    assert "patient" not in await tokens_for(anonymous, PATIENT, "openid patient/*.rs")
    assert "patient" not in await tokens_for(anonymous, DOCTOR, "openid scope_all")


async def test_a_nul_in_an_authorize_parameter_of_the_standalone_provider_is_an_error_page(
        database: Database, tokens: Tokens) -> None:
    """``carnet idp`` runs without the API's app-wide NUL guard; PostgreSQL cannot bind a
    NUL, so the provider refuses it itself (before, the client lookup answered 500)."""
    app = standalone_app(tokens.config, "unused://")
    app.state.database = database  # the lifespan (which opens its own) does not run here
    _, challenge = pkce()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url="http://idp.test") as idp:
        response = await idp.get("/idp/authorize", params={
            **authorize_params("openid", challenge), "client_id": "public-app\x00"})
    assert response.status_code == 400
    assert "location" not in response.headers
    assert "NUL" in response.text
