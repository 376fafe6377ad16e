"""The OpenAPI description at ``/openapi.json``, completed with what the routes cannot say.

FastAPI describes a route from its signature. Carnet's FHIR routes read raw bodies and answer
with stored bytes, so on its own the description would declare no request bodies, any JSON
as every answer, and FastAPI's ``HTTPValidationError`` as the error, where Carnet answers
every failure with a FHIR ``OperationOutcome`` (service/errors.py). This module completes
the generated description in one place, so that clients' code generators, and the contract
test that fuzzes Carnet against it (tests/e2e/test_contract.py), read the truth:

- every FHIR error is an ``OperationOutcome`` in ``application/fhir+json``, and an invalid
  query or path parameter answers 400 with one, on every route;
- FHIR answers are FHIR JSON resources (Bundles for searches, histories and transactions),
  writes say where the version they wrote is (``Location``, ``ETag``), reads carry ``ETag``;
- ``{resource_type}`` is one of the types Carnet serves and ids follow FHIR's id pattern;
- create, update, transaction, patch, ``_search`` and the operations take the bodies they
  parse, with the headers they read (``If-Match``, ``If-None-Exist``, ``Range``, ``Prefer``)
  and the search parameters every type has; FHIR routes need a bearer token, except the
  two discovery documents;
- the identity provider's token and revocation endpoints take their OAuth forms and answer
  their errors as OAuth JSON (``{"error": ...}``), not FHIR.
"""

from __future__ import annotations

import http
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from service.errors import FHIR_JSON
from storage.search.parameters import SUPPORTED_TYPES

FHIR_PREFIX = "/fhir"
_REF = "#/components/schemas/"
# Statuses a FHIR route may answer with an OperationOutcome (service/errors.py's hierarchy,
# and 429 for a rate limit in front of it).
FHIR_ERROR_STATUSES = (400, 401, 403, 404, 405, 406, 409, 410, 412, 413, 415, 416, 422, 429,
                       500, 503)
_PUBLIC = {"/fhir/metadata", "/fhir/.well-known/smart-configuration"}
_FHIR_ID = r"^[A-Za-z0-9\-.]{1,64}$"  # service/fhir/interactions.py: ID_PATTERN

