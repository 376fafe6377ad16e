"""The CapabilityStatement: https://hl7.org/fhir/R4/capabilitystatement.html

Built from the same tables the server uses (supported types, search
parameters), so it lists exactly what Carnet does.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson

from storage.search.criteria import RESULT_PARAMETERS
from storage.search.parameters import RESOURCE_COLUMNS, SEARCH_PARAMETERS

SOFTWARE_VERSION = "0.1.0"
_INTERACTIONS = ["read", "vread", "update", "delete", "history-instance", "history-type",
                 "create", "search-type"]
_RESULT_DOCS = {
    "_count": "page size (capped by the server maximum)",
    "_sort": "_id, _lastUpdated or any date, string or token parameter; '-' for descending",
    "_total": "none | estimate | accurate (default accurate)",
    "_summary": "true | false | count | data",
    "_elements": "top-level elements to return",
    "_include": "Type:reference-parameter[:TargetType]",
    "_revinclude": "Type:reference-parameter",
}


def _search_params(resource_type: str) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = [
        {"name": name, "type": kind} for name, kind in RESOURCE_COLUMNS.items()
    ]
    params.extend({"name": p.name, "type": p.type}
                  for p in SEARCH_PARAMETERS[resource_type].values())
    return params


def _resource(resource_type: str) -> dict[str, Any]:
    params = SEARCH_PARAMETERS[resource_type]
    references = [p.name for p in params.values() if p.type == "reference"]
    return {
        "type": resource_type,
        "interaction": [{"code": code} for code in _INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalUpdate": True,
        "conditionalDelete": "not-supported",
        "searchInclude": [f"{resource_type}:{name}" for name in references],
        "searchRevInclude": sorted(
            f"{other}:{p.name}" for other, other_params in SEARCH_PARAMETERS.items()
            for p in other_params.values()
            if p.type == "reference" and (not p.targets or resource_type in p.targets)),
        "searchParam": _search_params(resource_type),
    }


@cache
def capability_statement(base: str) -> bytes:
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-25",
        "publisher": "Carnet",
        "kind": "instance",
        "software": {"name": "Carnet", "version": SOFTWARE_VERSION},
        "implementation": {"description": "Carnet health-document exchange", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Search result parameters: " + "; ".join(
                f"{name}: {doc}" for name, doc in _RESULT_DOCS.items()
                if name in RESULT_PARAMETERS),
            "resource": [_resource(t) for t in SEARCH_PARAMETERS],
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
        }],
    }
    return orjson.dumps(statement)
