"""Base FHIR R4 validation with fhir.resources (R4B models, wire-compatible with R4).

Returns the canonical JSON form of a valid resource: elements in
specification order, no nulls, so that what is stored and served is stable.
"""

from __future__ import annotations

import base64
import binascii
import json
from functools import cache
from pathlib import Path
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhir_profiles.outcome import Issue, ValidationFailed

DATA_DIR = Path(__file__).parent / "data"


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
    issues = [*_binding_issues(resource_type, canonical), *_base64_issues(resource_type, canonical)]
    if issues:
        raise ValidationFailed(issues, "structure")
    return canonical


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
        except (binascii.Error, ValueError):
            return [Issue("Binary.data is not valid base64", code="value",
                          expression=["Binary.data"])]
    return []
