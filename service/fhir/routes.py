"""FHIR REST routes: parse HTTP, open the transaction, call a use case, respond."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import Response, StreamingResponse

from auth.policy import Interaction
from service import messaging
from service.access import Access, audited, authorize, not_known
from service.deps import AccessDep, BlobStoreDep, DatabaseDep, PrincipalDep, SettingsDep
from service.documents import binaries, filing
from service.errors import (
    FHIR_JSON,
    BadRequest,
    MethodNotAllowed,
    PayloadTooLarge,
    UnsupportedMediaType,
)
from service.fhir import audit_trail, interactions, transaction
from service.fhir.audit_trail import AUDIT_EVENT
from service.fhir.capability import capability_statement
from service.fhir.history import history
from service.fhir.http import (
    JSON_TYPES,
    base_url,
    check_acceptable,
    etag,
    fhir_json,
    http_date,
    is_plain_number,
    parse_if_match,
    parse_version,
    prefer,
    read_body,
    read_json_resource,
    wants_pretty,
)
from service.fhir.insi import ins_lookup_operation
from service.fhir.patch import patch_from_request
from service.fhir.search import SearchRequest, one_patient, search
from service.fhir.smart import smart_configuration
from service.fhir.summary import summary_by_identifier, summary_of_patient
from service.settings import Settings
from storage.blobs import BlobStore
from storage.db import Database
from storage.search.criteria import parse_query

router = APIRouter(prefix="/fhir", tags=["FHIR"])
# Fixed paths first: the generic /{resource_type}/{resource_id} below would take them.
router.add_api_route("/.well-known/smart-configuration", smart_configuration, methods=["GET"],
                     summary="SMART configuration (public)")
router.add_api_route("/Patient/$ins-lookup", ins_lookup_operation, methods=["POST"],
                     summary="INSi mock: the INS and traits for given traits, or an INS")
# One route per method: a route with two methods gives OpenAPI one operation id twice.
for _method in ("GET", "POST"):
    router.add_api_route("/Patient/$summary", summary_by_identifier, methods=[_method],
                         operation_id=f"summary_by_identifier_{_method.lower()}",
                         summary="IPS patient summary of the patient with this identifier "
                                 "(INS)")
router.add_api_route("/Patient/{patient_id}/$summary", summary_of_patient, methods=["GET"],
                     summary="IPS patient summary (persist=true files it as a document)")


def _written_response(request: Request, settings: Settings,
                      written: interactions.Written) -> Response:
    base = base_url(request, settings.public_url)
    headers = {"Location": f"{base}/{written.location}", "ETag": etag(written.version_id),
               "Last-Modified": http_date(written.last_updated)}
    status = 201 if written.created else 200
    if prefer(request).get("return") == "minimal":
        return Response(status_code=status, headers=headers)
    return fhir_json(written.content, status, headers, wants_pretty(request))


async def _incoming_resource(request: Request, settings: Settings,
                             resource_type: str) -> dict[str, Any]:
    """The validated resource of a create or update body, for the type the URL names."""
    check_acceptable(request)
    interactions.check_type(resource_type)
    return interactions.validate(await read_json_resource(request, settings.max_body_bytes),
                                 resource_type)


async def _search_response(request: Request, settings: Settings, db: Database,
                           access: Access, resource_type: str,
                           pairs: list[tuple[str, str]]) -> Response:
    check_acceptable(request)
    interactions.check_type(resource_type)
    base = base_url(request, settings.public_url)
    if access.emergency is not None and resource_type != AUDIT_EVENT:
        aimed = one_patient(parse_query(resource_type, pairs,
                                        default_count=settings.default_page_size,
                                        max_count=settings.max_page_size))
        if aimed is not None:
            await access.open_emergency_before(aimed)
    async with audited(access), db.query() as conn:
        if resource_type == AUDIT_EVENT:
            content = await audit_trail.search(conn, access, pairs, base=base,
                                               default_count=settings.default_page_size,
                                               max_count=settings.max_page_size)
        else:
            content = await search(conn, SearchRequest(
                resource_type, pairs, base, access,
                strict=prefer(request).get("handling") == "strict",
                default_count=settings.default_page_size, max_count=settings.max_page_size))
    return fhir_json(content, pretty=wants_pretty(request))


async def _history_response(request: Request, settings: Settings, db: Database,
                            access: Access, resource_type: str,
                            resource_id: str | None) -> Response:
    check_acceptable(request)
    interactions.check_type(resource_type)
    authorize(access.principal, Interaction.HISTORY_TYPE if resource_id is None
              else Interaction.HISTORY_INSTANCE, resource_type)
    if resource_type == AUDIT_EVENT:
        raise MethodNotAllowed("the audit trail has no history: its entries never change")
    async with audited(access), db.query() as conn:
        content = await history(conn, base=base_url(request, settings.public_url),
                                resource_type=resource_type, resource_id=resource_id,
                                pairs=request.query_params.multi_items(),
                                default_count=settings.default_page_size,
                                max_count=settings.max_page_size, access=access)
    return fhir_json(content, pretty=wants_pretty(request))


@router.get("/metadata", summary="CapabilityStatement")
async def metadata(request: Request, settings: SettingsDep) -> Response:
    check_acceptable(request)
    return fhir_json(capability_statement(base_url(request, settings.public_url),
                                          settings.effective_issuer,
                                          cors=bool(settings.cors_origins)),
                     pretty=wants_pretty(request))


@router.post("", summary="transaction or batch Bundle")
@router.post("/", include_in_schema=False)
async def transaction_or_batch(request: Request, settings: SettingsDep, db: DatabaseDep,
                               blobs: BlobStoreDep, access: AccessDep) -> Response:
    check_acceptable(request)
    data = await read_json_resource(request, settings.max_body_bytes)
    context = transaction.BundleContext(
        base_url(request, settings.public_url), access, settings.default_page_size,
        settings.max_page_size, prefer(request).get("return") == "representation", blobs,
        max_entries=settings.max_bundle_entries)
    async with audited(access):
        content = await transaction.process(db, data, context)
    return fhir_json(content, pretty=wants_pretty(request))


@router.get("/{resource_type}", summary="search (GET)")
@router.get("/{resource_type}/_search", include_in_schema=False)
async def search_get(resource_type: str, request: Request, settings: SettingsDep,
                     db: DatabaseDep, access: AccessDep) -> Response:
    return await _search_response(request, settings, db, access, resource_type,
                                  request.query_params.multi_items())


@router.post("/{resource_type}/_search", summary="search (POST form)")
async def search_post(resource_type: str, request: Request, settings: SettingsDep,
                      db: DatabaseDep, access: AccessDep) -> Response:
    media = request.headers.get("content-type", "").split(";")[0].strip()
    if media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded")
    body = await read_body(request, settings.max_body_bytes)
    try:
        form = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the form body cannot be parsed: {exc}") from exc
    return await _search_response(request, settings, db, access, resource_type,
                                  request.query_params.multi_items() + form)


def _is_raw_upload(request: Request, resource_type: str) -> bool:
    """ITI-68's counterpart: a Binary POSTed as the document's own bytes, not as FHIR JSON."""
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return resource_type == "Binary" and bool(media) and media not in JSON_TYPES


@router.post("/{resource_type}", summary="create (a Binary also as raw bytes)")
async def create(resource_type: str, request: Request, settings: SettingsDep,
                 db: DatabaseDep, blobs: BlobStoreDep, access: AccessDep) -> Response:
    interactions.check_writable(resource_type)
    if _is_raw_upload(request, resource_type):
        authorize(access.principal, Interaction.CREATE, resource_type)
        return await _raw_upload(request, settings, db, access, blobs)
    resource = await _incoming_resource(request, settings, resource_type)
    authorize(access.principal, Interaction.CREATE, resource_type)
    if resource_type == messaging.COMMUNICATION:  # MSSanté's no-reply, as a header
        resource = messaging.no_reply_header(resource, request.headers.get("x-mss-mes"))
    if_none_exist = request.headers.get("if-none-exist")
    filing.check_method(resource_type, "POST", conditional=bool(if_none_exist))
    if if_none_exist:
        authorize(access.principal, Interaction.SEARCH, resource_type)
    blob = None
    if resource_type == "Binary":
        resource, blob = await binaries.store_inline(blobs, resource)
    async with audited(access), access.transaction(db) as conn:
        if if_none_exist:
            written = await interactions.conditional_create(conn, resource,
                                                            if_none_exist.lstrip("?"),
                                                            access=access)
        elif blob is not None:
            written = await binaries.create_binary(conn, blobs, resource, blob, access=access)
        elif resource_type == "DocumentReference":
            written = await filing.file_document(
                conn, resource, base=base_url(request, settings.public_url), access=access)
        else:
            written = await interactions.create(conn, resource, access=access)
    return _written_response(request, settings, written)


async def _raw_upload(request: Request, settings: Settings, db: Database, access: Access,
                      blobs: BlobStore) -> Response:
    check_acceptable(request)
    declared = request.headers.get("content-length")
    if declared and is_plain_number(declared) and int(declared) > settings.max_binary_bytes:
        raise PayloadTooLarge(f"the document's {declared} bytes exceed the "
                              f"{settings.max_binary_bytes} byte limit (CARNET_MAX_BINARY_BYTES)")
    resource = binaries.raw_binary_resource(request.headers["content-type"],
                                            request.headers.get("x-security-context"))
    blob = await binaries.store_stream(blobs, request.stream(), settings.max_binary_bytes)
    async with audited(access), access.transaction(db) as conn:
        written = await binaries.create_binary(conn, blobs, resource, blob, access=access)
    return _written_response(request, settings, written)


@router.put("/{resource_type}", summary="conditional update")
async def conditional_update(resource_type: str, request: Request, settings: SettingsDep,
                             db: DatabaseDep, access: AccessDep) -> Response:
    interactions.check_writable(resource_type)
    filing.check_method(resource_type, "PUT")
    resource = await _incoming_resource(request, settings, resource_type)
    authorize(access.principal, Interaction.SEARCH, resource_type)
    authorize(access.principal, Interaction.UPDATE, resource_type)
    async with audited(access), access.transaction(db) as conn:
        written = await interactions.conditional_update(conn, resource_type, request.url.query,
                                                        resource, access=access)
    return _written_response(request, settings, written)


@router.delete("/{resource_type}", summary="conditional delete (not supported)")
async def conditional_delete(resource_type: str, principal: PrincipalDep) -> Response:
    interactions.check_type(resource_type)
    raise MethodNotAllowed("conditional delete is not supported; delete by id")


@router.get("/{resource_type}/_history", summary="type history")
async def type_history(resource_type: str, request: Request, settings: SettingsDep,
                       db: DatabaseDep, access: AccessDep) -> Response:
    return await _history_response(request, settings, db, access, resource_type, None)


@router.get("/{resource_type}/{resource_id}", summary="read (a Binary: ITI-68, the bytes)")
async def read(resource_type: str, resource_id: str, request: Request,
               db: DatabaseDep, blobs: BlobStoreDep, access: AccessDep) -> Response:
    if resource_type == "Binary":
        authorize(access.principal, Interaction.READ, resource_type)
        return await _binary_response(request, db, blobs, resource_id, access)
    check_acceptable(request)
    interactions.check_type(resource_type)
    authorize(access.principal, Interaction.READ, resource_type)
    async with audited(access), db.read() as conn:
        if resource_type == AUDIT_EVENT:
            content, version_id, last_updated = await audit_trail.read(conn, access,
                                                                       resource_id)
        else:
            content, version_id, last_updated = await interactions.read(
                conn, resource_type, resource_id, access)
    headers = {"ETag": etag(version_id), "Last-Modified": http_date(last_updated)}
    return fhir_json(content, headers=headers, pretty=wants_pretty(request))


def _wants_fhir_resource(request: Request) -> bool:
    """For a Binary: FHIR JSON asked for explicitly; anything else gets the document's bytes."""
    if request.query_params.get("_format") is not None:
        check_acceptable(request)
        return True
    accept = request.headers.get("accept", "").lower()
    return "application/fhir+json" in accept or "application/json+fhir" in accept


