"""``Patient/$summary`` (IPS): the routes; the use case is ``service/summary.py``."""

from __future__ import annotations

import orjson
from fastapi import Request
from starlette.responses import Response

from auth.policy import Interaction
from fhir_profiles.structure import parameter_list
from service import summary as summaries
from service.access import Access, audited, authorize
from service.deps import AccessDep, BlobStoreDep, DatabaseDep, SettingsDep
from service.errors import BadRequest
from service.fhir.http import (
    base_url,
    check_acceptable,
    fhir_json,
    read_json_resource,
    wants_pretty,
)
from service.settings import Settings
from storage.blobs import BlobStore
from storage.db import Database


def _flag(value: str | None, name: str) -> bool:
    if value in (None, "false"):
        return False
    if value == "true":
        return True
    raise BadRequest(f"{name} must be true or false", expression=name)


async def _answer(request: Request, settings: Settings, db: Database, access: Access,
                  blobs: BlobStore, patient_id: str | None, identifier: str | None,
                  persist: bool) -> Response:
    authorize(access.principal, Interaction.READ, "Patient")
    base = base_url(request, settings.public_url)
    async with audited(access):
        if patient_id is None:
            patient_id = await summaries.patient_of_identifier(
                db, *summaries.identifier_of(identifier))
        built = await summaries.summarize(db, access, patient_id, base=base, blobs=blobs,
                                          persist=persist)
    headers = ({"Content-Location": f"{base}/DocumentReference/{built.document_id}"}
               if built.document_id else None)
    return fhir_json(orjson.dumps(built.bundle), headers=headers, pretty=wants_pretty(request))


async def summary_of_patient(patient_id: str, request: Request, settings: SettingsDep,
                             db: DatabaseDep, access: AccessDep,
                             blobs: BlobStoreDep) -> Response:
    check_acceptable(request)
    return await _answer(request, settings, db, access, blobs, patient_id, None,
                         _flag(request.query_params.get("persist"), "persist"))


async def summary_by_identifier(request: Request, settings: SettingsDep, db: DatabaseDep,
                                access: AccessDep, blobs: BlobStoreDep) -> Response:
    """GET ?identifier=system|value, or POST a Parameters with ``identifier`` (and
    ``persist``)."""
    check_acceptable(request)
    identifier = request.query_params.get("identifier")
    persist = _flag(request.query_params.get("persist"), "persist")
    if request.method == "POST":
        parameters = await read_json_resource(request, settings.max_body_bytes)
        for parameter in parameter_list(parameters, "POST Patient/$summary"):
            if not isinstance(parameter, dict):
                continue
            if parameter.get("name") == "identifier":
                value = parameter.get("valueIdentifier")
                if not isinstance(value, dict):
                    raise BadRequest("the identifier parameter needs a valueIdentifier",
                                     expression="Parameters.identifier")
                identifier = f"{value.get('system', '')}|{value.get('value', '')}"
            elif parameter.get("name") == "persist":
                persist = parameter.get("valueBoolean") is True
    return await _answer(request, settings, db, access, blobs, None, identifier, persist)
