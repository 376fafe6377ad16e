"""Search use case: https://hl7.org/fhir/R4/search.html

Parsing and SQL live in ``storage.search``; this module turns a page of
matches into a ``searchset`` Bundle with paging links, includes, ``_summary``,
``_elements`` and the lenient/strict handling of unknown parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.policy import Interaction, row_filter
from fhir_profiles.outcome import Issue, operation_outcome
from fhir_profiles.structure import model_class
from service.access import Access, authorize_search
from service.errors import BadRequest
from service.fhir.bundles import bundle, entry
from storage.search.criteria import ReferenceValue, SearchQuery, TokenValue, parse_query
from storage.search.query import (
    Match,
    count_matches,
    decode_search_cursor,
    encode_cursor,
    included_resources,
    search_page,
)

SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
             "code": "SUBSETTED"}


@dataclass(frozen=True)
class SearchRequest:
    resource_type: str
    pairs: list[tuple[str, str]]
    base: str
    access: Access
    strict: bool
    default_count: int
    max_count: int


async def search(conn: AsyncConnection, request: SearchRequest) -> bytes:
    query = parse_query(request.resource_type, request.pairs,
                        default_count=request.default_count, max_count=request.max_count)
    access = request.access
    authorize_search(access.principal, query)
    if query.unknown and request.strict:
        raise BadRequest(f"unknown or unsupported search parameter(s): "
                         f"{', '.join(query.unknown)}", expression=query.unknown[0])
    audit_query = f"{request.resource_type}?{urlencode(request.pairs)}"
    patient_id = one_patient(query)
    if patient_id is not None and not access.internal:
        viewer = await access.check_record(conn, Interaction.SEARCH, request.resource_type,
                                           patient_id, audit_query)
    elif access.emergency is not None:
        raise BadRequest("[emergency-one-patient] an emergency access is to one patient's "
                         "record: search with patient=<id>", expression="patient")
    else:
        viewer = await access.viewer(conn)
    policy = row_filter(viewer)
    if query.summary == "count":
        counted = await count_matches(conn, query, policy)
        access.note_results(Interaction.SEARCH, [], audit_query, patient_id)
        return bundle("searchset", [], total=counted,
                      links=[("self", _link(request, query.cursor))])

    page = await search_page(conn, query, policy)
    total: int | None = None
    if query.total != "none":
        # A first page that holds every match is its own count: no second query.
        complete = not query.cursor and not page.has_more
        total = len(page.matches) if complete else await count_matches(conn, query, policy)
    entries = [entry(f"{request.base}/{m.resource_type}/{m.resource_id}",
                     _shape(m.content, query), search={"mode": "match"})
               for m in page.matches]
    seen = {m.pk for m in page.matches}
    returned = [(m.patient_id, f"{m.resource_type}/{m.resource_id}") for m in page.matches]
    for spec in query.includes:
        for inc in await included_resources(conn, spec, page.matches, policy):
            if inc.pk not in seen:
                seen.add(inc.pk)
                returned.append((inc.patient_id, f"{inc.resource_type}/{inc.resource_id}"))
                entries.append(entry(f"{request.base}/{inc.resource_type}/{inc.resource_id}",
                                     inc.content, search={"mode": "include"}))
    access.note_results(Interaction.SEARCH, returned, audit_query, patient_id)
    if query.unknown:
        outcome = operation_outcome([Issue(f"ignored unknown or unsupported search parameter "
                                           f"{name!r}", "not-supported", "warning",
                                           [name]) for name in query.unknown])
        entries.append(entry(None, orjson.dumps(outcome), search={"mode": "outcome"}))
    return bundle("searchset", entries, total=total, links=_links(request, query, page.matches,
                                                                  page.has_more))


_PATIENT_PARAMS = ("patient", "subject")


def one_patient(query: SearchQuery) -> str | None:
    """The one record a search is aimed at (``patient=<id>``, or a Patient by ``_id``)."""
    for criterion in query.criteria:
        aimed = criterion.name in _PATIENT_PARAMS or (query.resource_type == "Patient"
                                                      and criterion.name == "_id")
        if (not aimed or criterion.modifier is not None or criterion.chain is not None
                or len(criterion.values) != 1):
            continue
        value = criterion.values[0]
        if isinstance(value, ReferenceValue) and value.target_type in (None, "Patient"):
            return value.target_id
        if isinstance(value, TokenValue) and value.code is not None:
            return value.code
    return None


def _links(request: SearchRequest, query: SearchQuery, matches: list[Match],
           has_more: bool) -> list[tuple[str, str]]:
    links = [("self", _link(request, query.cursor)), ("first", _link(request, None))]
    backwards = False
    if query.cursor:
        backwards = decode_search_cursor(query.cursor, query.sort)[1]
    more_before = has_more if backwards else query.cursor is not None
    more_after = True if backwards else has_more
    if matches and more_before:
        links.append(("previous", _link(request, encode_cursor(matches[0].sort_values, True))))
    if matches and more_after:
        links.append(("next", _link(request, encode_cursor(matches[-1].sort_values, False))))
    return links


def _link(request: SearchRequest, cursor: str | None) -> str:
    pairs = [(k, v) for k, v in request.pairs if k != "_cursor"]
    if cursor:
        pairs.append(("_cursor", cursor))
    query_string = urlencode(pairs)
    return f"{request.base}/{request.resource_type}" + (f"?{query_string}" if query_string else "")


def _shape(content: bytes, query: SearchQuery) -> bytes:
    """Apply ``_summary`` / ``_elements``; the common case returns the stored bytes as is."""
    if query.summary in (None, "false") and not query.elements:
        return content
    resource: dict[str, Any] = orjson.loads(content)
    if query.summary == "true":
        model = model_class(resource["resourceType"]).model_validate(resource)
        resource = model.model_dump(mode="json", summary_only=True)
    elif query.summary == "data":
        resource.pop("text", None)
    elif query.elements:
        keep = {"resourceType", "id", "meta", *query.elements}
        resource = {k: v for k, v in resource.items() if k in keep}
    meta = resource.setdefault("meta", {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    return orjson.dumps(resource)
