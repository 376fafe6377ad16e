"""PATCH documents: JSON Patch and FHIRPath Patch. https://hl7.org/fhir/R4/http.html#patch

A patch is parsed once into a function from the current resource (JSON) to the
patched one, so the HTTP route and a transaction's PATCH entry (a Binary
carrying a JSON Patch, or a Parameters carrying a FHIRPath Patch, as IHE MHD
and PDSm send to supersede a document) share the same code.

FHIRPath Patch is supported for simple paths (``Type.element``,
``Type.element[2].child``): ``replace``, ``delete`` and ``add``. The other
operations (``insert``, ``move``) and FHIRPath functions in paths are refused
with a clear message.
"""

from __future__ import annotations

import base64
import binascii
import copy
import re
from collections.abc import Callable
from typing import Any

import jsonpatch
import orjson
from jsonpointer import JsonPointerException

from fhir_profiles.structure import check_tree, parameter_list
from service.errors import BadRequest, Conflict, Unprocessable, UnsupportedMediaType
from service.fhir.http import json_object

JSON_PATCH = "application/json-patch+json"
Patch = Callable[[dict[str, Any]], dict[str, Any]]
_STEP = re.compile(r"^([A-Za-z][A-Za-z0-9_]*)(?:\[(\d+)\])?$")


def json_patch(body: bytes) -> Patch:
    """A JSON Patch document (RFC 6902): 400 unless an array of well-formed operations."""
    try:
        operations = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the JSON Patch is not valid JSON: {exc}") from exc
    if not isinstance(operations, list) or not all(isinstance(o, dict) for o in operations):
        raise BadRequest("a JSON Patch is an array of operations such as "
                         '{"op": "replace", "path": "/status", "value": "entered-in-error"}')
    check_tree(operations)  # applying a patch copies it recursively: no deeper than a resource
    try:
        document = jsonpatch.JsonPatch(operations)  # checks each operation
    except (jsonpatch.InvalidJsonPatch, JsonPointerException, KeyError, TypeError) as exc:
        raise BadRequest(f"invalid JSON Patch: {exc}") from exc

    def apply(resource: dict[str, Any]) -> dict[str, Any]:
        try:
            patched = document.apply(resource)
        except jsonpatch.JsonPatchTestFailed as exc:
            raise Conflict(f"JSON Patch test failed: {exc}") from exc
        except (jsonpatch.JsonPatchException, JsonPointerException, TypeError) as exc:
            raise Unprocessable(f"the JSON Patch cannot be applied: {exc}") from exc
        if not isinstance(patched, dict):
            raise Unprocessable("the JSON Patch must leave a resource (a JSON object)")
        return patched

    return apply


def _part(parts: list[Any], name: str) -> dict[str, Any] | None:
    found = [p for p in parts if isinstance(p, dict) and p.get("name") == name]
    return found[0] if found else None


def _text(parts: list[Any], name: str, index: int) -> str | None:
    part = _part(parts, name)
    if part is None:
        return None
    value = next((v for k, v in part.items() if k.startswith("value")), None)
    if not isinstance(value, str):
        raise BadRequest(f"FHIRPath Patch operation {index}: {name} must be a string")
    return value


def _steps(path: str, resource_type: str, index: int) -> list[tuple[str, int | None]]:
    head, _, rest = path.partition(".")
    if head != resource_type:
        raise BadRequest(f"FHIRPath Patch operation {index}: path {path!r} must start with "
                         f"{resource_type}")
    steps: list[tuple[str, int | None]] = []
    for step in rest.split(".") if rest else []:
        match = _STEP.match(step)
        if match is None:
            raise BadRequest(f"FHIRPath Patch operation {index}: only simple paths such as "
                             f"{resource_type}.status or {resource_type}.securityLabel[0] are "
                             f"supported, not {path!r}")
        steps.append((match.group(1), int(match.group(2)) if match.group(2) else None))
    return steps


def _locate(resource: dict[str, Any], steps: list[tuple[str, int | None]],
            path: str) -> tuple[Any, Any]:
    """(container, key) of the element the steps name; 422 if it is not there."""
    node: Any = resource
    container: Any = None
    key: Any = None
    for name, position in steps:
        if not isinstance(node, dict) or name not in node:
            raise Unprocessable(f"FHIRPath Patch: {path} does not exist in the resource")
        container, key, node = node, name, node[name]
        if position is not None:
            if not isinstance(node, list) or position >= len(node):
                raise Unprocessable(f"FHIRPath Patch: {path} does not exist in the resource")
            container, key, node = node, position, node[position]
    return container, key


