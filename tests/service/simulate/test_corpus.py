"""The synthetic corpus of ``carnet simulate``: valid identifiers, consistent identities,
PDSm-conformant submissions, real PDF and CDA content, realistic proportions, and the same
output for the same seed. Check digits and PDF structure are recomputed independently here."""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import random
import re
import statistics
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from fhir_profiles.access import access_category
from fhir_profiles.ins import ins_issues
from fhir_profiles.pdsm import (
    FOLDER,
    SUBMISSION_SET,
    document_reference_issues,
    folder_issues,
    list_kind,
    submission_set_issues,
)
from fhir_profiles.structure import validate_structure
from service.simulate import corpus
from service.simulate.corpus import KINDS, Identity, Professional

HL7 = "{urn:hl7-org:v3}"
MAX_BYTES = 8 * 1024 * 1024
EXPECTED_CATEGORY = {"lab-report": "lab-result", "consultation-note": "consultation-report",
                     "prescription": "prescription", "imaging-report": "imaging",
                     "discharge-summary": "hospital-report",
                     "vaccination-record": "vaccination", "patient-summary": "summary"}


def luhn_valid(number: str) -> bool:
    """Independent Luhn check of a whole number (its key included)."""
    digits = [int(c) for c in number]
    for i in range(len(digits) - 2, -1, -2):
        digits[i] = sum(divmod(digits[i] * 2, 10))
    return sum(digits) % 10 == 0


def nir_key_valid(nir: str) -> bool:
    """Independent NIR key: 97 - (first 13 mod 97), Corsica's 2A/2B counted as 19/18."""
    department = {"2A": "19", "2B": "18"}.get(nir[5:7], nir[5:7])
    return int(nir[13:]) == 97 - int(nir[:5] + department + nir[7:13]) % 97


@pytest.fixture(scope="module")
def people() -> list[Professional]:
    return corpus.directory(random.Random(11), 60, 10)


def check_bundle(bundle: dict[str, Any]) -> dict[str, Any]:
    """Structure and PDSm on every resource; the DocumentReference."""
    validate_structure(bundle)
    docs = []
    for entry in bundle["entry"]:
        resource = validate_structure(entry["resource"])
        assert entry["request"] == {"method": "POST", "url": resource["resourceType"]}
        if resource["resourceType"] == "DocumentReference":
            assert document_reference_issues(resource) == []
            docs.append(resource)
        elif list_kind(resource) == SUBMISSION_SET:
            assert submission_set_issues(resource) == []
        elif list_kind(resource) == FOLDER:
            assert folder_issues(resource) == []
        else:
            assert resource["resourceType"] == "Binary"
    assert len(docs) == 1
    return docs[0]


def binary_of(bundle: dict[str, Any]) -> bytes:
    binary = next(e["resource"] for e in bundle["entry"]
                  if e["resource"]["resourceType"] == "Binary")
    return base64.b64decode(binary["data"])


def check_pdf(data: bytes) -> int:
    """Header, xref and trailer consistent; every stream's /Length exact. Page count."""
    assert data.startswith(b"%PDF-1.") and data.rstrip().endswith(b"%%EOF")
    startxref = int(data.rsplit(b"startxref\n", 1)[1].split(b"\n")[0])
    assert data[startxref:].startswith(b"xref\n")
    header = re.match(rb"xref\n0 (\d+)\n", data[startxref:])
    assert header
    count = int(header[1])
    table = data[startxref + header.end():]
    assert table.startswith(b"0000000000 65535 f \n")
    entries = [table[20 * i:20 * i + 20] for i in range(1, count)]
    for number, entry in enumerate(entries, start=1):
        assert re.fullmatch(rb"\d{10} 00000 n \n", entry), entry
        assert data[int(entry[:10]):].startswith(b"%d 0 obj\n" % number)
    trailer = table[20 * count:]
    assert trailer.startswith(b"trailer\n") and b"/Size %d" % count in trailer
    for match in re.finditer(rb"/Length (\d+) >>\nstream\n", data):
        end = match.end() + int(match[1])
        assert data[end:end + 10] == b"\nendstream"
    pages = len(re.findall(rb"/Type /Page /Parent", data))
    assert b"/Count %d" % pages in data
    return pages


