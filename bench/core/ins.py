"""Qualified FR Core INS patients and the INSi identities they are checked against.

A Patient with an INS identifier must be a qualified FR Core INS patient known to the INSi
directory (else ``422``), so the benchmarks that file documents seed the directory mock
first (``seed_insi``), then load ``ins_patient(i)`` through the public API. Shared by
``run_documents.py`` and ``run_notify.py`` so that both load the same patients.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Any

from . import BenchError
from .bearer import doctor

# Every Patient has an attending doctor (Patient.generalPractitioner): doctor k = patient
# index // PATIENTS_PER_DOCTOR (a French GP has ~1,000-2,000 patients).
PATIENTS_PER_DOCTOR = 1000
IDNAT_SYSTEM = "urn:oid:1.2.250.1.71.4.2.1"

FAMILIES = ["MARTIN", "BERNARD", "DUBOIS", "THOMAS", "ROBERT", "RICHARD", "PETIT", "DURAND",
            "LEROY", "MOREAU", "SIMON", "LAURENT", "LEFEVRE", "MICHEL", "GARCIA", "DAVID"]
GIVENS = {"male": ["Jean", "Pierre", "Louis", "Hugo", "Jules", "Gabriel", "Arthur", "Adam"],
          "female": ["Marie", "Camille", "Chloé", "Léa", "Manon", "Inès", "Jade", "Emma"]}
# (INSEE department + commune) of birth; the NIR carries the same code.
BIRTH_PLACES = ["75056", "69123", "13055", "33063", "31555", "59350", "67482", "44109"]


def identity(i: int) -> Any:
    """The i-th INSi identity: a unique NIR (valid key) consistent with sex, birth year and
    month, and birthplace."""
    from fhir_profiles.ins import INS_SLICES, nir_key
    from storage.directory import InsIdentity

    if i >= 999 * 12 * 90:
        raise BenchError("more patients than this NIR scheme numbers (1,078,920)")
    serial, month, year = i % 999 + 1, (i // 999) % 12 + 1, 1930 + i // (999 * 12)
    gender = ("male", "female")[i % 2]
    place = BIRTH_PLACES[i % len(BIRTH_PLACES)]
    first13 = f"{1 + i % 2}{year % 100:02d}{month:02d}{place}{serial:03d}"
    given = GIVENS[gender][(i // 2) % 8]
    return InsIdentity(INS_SLICES["INS-NIR-TEST"], first13 + nir_key(first13),
                       FAMILIES[i % len(FAMILIES)], (given,), gender,
                       f"{year:04d}-{month:02d}-{i % 28 + 1:02d}", place)


def ins_patient(i: int, _rng: random.Random) -> dict[str, Any]:
    """The i-th qualified FR Core INS Patient, whose attending doctor is doctor
    i // PATIENTS_PER_DOCTOR (referenced by idNat_PS)."""
    from fhir_profiles.ins import InsTraits, patient_with_ins

    who = identity(i)
    patient: dict[str, Any] = patient_with_ins(who.system, who.nir, InsTraits(
        who.birth_family_name, who.given_names[0], who.given_names, who.gender,
        who.birth_date, who.birth_place))
    patient["generalPractitioner"] = [{"identifier": {
        "system": IDNAT_SYSTEM, "value": doctor(i // PATIENTS_PER_DOCTOR).idnat}}]
    return patient


async def seed_insi(db_url: str, n: int, batch: int = 2000, tasks: int = 4) -> None:
    """The INSi mock's directory, as service/demo.py seed_directories fills it."""
    from service.identity import name_key
    from storage import directory
    from storage.db import Database

    db = Database(db_url, pool_size=tasks)
    batches = [range(s, min(s + batch, n)) for s in range(0, n, batch)]

    async def worker(k: int) -> None:
        for chunk in batches[k::tasks]:
            async with db.write() as conn:
                for i in chunk:
                    who = identity(i)
                    await directory.put_identity(conn, who, name_key(who.birth_family_name))

    try:
        await asyncio.gather(*(worker(k) for k in range(tasks)))
    finally:
        with contextlib.suppress(Exception):
            await db._writer.dispose()  # the Database has no public close