def fhirpath_patch(parameters: dict[str, Any], resource_type: str) -> Patch:
    """A FHIRPath Patch (a Parameters of ``operation`` parts) for ``resource_type``."""
    listed = parameter_list(parameters, "a FHIRPath Patch")
    operations: list[tuple[str, list[tuple[str, int | None]], str, str | None, Any]] = []
    for i, parameter in enumerate(listed):
        if not isinstance(parameter, dict) or parameter.get("name") != "operation":
            raise BadRequest(f"FHIRPath Patch parameter {i} must be named operation")
        parts = parameter.get("part") or []
        kind = _text(parts, "type", i)
        path = _text(parts, "path", i)
        if kind not in ("replace", "delete", "add") or path is None:
            raise BadRequest(f"FHIRPath Patch operation {i}: type must be replace, delete or "
                             f"add (insert and move are not supported) and path is required")
        value_part = _part(parts, "value")
        value = next((v for k, v in (value_part or {}).items() if k.startswith("value")), None)
        if kind != "delete" and value is None:
            raise BadRequest(f"FHIRPath Patch operation {i}: {kind} needs a value[x] part")
        name = _text(parts, "name", i) if kind == "add" else None
        if kind == "add" and not name:
            raise BadRequest(f"FHIRPath Patch operation {i}: add needs a name")
        operations.append((kind, _steps(path, resource_type, i), path, name, value))

    def apply(resource: dict[str, Any]) -> dict[str, Any]:
        patched = copy.deepcopy(resource)
        for kind, steps, path, name, value in operations:
            if kind == "add":
                target = _locate(patched, steps, path)
                node = target[0][target[1]] if steps else patched
                if not isinstance(node, dict) or not name:
                    raise Unprocessable(f"FHIRPath Patch: cannot add {name} to {path}")
                existing = node.get(name)
                node[name] = [*existing, value] if isinstance(existing, list) else (
                    [value] if not steps and _is_list_element(resource_type, name) else value)
                continue
            if not steps:
                raise Unprocessable(f"FHIRPath Patch: cannot {kind} the whole resource")
            container, key = _locate(patched, steps, path)
            if kind == "replace":
                container[key] = value
            else:
                del container[key]
        return patched

    return apply


def _is_list_element(resource_type: str, name: str) -> bool:
    """Whether a top-level element of ``resource_type`` repeats (from the FHIR model)."""
    from fhir_profiles.structure import model_class

    field = model_class(resource_type).model_fields.get(name)
    return field is not None and "List" in str(field.annotation)


def patch_from_request(media_type: str, body: bytes, resource_type: str) -> Patch:
    """The patch an HTTP PATCH carries: JSON Patch, or FHIRPath Patch as FHIR JSON."""
    if media_type == JSON_PATCH:
        return json_patch(body)
    if media_type in ("application/fhir+json", "application/json"):
        return fhirpath_patch(json_object(body, "a FHIRPath Patch is a Parameters resource"),
                              resource_type)
    raise UnsupportedMediaType("PATCH takes a JSON Patch (application/json-patch+json) or a "
                               "FHIRPath Patch (a Parameters, application/fhir+json)")


def patch_from_entry(resource: Any, resource_type: str) -> Patch:
    """The patch a transaction entry carries: a Binary holding a JSON Patch, or a Parameters."""
    if not isinstance(resource, dict):
        raise BadRequest("a PATCH entry needs a resource: a Binary holding a JSON Patch or a "
                         "Parameters holding a FHIRPath Patch")
    if resource.get("resourceType") == "Binary":
        if str(resource.get("contentType", "")).split(";")[0].strip() != JSON_PATCH:
            raise BadRequest(f"a PATCH entry's Binary must have contentType {JSON_PATCH}")
        try:
            body = base64.b64decode(str(resource.get("data", "")), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise BadRequest("the PATCH entry's Binary.data is not valid base64") from exc
        return json_patch(body)
    return fhirpath_patch(resource, resource_type)
