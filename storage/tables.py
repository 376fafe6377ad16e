"""SQLModel tables.

One row per resource holds the current version (``resource``); every version,
including deletions, is kept in ``resource_version``. Search indexes are
typed tables keyed by the resource row's surrogate key and rewritten in the
same transaction as the resource. Instants are stored as integer
microseconds since the epoch (UTC) so that SQLite and PostgreSQL compare them
identically.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    UniqueConstraint,
    false,
)
from sqlmodel import Field, SQLModel

# Byte-wise ordering on PostgreSQL so that prefix ranges (value >= 'abc' and
# value < 'abc\U0010ffff') use the B-tree exactly as SQLite's BINARY collation does.
SortableText = String(256).with_variant(String(256, collation="C"), "postgresql")
BigKey = BigInteger().with_variant(Integer(), "sqlite")
# Ids sort byte-wise too, so that _sort=_id orders the same on both back-ends.
ResourceId = String(64).with_variant(String(64, collation="C"), "postgresql")


def _surrogate_key() -> Any:
    return Field(default=None, sa_column=Column(BigKey, primary_key=True, autoincrement=True))


class ResourceRow(SQLModel, table=True):
    __tablename__ = "resource"
    __table_args__ = (
        UniqueConstraint("resource_type", "resource_id", name="uq_resource_type_id"),
        Index("ix_resource_type_updated", "resource_type", "last_updated"),
        Index("ix_resource_patient", "patient_id", "resource_type"),
    )

    pk: int | None = _surrogate_key()
    resource_type: str = Field(sa_column=Column(String(64), nullable=False))
    resource_id: str = Field(sa_column=Column(ResourceId, nullable=False))
    version_id: int = Field(sa_column=Column(Integer, nullable=False))
    last_updated: int = Field(sa_column=Column(BigInteger, nullable=False))
    deleted: bool = Field(default=False, nullable=False)
    content: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    # What the access policy filters on, kept beside the row so that a search can apply the
    # policy in SQL (auth/policy.py): whose record this is, the matrix category, the labels.
    patient_id: str | None = Field(default=None, sa_column=Column(ResourceId, nullable=True))
    category: str | None = Field(default=None, sa_column=Column(String(32), nullable=True))
    masked: bool = Field(default=False, sa_column=Column(Boolean, nullable=False,
                                                         server_default=false()))
    hidden_from_patient: bool = Field(default=False, sa_column=Column(
        Boolean, nullable=False, server_default=false()))


class ResourceVersionRow(SQLModel, table=True):
    __tablename__ = "resource_version"
    __table_args__ = (
        UniqueConstraint("resource_pk", "version_id", name="uq_version_resource_version"),
        Index("ix_version_type_updated", "resource_type", "last_updated"),
        Index("ix_version_resource", "resource_type", "resource_id", "version_id"),
    )

    pk: int | None = _surrogate_key()
    resource_pk: int = Field(sa_column=Column(BigInteger, nullable=False))
    resource_type: str = Field(sa_column=Column(String(64), nullable=False))
    resource_id: str = Field(sa_column=Column(ResourceId, nullable=False))
    version_id: int = Field(sa_column=Column(Integer, nullable=False))
    last_updated: int = Field(sa_column=Column(BigInteger, nullable=False))
    method: str = Field(sa_column=Column(String(8), nullable=False))
    content: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))


class IndexRowBase(SQLModel):
    """What every search-index row holds: which resource, under which parameter."""

    pk: int | None = Field(default=None, primary_key=True, sa_type=BigKey)
    resource_pk: int = Field(sa_type=BigInteger, nullable=False)
    resource_type: str = Field(sa_type=String(64), nullable=False)
    param: str = Field(sa_type=String(64), nullable=False)


class TokenIndexRow(IndexRowBase, table=True):
    __tablename__ = "token_index"
    __table_args__ = (
        Index("ix_token_lookup", "resource_type", "param", "code", "system"),
        Index("ix_token_resource", "resource_pk"),
    )

    system: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))
    code: str = Field(sa_column=Column(SortableText, nullable=False))


class StringIndexRow(IndexRowBase, table=True):
    __tablename__ = "string_index"
    __table_args__ = (
        Index("ix_string_lookup", "resource_type", "param", "normalized"),
        Index("ix_string_resource", "resource_pk"),
    )

    normalized: str = Field(sa_column=Column(SortableText, nullable=False))
    exact: str = Field(sa_column=Column(String(1024), nullable=False))


class DateIndexRow(IndexRowBase, table=True):
    __tablename__ = "date_index"
    __table_args__ = (
        Index("ix_date_lookup", "resource_type", "param", "low", "high"),
        Index("ix_date_resource", "resource_pk"),
    )

    low: int = Field(sa_column=Column(BigInteger, nullable=False))
    high: int = Field(sa_column=Column(BigInteger, nullable=False))


class ReferenceIndexRow(IndexRowBase, table=True):
    __tablename__ = "reference_index"
    __table_args__ = (
        Index("ix_reference_lookup", "resource_type", "param", "target_id", "target_type"),
        Index("ix_reference_target", "target_type", "target_id"),
        Index("ix_reference_resource", "resource_pk"),
    )

    target_type: str | None = Field(default=None, sa_column=Column(String(64), nullable=True))
    target_id: str = Field(sa_column=Column(String(1024), nullable=False))




def table_of(model: type[SQLModel]) -> Table:
    """The SQLAlchemy Core table behind a SQLModel class, for Core statements."""
    found: Table = getattr(model, "__table__")  # noqa: B009 - set by SQLModel's metaclass
    return found


RESOURCES = table_of(ResourceRow)
VERSIONS = table_of(ResourceVersionRow)
TOKENS = table_of(TokenIndexRow)
STRINGS = table_of(StringIndexRow)
DATES = table_of(DateIndexRow)
REFERENCES = table_of(ReferenceIndexRow)
INDEX_TABLES = (TOKENS, STRINGS, DATES, REFERENCES)
