"""A third-party app logs a professional in at ``/idp`` (code flow + PKCE), then reads
through ``/fhir``; and a FHIR server that trusts a separate ``carnet idp``."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest

from service.demo import DOCUMENTS
from storage.db import Database
from tests.e2e.conftest import app_token, log_in, running_carnet

pytestmark = pytest.mark.e2e


def test_professional_logs_in_with_pkce_and_reads_documents(live_server: str) -> None:
    tokens = log_in(live_server, "ps:10000000001", "openid scope_all")
    headers = {"Authorization": f"Bearer {tokens['access_token']}",
               "Accept": "application/fhir+json"}
    found = httpx.get(f"{live_server}/fhir/DocumentReference", headers=headers, timeout=10.0)
    assert found.status_code == 200
    # Dr Martin is the attending doctor of the demo patients who have documents: all of them,
    # the one masked from professionals included.
    assert found.json()["total"] == len(DOCUMENTS)
    me = httpx.get(f"{live_server}/idp/userinfo", headers=headers, timeout=10.0).json()
    assert me["SubjectNameID"] == "810000000001"
    refreshed = httpx.post(f"{live_server}/idp/token", data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        auth=("demo-app", "demo-app-secret"), timeout=10.0)
    assert refreshed.status_code == 200
    again = httpx.get(f"{live_server}/fhir/DocumentReference", timeout=10.0, headers={
        "Authorization": f"Bearer {refreshed.json()['access_token']}"})
    assert again.status_code == 200


def test_a_server_trusts_a_separate_identity_provider(database: Database,
                                                      tmp_path: Path) -> None:
    env = {"CARNET_DATABASE_URL": database.url, "CARNET_DATA_DIR": str(tmp_path)}
    with running_carnet(["idp"], env, tmp_path / "idp.log",
                        "/idp/.well-known/openid-configuration") as idp:
        issuer = f"{idp}/idp"
        with running_carnet(["serve", "--demo"], {**env, "CARNET_ISSUER_URL": issuer,
                                                  "CARNET_IDP_ENABLED": "false"},
                            tmp_path / "server.log", "/fhir/metadata") as server:
            token = app_token(server, "system/Patient.rs", issuer=issuer)
            response = httpx.get(f"{server}/fhir/Patient", timeout=10.0,
                                 headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, response.text
            assert response.json()["total"] == 3
            smart = httpx.get(f"{server}/fhir/.well-known/smart-configuration").json()
            assert smart["token_endpoint"] == f"{issuer}/token"
            assert httpx.get(f"{server}/idp/jwks").status_code == 404  # not mounted here
            forged = re.sub(r"\.[^.]+$", ".AAAA", token)
            refused = httpx.get(f"{server}/fhir/Patient", timeout=10.0,
                                headers={"Authorization": f"Bearer {forged}"})
            assert refused.status_code == 401
