"""Transaction and batch Bundles: https://hl7.org/fhir/R4/http.html#transaction

A transaction runs in one database transaction: every entry is stored or none
is. ``urn:uuid:`` and conditional references (``Patient?identifier=...``) are
resolved before anything is written. A batch runs each entry on its own and
reports each entry's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sqlalchemy.ext.asyncio import AsyncConnection

from auth.policy import Interaction
from auth.principal import Principal
from fhir_profiles.outcome import Issue, ValidationFailed, operation_outcome
from fhir_profiles.pdsm import FOLDER, list_kind
from fhir_profiles.structure import validate_structure
from service.access import Access, authorize
from service.documents import binaries, filing
from service.errors import (
    BadRequest,
    Conflict,
    FhirError,
    MethodNotAllowed,
    PayloadTooLarge,
    PreconditionFailed,
    Unprocessable,
    from_storage_error,
)
from service.fhir import interactions
from service.fhir.bundles import bundle, entry
from service.fhir.history import history
from service.fhir.http import etag, fhir_instant, parse_if_match, parse_version
from service.fhir.patch import Patch, patch_from_entry
from service.fhir.search import SearchRequest, search
from storage.blobs import BlobInfo, BlobStore
from storage.db import Database
from storage.errors import StorageError

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3}


@dataclass
class Entry:
    index: int
    method: str
    resource_type: str
    resource_id: str | None
    query: str
    full_url: str | None
    resource: dict[str, Any] | None = None
    if_none_exist: str | None = None
    if_match: int | None = None
    sub_path: list[str] = field(default_factory=list)
    blob: BlobInfo | None = None  # where a POSTed Binary's bytes went
    patch: Patch | None = None


@dataclass
class Outcome:
    status: str
    location: str | None = None
    etag: str | None = None
    last_modified: str | None = None
    resource: bytes | None = None
    outcome: dict[str, Any] | None = None

    def as_entry(self, with_resource: bool) -> bytes:
        response: dict[str, Any] = {"status": self.status}
        for key, value in (("location", self.location), ("etag", self.etag),
                           ("lastModified", self.last_modified), ("outcome", self.outcome)):
            if value is not None:
                response[key] = value
        return entry(None, self.resource if with_resource else None, response=response)


@dataclass(frozen=True)
class BundleContext:
    base: str
    access: Access
    default_count: int
    max_count: int
    return_representation: bool
    blobs: BlobStore
    max_entries: int | None = None  # the API's limit; None for Carnet's own Bundles


def _written(w: interactions.Written) -> Outcome:
    return Outcome("201 Created" if w.created else "200 OK",
                   location=w.location, etag=etag(w.version_id),
                   last_modified=fhir_instant(w.last_updated), resource=w.content)


def parse_entries(data: dict[str, Any], base: str, max_entries: int | None = None
                  ) -> tuple[str, list[Entry | FhirError]]:
    """Check the Bundle's shape and validate every entry; a bad entry becomes its error."""
    if data.get("resourceType") != "Bundle":
        raise BadRequest("POST to the base expects a Bundle", expression="resourceType")
    kind = data.get("type")
    if kind not in ("transaction", "batch"):
        raise BadRequest(f"Bundle.type must be transaction or batch, not {kind!r}",
                         expression="Bundle.type")
    raw_entries = data.get("entry") or []
    if not isinstance(raw_entries, list):
        raise BadRequest("Bundle.entry must be an array", expression="Bundle.entry")
    if max_entries is not None and len(raw_entries) > max_entries:
        raise PayloadTooLarge(f"the Bundle holds {len(raw_entries):,} entries; this server takes "
                              f"at most {max_entries:,} per Bundle (send several)",
                              expression="Bundle.entry")
    # The envelope is FHIR too (no unknown or mistyped element, every entry an object); what
    # each entry holds is checked below, and a batch answers a bad one in its own outcome.
    validate_structure({key: value for key, value in data.items() if key != "entry"})
    if not all(isinstance(raw, dict) for raw in raw_entries):
        raise BadRequest("every Bundle.entry must be a JSON object", expression="Bundle.entry")
    parsed: list[Entry | FhirError] = []
    for i, raw in enumerate(raw_entries):
        try:
            parsed.append(_parse_entry(i, raw, base))
        except ValidationFailed as exc:
            failed = Unprocessable if exc.kind == "profile" else BadRequest
            parsed.append(failed(exc.issues[0].diagnostics, issues=[
                Issue(issue.diagnostics, issue.code, issue.severity,
                      [_entry_path(i, e) for e in issue.expression] or [f"Bundle.entry[{i}]"])
                for issue in exc.issues]))
        except FhirError as exc:
            parsed.append(_located(exc, i))
    full_urls = [e.full_url for e in parsed if isinstance(e, Entry) and e.full_url]
    if len(full_urls) != len(set(full_urls)):
        raise BadRequest("two entries share the same fullUrl", expression="Bundle.entry.fullUrl")
    return kind, parsed


