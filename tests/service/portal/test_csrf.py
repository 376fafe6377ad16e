"""Every form the portal accepts refuses a post that lacks the session's CSRF token, or that
carries it from a foreign Origin, and changes nothing.

The routes are those ``tests/service/test_endpoint_access.py`` classifies as portal-session
POSTs: that test keeps the table equal to what the app serves, so a new form is checked here
the day it appears (a route with no fields below fails this test).

One test walks all the forms on one login (each mismatch is listed, not the first only), and
only on SQLite: the refusal comes before any database work, and one login per form and per
back-end would cost the suite seconds for the same check.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text

from storage.db import Database
from tests.conftest import tables
from tests.factories import give_consent
from tests.reliability import figures
from tests.service.access.conftest import AUTHORISED, BLOCKED, DOCTOR, Record, as_professional
from tests.service.access.test_idor import record  # noqa: F401 - the light record fixture
from tests.service.messaging.conftest import message, sent
from tests.service.portal.conftest import PortalBrowser
from tests.service.test_endpoint_access import PORTAL, ROUTES
from tests.tokens import Tokens

pytestmark = pytest.mark.parametrize("session_database", ["sqlite"], indirect=True)

PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def form_posts() -> list[str]:
    return sorted(path for (path, method), kind in ROUTES.items()
                  if kind == PORTAL and method == "POST")


def fields_for(path: str) -> dict[str, Any]:
    """What the page's own form would send (without its csrf field)."""
    return {
        "/portal/deconnexion": {},
        "/portal/documents/{document_id}/masquage": {"masquer": "oui"},
        "/portal/confidentialite/dossier": {"fermer": "oui"},
        "/portal/confidentialite/urgence": {"opposer": "oui"},
        "/portal/confidentialite/bloquer": {"professionnel": AUTHORISED.idnat},
        "/portal/confidentialite/debloquer": {"professionnel": BLOCKED.idnat},
        "/portal/messages/{message_id}/reponse": {"texte": "Merci docteur."},
        "/portal/ajouter": {"titre": "Analyse", "type": "DOCPAT05",
                            "files": {"fichier": ("analyse.pdf", PDF, "application/pdf")}},
    }[path]


async def fingerprint(database: Database) -> dict[str, int]:
    """Rows per table, in one query: any write (a new version, an audit entry, an event, a
    session ended or refreshed) shows."""
    names = tables()
    counts = ", ".join(f"(SELECT count(*) FROM {name})" for name in names)
    async with database.read() as conn:
        row = (await conn.execute(text(f"SELECT {counts}"))).one()
    return dict(zip(names, row, strict=True))


async def test_every_portal_form_refuses_a_post_without_its_token_or_from_elsewhere(
        portal: PortalBrowser, record: Record, client: httpx.AsyncClient,  # noqa: F811
        anonymous: httpx.AsyncClient, tokens: Tokens, database: Database) -> None:
    await give_consent(client, record.patient_id, "professional", "deny", rpps=(BLOCKED.rpps,))
    to_her = await sent(anonymous, as_professional(tokens, DOCTOR), message(record.patient_id))
    values = {"document_id": record.documents["consultation"], "message_id": to_her["id"]}
    assert (await portal.http.get("/portal/documents")).status_code == 200
    own_origin = str(portal.http.base_url).rstrip("/")
    problems: list[str] = []
    refused = 0
    for template in form_posts():
        url = template.format(**values)
        fields = dict(fields_for(template))
        files = fields.pop("files", None)
        for what, data, headers in [
            ("no token", fields, {"Origin": own_origin}),
            ("a forged token", {**fields, "csrf": "forged"}, {}),
            ("a foreign Origin", {**fields, "csrf": portal.csrf},
             {"Origin": "https://evil.example"}),
        ]:
            before = await fingerprint(database)
            answer = await portal.http.post(url, data=data, files=files, headers=headers)
            after = await fingerprint(database)
            if answer.status_code != 403 or "Formulaire refusé" not in answer.text:
                problems.append(f"{url} with {what}: {answer.status_code}")
            if after != before:
                problems.append(f"{url} with {what} changed "
                                f"{[t for t in after if after[t] != before[t]]}")
            refused += 1
    assert problems == [], "\n".join(problems)
    # The session survived every forged logout; the real form still logs out.
    assert (await portal.http.get("/portal/documents")).status_code == 200
    out = await portal.submit("/deconnexion", {})
    assert out.status_code == 303
    assert (await portal.http.get("/portal/documents")).status_code == 303
    figures.add("access.csrf_refusals", refused)