@pytest.mark.parametrize("form", ["pdf", "cda"])
@pytest.mark.parametrize("kind", KINDS, ids=[k.name for k in KINDS])
def test_every_kind_in_each_form_is_a_conformant_submission(
        kind: corpus.DocumentKind, form: str, people: list[Professional]) -> None:
    rng = random.Random(f"{kind.name}-{form}")
    patient = corpus.identity(rng, 42)
    author = corpus.pick_author(rng, kind, people, patient)
    bundle, size = corpus.submission(rng, "p-1", patient, author, kind, max_bytes=MAX_BYTES,
                                     form=form)
    doc = check_bundle(bundle)
    content = binary_of(bundle)
    attachment = doc["content"][0]["attachment"]
    assert size == len(content) == attachment["size"]
    assert attachment["hash"] == base64.b64encode(hashlib.sha1(content).digest()).decode()
    assert attachment["contentType"] == (corpus.PDF_TYPE if form == "pdf" else corpus.CDA_TYPE)
    assert doc["subject"] == {"reference": "Patient/p-1"}
    assert doc["type"]["coding"][0]["code"] == kind.loinc
    assert doc["category"][0]["coding"][0]["code"] == kind.class_code
    assert access_category(doc) == EXPECTED_CATEGORY[kind.name]
    role, practitioner, organisation = doc["contained"]
    assert role["code"][0]["coding"][0]["code"] == author.profession_code
    assert (role.get("specialty") or [{"coding": [{"code": None}]}])[0]["coding"][0]["code"] \
        == author.specialty
    assert {"system": "urn:oid:1.2.250.1.71.4.2.1", "value": author.idnat} \
        in practitioner["identifier"]
    assert organisation["identifier"][0]["value"] == author.organisation.finess
    assert doc["context"]["facilityType"]["coding"][0]["code"] == author.organisation.sector
    assert doc["masterIdentifier"]["value"].startswith("urn:uuid:")
    if form == "pdf":
        check_pdf(content)
    else:
        root = ET.fromstring(content)
        assert root.find(f"{HL7}id").get("root") == \
            doc["masterIdentifier"]["value"].removeprefix("urn:uuid:")


def test_identities_have_valid_keys_consistent_traits_and_are_distinct() -> None:
    rng = random.Random(5)
    people = [corpus.identity(rng, i) for i in range(2000)]
    assert len({p.nir for p in people}) == 2000
    for who in people:
        assert re.fullmatch(r"[12]\d{4}(\d{2}|2[AB])\d{8}", who.nir), who.nir
        assert nir_key_valid(who.nir), who.nir
        assert who.nir[0] == {"male": "1", "female": "2"}[who.sex]
        assert who.nir[1:3] == f"{who.birth_date.year % 100:02d}"
        assert who.nir[3:5] == f"{who.birth_date.month:02d}"
        assert who.nir[5:10] == who.birth_place
        assert who.given_names and who.birth_family_name
    sexes = collections.Counter(p.sex for p in people)
    assert 800 < sexes["male"] < 1200
    assert {p.birth_place[:2] for p in people} >= {"2A", "2B", "97", "99", "75"}


def test_a_hundred_thousand_identities_never_collide() -> None:
    rng = random.Random(0)
    assert len({corpus.identity(rng, i).nir for i in range(100_000)}) == 100_000
    with pytest.raises(ValueError):
        corpus.identity(rng, -1)


def test_patients_are_qualified_fr_core_ins_patients(people: list[Professional]) -> None:
    rng = random.Random(9)
    for i in range(0, 300_000, 1500):
        patient = corpus.patient_resource(corpus.identity(rng, i), people[0])
        validate_structure(patient)
        assert ins_issues(patient) == []
        assert patient["identifier"][0]["system"] == "urn:oid:1.2.250.1.213.1.4.10"
        assert patient["generalPractitioner"][0]["identifier"]["value"] == people[0].idnat
    who = corpus.identity(rng, 3)
    entry = corpus.directory_identity(who)
    assert (entry.nir, entry.birth_date, entry.birth_place) == \
        (who.nir, who.birth_date.isoformat(), who.birth_place)


