"""Base FHIR R4 validation with fhir.resources (R4B models, wire-compatible with R4).

Returns the canonical JSON form of a valid resource: elements in
specification order, no nulls, so that what is stored and served is stable.
"""

from __future__ import annotations

import base64
import binascii
from functools import cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhir_profiles.outcome import Issue, ValidationFailed


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
        raise ValidationFailed(issues, "structure") from None
    except (ValueError, TypeError) as exc:  # raised by some root validators
        raise ValidationFailed([Issue(f"{resource_type}: {exc}")], "structure") from None
    canonical: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    _check_base64(resource_type, canonical)
    return canonical


def _check_base64(resource_type: str, resource: dict[str, Any]) -> None:
    """fhir.resources accepts any string as base64Binary; Carnet checks Binary.data."""
    if resource_type == "Binary" and "data" in resource:
        try:
            base64.b64decode(resource["data"], validate=True)
        except (binascii.Error, ValueError):
            raise ValidationFailed([Issue("Binary.data is not valid base64",
                                          code="value", expression=["Binary.data"])],
                                   "structure") from None
