"""FHIR REST routes: parse HTTP, open the transaction, call a use case, respond."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from starlette.responses import Response

from auth.policy import Interaction
from auth.principal import Principal
from service.access import authorize
from service.deps import DatabaseDep, PrincipalDep, SettingsDep
from service.errors import BadRequest, MethodNotAllowed, UnsupportedMediaType
from service.fhir import interactions, transaction
from service.fhir.capability import capability_statement
from service.fhir.history import history
from service.fhir.http import (
    base_url,
    check_acceptable,
    etag,
    fhir_json,
    http_date,
    parse_if_match,
    parse_version,
    prefer,
    read_body,
    read_json_resource,
    wants_pretty,
)
from service.fhir.insi import ins_lookup_operation
from service.fhir.search import SearchRequest, search
from service.fhir.smart import smart_configuration
from service.settings import Settings
from storage.db import Database

router = APIRouter(prefix="/fhir", tags=["FHIR"])
# Fixed paths first: the generic /{resource_type}/{resource_id} below would take them.
router.add_api_route("/.well-known/smart-configuration", smart_configuration, methods=["GET"],
                     summary="SMART configuration (public)")
router.add_api_route("/Patient/$ins-lookup", ins_lookup_operation, methods=["POST"],
                     summary="INSi mock: the INS and traits for given traits, or an INS")


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
                           principal: Principal, resource_type: str,
                           pairs: list[tuple[str, str]]) -> Response:
    check_acceptable(request)
    interactions.check_type(resource_type)
    search_request = SearchRequest(resource_type, pairs, base_url(request, settings.public_url),
                                   principal,
                                   strict=prefer(request).get("handling") == "strict",
                                   default_count=settings.default_page_size,
                                   max_count=settings.max_page_size)
    async with db.read() as conn:
        content = await search(conn, search_request)
    return fhir_json(content, pretty=wants_pretty(request))


async def _history_response(request: Request, settings: Settings, db: Database,
                            principal: Principal, resource_type: str,
                            resource_id: str | None) -> Response:
    check_acceptable(request)
    interactions.check_type(resource_type)
    authorize(principal, Interaction.HISTORY_TYPE if resource_id is None
              else Interaction.HISTORY_INSTANCE, resource_type)
    async with db.read() as conn:
        content = await history(conn, base=base_url(request, settings.public_url),
                                resource_type=resource_type, resource_id=resource_id,
                                pairs=request.query_params.multi_items(),
                                default_count=settings.default_page_size,
                                max_count=settings.max_page_size)
    return fhir_json(content, pretty=wants_pretty(request))


@router.get("/metadata", summary="CapabilityStatement")
async def metadata(request: Request, settings: SettingsDep) -> Response:
    check_acceptable(request)
    return fhir_json(capability_statement(base_url(request, settings.public_url),
                                          settings.effective_issuer),
                     pretty=wants_pretty(request))


@router.post("", summary="transaction or batch Bundle")
@router.post("/", include_in_schema=False)
async def transaction_or_batch(request: Request, settings: SettingsDep, db: DatabaseDep,
                               principal: PrincipalDep) -> Response:
    check_acceptable(request)
    data = await read_json_resource(request, settings.max_body_bytes)
    context = transaction.BundleContext(
        base_url(request, settings.public_url), principal, settings.default_page_size,
        settings.max_page_size, prefer(request).get("return") == "representation")
    return fhir_json(await transaction.process(db, data, context), pretty=wants_pretty(request))


@router.get("/{resource_type}", summary="search (GET)")
@router.get("/{resource_type}/_search", include_in_schema=False)
async def search_get(resource_type: str, request: Request, settings: SettingsDep,
                     db: DatabaseDep, principal: PrincipalDep) -> Response:
    return await _search_response(request, settings, db, principal, resource_type,
                                  request.query_params.multi_items())


@router.post("/{resource_type}/_search", summary="search (POST form)")
async def search_post(resource_type: str, request: Request, settings: SettingsDep,
                      db: DatabaseDep, principal: PrincipalDep) -> Response:
    media = request.headers.get("content-type", "").split(";")[0].strip()
    if media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded")
    body = await read_body(request, settings.max_body_bytes)
    try:
        form = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(f"the form body cannot be parsed: {exc}") from exc
    return await _search_response(request, settings, db, principal, resource_type,
                                  request.query_params.multi_items() + form)


@router.post("/{resource_type}", summary="create")
async def create(resource_type: str, request: Request, settings: SettingsDep,
                 db: DatabaseDep, principal: PrincipalDep) -> Response:
    resource = await _incoming_resource(request, settings, resource_type)
    authorize(principal, Interaction.CREATE, resource_type)
    if_none_exist = request.headers.get("if-none-exist")
    if if_none_exist:
        authorize(principal, Interaction.SEARCH, resource_type)
    async with db.write() as conn:
        if if_none_exist:
            written = await interactions.conditional_create(conn, resource,
                                                            if_none_exist.lstrip("?"))
        else:
            written = await interactions.create(conn, resource)
    return _written_response(request, settings, written)


@router.put("/{resource_type}", summary="conditional update")
async def conditional_update(resource_type: str, request: Request, settings: SettingsDep,
                             db: DatabaseDep, principal: PrincipalDep) -> Response:
    resource = await _incoming_resource(request, settings, resource_type)
    authorize(principal, Interaction.SEARCH, resource_type)
    authorize(principal, Interaction.UPDATE, resource_type)
    async with db.write() as conn:
        written = await interactions.conditional_update(conn, resource_type,
                                                        request.url.query, resource)
    return _written_response(request, settings, written)


@router.delete("/{resource_type}", summary="conditional delete (not supported)")
async def conditional_delete(resource_type: str, principal: PrincipalDep) -> Response:
    interactions.check_type(resource_type)
    raise MethodNotAllowed("conditional delete is not supported; delete by id")


@router.get("/{resource_type}/_history", summary="type history")
async def type_history(resource_type: str, request: Request, settings: SettingsDep,
                       db: DatabaseDep, principal: PrincipalDep) -> Response:
    return await _history_response(request, settings, db, principal, resource_type, None)


@router.get("/{resource_type}/{resource_id}", summary="read")
async def read(resource_type: str, resource_id: str, request: Request,
               db: DatabaseDep, principal: PrincipalDep) -> Response:
    check_acceptable(request)
    interactions.check_type(resource_type)
    authorize(principal, Interaction.READ, resource_type)
    async with db.read() as conn:
        content, version_id, last_updated = await interactions.read(conn, resource_type,
                                                                    resource_id)
    headers = {"ETag": etag(version_id), "Last-Modified": http_date(last_updated)}
    return fhir_json(content, headers=headers, pretty=wants_pretty(request))


@router.put("/{resource_type}/{resource_id}", summary="update (or create with this id)")
async def update(resource_type: str, resource_id: str, request: Request, settings: SettingsDep,
                 db: DatabaseDep, principal: PrincipalDep) -> Response:
    interactions.check_id(resource_id)
    resource = await _incoming_resource(request, settings, resource_type)
    authorize(principal, Interaction.UPDATE, resource_type)
    if_match = parse_if_match(request.headers.get("if-match"))
    async with db.write() as conn:
        written = await interactions.update(conn, resource_type, resource_id, resource,
                                            if_match=if_match)
    return _written_response(request, settings, written)


@router.delete("/{resource_type}/{resource_id}", summary="delete (logical)")
async def delete(resource_type: str, resource_id: str, request: Request,
                 db: DatabaseDep, principal: PrincipalDep) -> Response:
    interactions.check_type(resource_type)
    authorize(principal, Interaction.DELETE, resource_type)
    if_match = parse_if_match(request.headers.get("if-match"))
    async with db.write() as conn:
        version_id = await interactions.delete(conn, resource_type, resource_id,
                                               if_match=if_match)
    headers = {"ETag": etag(version_id)} if version_id is not None else {}
    return Response(status_code=204, headers=headers)


@router.get("/{resource_type}/{resource_id}/_history", summary="instance history")
async def instance_history(resource_type: str, resource_id: str, request: Request,
                           settings: SettingsDep, db: DatabaseDep,
                           principal: PrincipalDep) -> Response:
    return await _history_response(request, settings, db, principal, resource_type,
                                   resource_id)


@router.get("/{resource_type}/{resource_id}/_history/{version_id}", summary="vread")
async def vread(resource_type: str, resource_id: str, version_id: str, request: Request,
                db: DatabaseDep, principal: PrincipalDep) -> Response:
    check_acceptable(request)
    interactions.check_type(resource_type)
    authorize(principal, Interaction.VREAD, resource_type)
    version = parse_version(version_id)
    async with db.read() as conn:
        content, last_updated = await interactions.vread(conn, resource_type, resource_id,
                                                         version)
    headers = {"ETag": etag(version), "Last-Modified": http_date(last_updated)}
    return fhir_json(content, headers=headers, pretty=wants_pretty(request))
