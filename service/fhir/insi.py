"""``POST /fhir/Patient/$ins-lookup``: the INSi teleservice mock, as a FHIR operation."""

from __future__ import annotations

import orjson
from fastapi import Request
from starlette.responses import Response

from auth.policy import Interaction
from service.access import authorize
from service.deps import DatabaseDep, PrincipalDep, SettingsDep
from service.fhir.http import check_acceptable, fhir_json, read_json_resource, wants_pretty
from service.identity import ins_lookup


async def ins_lookup_operation(request: Request, settings: SettingsDep, db: DatabaseDep,
                               principal: PrincipalDep) -> Response:
    check_acceptable(request)
    authorize(principal, Interaction.INS_LOOKUP, "Patient")
    parameters = await read_json_resource(request, settings.max_body_bytes)
    async with db.read() as conn:
        result = await ins_lookup(conn, parameters)
    return fhir_json(orjson.dumps(result), pretty=wants_pretty(request))
