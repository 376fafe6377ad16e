"""The document registry: Binary contents, filed documents, ITI-65 submissions."""

from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy.exc import IntegrityError

from storage import documents as registry
from storage.db import Database
from storage.documents import BinaryContent, FiledDocument

KEY = "a" * 64


async def test_binary_content_and_blob_references(database: Database) -> None:
    async with database.write() as conn:
        assert not await registry.blob_is_referenced(conn, KEY)
        await registry.put_binary_content(conn, BinaryContent("b1", KEY, 12, "x" * 28,
                                                              "application/pdf"))
    async with database.read() as conn:
        assert await registry.blob_is_referenced(conn, KEY)
        assert await registry.binary_content(conn, "b1") == BinaryContent(
            "b1", KEY, 12, "x" * 28, "application/pdf")
        assert await registry.binary_content(conn, "b2") is None


async def test_a_master_identifier_is_filed_once(database: Database) -> None:
    filed = FiledDocument("urn:ietf:rfc:3986", "urn:oid:1.2.3", "d1", "p1", "app", "h", None)
    other = replace(filed, master_value="urn:oid:1.2.4", document_id="d2")
    async with database.write() as conn:
        submission = await registry.save_submission(conn, b"{}")
        await registry.register_documents(conn, [replace(filed, submission_pk=submission),
                                                 other])
    async with database.write() as conn:
        found = await registry.lock_and_find_filed(conn, [
            ("urn:ietf:rfc:3986", "urn:oid:1.2.3"), ("urn:ietf:rfc:3986", "urn:oid:9.9")])
        assert [f.document_id for f in found] == ["d1"]
        assert await registry.filed_document_by_id(conn, "d1") == found[0]
        assert await registry.submission_response(conn, found[0].submission_pk or 0) == b"{}"
        assert await registry.lock_and_find_filed(conn, []) == []
    with pytest.raises(IntegrityError):
        async with database.write() as conn:
            await registry.register_documents(conn, [filed])