def _interactions(e: Entry) -> list[Interaction]:
    """What an entry does, as the access policy sees it (a conditional one also searches)."""
    if e.method == "POST":
        return [Interaction.CREATE] + ([Interaction.SEARCH] if e.if_none_exist else [])
    if e.method == "PUT":
        return [Interaction.UPDATE] + ([Interaction.SEARCH] if e.resource_id is None else [])
    if e.method == "PATCH":
        return [Interaction.UPDATE]
    if e.method == "DELETE":
        return [Interaction.DELETE]
    if e.resource_id is None or e.resource_id == "_search":
        return []  # a search entry is authorised by the search itself, includes and all
    if e.resource_id == "_history":
        return [Interaction.HISTORY_TYPE]
    if e.sub_path == ["_history"]:
        return [Interaction.HISTORY_INSTANCE]
    return [Interaction.VREAD if e.sub_path else Interaction.READ]


def _authorized(e: Entry | FhirError, principal: Principal) -> Entry | FhirError:
    if isinstance(e, FhirError):
        return e
    try:
        if e.method != "GET":
            interactions.check_writable(e.resource_type)
        for interaction in _interactions(e):
            authorize(principal, interaction, e.resource_type)
    except FhirError as exc:
        return _located(exc, e.index)
    return e


def _entry_path(index: int, expression: str) -> str:
    """``Patient.name[0]`` in entry 3 -> ``Bundle.entry[3].resource.name[0]``."""
    rest = expression.partition(".")[2]
    return f"Bundle.entry[{index}].resource" + (f".{rest}" if rest else "")


def _parse_entry(index: int, raw: Any, base: str) -> Entry:
    if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
        raise BadRequest("each entry needs a request with method and url")
    request = raw["request"]
    method, url = request.get("method"), request.get("url")
    if method not in _ORDER:
        raise MethodNotAllowed(f"method {method!r} is not supported in a Bundle entry")
    if not isinstance(url, str) or not url:
        raise BadRequest("entry.request.url is required")
    if url.startswith(base + "/"):
        url = url[len(base) + 1:]
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise BadRequest(f"entry.request.url {url!r} names no resource type")
    interactions.check_type(path[0])
    filing.check_method(path[0], method,
                        conditional=isinstance(request.get("ifNoneExist"), str))
    resource_id = path[1] if len(path) > 1 else None
    if resource_id is not None and not resource_id.startswith("_"):
        interactions.check_id(resource_id)
    item = Entry(index, method, path[0], resource_id, parts.query,
                 raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None,
                 sub_path=path[2:])
    if method in ("POST", "PUT"):
        resource = raw.get("resource")
        if not isinstance(resource, dict):
            raise BadRequest(f"a {method} entry needs a resource")
        if method == "PUT" and resource_id is not None:
            resource = {**resource, "id": resource.get("id", resource_id)}
        item.resource = interactions.validate(resource, path[0])
        if method == "PUT" and resource_id is None and not parts.query:
            raise BadRequest("a PUT entry needs Type/id or Type?criteria")
    if method == "DELETE" and resource_id is None:
        raise MethodNotAllowed("conditional delete is not supported")
    if method == "PATCH":
        if resource_id is None or resource_id.startswith("_"):
            raise MethodNotAllowed("a PATCH entry names one resource (Type/id); conditional "
                                   "patch is not supported")
        item.patch = patch_from_entry(raw.get("resource"), path[0])
    if isinstance(request.get("ifNoneExist"), str):
        item.if_none_exist = request["ifNoneExist"].lstrip("?")
    if isinstance(request.get("ifMatch"), str):
        item.if_match = parse_if_match(request["ifMatch"])
    return item


