"""Binary resources whose bytes live in the blob store.

The stored Binary resource never carries ``data``: its bytes are in the blob
store under their SHA-256, recorded in ``binary_content``. A JSON Binary is
rebuilt on the fly (``data`` streamed as base64); ITI-68 serves the raw bytes
with ``Range`` support. Large documents are streamed in and out and never held
whole in memory. Binaries are immutable: a changed document is a new one.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.policy import Interaction
from fhir_profiles.pdsm import sha1_base64
from service.access import Access, not_known
from service.errors import (
    BadRequest,
    PayloadTooLarge,
    RangeNotSatisfiable,
    ServiceUnavailable,
)
from service.fhir import interactions
from storage import documents as registry
from storage import resources as repo
from storage.blobs import BlobInfo, BlobStore
from storage.documents import BinaryContent
from storage.errors import BlobTooLarge
from storage.search.values import split_reference

_BYTES_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def media_type(content_type: str) -> str:
    return content_type.split(";")[0].strip().lower()


async def store_inline(blobs: BlobStore, resource: dict[str, Any]) -> tuple[dict[str, Any],
                                                                          BlobInfo]:
    """Move a JSON Binary's base64 ``data`` to the blob store; returns the resource without it."""
    data = resource.get("data", "")
    try:
        content = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest("Binary.data is not valid base64", expression="Binary.data") from exc
    info = await blobs.put_bytes(content)
    return {k: v for k, v in resource.items() if k != "data"}, info


async def store_stream(blobs: BlobStore, chunks: AsyncIterable[bytes], max_bytes: int) -> BlobInfo:
    try:
        return await blobs.put_stream(chunks, max_bytes=max_bytes)
    except BlobTooLarge as exc:
        raise PayloadTooLarge(f"the document exceeds the {max_bytes} byte limit for uploads "
                              "(CARNET_MAX_BINARY_BYTES)") from exc


def content_of(binary_id: str, blob: BlobInfo, resource: dict[str, Any]) -> BinaryContent:
    """Where a Binary's bytes are, as ``binary_content`` records it."""
    return BinaryContent(binary_id, blob.key, blob.size, sha1_base64(blob.sha1),
                         str(resource.get("contentType", "application/octet-stream")))


async def create_binary(conn: AsyncConnection, blobs: BlobStore, resource: dict[str, Any],
                        blob: BlobInfo, *, access: Access,
                        resource_id: str | None = None) -> interactions.Written:
    """Store a Binary resource (without data) and where its bytes are.

    The bytes went to the store before this transaction; the blob sweep could have
    removed them since if an identical orphan was being swept. Holding the blob's
    lock, the bytes are checked to be there still: otherwise 503, nothing stored.
    """
    written = await interactions.create(conn, resource, resource_id=resource_id, access=access)
    await registry.put_binary_content(conn, content_of(written.resource_id, blob, resource))
    if await blobs.size(blob.key) != blob.size:
        raise ServiceUnavailable("the document's bytes were removed while it was being filed "
                                 "(blob sweep); send it again", headers={"Retry-After": "1"})
    return written


@dataclass(frozen=True)
class StoredBinary:
    resource: bytes  # the stored JSON, without data
    version_id: int
    last_updated: int
    content: BinaryContent


async def stored_binary(conn: AsyncConnection, binary_id: str, access: Access,
                        action: Interaction = Interaction.READ) -> StoredBinary:
    """A Binary and where its bytes are, if the caller may read the document they belong to."""
    row = await repo.current_content(conn, "Binary", binary_id)
    content = await registry.binary_content(conn, binary_id)
    if row is None or row.content is None or content is None:
        raise not_known("Binary", binary_id)
    governing = content.document_id or _security_context(row.content)
    document = (await repo.current_content(conn, "DocumentReference", governing,
                                           access.state_wanted()) if governing else None)
    if document is not None:
        access.read_along(document.access.patient_id, document.record)
        await access.check(conn, action, "DocumentReference", str(governing), document.access,
                           document.content, entity=f"Binary/{binary_id}")
    else:  # bytes no document governs yet: staged uploads, for the systems that file them
        await access.check(conn, action, "Binary", binary_id, row.access)
    return StoredBinary(row.content, row.version_id, row.last_updated, content)


def _security_context(resource: bytes) -> str | None:
    reference = (orjson.loads(resource).get("securityContext") or {}).get("reference")
    if not isinstance(reference, str):
        return None
    target_type, document_id = split_reference(reference)
    return document_id if target_type == "DocumentReference" else None


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """``Range: bytes=a-b`` -> (offset, length); None to send everything (RFC 9110 14.2).

    Only single ranges are honoured: a multi-range request gets the whole content,
    which RFC 9110 allows.
    """
    if not header:
        return None
    match = _BYTES_RANGE.match(header.strip())
    if match is None:
        return None  # another unit, or several ranges: ignored
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        length = min(int(last), size)
        if length == 0:
            raise RangeNotSatisfiable(f"range {header!r} asks for no bytes",
                                      headers={"Content-Range": f"bytes */{size}"})
        return size - length, length
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or (last and int(last) < start):
        raise RangeNotSatisfiable(f"range {header!r} is outside the {size} bytes of the document",
                                  headers={"Content-Range": f"bytes */{size}"})
    return start, end - start + 1


async def base64_chunks(chunks: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """Base64 of a byte stream, chunk by chunk (whole 3-byte groups until the end)."""
    pending = b""
    async for chunk in chunks:
        pending += chunk
        cut = len(pending) - len(pending) % 3
        if cut:
            yield base64.b64encode(pending[:cut])
            pending = pending[cut:]
    if pending:
        yield base64.b64encode(pending)


async def binary_json(binary: StoredBinary, blobs: BlobStore) -> AsyncIterator[bytes]:
    """The Binary resource with its ``data``, streamed: the stored JSON plus the base64 bytes."""
    head = binary.resource.rstrip()
    assert head.endswith(b"}")
    yield head[:-1] + b',"data":"'
    async for encoded in base64_chunks(blobs.read(binary.content.blob_key)):
        yield encoded
    yield b'"}'


_REFERENCE = re.compile(r"^[A-Z][A-Za-z]{1,63}/[A-Za-z0-9\-.]{1,64}$")


def raw_binary_resource(content_type: str, security_context: str | None) -> dict[str, Any]:
    """The Binary for bytes POSTed as themselves (``X-Security-Context``: FHIR's header)."""
    resource: dict[str, Any] = {"resourceType": "Binary", "contentType": content_type.strip()}
    if security_context:
        if not _REFERENCE.match(security_context.strip()):
            raise BadRequest(f"X-Security-Context {security_context!r} is not a reference such "
                             "as DocumentReference/123")
        resource["securityContext"] = {"reference": security_context.strip()}
    return resource
