"""Documents are tested on each blob back-end: the local file system and S3 (moto's server)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from fhir_profiles.ins import InsTraits, patient_with_ins
from service.demo import INS_NIR_TEST, PATIENTS, seed_directories
from service.settings import Settings
from storage.db import Database
from tests.factories import FHIR_JSON
from tests.tokens import OPERATOR_APP


@pytest.fixture(params=["local", "s3"])
def settings(request: pytest.FixtureRequest, tmp_path: Path, keys_dir: Path) -> Settings:
    blob_url = None
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_server")
        request.getfixturevalue("aws_env")
        blob_url = f"s3://carnet-{tmp_path.name.lower().replace('_', '-')[-40:]}/documents" \
                   f"?endpoint_url={endpoint}&region=eu-west-3"
    return Settings(data_dir=tmp_path, keys_dir=keys_dir, default_page_size=20,
                    max_page_size=100, max_body_bytes=1024 * 1024,
                    operator_clients=[OPERATOR_APP], blob_url=blob_url,
                    max_binary_bytes=4 * 1024 * 1024)


def _traits(row: tuple[Any, ...]) -> InsTraits:
    _key, _nir, family, given, gender, birth, place, _doctor = row
    return InsTraits(family, given[0], given, gender, birth, place)


async def _create_patient(client: httpx.AsyncClient, row: tuple[Any, ...]) -> str:
    response = await client.post("/fhir/Patient", headers=FHIR_JSON, content=orjson.dumps(
        patient_with_ins(INS_NIR_TEST, row[1], _traits(row))))
    assert response.status_code == 201, response.text
    patient_id: str = response.json()["id"]
    return patient_id


@pytest.fixture
async def patient_id(client: httpx.AsyncClient, database: Database) -> str:
    """A qualified INS patient (the demo's first identity, known to INSi)."""
    await seed_directories(database)
    return await _create_patient(client, PATIENTS[0])


@pytest.fixture
async def other_patient_id(client: httpx.AsyncClient, patient_id: str) -> str:
    return await _create_patient(client, PATIENTS[1])


async def provide(client: httpx.AsyncClient, bundle: dict[str, Any],
                  **headers: str) -> httpx.Response:
    """ITI-65: POST the Provide Document Bundle."""
    return await client.post("/fhir", content=orjson.dumps(bundle),
                             headers={**FHIR_JSON, **headers})


async def count(client: httpx.AsyncClient, resource_type: str) -> int:
    response = await client.get(f"/fhir/{resource_type}", params={"_summary": "count"})
    total: int = response.json()["total"]
    return total


def issues(response: httpx.Response) -> list[dict[str, Any]]:
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    found: list[dict[str, Any]] = outcome["issue"]
    return found


def paths(response: httpx.Response) -> list[str]:
    return [path for issue in issues(response) for path in issue.get("expression", [])]