async def process(db: Database, data: dict[str, Any], context: BundleContext) -> bytes:
    kind, parsed = parse_entries(data, context.base, context.max_entries)
    parsed = [_authorized(e, context.access.principal) for e in parsed]
    if kind == "transaction":
        errors = [e for e in parsed if isinstance(e, FhirError)]
        if errors:  # report every bad entry at once; nothing is written
            kinds = {type(error) for error in errors}
            kind_of_error = kinds.pop() if len(kinds) == 1 else BadRequest
            raise kind_of_error(errors[0].issues[0].diagnostics,
                                issues=[issue for error in errors for issue in error.issues])
        entries = [e for e in parsed if isinstance(e, Entry)]
        submission = filing.check_submission([e.resource for e in entries
                                              if e.method == "POST" and e.resource is not None])
        for e in entries:  # the bytes go to the blob store before the database transaction
            await _store_blob(e, context.blobs)
        async with context.access.transaction(db) as conn:
            return await _run_transaction(conn, entries, context, submission)
    outcomes = []
    for item in parsed:
        if isinstance(item, Entry):
            try:
                await _store_blob(item, context.blobs)
            except FhirError as exc:
                item = exc
        outcomes.append(_failed(item) if isinstance(item, FhirError)
                        else await _run_batch_entry(db, item, context))
    return bundle("batch-response",
                  [o.as_entry(context.return_representation) for o in outcomes])


async def _store_blob(e: Entry, blobs: BlobStore) -> None:
    if e.method == "POST" and e.resource_type == "Binary" and e.resource is not None:
        try:
            e.resource, e.blob = await binaries.store_inline(blobs, e.resource)
        except FhirError as exc:
            raise _located(exc, e.index) from exc


async def _run_transaction(conn: AsyncConnection, entries: list[Entry],
                           context: BundleContext, submission: bool) -> bytes:
    """Every entry, then the document checks, in one database transaction; the response."""
    outcomes: dict[int, Outcome] = {}
    current: Entry | None = None
    documents = [e for e in entries if e.method == "POST" and e.resource_type ==
                 "DocumentReference" and e.resource is not None]
    try:
        targets = await _assign_targets(conn, entries, context.access)
        if documents:
            resent = await filing.find_resent(conn, [e.resource for e in documents
                                                     if e.resource is not None])
            if resent is not None:
                if resent.response is None:
                    raise Conflict("[document-resent] these documents were filed before, but "
                                   "not by one ITI-65 submission that could be answered again")
                return filing.replayed(resent.response, [e.resource_type for e in entries])
        _link_binaries(entries, documents)
        for current in entries:
            if current.resource is not None:
                current.resource = await _resolve_references(conn, current.resource, targets,
                                                              context.access)
        for current in sorted(entries, key=lambda e: _ORDER[e.method]):
            outcomes[current.index] = await _execute(conn, current, context)
        filed = filing.Filing(
            conn, base=context.base, access=context.access,
            binaries=[binaries.content_of(e.resource_id, e.blob, e.resource) for e in entries
                      if e.blob is not None and e.resource_id and e.resource is not None],
            changed_here={f"{e.resource_type}/{e.resource_id}" for e in entries
                          if e.method in ("PUT", "PATCH")},
            filed_here={str(e.resource_id) for e in documents})
        for current in documents:
            await filed.check(_stored(current))
        current = None
        if submission:
            current = next(e for e in entries if filing.is_submission_set(e.resource))
            filing.check_submission_lists(
                _stored(current), [_stored(e) for e in documents],
                [_stored(e) for e in entries if e.method == "POST" and e.resource is not None
                 and e.resource_type == "List" and list_kind(e.resource) == FOLDER])
    except StorageError as exc:
        raise _located(from_storage_error(exc), current.index if current else None) from exc
    except FhirError as exc:
        raise _located(exc, current.index if current else None) from exc
    answers = [outcomes[e.index] for e in entries]
    if documents:  # the response is kept to answer a re-send of the same submission
        await filed.register(bundle("transaction-response",
                                    [o.as_entry(False) for o in answers]) if submission else None)
    return bundle("transaction-response",
                  [o.as_entry(context.return_representation) for o in answers])


