"""History: https://hl7.org/fhir/R4/http.html#history (instance and type level)."""

from __future__ import annotations

from urllib.parse import urlencode

from sqlalchemy.ext.asyncio import AsyncConnection

from auth.policy import Interaction, visible_clause
from service.access import Access, not_known
from service.errors import BadRequest
from service.fhir.bundles import bundle, entry
from service.fhir.http import etag, fhir_instant, is_plain_number
from storage import resources as repo
from storage.search.query import decode_cursor, encode_cursor
from storage.search.values import date_range
from storage.tables import RESOURCES

_STATUS = {"POST": "201 Created", "PUT": "200 OK", "PATCH": "200 OK", "DELETE": "204 No Content"}


async def history(conn: AsyncConnection, *, base: str, resource_type: str,
                  resource_id: str | None, pairs: list[tuple[str, str]],
                  default_count: int, max_count: int, access: Access) -> bytes:
    """An instance's history under the rules of its current version; a type's, filtered by
    the same rules in SQL."""
    params = dict(pairs)
    count = params.get("_count", str(default_count))
    if not is_plain_number(count):
        raise BadRequest("_count must be a non-negative integer", expression="_count")
    since = None
    if "_since" in params:
        try:
            since = date_range(params["_since"])[0]
        except ValueError as exc:
            raise BadRequest(f"_since: {exc}", expression="_since") from exc
    after = None
    if "_cursor" in params:
        values, _ = decode_cursor(params["_cursor"], 2)
        if not all(isinstance(v, int) for v in values):
            raise BadRequest("the paging cursor is not valid", expression="_cursor")
        after = (int(values[0]), int(values[1]))
    visible = None
    if resource_id is not None:
        current = await repo.current_version(conn, resource_type, resource_id)
        if current is None:
            raise not_known(resource_type, resource_id)
        await access.check(conn, Interaction.HISTORY_INSTANCE, resource_type, resource_id,
                           current.access, current.content)
    else:
        visible = visible_clause(RESOURCES, await access.viewer(conn))

    limit = min(int(count), max_count)
    versions, has_more = await repo.history_page(
        conn, resource_type=resource_type, resource_id=resource_id, since=since, limit=limit,
        after=after, visible=visible)
    if resource_id is None:
        access.note_results(Interaction.HISTORY_TYPE, [
            (v.patient_id, f"{v.resource_type}/{v.resource_id}/_history/{v.version_id}")
            for v in versions], f"{resource_type}/_history?{urlencode(pairs)}")
    entries = []
    for v in versions:
        url = v.resource_type if v.method == "POST" else f"{v.resource_type}/{v.resource_id}"
        entries.append(entry(f"{base}/{v.resource_type}/{v.resource_id}", v.content,
                             request={"method": v.method, "url": url},
                             response={"status": _STATUS.get(v.method, "200 OK"),
                                       "etag": etag(v.version_id),
                                       "lastModified": fhir_instant(v.last_updated)}))
    path = f"{base}/{resource_type}" + (f"/{resource_id}" if resource_id else "") + "/_history"
    plain = [(k, v) for k, v in pairs if k != "_cursor"]
    links = [("self", path + (f"?{urlencode(pairs)}" if pairs else ""))]
    if has_more and versions:
        last = versions[-1]
        cursor = encode_cursor([last.last_updated, last.pk], False)
        links.append(("next", f"{path}?{urlencode([*plain, ('_cursor', cursor)])}"))
    return bundle("history", entries, links=links)
