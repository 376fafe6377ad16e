"""The access matrix (profession x access category) that decides who may read patient data.

The DMP fixes by a national matrix which profession may read which document type; Carnet keeps
its own default matrix as data (``data/access_matrix.json``) so that it can be replaced without
code changes. Each stored resource gets ONE category: a DocumentReference by its type, else its
class, else the fallback; other clinical resources by resourceType. The file is checked once at
import, and a broken matrix stops the import rather than silently opening or closing access.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fhir_profiles.pdsm import CLASS_CODES, DATA_DIR, class_code, type_code

# TRE_G15-ProfessionSante (OID 1.2.250.1.71.1.2.7): the codes a matrix may name.
PROFESSIONS: dict[str, str] = {
    "10": "Médecin", "21": "Pharmacien", "26": "Audioprothésiste", "28": "Opticien-lunetier",
    "40": "Chirurgien-dentiste", "50": "Sage-femme", "60": "Infirmier",
    "69": "Infirmier psychiatrique", "70": "Masseur-kinésithérapeute",
    "80": "Pédicure-podologue", "91": "Orthophoniste", "92": "Orthoptiste",
    "94": "Ergothérapeute", "95": "Diététicien", "96": "Psychomotricien",
    "98": "Manipulateur ERM",
}
ALL = "*"

_PDSM: dict[str, Any] = json.loads((DATA_DIR / "pdsm.json").read_text(encoding="utf-8"))
# Type system group name (as in pdsm.json) -> its URIs; only the groups PDSm accepts for type.
_TYPE_GROUPS: dict[str, list[str]] = {name: _PDSM["systems"][name]
                                      for name in _PDSM["type_systems"]}


class MatrixError(ValueError):
    """The access matrix data is inconsistent; every problem found is listed."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid access matrix:\n- " + "\n- ".join(problems))


@dataclass(frozen=True)
class Matrix:
    """A checked matrix: how resources get a category, and which professions read which."""

    categories: frozenset[str]
    by_type: Mapping[tuple[str, str], str]  # (type system URI, code) -> category
    by_class: Mapping[str, str]  # TRE_A03 class code -> category
    by_resource_type: Mapping[str, str]  # resourceType -> category
    # (resourceType, element, coding system, code prefix) -> category, tried in order before
    # by_resource_type: a psychiatric diagnosis, an imaging result
    by_coding: tuple[tuple[str, str, str, str, str], ...]
    not_governed: frozenset[str]
    fallback: str
    professions: Mapping[str, frozenset[str]]

    def category(self, resource: Mapping[str, Any]) -> str | None:
        """The category of ``resource``; None when the matrix does not govern its type."""
        resource_type = resource.get("resourceType")
        if resource_type in self.not_governed:
            return None
        if resource_type == "DocumentReference":
            doc = dict(resource)
            found = type_code(doc)
            if found is not None and found in self.by_type:
                return self.by_type[found]
            klass = class_code(doc)
            return self.by_class.get(klass, self.fallback) if klass else self.fallback
        for rule_type, element, system, prefix, category in self.by_coding:
            if rule_type == resource_type and _has_coding(resource.get(element), system,
                                                          prefix):
                return category
        # Unknown clinical types fail closed, like unrecognised documents.
        return self.by_resource_type.get(str(resource_type), self.fallback)

    def open_categories(self, profession_codes: Iterable[str]) -> frozenset[str]:
        """Union of the categories open to any of ``profession_codes``; unknown codes add none."""
        return frozenset().union(*(self.professions.get(code, frozenset())
                                   for code in profession_codes))


def _has_coding(concepts: Any, system: str, prefix: str) -> bool:
    """Whether a CodeableConcept (or a list of them) has a coding of ``system`` whose code
    starts with ``prefix``."""
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        codings = concept.get("coding") if isinstance(concept, dict) else None
        for coding in codings if isinstance(codings, list) else []:
            if (isinstance(coding, dict) and coding.get("system") == system
                    and str(coding.get("code") or "").startswith(prefix)):
                return True
    return False


def _coding_rules(name: str, spec: dict[str, Any],
                  problems: list[str]) -> list[tuple[str, str, str, str, str]]:
    """A category's ``codings``: [{resourceType, element, system, prefix}]."""
    found: list[tuple[str, str, str, str, str]] = []
    for rule in spec.get("codings", []) if isinstance(spec.get("codings", []), list) else [None]:
        fields = [str(rule.get(k)) if isinstance(rule, dict) and isinstance(rule.get(k), str)
                  else "" for k in ("resourceType", "element", "system", "prefix")]
        if not all(fields[:3]) or not isinstance(rule, dict) or "prefix" not in rule:
            problems.append(f"category {name!r}: each of 'codings' needs resourceType, "
                            "element, system (strings) and prefix")
            continue
        found.append((fields[0], fields[1], fields[2], fields[3], name))
    return found