def _binary_resource_response(binary: binaries.StoredBinary, blobs: BlobStore) -> Response:
    """The Binary resource as FHIR JSON, its ``data`` streamed from the blob store."""
    return StreamingResponse(binaries.binary_json(binary, blobs), media_type=FHIR_JSON,
                             headers={"ETag": etag(binary.version_id),
                                      "Last-Modified": http_date(binary.last_updated)})


async def _binary_response(request: Request, db: Database, blobs: BlobStore,
                           binary_id: str, access: Access) -> Response:
    """ITI-68 Retrieve Document: the bytes (with Range), or the Binary resource as FHIR JSON."""
    async with audited(access), db.read() as conn:
        binary = await binaries.stored_binary(conn, binary_id, access)
    content = binary.content
    if _wants_fhir_resource(request):
        return _binary_resource_response(binary, blobs)
    strong = f'"{content.blob_key}"'
    headers = {"ETag": strong, "Accept-Ranges": "bytes",
               "Last-Modified": http_date(binary.last_updated),
               # Served bytes are the patient's document, never a page of this site.
               "X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"}
    if strong in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    if_range = request.headers.get("if-range")
    wanted = binaries.byte_range(request.headers.get("range") if if_range in (None, strong)
                                 else None, content.size)
    offset, length = wanted or (0, content.size)
    # Exactly the stored type (media_type= would add a charset to text types).
    headers["Content-Type"] = content.content_type
    headers["Content-Length"] = str(length)
    if wanted is not None:
        headers["Content-Range"] = f"bytes {offset}-{offset + length - 1}/{content.size}"
    return StreamingResponse(blobs.read(content.blob_key, offset, length),
                             status_code=206 if wanted else 200, headers=headers)