def _stored(e: Entry) -> dict[str, Any]:
    """An entry's resource as it was stored: references resolved, with its id."""
    assert e.resource is not None and e.resource_id is not None
    return {**e.resource, "id": e.resource_id}


def _link_binaries(entries: list[Entry], documents: list[Entry]) -> None:
    """A Binary filed with a document takes it as securityContext (who may read the bytes)."""
    by_url = {e.full_url: e for e in entries
              if e.full_url and e.resource_type == "Binary" and e.resource is not None}
    for document in documents:
        for content in (document.resource or {}).get("content") or []:
            binary = by_url.get(str((content.get("attachment") or {}).get("url")))
            if binary is not None and binary.resource is not None:
                binary.resource = {**binary.resource, "securityContext": {
                    "reference": f"DocumentReference/{document.resource_id}"}}


def _located(exc: FhirError, index: int | None) -> FhirError:
    """Prefix the error's issues with the entry they belong to."""
    if index is None:
        return exc
    exc.issues = [Issue(f"Bundle.entry[{index}]: {i.diagnostics}", i.code, i.severity,
                        [e if e.startswith("Bundle.") else _entry_path(index, e)
                         for e in i.expression] or [f"Bundle.entry[{index}]"])
                  for i in exc.issues]
    return exc


def _failed(error: FhirError) -> Outcome:
    return Outcome(f"{error.status} {HTTPStatus(error.status).phrase}",
                   outcome=operation_outcome(error.issues))


async def _assign_targets(conn: AsyncConnection, entries: list[Entry],
                          access: Access) -> dict[str, str]:
    """fullUrl -> ``Type/id`` for every entry that creates or updates a resource."""
    targets: dict[str, str] = {}
    for e in entries:
        try:
            await _assign_target(conn, e, access)
        except FhirError as exc:
            raise _located(exc, e.index) from exc
        if e.full_url and e.resource_id and e.method in ("POST", "PUT", "GET"):
            targets[e.full_url] = f"{e.resource_type}/{e.resource_id}"
    return targets


async def _assign_target(conn: AsyncConnection, e: Entry, access: Access) -> None:
    """Decide the id an entry writes to: new, or the match of its conditional query."""
    if e.method == "POST":
        existing: list[str] = []
        if e.if_none_exist:
            existing = await interactions.matching_ids(conn, e.resource_type, e.if_none_exist,
                                                       access=access)
            if len(existing) > 1:
                raise PreconditionFailed(
                    f"ifNoneExist {e.if_none_exist!r} matches several resources")
        e.resource_id = existing[0] if existing else interactions.new_id()
        if existing:
            e.if_none_exist = None  # resolved: the entry answers the match
            e.method = "GET"
        else:
            e.query = ""
    elif e.method == "PUT" and e.resource_id is None:
        ids = await interactions.matching_ids(conn, e.resource_type, e.query, access=access)
        if len(ids) > 1:
            raise PreconditionFailed(f"{e.query!r} matches several resources")
        e.resource_id = ids[0] if ids else (e.resource or {}).get("id") or interactions.new_id()
        if e.resource is not None:
            e.resource = {**e.resource, "id": e.resource_id}


async def _resolve_references(conn: AsyncConnection, node: Any, targets: dict[str, str],
                              access: Access) -> Any:
    if isinstance(node, list):
        return [await _resolve_references(conn, item, targets, access) for item in node]
    if not isinstance(node, dict):
        return node
    resolved = {k: await _resolve_references(conn, v, targets, access)
                for k, v in node.items()}
    if isinstance(resolved.get("url"), str) and resolved["url"] in targets:
        resolved["url"] = targets[resolved["url"]]  # Attachment.url naming a Binary entry
    reference = resolved.get("reference")
    if isinstance(reference, str):
        if reference in targets:
            resolved["reference"] = targets[reference]
        elif reference.startswith("urn:uuid:"):
            raise BadRequest(f"reference {reference!r} names no entry of this transaction")
        elif "?" in reference and "/" not in reference.split("?", 1)[0]:
            rtype, _, query = reference.partition("?")
            interactions.check_type(rtype)
            authorize(access.principal, Interaction.SEARCH, rtype)
            ids = await interactions.matching_ids(conn, rtype, query, access=access)
            if len(ids) != 1:
                raise PreconditionFailed(
                    f"conditional reference {reference!r} matches {len(ids)} resources")
            resolved["reference"] = f"{rtype}/{ids[0]}"
    return resolved


