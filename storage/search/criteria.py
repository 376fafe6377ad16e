"""Parse a FHIR search query into typed criteria.

Implements the parts of https://hl7.org/fhir/R4/search.html that Carnet
advertises: token, string, date, reference and uri parameters, the
``:missing``, ``:not``, ``:exact``, ``:contains`` and type modifiers, date
prefixes, one level of chaining, OR (comma) and AND (repeated parameter), and
the result parameters ``_count``, ``_sort``, ``_total``, ``_summary``,
``_elements``, ``_include``, ``_revinclude``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from storage.errors import InvalidSearch
from storage.search.parameters import RESOURCE_COLUMNS, SUPPORTED_TYPES, SearchParam, params_for
from storage.search.values import date_range, split_reference

DatePrefix = Literal["eq", "ne", "lt", "gt", "le", "ge", "sa", "eb"]
DATE_PREFIXES: tuple[DatePrefix, ...] = ("eq", "ne", "lt", "gt", "le", "ge", "sa", "eb")
ANY_SYSTEM = object()
_ESCAPE = re.compile(r"\\([,|$\\])")

# Parameters that shape the result rather than filter it; the service reads
# _format and _pretty itself.
RESULT_PARAMETERS = frozenset(
    {"_count", "_sort", "_total", "_summary", "_elements", "_include", "_revinclude",
     "_cursor", "_format", "_pretty"}
)
SORTABLE_TYPES = frozenset({"date", "string", "token", "uri"})
MODIFIERS: dict[str, frozenset[str]] = {
    "token": frozenset({"missing", "not"}),
    "uri": frozenset({"missing", "not"}),
    "string": frozenset({"missing", "exact", "contains"}),
    "date": frozenset({"missing"}),
    "reference": frozenset({"missing"}),
}


@dataclass(frozen=True)
class TokenValue:
    system: str | object | None  # ANY_SYSTEM when the query gave no system part
    code: str | None  # None: any code in that system


@dataclass(frozen=True)
class DateValue:
    prefix: DatePrefix
    low: int
    high: int


@dataclass(frozen=True)
class ReferenceValue:
    target_type: str | None
    target_id: str


Value = TokenValue | str | DateValue | ReferenceValue


@dataclass(frozen=True)
class Criterion:
    """One AND-ed filter: ``values`` are OR-ed. ``chain`` filters the referenced resources."""

    name: str
    type: str
    modifier: str | None
    values: tuple[Value, ...] = ()
    missing: bool | None = None
    chain: tuple[str, tuple[Criterion, ...]] | None = None
    param: SearchParam | None = None
    either: tuple[Criterion, ...] | None = None  # OR-ed alternatives (author.given)


@dataclass(frozen=True)
class SortKey:
    name: str
    descending: bool
    param: SearchParam | None  # None for _id and _lastUpdated


@dataclass(frozen=True)
class IncludeSpec:
    source_type: str
    param: str
    target_type: str | None
    reverse: bool


@dataclass
class SearchQuery:
    resource_type: str
    criteria: list[Criterion] = field(default_factory=list)
    count: int | None = None
    sort: list[SortKey] = field(default_factory=list)
    total: Literal["none", "estimate", "accurate"] | None = None
    summary: Literal["true", "false", "count", "data"] | None = None
    elements: list[str] = field(default_factory=list)
    includes: list[IncludeSpec] = field(default_factory=list)
    cursor: str | None = None
    unknown: list[str] = field(default_factory=list)


def split_unescaped(text: str, separator: str) -> list[str]:
    """Split on ``separator`` unless backslash-escaped; other escapes are kept for ``unescape``."""
    parts: list[str] = []
    current: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            current.append(ch if ch == separator else "\\" + ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == separator:
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    if escaped:
        current.append("\\")
    parts.append("".join(current))
    return parts


def unescape(text: str) -> str:
    return _ESCAPE.sub(r"\1", text)


def parse_query(resource_type: str, pairs: list[tuple[str, str]], *,
                default_count: int, max_count: int) -> SearchQuery:
    """Parse query pairs; unknown parameters are listed in ``unknown``, bad values raise."""
    query = SearchQuery(resource_type=resource_type)
    for key, raw in pairs:
        base = key.split(":", 1)[0].split(".", 1)[0]
        if base in RESULT_PARAMETERS:
            _parse_result_parameter(query, key, raw, max_count)
            continue
        criterion = parse_criterion(resource_type, key, raw)
        if criterion is None:
            query.unknown.append(key)
        else:
            query.criteria.append(criterion)
    if query.count is None:
        query.count = default_count
    return query


def _parse_result_parameter(query: SearchQuery, key: str, raw: str, max_count: int) -> None:
    if key == "_count":
        if not (raw.isascii() and raw.isdigit()):
            raise InvalidSearch(f"_count must be a non-negative integer, got {raw!r}", "_count")
        # A number with more digits than the cap is past it (and int() refuses 4,300 digits).
        digits = raw.lstrip("0") or "0"
        query.count = max_count if len(digits) > len(str(max_count)) \
            else min(int(digits), max_count)
    elif key == "_sort":
        query.sort = [_parse_sort_key(query.resource_type, item)
                      for item in raw.split(",") if item]
    elif key == "_total":
        if raw not in ("none", "estimate", "accurate"):
            raise InvalidSearch("_total must be none, estimate or accurate", "_total")
        query.total = raw  # type: ignore[assignment]
    elif key == "_summary":
        if raw not in ("true", "false", "count", "data"):
            raise InvalidSearch("_summary supports true, false, count and data", "_summary")
        query.summary = raw  # type: ignore[assignment]
    elif key == "_elements":
        query.elements.extend(e.strip() for e in raw.split(",") if e.strip())
    elif key in ("_include", "_revinclude"):
        query.includes.append(_parse_include(query.resource_type, raw, key == "_revinclude"))
    elif key == "_cursor":
        query.cursor = raw
    elif key in ("_format", "_pretty"):
        pass
    else:  # _include:iterate and other result-parameter modifiers
        query.unknown.append(key)


def _parse_sort_key(resource_type: str, item: str) -> SortKey:
    descending = item.startswith("-")
    name = item[1:] if descending else item
    if name in RESOURCE_COLUMNS:
        return SortKey(name, descending, None)
    param = params_for(resource_type).get(name)
    if param is None or param.type not in SORTABLE_TYPES:
        raise InvalidSearch(f"cannot sort {resource_type} by {name!r}", "_sort")
    return SortKey(name, descending, param)


def _parse_include(resource_type: str, raw: str, reverse: bool) -> IncludeSpec:
    label = "_revinclude" if reverse else "_include"
    parts = raw.split(":")
    if len(parts) not in (2, 3) or parts[0] not in SUPPORTED_TYPES:
        raise InvalidSearch(f"{label} must be Type:parameter[:TargetType], got {raw!r}", label)
    source, name = parts[0], parts[1]
    target = parts[2] if len(parts) == 3 else None
    param = params_for(source).get(name)
    if param is None or param.type != "reference":
        raise InvalidSearch(f"{label}: {source} has no reference parameter {name!r}", label)
    if not reverse and source != resource_type:
        raise InvalidSearch(f"_include must start with the searched type {resource_type}", label)
    if target is not None and target not in SUPPORTED_TYPES:
        raise InvalidSearch(f"{label}: unknown target type {target!r}", label)
    return IncludeSpec(source, name, target, reverse)


def parse_criterion(resource_type: str, key: str, raw: str) -> Criterion | None:
    """One filter from ``key=raw``; None when the parameter or modifier is not supported.

    A dotted parameter name (MHD's ``author.given``) matches what the resource
    itself carries (its contained authors) or, as the chain it also is, the
    resources it references.
    """
    dotted, _, dotted_modifier = key.partition(":")
    name_part, _, chain_rest = key.partition(".")
    name, _, modifier = name_part.partition(":")
    if "." in dotted and dotted in params_for(resource_type):
        direct = _parse_named(resource_type, dotted, dotted_modifier or None, "", raw)
        chained = _parse_named(resource_type, name, modifier or None, chain_rest, raw)
        if direct is None or chained is None:
            return direct or chained
        return Criterion(dotted, direct.type, None, either=(direct, chained))
    return _parse_named(resource_type, name, modifier or None, chain_rest, raw)


def _parse_named(resource_type: str, name: str, modifier_or_none: str | None, chain_rest: str,
                 raw: str) -> Criterion | None:
    modifier = modifier_or_none or ""

    if name in RESOURCE_COLUMNS:
        kind = RESOURCE_COLUMNS[name]
        if chain_rest or (modifier_or_none not in (None, "not") if kind == "token" else modifier):
            return None
        return Criterion(name, kind, modifier_or_none, _parse_values(kind, name, raw, None))

    param = params_for(resource_type).get(name)
    if param is None:
        return None
    if chain_rest:
        return _parse_chain(param, modifier_or_none, chain_rest, raw)
    if modifier_or_none == "missing":
        if raw not in ("true", "false"):
            raise InvalidSearch(f"{name}:missing takes true or false", name)
        return Criterion(name, param.type, "missing", missing=raw == "true", param=param)
    if modifier_or_none is not None:
        if param.type == "reference" and modifier_or_none in SUPPORTED_TYPES:
            values = _parse_values("reference", name, raw, param, modifier_or_none)
            return Criterion(name, param.type, None, values, param=param)
        if modifier_or_none not in MODIFIERS[param.type]:
            return None
    return Criterion(name, param.type, modifier_or_none,
                     _parse_values(param.type, name, raw, param), param=param)


def _parse_chain(param: SearchParam, type_modifier: str | None, rest: str,
                 raw: str) -> Criterion | None:
    if param.type != "reference":
        return None
    chained_name = rest.partition(".")[0].partition(":")[0]
    candidates = [type_modifier] if type_modifier else list(param.targets)
    targets = [t for t in candidates
               if t in SUPPORTED_TYPES and (chained_name in params_for(t)
                                            or chained_name in RESOURCE_COLUMNS)]
    if not targets:
        return None
    inner: list[Criterion] = []
    for target in targets:
        criterion = parse_criterion(target, rest, raw)
        if criterion is None:
            return None
        inner.append(criterion)
    return Criterion(param.name, "reference", None,
                     chain=(",".join(targets), tuple(inner)), param=param)


def _parse_values(kind: str, name: str, raw: str, param: SearchParam | None,
                  type_modifier: str | None = None) -> tuple[Value, ...]:
    if "\x00" in raw:
        raise InvalidSearch(f"parameter {name} contains a NUL character", name)
    items = split_unescaped(raw, ",")
    if not any(items):
        raise InvalidSearch(f"parameter {name} has an empty value", name)
    return tuple(_parse_value(kind, name, item, param, type_modifier) for item in items)


def _parse_value(kind: str, name: str, item: str, param: SearchParam | None,
                 type_modifier: str | None) -> Value:
    if kind in ("token", "uri"):
        pieces = split_unescaped(item, "|") if kind == "token" else [item]
        if len(pieces) == 1:
            return TokenValue(ANY_SYSTEM, unescape(item))
        system, code = unescape(pieces[0]), unescape("|".join(pieces[1:]))
        return TokenValue(system or None, code or None)
    item = unescape(item)
    if kind == "string":
        return item
    if kind == "date":
        prefix: DatePrefix = "eq"
        if item[:2] in DATE_PREFIXES:
            prefix, item = item[:2], item[2:]  # type: ignore[assignment]
        try:
            low, high = date_range(item)
        except ValueError as exc:
            raise InvalidSearch(f"parameter {name}: {exc}", name) from exc
        return DateValue(prefix, low, high)
    # reference
    target_type, target_id = split_reference(item)
    if target_type is None and "/" not in item:
        target_type = type_modifier
    elif type_modifier is not None and target_type not in (None, type_modifier):
        raise InvalidSearch(f"parameter {name}: {item!r} is not a {type_modifier}", name)
    return ReferenceValue(target_type, target_id)
