"""What the document-sharing rules need beyond the FHIR resources themselves.

- ``binary_content``: where each Binary's bytes live in the blob store (the
  stored Binary resource never carries ``data``), with their size and SHA-1.
- ``document_registry``: one row per filed DocumentReference, keyed by its
  ``masterIdentifier`` (the XDS uniqueId, unique across the service), so that a
  re-sent Bundle finds what it filed before, and so that withdrawal can be
  limited to whoever filed the document.
- ``submission``: the transaction-response of each ITI-65 submission, replayed
  when the same submission is sent again.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
    select,
    text,
    tuple_,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Field, SQLModel

from storage.tables import BigKey, ResourceId, table_of


class BinaryContentRow(SQLModel, table=True):
    __tablename__ = "binary_content"
    __table_args__ = (Index("ix_binary_blob", "blob_key"),)

    binary_id: str = Field(sa_column=Column(ResourceId, primary_key=True))
    blob_key: str = Field(sa_column=Column(String(64), nullable=False))
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha1: str = Field(sa_column=Column(String(28), nullable=False))  # base64, as in FHIR
    content_type: str = Field(sa_column=Column(String(256), nullable=False))
    # The document whose access rules govern these bytes (set when it is filed).
    document_id: str | None = Field(default=None, sa_column=Column(ResourceId, nullable=True))


class DocumentRegistryRow(SQLModel, table=True):
    __tablename__ = "document_registry"
    __table_args__ = (
        UniqueConstraint("master_system", "master_value", name="uq_document_master"),
        Index("ix_document_resource", "document_id"),
    )

    pk: int | None = Field(default=None, sa_column=Column(BigKey, primary_key=True,
                                                          autoincrement=True))
    master_system: str = Field(sa_column=Column(String(256), nullable=False))
    master_value: str = Field(sa_column=Column(String(256), nullable=False))
    document_id: str = Field(sa_column=Column(ResourceId, nullable=False))
    patient_id: str = Field(sa_column=Column(ResourceId, nullable=False))
    filed_by: str = Field(sa_column=Column(String(256), nullable=False))
    content_sha1: str = Field(sa_column=Column(String(256), nullable=False))
    submission_pk: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class SubmissionRow(SQLModel, table=True):
    __tablename__ = "submission"

    pk: int | None = Field(default=None, sa_column=Column(BigKey, primary_key=True,
                                                          autoincrement=True))
    response: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


BINARY_CONTENT = table_of(BinaryContentRow)
DOCUMENT_REGISTRY = table_of(DocumentRegistryRow)
SUBMISSIONS = table_of(SubmissionRow)


@dataclass(frozen=True)
class BinaryContent:
    binary_id: str
    blob_key: str
    size: int
    sha1: str
    content_type: str
    document_id: str | None = None


@dataclass(frozen=True)
class FiledDocument:
    master_system: str
    master_value: str
    document_id: str
    patient_id: str
    filed_by: str
    content_sha1: str
    submission_pk: int | None


# Filing a Binary (shared) and sweeping its blob (exclusive) take the same lock, so the
# sweep never deletes a blob between a filing's check that it exists and its commit.
_PG_INSERT_BINARY = text("""
WITH blob_lock AS (SELECT pg_advisory_xact_lock_shared(hashtextextended(:lock_name, 0)))
INSERT INTO binary_content (binary_id, blob_key, size, sha1, content_type)
SELECT :binary_id, :blob_key, :size, :sha1, :content_type FROM blob_lock
""")


def _blob_lock_name(blob_key: str) -> str:
    return f"blob|{blob_key}"


async def put_binary_content(conn: AsyncConnection, content: BinaryContent) -> None:
    """Record a Binary's bytes, holding the blob's lock (shared) until the commit."""
    values = {"binary_id": content.binary_id, "blob_key": content.blob_key,
              "size": content.size, "sha1": content.sha1, "content_type": content.content_type}
    if conn.dialect.name == "postgresql":
        await conn.execute(_PG_INSERT_BINARY,
                           {**values, "lock_name": _blob_lock_name(content.blob_key)})
    else:  # SQLite: write transactions are serialised already
        await conn.execute(BINARY_CONTENT.insert().values(**values))


async def lock_blob_for_removal(conn: AsyncConnection, blob_key: str) -> None:
    """The sweep's side of the blob lock (exclusive): waits for filings in flight."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:name, 0))"),
                           {"name": _blob_lock_name(blob_key)})


_BINARY_COLUMNS = (BINARY_CONTENT.c.binary_id, BINARY_CONTENT.c.blob_key, BINARY_CONTENT.c.size,
                   BINARY_CONTENT.c.sha1, BINARY_CONTENT.c.content_type,
                   BINARY_CONTENT.c.document_id)