async def _execute(conn: AsyncConnection, e: Entry, context: BundleContext) -> Outcome:
    if e.method == "DELETE":
        assert e.resource_id is not None
        await interactions.delete(conn, e.resource_type, e.resource_id, if_match=e.if_match,
                                  access=context.access)
        return Outcome("204 No Content")
    if e.method == "POST":
        assert e.resource is not None
        if e.blob is not None:
            return _written(await binaries.create_binary(conn, context.blobs, e.resource, e.blob,
                                                         resource_id=e.resource_id,
                                                         access=context.access))
        return _written(await interactions.create(conn, e.resource, resource_id=e.resource_id,
                                                  method="POST", access=context.access))
    if e.method == "PUT":
        assert e.resource is not None and e.resource_id is not None
        return _written(await interactions.update(conn, e.resource_type, e.resource_id,
                                                  e.resource, if_match=e.if_match,
                                                  access=context.access))
    if e.method == "PATCH":
        assert e.patch is not None and e.resource_id is not None
        return _written(await interactions.patch(conn, e.resource_type, e.resource_id, e.patch,
                                                 if_match=e.if_match, access=context.access))
    return await _get(conn, e, context)


async def _get(conn: AsyncConnection, e: Entry, context: BundleContext) -> Outcome:
    if e.resource_id is None or e.resource_id == "_search":
        content = await search(conn, SearchRequest(
            e.resource_type, parse_qsl(e.query, keep_blank_values=True), context.base,
            context.access, strict=False, default_count=context.default_count,
            max_count=context.max_count))
        return Outcome("200 OK", resource=content)
    if e.resource_id == "_history" or e.sub_path == ["_history"]:
        content = await history(conn, base=context.base, resource_type=e.resource_type,
                                resource_id=None if e.resource_id == "_history" else e.resource_id,
                                pairs=parse_qsl(e.query), default_count=context.default_count,
                                max_count=context.max_count, access=context.access)
        return Outcome("200 OK", resource=content)
    if e.sub_path[:1] == ["_history"] and len(e.sub_path) == 2:
        version = parse_version(e.sub_path[1])
        content, last_updated = await interactions.vread(conn, e.resource_type, e.resource_id,
                                                         version, context.access)
        return Outcome("200 OK", etag=etag(version),
                       last_modified=fhir_instant(last_updated), resource=content)
    content, version_id, last_updated = await interactions.read(conn, e.resource_type,
                                                                e.resource_id, context.access)
    return Outcome("200 OK", location=f"{e.resource_type}/{e.resource_id}",
                   etag=etag(version_id), last_modified=fhir_instant(last_updated),
                   resource=content)


async def _run_batch_entry(db: Database, e: Entry, context: BundleContext) -> Outcome:
    access = context.access
    noted = len(access.records)
    try:
        if e.method == "GET":
            async with db.query() as conn:
                return await _get(conn, e, context)
        async with access.transaction(db) as conn:
            if e.method == "POST" and e.if_none_exist:
                assert e.resource is not None
                return _written(await interactions.conditional_create(
                    conn, e.resource, e.if_none_exist, access=access))
            if e.method == "PUT" and e.resource_id is None:
                assert e.resource is not None
                return _written(await interactions.conditional_update(
                    conn, e.resource_type, e.query, e.resource, access=access))
            if e.resource is not None:
                e.resource = await _resolve_references(conn, e.resource, {}, access)
            if e.method == "POST" and e.resource_type == "DocumentReference":
                assert e.resource is not None
                return _written(await filing.file_document(conn, e.resource, base=context.base,
                                                           access=access))
            return await _execute(conn, e, context)
    except FhirError as exc:
        access.failed_since(noted, exc.status)
        return _failed(exc)
    except StorageError as exc:
        error = from_storage_error(exc)
        access.failed_since(noted, error.status)
        return _failed(error)

