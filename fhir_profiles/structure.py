"""Base FHIR R4 validation with fhir.resources (R4B models, wire-compatible with R4).

Returns the canonical JSON form of a valid resource: elements in
specification order, no nulls, so that what is stored and served is stable.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhir_profiles.outcome import Issue, ValidationFailed

DATA_DIR = Path(__file__).parent / "data"
MAX_DEPTH = 64
"""JSON nesting (objects and arrays) a resource may reach. Real resources stay far below
(an ITI-65 Bundle's deepest element is about 10 levels down); the model validation recurses
per level and exhausted the stack (RecursionError, a 500) at about 300."""
# FHIR strings "SHOULD not contain Unicode character points below 32, except for u0009
# (horizontal tab), u000D (carriage return) and u000A (line feed)"; NUL cannot even be
# stored in PostgreSQL text, so Carnet refuses them all.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


@cache
def model_class(resource_type: str) -> Any:
    return get_fhir_model_class(resource_type)


def is_fhir_type(resource_type: str) -> bool:
    try:
        model_class(resource_type)
    except (ValueError, KeyError):
        return False
    return resource_type[:1].isupper()


def element_path(resource_type: str, location: tuple[int | str, ...]) -> str:
    """pydantic's ``('name', 0, 'given')`` -> FHIRPath-like ``Patient.name[0].given``."""
    path = resource_type
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("resource_type",):
            path += ".resourceType"
        else:
            path += f".{part}"
    return path


def validate_structure(data: dict[str, Any]) -> dict[str, Any]:
    """Validate ``data`` against its FHIR type; return its canonical JSON dict."""
    check_tree(data)
    resource_type = data.get("resourceType")
    if not isinstance(resource_type, str) or not is_fhir_type(resource_type):
        raise ValidationFailed([Issue(f"unknown resourceType {resource_type!r}",
                                      expression=["resourceType"])], "structure")
    try:
        model = model_class(resource_type).model_validate(data)
    except ValidationError as exc:
        issues = [Issue(f"{element_path(resource_type, tuple(e['loc']))}: {e['msg']}",
                        code="structure" if e["type"] == "extra_forbidden" else "value",
                        expression=[element_path(resource_type, tuple(e["loc"]))])
                  for e in exc.errors()]
        reported = {path for issue in issues for path in issue.expression}
        issues.extend(issue for issue in _binding_issues(resource_type, data)
                      if not reported.intersection(issue.expression))
        raise ValidationFailed(issues, "structure") from None
    except (ValueError, TypeError) as exc:  # raised by some root validators
        raise ValidationFailed([Issue(f"{resource_type}: {exc}")], "structure") from None
    canonical: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    # The input's base64, not the model's: the model drops what is not base64 and keeps the
    # rest ('QUJD€' became 'QUJD', '_-_-' nothing at all).
    issues = [*_type_issues(resource_type, data, canonical),
              *_binding_issues(resource_type, canonical), *_base64_issues(resource_type, data)]
    if issues:
        raise ValidationFailed(issues, "structure")
    return canonical


def check_tree(data: Any) -> None:
    """Refuse what the model would choke on or store unchanged although FHIR forbids it:
    nesting past MAX_DEPTH, control characters in a key or a string. Iterative, so that the
    check itself never runs out of stack. (Nulls, empty objects and arrays, which FHIR JSON
    forbids too, are still taken: clients send them and the model drops the nulls.)"""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise _refused(f"the resource is nested more than {MAX_DEPTH} levels deep",
                           "too-costly")
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in items:
            where = f"{key!r:.40}" if isinstance(key, str) else f"item {key} of an array"
            if isinstance(key, str) and _CONTROL.search(key):
                raise _refused(f"the element name {where} contains a control character")
            if isinstance(value, str):
                if _CONTROL.search(value):
                    raise _refused(f"the value of {where} contains a control character "
                                   "(only tab, carriage return and line feed are allowed)")
            elif isinstance(value, (dict, list)):
                stack.append((value, depth + 1))


def parameter_list(resource: dict[str, Any], operation: str) -> list[Any]:
    """The ``parameter`` array of the Parameters an operation takes ($ins-lookup, $summary,
    a FHIRPath Patch), after the checks every resource gets (``check_tree``): these bodies
    are read as they come, not through the model."""
    if resource.get("resourceType") != "Parameters":
        raise ValidationFailed([Issue(f"{operation} takes a Parameters resource",
                                      expression=["resourceType"])], "structure")
    check_tree(resource)
    listed = resource.get("parameter") or []
    if not isinstance(listed, list):
        raise ValidationFailed([Issue("Parameters.parameter must be an array",
                                      expression=["Parameters.parameter"])], "structure")
    return listed


def _refused(diagnostics: str, code: str = "value") -> ValidationFailed:
    return ValidationFailed([Issue(diagnostics, code=code)], "structure")


def _json_kind(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    return "string" if isinstance(value, str) else None


def _type_issues(path: str, given: Any, canonical: Any) -> list[Issue]:
    """Primitives sent with another JSON type than FHIR JSON gives them: the model coerces
    in lax mode ("yes" became true, 1 a dateTime, "3" an integer); FHIR JSON does not."""
    if isinstance(given, dict) and isinstance(canonical, dict):
        return [issue for key, value in given.items() if key in canonical
                for issue in _type_issues(f"{path}.{key}", value, canonical[key])]
    if isinstance(given, list) and isinstance(canonical, list):
        if len(given) != len(canonical):
            return []
        return [issue for i, (value, kept) in enumerate(zip(given, canonical, strict=True))
                for issue in _type_issues(f"{path}[{i}]", value, kept)]
    sent, wanted = _json_kind(given), _json_kind(canonical)
    if sent is None or wanted is None or sent == wanted:
        return []
    return [Issue(f"{path}: a JSON {wanted} is expected here, not a {sent} ({given!r:.40})",
                  code="value", expression=[path])]


@cache
def required_bindings() -> dict[str, frozenset[str]]:
    raw = json.loads((DATA_DIR / "required_bindings.json").read_text(encoding="utf-8"))
    return {path: frozenset(codes) for path, codes in raw.items() if not path.startswith("_")}


def _located_values(node: Any, parts: list[str], path: str) -> list[tuple[str, Any]]:
    """Values at a dotted path, each with its indexed location (``Patient.name[1].use``)."""
    if not parts:
        return [(path, node)]
    if isinstance(node, list):
        return [found for i, item in enumerate(node)
                for found in _located_values(item, parts, f"{path}[{i}]")]
    if isinstance(node, dict) and parts[0] in node:
        return _located_values(node[parts[0]], parts[1:], f"{path}.{parts[0]}")
    return []


def _binding_issues(resource_type: str, resource: dict[str, Any]) -> list[Issue]:
    issues = []
    for path, allowed in required_bindings().items():
        element_type, _, rest = path.partition(".")
        if element_type != resource_type:
            continue
        for location, value in _located_values(resource, rest.split("."), resource_type):
            values = value if isinstance(value, list) else [value]
            for i, code in enumerate(values):
                if code not in allowed:
                    where = location if not isinstance(value, list) else f"{location}[{i}]"
                    issues.append(Issue(f"{where}: {code!r} is not in the required value set "
                                        f"({', '.join(sorted(allowed))})", code="code-invalid",
                                        expression=[where]))
    return issues


def _base64_issues(resource_type: str, resource: dict[str, Any]) -> list[Issue]:
    """fhir.resources accepts any string as base64Binary; Carnet checks Binary.data."""
    if resource_type == "Binary" and "data" in resource:
        try:
            base64.b64decode(resource["data"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            return [Issue("Binary.data is not valid base64", code="value",
                          expression=["Binary.data"])]
    return []