def test_rpps_and_finess_carry_valid_luhn_keys() -> None:
    people = corpus.directory(random.Random(2), 2000, 200)
    assert len({p.rpps for p in people}) == 2000
    organisations = {p.organisation for p in people}
    assert len({o.finess for o in organisations}) == len(organisations)
    for p in people:
        assert re.fullmatch(r"\d{11}", p.rpps) and luhn_valid(p.rpps), p.rpps
        assert p.idnat == "8" + p.rpps
        assert re.fullmatch(r"\d{9}", p.organisation.finess), p.organisation.finess
        assert luhn_valid(p.organisation.finess), p.organisation.finess
    assert luhn_valid("750712184") and not luhn_valid("750712185")  # the checker itself
    entry = corpus.directory_professional(people[0])
    assert (entry.rpps, entry.profession_code) == (people[0].rpps, people[0].profession_code)


def test_directory_mixes_professions_and_organisations() -> None:
    people = corpus.directory(random.Random(4), 2000, 100)
    professions = collections.Counter(p.profession_code for p in people)
    for code, weight in corpus.PROFESSION_WEIGHTS.items():
        assert abs(professions[code] / 2000 - weight) < 0.04, (code, professions)
    assert {p.organisation.kind for p in people} == set(corpus.ORGANISATION_KINDS)
    specialties = collections.Counter(p.specialty for p in people if p.profession_code == "10")
    assert specialties.most_common(1)[0][0] == "SM54"
    assert all(p.organisation.kind == "cabinet" for p in people if p.profession_code == "40")


@pytest.mark.parametrize("organisations", [1, 2, 5])
def test_a_small_directory_still_authors_every_kind(organisations: int) -> None:
    people = corpus.directory(random.Random(8), 9, organisations)
    for sex, index in (("male", 0), ("female", 1)):
        patient = corpus.identity(random.Random(1), index)
        assert patient.sex == sex
        for kind in KINDS:
            author = corpus.pick_author(random.Random(3), kind, people, patient)
            assert corpus.writes(author, kind, patient)
            if sex == "male":
                assert author.profession_code != "50" and author.specialty != "SM20"


def test_pdfs_are_valid_multi_page_and_honour_the_size() -> None:
    rng = random.Random(6)
    lines = [f"Ligne {i} : résultat « conforme », à revoir (contrôle) \\ µg/L" for i in range(200)]
    for hint in (1500, 5000, 40_000, 700_000, 3_000_000):
        data = corpus.pdf(rng, hint, "Compte rendu d'essai", lines)
        assert len(data) <= hint
        pages = check_pdf(data)
        if hint >= 40_000:
            assert len(data) > hint * 0.95 and pages >= 5  # 4 text pages, then scans
    short = corpus.pdf(rng, 100_000, "Ordonnance", ["Une ligne."])
    assert check_pdf(short) == 2 and len(short) > 95_000
    with pytest.raises(ValueError):
        corpus.pdf(rng, 300, "Titre", lines)
    assert "Ligne 0 : résultat".encode("cp1252") in corpus.pdf(rng, 50_000, "T", lines)


def test_sizes_spread_from_a_few_kb_to_megabytes_under_the_cap() -> None:
    rng = random.Random(7)
    sizes = [corpus.content_size(rng, MAX_BYTES, corpus.pick_kind(rng).median_bytes)
             for _ in range(10_000)]
    assert min(sizes) == corpus.MIN_BYTES and max(sizes) <= MAX_BYTES
    assert 20_000 < statistics.median(sizes) < 80_000
    large = sum(size > 1024 * 1024 for size in sizes) / len(sizes)
    assert 0.002 < large < 0.05
    assert sum(size < 10_000 for size in sizes) / len(sizes) > 0.05
    assert all(corpus.content_size(rng, 10_000) <= 10_000 for _ in range(1000))


