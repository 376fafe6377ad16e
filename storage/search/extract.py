"""Index values of a resource, read from its stored canonical JSON.

The data type is inferred from the JSON shape: a CodeableConcept has
``coding``, a Reference has ``reference``, a Period has ``start``/``end``...
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from storage.search.parameters import (
    EXTENSION_STEP,
    EXTENSION_URLS,
    RESOLVE,
    SearchParam,
    params_for,
)
from storage.search.values import (
    CODE_WIDTH,
    MAX_INSTANT,
    MIN_INSTANT,
    TEXT_WIDTH,
    date_range,
    normalize_text,
    split_reference,
)


def _walk(node: Any, parts: list[str], root: dict[str, Any]) -> Iterator[Any]:
    if not parts:
        if isinstance(node, list):
            yield from node
        elif node is not None:
            yield node
        return
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, parts, root)
        return
    if not isinstance(node, dict):
        return
    step = parts[0]
    if step == RESOLVE:
        yield from _walk(_contained(root, node), parts[1:], root)
    elif step.startswith(EXTENSION_STEP):
        url = EXTENSION_URLS[step.removeprefix(EXTENSION_STEP)]
        yield from _walk([e for e in node.get("extension") or []
                          if isinstance(e, dict) and e.get("url") == url], parts[1:], root)
    else:
        yield from _walk(node.get(step), parts[1:], root)


def _contained(root: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any] | None:
    """The contained resource a ``#id`` reference names (FHIRPath ``resolve()``, local only)."""
    target = reference.get("reference")
    if not isinstance(target, str) or not target.startswith("#"):
        return None
    return next((c for c in root.get("contained") or []
                 if isinstance(c, dict) and c.get("id") == target[1:]), None)


def values_at(resource: dict[str, Any], path: str) -> Iterator[Any]:
    yield from _walk(resource, path.split("."), resource)


_STRING_PARTS = ("text", "family", "given", "prefix", "suffix",
                 "line", "city", "district", "state", "postalCode", "country")


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key in _STRING_PARTS:
            part = value.get(key)
            if isinstance(part, str):
                yield part
            elif isinstance(part, list):
                yield from (p for p in part if isinstance(p, str))


def _tokens(value: Any) -> Iterator[tuple[str | None, str]]:
    if isinstance(value, bool):
        yield None, "true" if value else "false"
    elif isinstance(value, str):
        yield None, value
    elif isinstance(value, dict):
        if "coding" in value:
            for coding in value.get("coding") or []:
                yield from _tokens(coding)
        elif "code" in value and isinstance(value["code"], str):
            yield value.get("system"), value["code"]
        elif isinstance(value.get("value"), str):  # Identifier, ContactPoint
            yield value.get("system"), value["value"]


def _dates(value: Any) -> Iterator[tuple[int, int]]:
    if isinstance(value, str):
        yield date_range(value)
    elif isinstance(value, dict) and ("start" in value or "end" in value):
        low = date_range(value["start"])[0] if "start" in value else MIN_INSTANT
        high = date_range(value["end"])[1] if "end" in value else MAX_INSTANT
        yield low, high


def _references(value: Any) -> Iterator[tuple[str | None, str]]:
    if isinstance(value, dict):
        ref = value.get("reference")
        if isinstance(ref, str) and not ref.startswith("#"):
            yield split_reference(ref)
    elif isinstance(value, str):
        yield None, value


@dataclass
class IndexEntries:
    tokens: list[tuple[str, str | None, str]] = field(default_factory=list)
    strings: list[tuple[str, str, str]] = field(default_factory=list)
    dates: list[tuple[str, int, int]] = field(default_factory=list)
    references: list[tuple[str, str | None, str]] = field(default_factory=list)


def extract_index_entries(resource: dict[str, Any]) -> IndexEntries:
    """Every index value of every supported search parameter of ``resource``."""
    entries = IndexEntries()
    for param in params_for(resource["resourceType"]).values():
        for path in param.paths:
            for value in values_at(resource, path):
                _add(entries, param, value)
    return entries


def _add(entries: IndexEntries, param: SearchParam, value: Any) -> None:
    if param.type == "token":
        for system, code in _tokens(value):
            entries.tokens.append((param.name, system and system[:CODE_WIDTH],
                                   code[:CODE_WIDTH]))
    elif param.type == "uri":
        if isinstance(value, str):
            entries.tokens.append((param.name, None, value[:CODE_WIDTH]))
    elif param.type == "string":
        for text in _strings(value):
            entries.strings.append((param.name, normalize_text(text)[:CODE_WIDTH],
                                    text[:TEXT_WIDTH]))
    elif param.type == "date":
        for low, high in _dates(value):
            entries.dates.append((param.name, low, high))
    elif param.type == "reference":
        for target_type, target_id in _references(value):
            if param.only_targets and target_type not in param.targets:
                continue
            entries.references.append((param.name, target_type, target_id[:TEXT_WIDTH]))


def patient_of(resource: dict[str, Any]) -> str | None:
    """Whose record a resource belongs to: its ``patient`` reference, or itself for a Patient."""
    if resource["resourceType"] == "Patient":
        return str(resource["id"]) if resource.get("id") else None
    param = params_for(resource["resourceType"]).get("patient")
    for path in param.paths if param is not None else ():
        for value in values_at(resource, path):
            for target_type, target_id in _references(value):
                if target_type == "Patient":
                    return target_id
    return None
