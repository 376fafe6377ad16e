"""The national directories Carnet mocks: INSi identities and health professionals.

In production these are national teleservices (INSi for patient identities,
the RPPS directory behind Pro Santé Connect). Carnet keeps a seeded copy so
that the INSi mock and the mock identity provider answer like the real ones.
Traits are stored as given plus a normalised search key, so that a lookup by
traits finds an identity whatever the accents or case a client sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from sqlalchemy import Column, Index, String, Text, UniqueConstraint, select
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlmodel import Field, SQLModel

from storage.tables import BigKey, table_of
from storage.upsert import put_row


class InsIdentityRow(SQLModel, table=True):
    __tablename__ = "insi_identity"
    __table_args__ = (
        UniqueConstraint("nir", name="uq_insi_nir"),
        Index("ix_insi_traits", "name_key", "birth_date"),
    )

    pk: int | None = Field(default=None, sa_column=Column(BigKey, primary_key=True,
                                                          autoincrement=True))
    system: str = Field(sa_column=Column(String(64), nullable=False))
    nir: str = Field(sa_column=Column(String(15), nullable=False))
    birth_family_name: str = Field(sa_column=Column(String(256), nullable=False))
    given_names: str = Field(sa_column=Column(Text, nullable=False))  # JSON array
    gender: str = Field(sa_column=Column(String(8), nullable=False))
    birth_date: str = Field(sa_column=Column(String(10), nullable=False))
    birth_place: str | None = Field(default=None, sa_column=Column(String(5), nullable=True))
    name_key: str = Field(sa_column=Column(String(256), nullable=False))
    email: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))


class ProfessionalRow(SQLModel, table=True):
    __tablename__ = "health_professional"
    __table_args__ = (UniqueConstraint("rpps", name="uq_professional_rpps"),)

    pk: int | None = Field(default=None, sa_column=Column(BigKey, primary_key=True,
                                                          autoincrement=True))
    rpps: str = Field(sa_column=Column(String(11), nullable=False))
    family_name: str = Field(sa_column=Column(String(256), nullable=False))
    given_name: str = Field(sa_column=Column(String(256), nullable=False))
    profession_code: str = Field(sa_column=Column(String(8), nullable=False))
    category_code: str = Field(sa_column=Column(String(8), nullable=False))
    savoir_faire: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    organisation: str | None = Field(default=None, sa_column=Column(String(256), nullable=True))


INS_IDENTITIES = table_of(InsIdentityRow)
PROFESSIONALS = table_of(ProfessionalRow)


@dataclass(frozen=True)
class InsIdentity:
    system: str
    nir: str
    birth_family_name: str
    given_names: tuple[str, ...]
    gender: str
    birth_date: str
    birth_place: str | None
    email: str | None = None


@dataclass(frozen=True)
class Professional:
    rpps: str
    family_name: str
    given_name: str
    profession_code: str
    category_code: str
    savoir_faire: str | None
    organisation: str | None

    @property
    def idnat(self) -> str:
        """idNat_PS: ``8`` + RPPS."""
        return "8" + self.rpps


def _identity(row: object) -> InsIdentity:
    m = row._mapping  # type: ignore[attr-defined]
    return InsIdentity(m["system"], m["nir"], m["birth_family_name"],
                       tuple(orjson.loads(m["given_names"])), m["gender"], m["birth_date"],
                       m["birth_place"], m["email"])


def _professional(row: object) -> Professional:
    m = row._mapping  # type: ignore[attr-defined]
    return Professional(m["rpps"], m["family_name"], m["given_name"], m["profession_code"],
                        m["category_code"], m["savoir_faire"], m["organisation"])


async def put_identity(conn: AsyncConnection, identity: InsIdentity, name_key: str) -> None:
    """Insert or refresh one directory identity (seeding is idempotent)."""
    values = {"system": identity.system, "birth_family_name": identity.birth_family_name,
              "given_names": orjson.dumps(list(identity.given_names)).decode(),
              "gender": identity.gender, "birth_date": identity.birth_date,
              "birth_place": identity.birth_place, "name_key": name_key,
              "email": identity.email}
    await put_row(conn, INS_IDENTITIES, {"nir": identity.nir}, values)


async def identity_by_nir(conn: AsyncConnection, nir: str) -> InsIdentity | None:
    row = (await conn.execute(select(INS_IDENTITIES).where(INS_IDENTITIES.c.nir == nir))).first()
    return _identity(row) if row else None


async def identities_by_name_and_birth_date(conn: AsyncConnection, name_key: str,
                                            birth_date: str) -> list[InsIdentity]:
    rows = await conn.execute(select(INS_IDENTITIES).where(
        INS_IDENTITIES.c.name_key == name_key, INS_IDENTITIES.c.birth_date == birth_date))
    return [_identity(row) for row in rows]


async def all_identities(conn: AsyncConnection, limit: int = 200) -> list[InsIdentity]:
    rows = await conn.execute(select(INS_IDENTITIES)
                              .order_by(INS_IDENTITIES.c.birth_family_name).limit(limit))
    return [_identity(row) for row in rows]


async def put_professional(conn: AsyncConnection, professional: Professional) -> None:
    values = {"family_name": professional.family_name, "given_name": professional.given_name,
              "profession_code": professional.profession_code,
              "category_code": professional.category_code,
              "savoir_faire": professional.savoir_faire,
              "organisation": professional.organisation}
    await put_row(conn, PROFESSIONALS, {"rpps": professional.rpps}, values)


async def professional_by_rpps(conn: AsyncConnection, rpps: str) -> Professional | None:
    row = (await conn.execute(select(PROFESSIONALS).where(PROFESSIONALS.c.rpps == rpps))).first()
    return _professional(row) if row else None


async def all_professionals(conn: AsyncConnection, limit: int = 200) -> list[Professional]:
    rows = await conn.execute(select(PROFESSIONALS)
                              .order_by(PROFESSIONALS.c.family_name).limit(limit))
    return [_professional(row) for row in rows]
