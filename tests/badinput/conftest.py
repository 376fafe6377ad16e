"""A seeded Carnet shared by the corpus's cases, and the fingerprint that proves a refused
request changed nothing.

The record is seeded once per back-end (a qualified INS patient and one filed document with
its Binary): every case must leave the store exactly as it found it, which the test checks
around each case, so sharing the seed is safe and a case that does change the store fails on
its own. The fingerprint covers every table (row count and a hash of the rows in primary-key
order) except the audit trail, and every file under the blob store's directory. The audit
trail may legitimately grow (a refusal is an access decision, and denials are audited): it is
checked by recomputing its hash chains instead (``carnet audit verify``'s function).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import select
from sqlmodel import SQLModel

from fhir_profiles.ins import InsTraits, patient_with_ins
from service.app import create_app
from service.demo import INS_NIR_TEST, PATIENTS, seed_directories
from service.settings import Settings
from storage.audit import AUDIT_CHAIN, AUDIT_LOG, verify_chains
from storage.db import Database
from storage.documents import binary_content
from tests.conftest import clear, tables
from tests.factories import FHIR_JSON, file_document
from tests.tokens import OPERATOR_APP, Tokens, bearer

AUDIT_TABLES = frozenset({AUDIT_LOG.name, AUDIT_CHAIN.name})
Fingerprint = dict[str, tuple[int, str]]


@dataclass
class Seeded:
    """The shared Carnet: its client (no token: each case brings its caller's), the callers'
    tokens, and the seeded record's ids for the corpus's placeholders."""

    http: httpx.AsyncClient
    database: Database
    blob_root: Path
    tokens: dict[str, str]
    placeholders: dict[str, str]
    last: Fingerprint | None = None
    """The store as the previous case left it: nothing else writes to it in between (another
    module's test would tear this fixture down and seed a new one), so it is the next case's
    "before" and each case costs one fingerprint, not two."""

    async def fingerprint(self) -> Fingerprint:
        self.last = await fingerprint(self.database, self.blob_root)
        return self.last

    def fill(self, text: str) -> str:
        for name, value in self.placeholders.items():
            text = text.replace(f"@{name}@", value)
        return text


async def fingerprint(database: Database, blob_root: Path) -> Fingerprint:
    """Every table but the audit trail's, then every blob-store file (path and size)."""
    found: Fingerprint = {}
    async with database.read() as conn:
        for name in tables():
            if name in AUDIT_TABLES:
                continue
            table = SQLModel.metadata.tables[name]
            rows = (await conn.execute(select(table).order_by(*table.primary_key.columns))).all()
            found[name] = (len(rows), hashlib.sha256(repr(rows).encode()).hexdigest())
    files = blob_files(blob_root)
    found["blob files"] = (len(files), hashlib.sha256(repr(files).encode()).hexdigest())
    return found


def blob_files(root: Path) -> list[tuple[str, int]]:
    """Every file under the blob store's directory (blobs and temporary files), with its
    size: a blob's name is its SHA-256, so name and size stand for its bytes."""
    return sorted((str(p.relative_to(root)), p.stat().st_size)
                  for p in root.rglob("*") if p.is_file())


async def audit_chains_verify(database: Database) -> bool:
    async with database.read() as conn:
        return (await verify_chains(conn)).ok


@pytest.fixture(scope="module")
async def seeded(session_database: Database, tmp_path_factory: pytest.TempPathFactory,
                 keys_dir: Path) -> AsyncIterator[Seeded]:
    """A fresh store on this back-end with one patient's record, and a client on the app."""
    await clear(session_database)
    data_dir = tmp_path_factory.mktemp("badinput")
    settings = Settings(data_dir=data_dir, keys_dir=keys_dir, default_page_size=20,
                        max_page_size=100, max_body_bytes=1024 * 1024,
                        operator_clients=[OPERATOR_APP], max_binary_bytes=4 * 1024 * 1024)
    minted = Tokens.for_settings(settings)
    tokens = {"app": minted.app(), "professional": minted.professional(),
              "patient": minted.patient()}
    app = create_app(settings, session_database)
    # A 500 is answered (and counted as a failure of its case), not raised into the test.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://carnet.test",
                                 headers={"Accept": "application/fhir+json"}) as http:
        operator = httpx.AsyncClient(transport=transport, base_url="http://carnet.test",
                                     headers={"Accept": "application/fhir+json",
                                              **bearer(tokens["app"])})
        async with operator:
            placeholders = await _seed(operator, session_database)
        yield Seeded(http, session_database, data_dir / "blobs", tokens, placeholders)
    await clear(session_database)


async def _seed(http: httpx.AsyncClient, database: Database) -> dict[str, str]:
    """The demo's first patient (tests.tokens.PATIENT) and one document of theirs."""
    await seed_directories(database)
    _key, nir, family, given, gender, birth, place, _doctor = PATIENTS[0]
    created = await http.post("/fhir/Patient", headers=FHIR_JSON, content=orjson.dumps(
        patient_with_ins(INS_NIR_TEST, nir, InsTraits(family, given[0], given, gender, birth,
                                                      place))))
    assert created.status_code == 201, created.text
    patient_id = created.json()["id"]
    document = await file_document(http, patient_id)
    binary_id = document["content"][0]["attachment"]["url"].rpartition("/")[2]
    async with database.read() as conn:
        content = await binary_content(conn, binary_id)
    assert content is not None
    return {"patient": patient_id, "document": document["id"], "binary": binary_id,
            "blob": content.blob_key}