SCHEMAS: dict[str, dict[str, Any]] = {
    "OperationOutcome": {
        "type": "object", "required": ["resourceType", "issue"],
        "description": "FHIR R4 OperationOutcome: why the request failed.",
        "properties": {
            "resourceType": {"const": "OperationOutcome"},
            "issue": {"type": "array", "minItems": 1, "items": {
                "type": "object", "required": ["severity", "code"],
                "properties": {
                    "severity": {"enum": ["fatal", "error", "warning", "information"]},
                    "code": {"type": "string", "minLength": 1},
                    "diagnostics": {"type": "string"},
                    "expression": {"type": "array", "items": {"type": "string"}}}}}}},
    "Resource": {
        "type": "object", "required": ["resourceType"],
        "description": "A FHIR R4 resource in JSON (https://hl7.org/fhir/R4/json.html).",
        "properties": {"resourceType": {"type": "string", "pattern": "^[A-Z][A-Za-z]+$"},
                       "id": {"type": "string", "pattern": _FHIR_ID}}},
    "Bundle": {
        "type": "object", "required": ["resourceType", "type"],
        "description": "A FHIR R4 Bundle.",
        "properties": {
            "resourceType": {"const": "Bundle"},
            "type": {"enum": ["document", "message", "transaction", "transaction-response",
                              "batch", "batch-response", "history", "searchset",
                              "collection"]},
            "total": {"type": "integer", "minimum": 0},
            "entry": {"type": "array", "items": {"type": "object"}}}},
    "Parameters": {
        "type": "object", "required": ["resourceType"],
        "description": "A FHIR R4 Parameters resource (an operation's input or output).",
        "properties": {
            "resourceType": {"const": "Parameters"},
            "parameter": {"type": "array", "items": {
                "type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}}}}}},
    "OAuthError": {
        "type": "object", "required": ["error"],
        "description": "An OAuth 2.0 error (RFC 6749 section 5.2).",
        "properties": {"error": {"type": "string"}, "error_description": {"type": "string"}}},
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _fhir(schema: str) -> dict[str, Any]:
    """Content: FHIR JSON of a schema."""
    return {FHIR_JSON: {"schema": _ref(schema)}}


def _answer(description: str, schema: str | None) -> dict[str, Any]:
    return {"description": description, **({"content": _fhir(schema)} if schema else {})}


def _errors(statuses: tuple[int, ...] = FHIR_ERROR_STATUSES, schema: str = "OperationOutcome",
            media_type: str = FHIR_JSON) -> dict[str, Any]:
    return {str(status): {"description": http.HTTPStatus(status).phrase,
                          "content": {media_type: {"schema": _ref(schema)}}}
            for status in statuses}


def _bundle_answer(path: str, method: str) -> bool:
    """Searches, histories, the transaction/batch and $summary answer Bundles."""
    return ((path, method) in ((FHIR_PREFIX, "post"), (f"{FHIR_PREFIX}/{{resource_type}}", "get"))
            or path.endswith(("/_history", "/_search", "/$summary")))


_ETAG = {"ETag": {"required": True, "description": "the version: W/\"<versionId>\" (a "
                  "Binary's bytes: their content address)",
                  "schema": {"type": "string", "pattern": '^(W/)?"[^"]+"$'}}}
_LOCATION = {"Location": {"required": True, "description": "the version written: "
                          "<base>/<type>/<id>/_history/<versionId>",
                          "schema": {"type": "string", "pattern": "/_history/[0-9]+$"}}}


def _fhir_successes(path: str, method: str) -> dict[str, Any]:
    """The non-error answers of a FHIR route, with the headers they always carry."""
    if path == "/fhir/.well-known/smart-configuration":
        return {"200": {"description": "SMART configuration", "content": {
            "application/json": {"schema": {"type": "object"}}}}}
    if method == "delete":
        return ({"204": {"description": "deleted (or already gone)"}}
                if path.endswith("{resource_id}") else {})
    resource = "Bundle" if _bundle_answer(path, method) else (
        "Parameters" if path.endswith("$ins-lookup") else "Resource")
    answers = {"200": _answer("the resource", resource)}
    if resource != "Resource" or path == "/fhir/metadata":
        return answers
    if method in ("post", "put", "patch"):  # a write answers where the version it wrote is
        answers["200"]["headers"] = {**_ETAG, **_LOCATION}
        if method != "patch":
            answers["201"] = {**_answer("created", resource), "headers": {**_ETAG, **_LOCATION}}
        return answers
    answers["200"]["headers"] = dict(_ETAG)
    if path == "/fhir/{resource_type}/{resource_id}":
        # ITI-68: a Binary read answers the document's own bytes, ranges, and revalidation.
        answers["200"]["content"]["*/*"] = {"schema": {}}
        answers["206"] = {"description": "the requested byte range of a Binary",
                          "content": {"*/*": {"schema": {}}}, "headers": dict(_ETAG)}
        answers["304"] = {"description": "not modified (If-None-Match on a Binary)",
                          "headers": dict(_ETAG)}
    return answers


def _fhir_body(path: str, method: str) -> dict[str, Any] | None:
    """The request body a FHIR route parses, if any."""
    if path == FHIR_PREFIX and method == "post":
        return {"required": True, "description": "a transaction or batch Bundle",
                "content": _fhir("Bundle")}
    if path.endswith(("$ins-lookup", "$summary")) and method == "post":
        return {"required": True, "content": _fhir("Parameters")}
    if path.endswith("/_search") and method == "post":
        return {"required": False, "description": "search parameters as form fields",
                "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}}
    if method == "patch":
        return {"required": True, "content": {
            "application/json-patch+json": {"schema": {"type": "array", "items": {
                "type": "object", "required": ["op", "path"],
                "properties": {"op": {"enum": ["add", "remove", "replace", "move", "copy",
                                               "test"]},
                               "path": {"type": "string"}, "from": {"type": "string"},
                               "value": {}}}}},
            **_fhir("Parameters")}}
    if method in ("post", "put"):
        return {"required": True, "description": "the resource, of the type the URL names "
                "(a Binary may also be POSTed as the document's own bytes)",
                "content": _fhir("Resource")}
    return None


_PATH_PARAMETERS: dict[str, dict[str, Any]] = {
    "resource_type": {"type": "string", "enum": sorted(SUPPORTED_TYPES)},
    "resource_id": {"type": "string", "pattern": _FHIR_ID},
    "patient_id": {"type": "string", "pattern": _FHIR_ID},
    "version_id": {"type": "string", "pattern": "^[0-9]{1,9}$"},  # http.py: MAX_VERSION
}
_SEARCH_RESULT_PARAMETERS: list[dict[str, Any]] = [
    # Every type's (each type's own are listed in the CapabilityStatement, /fhir/metadata).
    *({"name": name, "in": "query", "required": False, "description": description,
       "schema": {"type": "string"}} for name, description in (
        ("_id", "token"), ("_lastUpdated", "date, with a prefix: ge2024-01-01"),
        ("_tag", "token: system|code"), ("_sort", "comma-separated, -name descending"),
        ("_elements", "comma-separated element names"),
        ("_include", "Type:search-parameter[:Target]"),
        ("_revinclude", "Type:search-parameter[:Target]"))),
    {"name": "_count", "in": "query", "required": False,
     "schema": {"type": "integer", "minimum": 0}},
    {"name": "_summary", "in": "query", "required": False,
     "schema": {"enum": ["true", "false", "count", "data"]}},
    {"name": "_total", "in": "query", "required": False,
     "schema": {"enum": ["none", "estimate", "accurate"]}},
]


def _header(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description,
            "schema": schema}


_VERSION_ETAG = {"type": "string", "pattern": '^(W/)?"[0-9]+"$'}
_IF_MATCH = _header("If-Match", "write only over this version (412 otherwise)", _VERSION_ETAG)
_HANDLING = _header("Prefer", "handling=strict: 400 for an unknown search parameter "
                    "(other preferences are ignored, RFC 7240)", {"type": "string"})
# (method, path) -> the request headers a FHIR route reads.
_HEADERS: dict[tuple[str, str], list[dict[str, Any]]] = {
    ("post", "/fhir/{resource_type}"): [_header(
        "If-None-Exist", "conditional create: the search that must find nothing",
        {"type": "string"})],
    ("put", "/fhir/{resource_type}/{resource_id}"): [_IF_MATCH],
    ("patch", "/fhir/{resource_type}/{resource_id}"): [_IF_MATCH],
    ("delete", "/fhir/{resource_type}/{resource_id}"): [_IF_MATCH],
    ("get", "/fhir/{resource_type}/{resource_id}"): [
        _header("Range", "a Binary's bytes: one range", {
            "type": "string", "pattern": "^bytes=[0-9]*-[0-9]*$"}),
        _header("If-None-Match", "a Binary's bytes: 304 when unchanged", {"type": "string"})],
    ("get", "/fhir/{resource_type}"): [_HANDLING],
    ("post", "/fhir/{resource_type}/_search"): [_HANDLING],
}


def _describe_fhir_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    operation["responses"] = {**_fhir_successes(path, method), **_errors()}
    body = _fhir_body(path, method)
    if body is not None:
        operation["requestBody"] = body
    for parameter in operation.get("parameters", []):
        if parameter["in"] == "path" and parameter["name"] in _PATH_PARAMETERS:
            parameter["schema"] = dict(_PATH_PARAMETERS[parameter["name"]])
    parameters = operation.setdefault("parameters", [])
    parameters.extend(_HEADERS.get((method, path), []))
    if method == "get" and path == "/fhir/{resource_type}":
        parameters.extend(_SEARCH_RESULT_PARAMETERS)
    if path not in _PUBLIC:
        operation["security"] = [{"bearer": []}]


_OAUTH_FORMS: dict[str, dict[str, Any]] = {
    "/idp/token": {
        "type": "object", "required": ["grant_type"],
        "properties": {name: {"type": "string"} for name in (
            "code", "redirect_uri", "code_verifier", "refresh_token", "scope", "client_id",
            "client_secret")} | {"grant_type": {"enum": [
                "authorization_code", "refresh_token", "client_credentials"]}}},
    "/idp/revoke": {
        "type": "object", "required": ["token"],
        "properties": {name: {"type": "string"} for name in (
            "token", "token_type_hint", "client_id", "client_secret")}},
}


# Carnet's other bearer routes fail as the FHIR API does (service/errors.py).
_OUTCOME_ERRORS: dict[str, tuple[int, ...]] = {
    "/notifications/stream": (400, 401, 403), "/notifications/deliveries": (400, 401, 403),
    "/metrics": (401,)}
# The provider's JSON endpoints fail as OAuth says.
_OAUTH_ERRORS: dict[str, tuple[int, ...]] = {
    "/idp/token": (400, 401, 429), "/idp/revoke": (400, 401, 429), "/idp/userinfo": (401,)}


def _describe_other_operation(path: str, method: str, operation: dict[str, Any]) -> None:
    responses = operation.setdefault("responses", {})
    if path in _OUTCOME_ERRORS:
        responses.update(_errors(_OUTCOME_ERRORS[path]))
        if path.startswith("/notifications/"):
            operation["security"] = [{"bearer": []}]
    elif path in _OAUTH_ERRORS:
        responses.update(_errors(_OAUTH_ERRORS[path], "OAuthError", "application/json"))
        if path in _OAUTH_FORMS and method == "post":
            operation["requestBody"] = {"required": True, "content": {
                "application/x-www-form-urlencoded": {"schema": _OAUTH_FORMS[path]}}}
        if path == "/idp/userinfo":
            operation["security"] = [{"bearer": []}]


def _validation_errors_are_outcomes(operation: dict[str, Any]) -> None:
    """FastAPI declares 422 ``HTTPValidationError``; Carnet answers 400 ``OperationOutcome``
    (service/errors.py: validation_error)."""
    responses = operation.get("responses", {})
    declared = responses.get("422", {}).get("content", {}).get("application/json", {})
    if declared.get("schema") == _ref("HTTPValidationError"):
        del responses["422"]
        responses["400"] = _answer("invalid parameters", "OperationOutcome")


def describe(schema: dict[str, Any]) -> dict[str, Any]:
    """Complete FastAPI's generated description (in place; also returned)."""
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            _validation_errors_are_outcomes(operation)
            if path == FHIR_PREFIX or path.startswith(FHIR_PREFIX + "/"):
                _describe_fhir_operation(path, method, operation)
            else:
                _describe_other_operation(path, method, operation)
    components = schema.setdefault("components", {})
    schemas = components.setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        schemas.pop(unused, None)
    schemas.update(SCHEMAS)
    components.setdefault("securitySchemes", {})["bearer"] = {
        "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
        "description": "An access token of the identity provider (e-CPS / Pro Santé Connect "
                       "for professionals, the patient's, or an app's client credentials)."}
    return schema


def install(app: FastAPI) -> None:
    """Serve the completed description (built once, on the first ``/openapi.json``)."""
    generate: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