def test_submissions_honour_max_bytes(people: list[Professional]) -> None:
    rng = random.Random(12)
    sizes = []
    for i in range(150):
        kind = corpus.pick_kind(rng)
        patient = corpus.identity(rng, i)
        bundle, size = corpus.submission(rng, f"p{i}", patient,
                                         corpus.pick_author(rng, kind, people, patient), kind,
                                         max_bytes=60_000)
        assert size == len(binary_of(bundle)) <= 60_000
        sizes.append(size)
    assert max(sizes) > 50_000
    for _ in range(100):  # at the smallest cap a CDA that does not fit becomes a PDF
        bundle, size = corpus.submission(rng, "p", patient, people[0], KINDS[0],
                                         max_bytes=corpus.MIN_BYTES)
        assert size <= corpus.MIN_BYTES
    with pytest.raises(ValueError):
        corpus.submission(rng, "p", patient, people[0], KINDS[0], max_bytes=1000)


def test_cda_is_well_formed_and_names_the_patient_and_author(people: list[Professional]) -> None:
    rng = random.Random(13)
    for i, kind in enumerate(KINDS):
        patient = corpus.identity(rng, 5000 + i)
        author = corpus.pick_author(rng, kind, people, patient)
        root = ET.fromstring(corpus.cda(patient, author, kind, rng))
        assert root.tag == f"{HL7}ClinicalDocument"
        assert root.find(f"{HL7}templateId") is not None
        assert root.find(f"{HL7}code").get("code") == kind.loinc
        assert root.find(f"{HL7}title").text == kind.title
        assert root.find(f"{HL7}confidentialityCode").get("code") == "N"
        assert re.fullmatch(r"\d{14}[+-]\d{4}", root.find(f"{HL7}effectiveTime").get("value"))
        ins = root.find(f"{HL7}recordTarget/{HL7}patientRole/{HL7}id")
        assert (ins.get("root"), ins.get("extension")) == ("1.2.250.1.213.1.4.10", patient.nir)
        named = root.find(f"{HL7}recordTarget/{HL7}patientRole/{HL7}patient/{HL7}name")
        assert named.find(f"{HL7}family").text == patient.birth_family_name
        who = root.find(f"{HL7}author/{HL7}assignedAuthor/{HL7}id")
        assert (who.get("root"), who.get("extension")) == ("1.2.250.1.71.4.2.1",
                                                           "8" + author.rpps)
        custodian = root.find(f"{HL7}custodian/{HL7}assignedCustodian/"
                              f"{HL7}representedCustodianOrganization/{HL7}id")
        assert custodian.get("extension") == "1" + author.organisation.finess
        sections = root.findall(f"{HL7}component/{HL7}structuredBody/{HL7}component/"
                                f"{HL7}section")
        assert sections and all(s.find(f"{HL7}text") is not None for s in sections)


def test_kinds_follow_their_weights() -> None:
    rng = random.Random(14)
    picks = collections.Counter(corpus.pick_kind(rng).name for _ in range(10_000))
    assert sum(kind.weight for kind in KINDS) == pytest.approx(1.0)
    for kind in KINDS:
        assert abs(picks[kind.name] / 10_000 - kind.weight) < 0.015, (kind.name, picks)
    assert picks.most_common(1)[0][0] == "lab-report"


def test_same_seed_same_output() -> None:
    def run(seed: int) -> tuple[Any, ...]:
        rng = random.Random(seed)
        people = corpus.directory(rng, 30, 6)
        patients: list[Identity] = [corpus.identity(rng, i) for i in range(20)]
        bundles = []
        for patient in patients[:8]:
            kind = corpus.pick_kind(rng)
            bundles.append(corpus.submission(rng, "p", patient,
                                             corpus.pick_author(rng, kind, people, patient),
                                             kind, max_bytes=300_000))
        return people, patients, json.dumps(bundles, sort_keys=True)

    assert run(21) == run(21)
    assert run(21)[2] != run(22)[2]