@router.patch("/{resource_type}/{resource_id}", summary="patch (JSON Patch, FHIRPath Patch)")
async def patch(resource_type: str, resource_id: str, request: Request, settings: SettingsDep,
                db: DatabaseDep, access: AccessDep) -> Response:
    check_acceptable(request)
    interactions.check_type(resource_type)
    interactions.check_writable(resource_type)
    filing.check_method(resource_type, "PATCH")
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    change = patch_from_request(media, await read_body(request, settings.max_body_bytes),
                                resource_type)
    authorize(access.principal, Interaction.UPDATE, resource_type)
    if_match = parse_if_match(request.headers.get("if-match"))
    async with audited(access), access.transaction(db) as conn:
        written = await interactions.patch(conn, resource_type, resource_id, change,
                                           if_match=if_match, access=access)
    return _written_response(request, settings, written)


@router.put("/{resource_type}/{resource_id}", summary="update (or create with this id)")
async def update(resource_type: str, resource_id: str, request: Request, settings: SettingsDep,
                 db: DatabaseDep, access: AccessDep) -> Response:
    interactions.check_writable(resource_type)
    interactions.check_id(resource_id)
    filing.check_method(resource_type, "PUT")
    resource = await _incoming_resource(request, settings, resource_type)
    authorize(access.principal, Interaction.UPDATE, resource_type)
    if_match = parse_if_match(request.headers.get("if-match"))
    async with audited(access), access.transaction(db) as conn:
        written = await interactions.update(conn, resource_type, resource_id, resource,
                                            if_match=if_match, access=access)
    return _written_response(request, settings, written)