async def govern_binaries(conn: AsyncConnection, binary_ids: list[str], document_id: str) -> None:
    """The first document filed with these bytes decides who may read them."""
    if binary_ids:
        await conn.execute(BINARY_CONTENT.update()
                           .where(BINARY_CONTENT.c.binary_id.in_(binary_ids),
                                  BINARY_CONTENT.c.document_id.is_(None))
                           .values(document_id=document_id))


async def binary_content(conn: AsyncConnection, binary_id: str) -> BinaryContent | None:
    row = (await conn.execute(select(*_BINARY_COLUMNS)
                              .where(BINARY_CONTENT.c.binary_id == binary_id))).first()
    return BinaryContent(*row) if row else None


async def binary_contents(conn: AsyncConnection,
                          binary_ids: list[str]) -> dict[str, BinaryContent]:
    """Several at once (one round trip), by id."""
    if not binary_ids:
        return {}
    rows = (await conn.execute(select(*_BINARY_COLUMNS)
                               .where(BINARY_CONTENT.c.binary_id.in_(binary_ids)))).all()
    return {row[0]: BinaryContent(*row) for row in rows}


async def blob_is_referenced(conn: AsyncConnection, blob_key: str) -> bool:
    found = (await conn.execute(select(BINARY_CONTENT.c.binary_id)
                                .where(BINARY_CONTENT.c.blob_key == blob_key).limit(1))).first()
    return found is not None


_REGISTRY_COLUMNS = (DOCUMENT_REGISTRY.c.master_system, DOCUMENT_REGISTRY.c.master_value,
                     DOCUMENT_REGISTRY.c.document_id, DOCUMENT_REGISTRY.c.patient_id,
                     DOCUMENT_REGISTRY.c.filed_by, DOCUMENT_REGISTRY.c.content_sha1,
                     DOCUMENT_REGISTRY.c.submission_pk)


_PG_LOCK_KEYS = text("""
SELECT count(pg_advisory_xact_lock(hashtextextended(name, 0)))
FROM (SELECT name FROM unnest(CAST(:names AS text[])) WITH ORDINALITY AS t(name, n)
      ORDER BY n) AS ordered
""")


async def lock_and_find_filed(conn: AsyncConnection,
                              keys: list[tuple[str, str]]) -> list[FiledDocument]:
    """Lock these masterIdentifiers for the transaction, then what was filed under them.

    The locks (PostgreSQL advisory locks, taken in sorted order so that two
    filings never wait on each other crosswise) make a concurrent re-send wait
    and then find the first filing. SQLite serialises writers anyway.
    """
    if not keys:
        return []
    ordered = sorted(set(keys))
    if conn.dialect.name == "postgresql":
        names = [f"masterIdentifier|{system}|{value}" for system, value in ordered]
        await conn.execute(_PG_LOCK_KEYS, {"names": names})
    rows = (await conn.execute(select(*_REGISTRY_COLUMNS).where(
        tuple_(DOCUMENT_REGISTRY.c.master_system, DOCUMENT_REGISTRY.c.master_value)
        .in_(ordered)))).all()
    return [FiledDocument(*row) for row in rows]


async def filed_document_by_id(conn: AsyncConnection, document_id: str) -> FiledDocument | None:
    row = (await conn.execute(select(*_REGISTRY_COLUMNS).where(
        DOCUMENT_REGISTRY.c.document_id == document_id))).first()
    return FiledDocument(*row) if row else None


async def register_documents(conn: AsyncConnection, documents: list[FiledDocument]) -> None:
    if documents:
        await conn.execute(DOCUMENT_REGISTRY.insert(), [
            {"master_system": d.master_system, "master_value": d.master_value,
             "document_id": d.document_id, "patient_id": d.patient_id,
             "filed_by": d.filed_by, "content_sha1": d.content_sha1,
             "submission_pk": d.submission_pk} for d in documents])


async def save_submission(conn: AsyncConnection, response: bytes) -> int:
    """Keep an ITI-65 submission's response (to answer a re-send); its key."""
    pk: int = (await conn.execute(SUBMISSIONS.insert().values(response=response)
                                  .returning(SUBMISSIONS.c.pk))).scalar_one()
    return pk


async def submission_response(conn: AsyncConnection, pk: int) -> bytes | None:
    found: bytes | None = (await conn.execute(
        select(SUBMISSIONS.c.response).where(SUBMISSIONS.c.pk == pk))).scalar_one_or_none()
    return found
