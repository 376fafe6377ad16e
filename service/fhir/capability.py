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
_INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance",
                 "history-type", "create", "search-type"]
# Documents are never deleted nor created by PUT; a Binary never changes (PDSm).
_NOT_ALLOWED = {"DocumentReference": {"delete"}, "Binary": {"update", "patch", "delete"},
                "AuditEvent": {"create", "update", "patch", "delete", "history-instance",
                               "history-type"}}
_DOCUMENTATION = {
    "DocumentReference": "IHE MHD ITI-65 (filed in a transaction Bundle with its "
                         "SubmissionSet), ITI-67 (search); PDSm metadata enforced. Only status, "
                         "securityLabel and the PDSm isArchived extension change after filing "
                         "(PATCH with JSON Patch, or PUT); only the author withdraws a document.",
    "Binary": "IHE MHD ITI-68: GET answers the document's bytes (Range supported) unless "
              "application/fhir+json is asked for; POST takes FHIR JSON or the raw bytes with "
              "their own Content-Type (streamed).",
    "List": "IHE MHD SubmissionSets and Folders (ITI-66 with code=submissionset|folder).",
    "AuditEvent": "The patient's access history: who accessed their record, when, in which "
                  "mode (normal, bris_de_glace, centre_15) and with what outcome. Searched one "
                  "patient at a time (patient, date, _count); read-only and hash-chained.",
    "Consent": "The patient's choices (scope patient-privacy, one Carnet choice code in "
               "category): record closed, emergency access opposed, care-team objection, "
               "professionals blocked or authorised, apps granted. Written by the patient.",
}
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
    if resource_type == "AuditEvent":  # served from the audit log, not the search indexes
        return [{"name": p.name, "type": p.type}
                for p in SEARCH_PARAMETERS[resource_type].values() if not p.name.startswith("_")]
    params: list[dict[str, Any]] = [
        {"name": name, "type": kind} for name, kind in RESOURCE_COLUMNS.items()
    ]
    params.extend({"name": p.name, "type": p.type}
                  for p in SEARCH_PARAMETERS[resource_type].values())
    return params


def _resource(resource_type: str) -> dict[str, Any]:
    params = SEARCH_PARAMETERS[resource_type]
    references = [p.name for p in params.values() if p.type == "reference"]
    refused = _NOT_ALLOWED.get(resource_type, set())
    resource: dict[str, Any] = {
        "type": resource_type,
        "interaction": [{"code": code} for code in _INTERACTIONS if code not in refused],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": resource_type not in _NOT_ALLOWED,
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
    if resource_type in _DOCUMENTATION:
        resource["documentation"] = _DOCUMENTATION[resource_type]
    if resource_type == "Patient":
        resource["operation"] = [_INS_LOOKUP]
    return resource


def _security(issuer: str, cors: bool) -> dict[str, Any]:
    """SMART on FHIR: where an app gets its token (also in .well-known/smart-configuration);
    ``cors``: whether browser apps on configured origins may call (CARNET_CORS_ORIGINS)."""
    return {
        "cors": cors,
        "service": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
            "code": "SMART-on-FHIR"}]}],
        "description": "Every interaction but this statement needs an OAuth2 bearer token "
                       "from the issuer (e-CPS / Pro Santé Connect for professionals); SMART "
                       "v2 scopes limit what each token may do.",
        "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/"
                              "oauth-uris",
                       "extension": [{"url": "authorize", "valueUri": f"{issuer}/authorize"},
                                     {"url": "token", "valueUri": f"{issuer}/token"},
                                     {"url": "revoke", "valueUri": f"{issuer}/revoke"}]}],
    }


_INS_LOOKUP = {
    "name": "ins-lookup",
    "definition": "urn:carnet:OperationDefinition:Patient-ins-lookup",
    "documentation": "INSi mock: POST a Parameters with ins (valueIdentifier) or the traits "
                     "family, given, gender, birthDate [, birthPlace]; answers the identity "
                     "as a FR Core INS Patient (status RECUP), 404 when INSi knows none.",
}


@cache
def capability_statement(base: str, issuer: str, cors: bool = False) -> bytes:
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
            "security": _security(issuer, cors),
            "resource": [_resource(t) for t in SEARCH_PARAMETERS],
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
        }],
    }
    return orjson.dumps(statement)
