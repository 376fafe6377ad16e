"""Demo data for ``carnet serve --demo`` and ``carnet seed --demo``.

Seeds the national directory mocks (INSi identities, RPPS professionals), a
registered third-party app, and Carnet's own FHIR resources through the same
transaction code as any client's Bundle, with conditional creates, so seeding
twice changes nothing.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import orjson

from fhir_profiles.consent import patient_choice
from fhir_profiles.ins import INS_SLICES, InsTraits, nir_key, patient_with_ins
from fhir_profiles.messaging import CATEGORY_SYSTEM, MESSAGE
from service.access import Access
from service.documents.samples import document_bundle
from service.fhir.transaction import BundleContext, process
from service.identity import name_key
from storage import directory, oauth
from storage.blobs import BlobStore
from storage.db import Database
from storage.directory import InsIdentity, Professional
from storage.oauth import OAuthClient

INS_NIR_TEST = INS_SLICES["INS-NIR-TEST"]
IDNAT_PS = "urn:oid:1.2.250.1.71.4.2.1"
FINESS = "urn:oid:1.2.250.1.71.4.2.2"
DEMO_IDS = "urn:oid:1.2.250.1.999.2"  # identifiers of the demo's Consents and care teams
TRE_G15 = "https://mos.esante.gouv.fr/NOS/TRE_G15-ProfessionSante/FHIR/TRE-G15-ProfessionSante"


def _nir(first13: str) -> str:
    return first13 + nir_key(first13)


ORGANIZATIONS = [
    ("org-chu-demo", "1750000018", "CHU de Démonstration"),
    ("org-pharma-demo", "1750000026", "Pharmacie du Carnet"),
]
# (local key, RPPS, family, given, profession TRE_G15, savoir-faire, organisation key)
PRACTITIONERS = [
    ("ps-martin", "10000000001", "MARTIN", "Claire", "10", "SM54", "org-chu-demo"),
    ("ps-bernard", "10000000002", "BERNARD", "Paul", "10", "SM26", "org-chu-demo"),
    ("ps-petit", "10000000003", "PETIT", "Sophie", "21", None, "org-pharma-demo"),
    ("ps-durand", "10000000004", "DURAND", "Luc", "60", None, "org-chu-demo"),
    ("ps-moreau", "10000000005", "MOREAU", "Anne", "70", None, "org-chu-demo"),
]
# (local key, NIR, birth family name, birth first names, gender, birth date, INSEE birthplace,
#  attending doctor's key). Keys without a record in Carnet are INSi-only identities.
PATIENTS = [
    ("pat-1", "253072A07300443", "CORSE", ("Marie", "Ange"), "female", "1953-07-21", "2A073",
     "ps-martin"),
    ("pat-2", _nir("2850575056123"), "LEROY", ("Julie",), "female", "1985-05-12", "75056",
     "ps-martin"),
    ("pat-3", _nir("1721169123045"), "GARNIER", ("Jean", "Pierre"), "male", "1972-11-03",
     "69123", "ps-bernard"),
]
# The demo patients' choices (fhir_profiles/consent.py): (key, patient key, choice,
# provision, professionals' keys, apps).
CONSENTS = [
    ("consent-1", "pat-1", "professional", "permit", ("ps-petit",), ()),
    ("consent-2", "pat-2", "professional", "deny", ("ps-moreau",), ()),
    ("consent-3", "pat-3", "emergency", "deny", (), ()),
    *((f"consent-app-{key[-1]}", key, "app", "permit", (), ("demo-app",))
      for key in ("pat-1", "pat-2", "pat-3")),
]
# Care teams: (key, patient key, members' keys). Members read the record unless the
# patient objects (a ``care-team`` Consent).
CARE_TEAMS = [("team-1", "pat-1", ("ps-durand", "ps-bernard"))]
INSI_ONLY = [
    ("insi-4", _nir("1900133055012"), "DUPONT-ÉLOI", ("Lucas",), "male", "1990-01-14", "33055",
     None),
]
DEMO_APP_SECRET = "demo-app-secret"  # demo data only: never seeded outside --demo
DEMO_APP = OAuthClient(
    client_id="demo-app", name="Application de démonstration",
    secret_hash=oauth.secret_hash(DEMO_APP_SECRET),
    redirect_uris=("http://127.0.0.1:8765/callback", "http://localhost:8765/callback"),
    allowed_scopes="openid offline_access scope_all patient/*.rs patient/DocumentReference.c "
                   "user/*.cruds system/Patient.crus system/Observation.crus "
                   "system/DocumentReference.crus system/Binary.cr system/List.crus "
                   "system/Practitioner.rs system/Organization.rs system/Subscription.cruds "
                   "system/Communication.rs patient/Communication.cu",
    grant_types=("authorization_code", "refresh_token", "client_credentials"))


def _identity(row: tuple[Any, ...]) -> InsIdentity:
    _key, nir, family, given, gender, birth, place, _doctor = row
    return InsIdentity(INS_NIR_TEST, nir, family, given, gender, birth, place,
                       email=f"{nir}@patient.demo.carnet.test")


def _entry(key: str, resource: dict[str, Any], if_none_exist: str) -> dict[str, Any]:
    return {"fullUrl": f"urn:uuid:{key}", "resource": resource,
            "request": {"method": "POST", "url": resource["resourceType"],
                        "ifNoneExist": if_none_exist}}


def _patient(row: tuple[Any, ...]) -> dict[str, Any]:
    _key, nir, family, given, gender, birth, place, doctor = row
    patient = patient_with_ins(INS_NIR_TEST, nir, InsTraits(family, given[0], given, gender,
                                                            birth, place))
    if doctor:
        patient["generalPractitioner"] = [{"reference": f"urn:uuid:{doctor}"}]
    # Where the notifications' e-mails go (a catcher such as Mailpit in the compose file).
    patient["telecom"] = [{"system": "email", "value": demo_email(given[0], family)}]
    return patient


def demo_email(given: str, family: str) -> str:
    """marie.corse@patient.demo.carnet.test: a name, never the INS, in an address."""
    ascii_name = unicodedata.normalize("NFKD", f"{given}.{family}").encode("ascii", "ignore")
    return ascii_name.decode().lower().replace(" ", "-") + "@patient.demo.carnet.test"


# (patient key, author key, LOINC type, TRE_A03 class, title, security labels): filed
# with ITI-65.
DOCUMENTS = [
    ("pat-1", "ps-martin", "11488-4", "10", "Compte rendu de consultation", ("N",)),
    ("pat-1", "ps-bernard", "11502-2", "10", "Résultats de biologie", ("N",)),
    ("pat-2", "ps-martin", "18842-5", "11", "Lettre de liaison", ("N",)),
    ("pat-1", "ps-bernard", "18748-4", "31", "Compte rendu d'imagerie", ("N", "MASQUE_PS")),
]


def document_bundles(patient_ids: dict[str, str]) -> list[dict[str, Any]]:
    """One ITI-65 submission per demo document, with fixed masterIdentifiers (re-seedable)."""
    people = {row[0]: row for row in PRACTITIONERS}
    bundles = []
    for i, (patient, author, loinc, class_code, title, security) in enumerate(DOCUMENTS):
        text = f"{title} (document de démonstration).\n".encode()
        _key, rpps, family, given, *_rest = people[author]
        bundles.append(document_bundle(
            f"Patient/{patient_ids[patient]}", content=text, content_type="text/plain",
            master_id=f"urn:oid:1.2.250.1.999.1.{i + 1}", type_code=loinc, class_code=class_code,
            title=title, security=security, date=f"2026-0{i + 1}-15T10:00:00+01:00",
            period_start=f"2026-0{i + 1}-15T09:30:00+01:00", author_rpps=rpps,
            author_given=given, author_family=family))
    return bundles


# Messages a professional sent a patient through Carnet's messaging, with one of her
# documents: (key, patient key, sender key, (patient key, title) of the document, sent, topic,
# text).
MESSAGES = [
    ("message-1", "pat-1", "ps-martin", ("pat-1", "Résultats de biologie"),
     "2026-02-16T09:00:00+01:00", "Vos résultats de biologie",
     "Bonjour Madame CORSE,\nVos résultats de biologie sont normaux, rendez-vous dans 6 mois."
     "\nDr Claire MARTIN"),
]


def message_bundle(ids: dict[str, str], documents: dict[tuple[str, str], str]) -> dict[str, Any]:
    """The demo messages as their senders would have written them: from the Practitioner
    (named by idNat_PS too, as the messaging rules know their parties), to the Patient."""
    rpps_of = {row[0]: row[1] for row in PRACTITIONERS}
    entries = []
    for key, patient, sender, document, sent, topic, text in MESSAGES:
        to = {"reference": ids[patient]}
        entries.append(_entry(key, {
            "resourceType": "Communication", "identifier": [{"system": DEMO_IDS, "value": key}],
            "status": "completed",
            "category": [{"coding": [{"system": CATEGORY_SYSTEM, "code": MESSAGE}]}],
            "subject": to, "recipient": [to], "sent": sent, "topic": {"text": topic},
            "sender": {"reference": ids[sender],
                       "identifier": {"system": IDNAT_PS, "value": "8" + rpps_of[sender]}},
            "payload": [{"contentString": text},
                        {"contentReference": {"reference": documents[document]}}],
        }, f"identifier={DEMO_IDS}|{key}"))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def demo_bundle() -> dict[str, Any]:
    entries = []
    for key, finess, name in ORGANIZATIONS:
        entries.append(_entry(key, {"resourceType": "Organization", "name": name, "active": True,
                                    "identifier": [{"system": FINESS, "value": finess}]},
                              f"identifier={FINESS}|{finess}"))
    for key, rpps, family, given, profession, _sf, _org in PRACTITIONERS:
        entries.append(_entry(key, {
            "resourceType": "Practitioner", "active": True,
            "identifier": [{"system": IDNAT_PS, "value": "8" + rpps}],
            "name": [{"family": family, "given": [given]}],
            "qualification": [{"code": {"coding": [{"system": TRE_G15, "code": profession}]}}],
        }, f"identifier={IDNAT_PS}|8{rpps}"))
    for row in PATIENTS:
        entries.append(_entry(row[0], _patient(row), f"identifier={INS_NIR_TEST}|{row[1]}"))
    rpps_of = {row[0]: row[1] for row in PRACTITIONERS}
    for key, patient, choice, provision, people, apps in CONSENTS:
        consent = patient_choice(f"urn:uuid:{patient}", choice, provision,
                                 rpps=[rpps_of[p] for p in people], apps=list(apps))
        consent["identifier"] = [{"system": DEMO_IDS, "value": key}]
        entries.append(_entry(key, consent, f"identifier={DEMO_IDS}|{key}"))
    for key, patient, members in CARE_TEAMS:
        entries.append(_entry(key, {
            "resourceType": "CareTeam", "status": "active",
            "identifier": [{"system": DEMO_IDS, "value": key}],
            "name": "Équipe de soins du CHU de Démonstration",
            "subject": {"reference": f"urn:uuid:{patient}"},
            "participant": [{"member": {"reference": f"urn:uuid:{member}"}}
                            for member in members]}, f"identifier={DEMO_IDS}|{key}"))
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


async def seed_directories(db: Database) -> None:
    """What the national services would know: INSi identities, RPPS professionals, the app."""
    organisations = {key: name for key, _finess, name in ORGANIZATIONS}
    async with db.write() as conn:
        for row in (*PATIENTS, *INSI_ONLY):
            identity = _identity(row)
            await directory.put_identity(conn, identity, name_key(identity.birth_family_name))
        for _key, rpps, family, given, profession, savoir_faire, org in PRACTITIONERS:
            await directory.put_professional(conn, Professional(
                rpps, family, given, profession, "C", savoir_faire, organisations[org]))
        await oauth.put_client(conn, DEMO_APP)


async def seed_demo(db: Database, blobs: BlobStore,
                    base: str = "http://127.0.0.1:8000/fhir") -> dict[str, Any]:
    """Seed (idempotently) and describe what was seeded, with the FHIR ids."""
    await seed_directories(db)
    context = BundleContext(base, Access.of_carnet(), 20, 100, return_representation=False,
                            blobs=blobs)
    response: dict[str, Any] = orjson.loads(await process(db, demo_bundle(), context))
    ids = {entry["fullUrl"].removeprefix("urn:uuid:"): answer["response"]["location"]
           .split("/_history")[0]
           for entry, answer in zip(demo_bundle()["entry"], response["entry"], strict=True)}
    patient_ids = {key: ids[key].removeprefix("Patient/") for key in ids if key.startswith("pat-")}
    documents: list[str] = []
    for submission in document_bundles(patient_ids):
        filed = orjson.loads(await process(db, submission, context))
        documents.extend(answer["response"]["location"].split("/_history")[0]
                         for entry, answer in zip(submission["entry"], filed["entry"], strict=True)
                         if entry["resource"]["resourceType"] == "DocumentReference")
    document_of = dict(zip(((row[0], row[4]) for row in DOCUMENTS), documents, strict=True))
    written = orjson.loads(await process(db, message_bundle(ids, document_of), context))
    messages = [answer["response"]["location"].split("/_history")[0]
                for answer in written["entry"]]
    return {
        "patients": [{"ins": row[1], "ins_system": INS_NIR_TEST, "family": row[2],
                      "given": list(row[3]), "birth_date": row[5], "id": ids[row[0]],
                      "email": demo_email(row[3][0], row[2])}
                     for row in PATIENTS],
        "insi_only_identities": [{"ins": row[1], "family": row[2], "given": list(row[3]),
                                  "gender": row[4], "birth_date": row[5]} for row in INSI_ONLY],
        "professionals": [{"rpps": row[1], "idnat": "8" + row[1], "family": row[2],
                           "given": row[3], "profession_code": row[4], "id": ids[row[0]]}
                          for row in PRACTITIONERS],
        "attending_doctors": [{"patient_ins": row[1], "rpps": _rpps_of(row[7])}
                              for row in PATIENTS if row[7]],
        "apps": [{"client_id": DEMO_APP.client_id, "client_secret": DEMO_APP_SECRET,
                  "allowed_scopes": DEMO_APP.allowed_scopes,
                  "redirect_uris": list(DEMO_APP.redirect_uris)}],
        "documents": documents,
        "messages": messages,
    }


def _rpps_of(key: str) -> str:
    return next(row[1] for row in PRACTITIONERS if row[0] == key)