def test_identities_and_professionals_read_back_from_a_server(people: list[Professional]) -> None:
    from auth.idp.claims import professional_claims

    rng = random.Random(15)
    for i in (0, 1, 77, 123_456):
        who = corpus.identity(rng, i)
        stored = validate_structure(corpus.patient_resource(who, people[1]))
        assert corpus.identity_from_patient(stored) == who
    assert corpus.identity_from_patient({"resourceType": "Patient"}) is None
    for person in people[:12]:
        back = corpus.professional_from_claims(
            professional_claims(corpus.directory_professional(person)))
        assert (back.rpps, back.family, back.given, back.profession_code, back.specialty) == \
            (person.rpps, person.family, person.given, person.profession_code, person.specialty)
        assert back.organisation.name == person.organisation.name
        assert back.organisation.kind == person.organisation.kind
        assert luhn_valid(back.organisation.finess)
        patient = corpus.identity(rng, 9)
        kind = next(k for k in KINDS if corpus.writes(back, k))
        check_bundle(corpus.submission(rng, "p", patient, back, kind, max_bytes=100_000)[0])


def test_an_author_files_the_kinds_they_write(people: list[Professional]) -> None:
    rng = random.Random(16)
    man, woman = corpus.identity(rng, 0), corpus.identity(rng, 1)
    assert (man.sex, woman.sex) == ("male", "female")
    for author in people:
        for patient in (man, woman):
            kinds = {corpus.pick_kind_for(rng, author, patient).name for _ in range(40)}
            # an obstetrician and a man: what they write for anyone
            audience = patient if any(corpus.writes(author, k, patient) for k in KINDS) \
                else None
            assert audience is not None or (patient.sex == "male" and (
                author.profession_code == "50" or author.specialty == "SM20"))
            assert all(corpus.writes(author, corpus.KIND_BY_NAME[name], audience)
                       for name in kinds), (author, kinds)
    nurse = next(p for p in people if p.profession_code == "60")
    assert {corpus.pick_kind_for(rng, nurse).name for _ in range(20)} == {"vaccination-record"}


def test_the_demo_professionals_file_documents() -> None:
    from auth.idp.claims import professional_claims
    from service.demo import ORGANIZATIONS, PRACTITIONERS
    from storage.directory import Professional as Entry

    names = {key: name for key, _finess, name in ORGANIZATIONS}
    rng = random.Random(17)
    patient = corpus.identity(rng, 1)
    for _key, rpps, family, given, profession, savoir_faire, org in PRACTITIONERS:
        author = corpus.professional_from_claims(professional_claims(
            Entry(rpps, family, given, profession, "C", savoir_faire, names[org])))
        assert author.organisation.kind == ("pharmacie" if org == "org-pharma-demo" else "chu")
        kind = corpus.pick_kind_for(rng, author, patient)
        assert corpus.writes(author, kind, patient), (author, kind)
        check_bundle(corpus.submission(rng, "p", patient, author, kind, max_bytes=50_000)[0])


def test_dates_carry_the_paris_offset_and_acts_precede_writing(
        people: list[Professional]) -> None:
    from datetime import datetime

    assert corpus.paris(datetime(2025, 3, 29, 10)).isoformat().endswith("+01:00")
    assert corpus.paris(datetime(2025, 3, 30, 10)).isoformat().endswith("+02:00")
    assert corpus.paris(datetime(2025, 10, 26, 10)).isoformat().endswith("+01:00")
    rng = random.Random(18)
    for i in range(200):
        kind, patient = corpus.pick_kind(rng), corpus.identity(rng, i)
        author = corpus.pick_author(rng, kind, people, patient)
        body = corpus.content(rng, patient, author, kind)
        assert patient.birth_date < body.act_start.date() <= body.written.date()
        assert body.act_start < body.written
        assert corpus.FIRST_DAY <= body.written.date() <= corpus.LAST_DAY
        text = "\n".join(corpus.document_lines(patient, author, body))
        assert patient.nir in text and author.rpps in text and author.organisation.finess in text
