"""Index paths beyond element names: contained resources and extensions by URL."""

from __future__ import annotations

from typing import Any

from storage.search.extract import extract_index_entries, values_at
from storage.search.parameters import EXTENSION_URLS


def document(**extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "DocumentReference", "status": "current",
        "contained": [
            {"resourceType": "PractitionerRole", "id": "role",
             "practitioner": {"reference": "#doc"}},
            {"resourceType": "Practitioner", "id": "doc",
             "name": [{"family": "Martin", "given": ["Jean", "Paul"]}]},
            {"resourceType": "Practitioner", "id": "direct", "name": [{"family": "Petit"}]},
            {"resourceType": "Practitioner", "id": "not-an-author",
             "name": [{"family": "Hidden"}]},
        ],
        "author": [{"reference": "#role"}, {"reference": "#direct"},
                   {"reference": "Practitioner/elsewhere"}, {"reference": "#dangling"}],
        **extra,
    }


def test_resolve_follows_contained_references_only() -> None:
    names = list(values_at(document(), "author.resolve().name.family"))
    assert names == ["Petit"]
    through_role = list(values_at(document(), "author.resolve().practitioner.resolve().name"))
    assert through_role == [{"family": "Martin", "given": ["Jean", "Paul"]}]


def test_author_names_are_indexed_from_the_contained_authors() -> None:
    entries = extract_index_entries(document())
    families = {exact for param, _norm, exact in entries.strings if param == "author.family"}
    givens = {exact for param, _norm, exact in entries.strings if param == "author.given"}
    assert families == {"Martin", "Petit"}
    assert givens == {"Jean", "Paul"}


def test_extensions_are_picked_by_their_url() -> None:
    resource = document(extension=[
        {"url": EXTENSION_URLS["isArchived"], "valueBoolean": True},
        {"url": "http://example.org/other", "valueBoolean": False}])
    assert list(values_at(resource, "extension:isArchived.valueBoolean")) == [True]
    tokens = [t for t in extract_index_entries(resource).tokens if t[0] == "isArchived"]
    assert tokens == [("isArchived", None, "true")]