def _strings(value: Any) -> list[str] | None:
    return value if isinstance(value, list) and all(isinstance(v, str) for v in value) else None


def _category_rules(name: str, spec: Any, matrix: dict[str, dict[Any, str]],
                    problems: list[str]) -> None:
    """Add one category's types, classes and resource types to ``matrix``, noting clashes."""
    if not isinstance(spec, dict):
        problems.append(f"category {name!r}: expected an object")
        return
    types = spec.get("types", {})
    if not isinstance(types, dict):
        problems.append(f"category {name!r}: 'types' must map a type system to codes")
        types = {}
    entries: list[tuple[str, Any, str]] = []
    for group, codes in types.items():
        if group not in _TYPE_GROUPS:
            problems.append(f"category {name!r}: unknown type system {group!r} (expected "
                            f"{' or '.join(_TYPE_GROUPS)})")
            continue
        for code in _strings(codes) or []:
            entries += [("by_type", (uri, code), f"type {group}#{code}")
                        for uri in _TYPE_GROUPS[group]]
        if _strings(codes) is None:
            problems.append(f"category {name!r}: codes of {group!r} must be a list of strings")
    for key, label in (("classes", "class"), ("resource_types", "resourceType")):
        values = _strings(spec.get(key, []))
        if values is None:
            problems.append(f"category {name!r}: {key!r} must be a list of strings")
            continue
        for value in values:
            if key == "classes" and value not in CLASS_CODES:
                problems.append(f"category {name!r}: {value!r} is not a TRE_A03 class code")
            entries.append(("by_class" if key == "classes" else "by_resource_type", value,
                            f"{label} {value}"))
    for table, key, label in entries:
        other = matrix[table].setdefault(key, name)
        if other != name:
            problems.append(f"{label} is in two categories: {other!r} and {name!r}")


def load_matrix(data: Mapping[str, Any]) -> Matrix:
    """Check and compile matrix data (the shape of ``data/access_matrix.json``).

    Raises :class:`MatrixError` naming every problem: an unknown category or profession
    code, a code mapped to two categories, a bad TRE_A03 class, a missing fallback.
    """
    problems: list[str] = []
    specs = data.get("categories")
    if not isinstance(specs, dict) or not specs:
        raise MatrixError(["'categories' must be a non-empty object"])
    categories = frozenset(str(name) for name in specs)
    rules: dict[str, dict[Any, str]] = {"by_type": {}, "by_class": {}, "by_resource_type": {}}
    by_coding: list[tuple[str, str, str, str, str]] = []
    for name, spec in specs.items():
        _category_rules(name, spec, rules, problems)
        if isinstance(spec, dict):
            by_coding += _coding_rules(name, spec, problems)
    fallback = data.get("fallback")
    if fallback not in categories:
        problems.append(f"fallback {fallback!r} is not a category")
    not_governed = _strings(data.get("not_governed", []))
    if not_governed is None:
        problems.append("'not_governed' must be a list of resource types")
        not_governed = []
    for resource_type in set(not_governed) & set(rules["by_resource_type"]):
        problems.append(f"resourceType {resource_type} is both governed and not governed")
    professions: dict[str, frozenset[str]] = {}
    given = data.get("professions")
    if not isinstance(given, dict):
        problems.append("'professions' must map TRE_G15 profession codes to categories")
        given = {}
    for code, opened in given.items():
        if code not in PROFESSIONS:
            problems.append(f"profession {code!r} is not a TRE_G15 code "
                            f"({', '.join(PROFESSIONS)})")
        if opened == ALL:
            professions[code] = categories
            continue
        names = _strings(opened)
        if names is None:
            problems.append(f"profession {code!r}: expected {ALL!r} or a list of categories")
            continue
        problems += [f"profession {code!r} names unknown category {name!r}"
                     for name in names if name not in categories]
        professions[code] = frozenset(names) & categories
    if problems:
        raise MatrixError(list(dict.fromkeys(problems)))  # a group's URIs repeat a clash
    return Matrix(categories=categories, by_type=rules["by_type"], by_class=rules["by_class"],
                  by_resource_type=rules["by_resource_type"], by_coding=tuple(by_coding),
                  not_governed=frozenset(not_governed), fallback=str(fallback),
                  professions=professions)


MATRIX = load_matrix(json.loads((DATA_DIR / "access_matrix.json").read_text(encoding="utf-8")))
CATEGORIES: frozenset[str] = MATRIX.categories


def access_category(resource: dict[str, Any]) -> str | None:
    """The one access category of a stored resource (None: not patient data the matrix governs)."""
    return MATRIX.category(resource)


def open_categories(profession_codes: Iterable[str]) -> frozenset[str]:
    """Every category a professional holding any of ``profession_codes`` may read."""
    return MATRIX.open_categories(profession_codes)


def is_open(profession_codes: Iterable[str], category: str) -> bool:
    """Whether ``category`` is open to one of ``profession_codes``."""
    return category in open_categories(profession_codes)