@router.delete("/{resource_type}/{resource_id}", summary="delete (logical)")
async def delete(resource_type: str, resource_id: str, request: Request,
                 db: DatabaseDep, access: AccessDep) -> Response:
    interactions.check_type(resource_type)
    interactions.check_writable(resource_type)
    filing.check_method(resource_type, "DELETE")
    authorize(access.principal, Interaction.DELETE, resource_type)
    if_match = parse_if_match(request.headers.get("if-match"))
    async with audited(access), access.transaction(db) as conn:
        version_id = await interactions.delete(conn, resource_type, resource_id,
                                               if_match=if_match, access=access)
    headers = {"ETag": etag(version_id)} if version_id is not None else {}
    return Response(status_code=204, headers=headers)


@router.get("/{resource_type}/{resource_id}/_history", summary="instance history")
async def instance_history(resource_type: str, resource_id: str, request: Request,
                           settings: SettingsDep, db: DatabaseDep,
                           access: AccessDep) -> Response:
    return await _history_response(request, settings, db, access, resource_type,
                                   resource_id)


@router.get("/{resource_type}/{resource_id}/_history/{version_id}", summary="vread")
async def vread(resource_type: str, resource_id: str, version_id: str, request: Request,
                db: DatabaseDep, blobs: BlobStoreDep, access: AccessDep) -> Response:
    check_acceptable(request)
    interactions.check_type(resource_type)
    authorize(access.principal, Interaction.VREAD, resource_type)
    version = parse_version(version_id)
    if resource_type == "Binary":  # immutable: its one version, with its data
        async with audited(access), db.read() as conn:
            binary = await binaries.stored_binary(conn, resource_id, access, Interaction.VREAD)
        if binary.version_id != version:
            raise not_known("Binary", f"{resource_id}/_history/{version}")
        return _binary_resource_response(binary, blobs)
    async with audited(access), db.read() as conn:
        if resource_type == AUDIT_EVENT:
            content, _, last_updated = await audit_trail.read(conn, access, resource_id)
            if version != 1:
                raise not_known(AUDIT_EVENT, f"{resource_id}/_history/{version}")
        else:
            content, last_updated = await interactions.vread(conn, resource_type, resource_id,
                                                             version, access)
    headers = {"ETag": etag(version), "Last-Modified": http_date(last_updated)}
    return fhir_json(content, headers=headers, pretty=wants_pretty(request))
