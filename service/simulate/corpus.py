"""The synthetic corpus of ``carnet simulate``: who files, for whom, and what.

Professionals (RPPS with a valid Luhn key) work in organisations (FINESS with a valid Luhn
key); patients carry test INS (INS-NIR-TEST) whose key checks and whose sex, birth year and
month and birth place agree with their traits; documents are the common kinds in the
proportions a shared record sees, as real content: multi-page PDFs (sizes from a few kB to a
few MB) or CDA R2 XML, inside PDSm ITI-65 Bundles.

Everything is drawn from the ``random.Random`` the caller gives, so that a seed replays a
run exactly; identities are numbered (``identity(rng, index)``) so that a population of any
size has no two identical NIRs. The content is French, as the documents a French shared record
holds; every name, number and result is invented.
"""

from __future__ import annotations

import bisect
import calendar
import hashlib
import itertools
import math
import random
import re
import textwrap
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from fhir_profiles.clinical import luhn_valid
from fhir_profiles.ins import INS_SLICES, InsTraits, find_ins, nir_key, patient_with_ins, traits_of
from service.documents.samples import IDNAT_PS, PROFESSIONS, document_bundle
from storage import directory as national

INS_NIR_TEST = INS_SLICES["INS-NIR-TEST"]
INS_TEST_OID = "1.2.250.1.213.1.4.10"
IDNAT_PS_OID = "1.2.250.1.71.4.2.1"
IDNAT_STRUCT_OID = "1.2.250.1.71.4.2.2"  # FINESS and other structure ids: "1" + FINESS
PROFESSION_OID = "1.2.250.1.71.1.2.7"  # TRE_G15
LOINC_OID = "2.16.840.1.113883.6.1"
PDF_TYPE = "application/pdf"
# The media type the DMP files CDA R2 documents under; Carnet's PDSm rules accept any type.
CDA_TYPE = "text/xml"
CDA_SHARE = 0.25  # of the documents of a kind that exists in both forms, how many are CDA
MIN_BYTES = 4096  # the smallest content size drawn; a submission's cap may not go below
SIZE_SIGMA = 1.3  # spread (log scale) of the content sizes around a kind's median

# ----------------------------------------------------------------------------- check digits


def luhn_digit(payload: str) -> str:
    """The Luhn key of ``payload`` (RPPS and FINESS numbers end with theirs): the one digit
    that makes the whole pass the check the clinical codes use."""
    return next(digit for digit in "0123456789" if luhn_valid(payload + digit))


# ----------------------------------------------------------------------------- names and places

FAMILY_NAMES = (
    "MARTIN", "BERNARD", "THOMAS", "PETIT", "ROBERT", "RICHARD", "DURAND", "DUBOIS", "MOREAU",
    "LAURENT", "SIMON", "MICHEL", "LEFEBVRE", "LEROY", "ROUX", "DAVID", "BERTRAND", "MOREL",
    "FOURNIER", "GIRARD", "BONNET", "DUPONT", "LAMBERT", "FONTAINE", "ROUSSEAU", "VINCENT",
    "MULLER", "LEFÈVRE", "FAURE", "ANDRÉ", "MERCIER", "BLANC", "GUÉRIN", "BOYER", "GARNIER",
    "CHEVALIER", "FRANÇOIS", "LEGRAND", "GAUTHIER", "GARCIA", "PERRIN", "ROBIN", "CLÉMENT",
    "MORIN", "NICOLAS", "HENRY", "ROUSSEL", "MATHIEU", "MASSON", "MARCHAND", "DUVAL", "DENIS",
    "DUMONT", "LEMAIRE", "NOËL", "MEYER", "DUFOUR", "MEUNIER", "BRUN", "BLANCHARD", "GIRAUD",
    "JOLY", "RIVIÈRE", "LUCAS", "BRUNET", "GAILLARD", "BARBIER", "ARNAUD", "MARTINEZ", "GÉRARD",
    "ROCHE", "RENARD", "SCHMITT", "ROY", "LEROUX", "COLIN", "VIDAL", "CARON", "LE GALL",
    "N'DIAYE", "DA SILVA", "NGUYEN", "DOS SANTOS", "BENALI", "MARTIN-DUPONT", "LE BRETON",
)
GIVEN_NAMES = {
    "male": ("Jean", "Pierre", "Michel", "André", "Philippe", "Alain", "Bernard", "Jacques",
             "Daniel", "Patrick", "Nicolas", "Christophe", "Stéphane", "Frédéric", "Laurent",
             "Julien", "Thomas", "Maxime", "Lucas", "Hugo", "Louis", "Gabriel", "Arthur", "Jules",
             "Léo", "Raphaël", "Adam", "Nathan", "Mohamed", "Karim", "Jean-Pierre", "Jean-Luc",
             "François", "Éric", "Olivier", "Sébastien", "Antoine", "Paul", "Noah", "Théo"),
    "female": ("Marie", "Jeanne", "Françoise", "Monique", "Catherine", "Nathalie", "Isabelle",
               "Sylvie", "Martine", "Christine", "Sandrine", "Valérie", "Céline", "Aurélie",
               "Julie", "Camille", "Léa", "Manon", "Chloé", "Emma", "Jade", "Louise", "Alice",
               "Inès", "Léna", "Zoé", "Sarah", "Fatima", "Marie-Claire", "Anne-Sophie", "Hélène",
               "Élodie", "Claire", "Sophie", "Laura", "Lina", "Rose", "Anna", "Mila", "Ambre"),
}
_FEMALE_GIVEN = frozenset(GIVEN_NAMES["female"])

# INSEE codes of birth places (department + commune; 99 + country for a birth abroad). Large
# cities count several arrondissements, as births do; Corsica (2A/2B) and the overseas
# departments are there so that every NIR shape is exercised.
BIRTH_PLACES = (
    "75112", "75113", "75114", "75115", "75118", "75120",  # Paris
    "69383", "69387", "13205", "13209",  # Lyon, Marseille
    "31555", "06088", "44109", "67482", "34172", "33063", "59350", "35238", "51454", "76351",
    "42218", "83137", "38185", "21231", "49007", "30189", "63113", "72181", "29019", "37261",
    "87085", "80021", "66136", "57463", "25056", "45234", "14118", "68224", "76540", "54395",
    "59512", "59599", "86194", "64445", "84007", "17300",
    "2A004", "2B033",  # Ajaccio, Bastia
    "97105", "97209", "97302", "97411",  # Basse-Terre, Fort-de-France, Cayenne, Saint-Denis
    "99350", "99352", "99351", "99139", "99127", "99134",  # Morocco, Algeria, Tunisia, ...
)
BIRTH_YEARS = range(1930, 2024)
# Mixed-radix numbering of the NIR's (sex, month, year, place, serial) space, visited in a
# scrambled order (index * _STRIDE mod size) so that neighbouring indexes look unrelated.
_NIR_SPACE = 2 * len(BIRTH_YEARS) * 12 * len(BIRTH_PLACES) * 999
_STRIDE = 1_000_003
if math.gcd(_STRIDE, _NIR_SPACE) != 1:  # pragma: no cover - would break index uniqueness
    raise RuntimeError("the NIR stride must be prime to the size of the NIR space")

# (city, department) where organisations are; no Corsica: a FINESS there starts with 2A/2B.
CITIES = (
    ("Paris", "75"), ("Lyon", "69"), ("Marseille", "13"), ("Toulouse", "31"), ("Nice", "06"),
    ("Nantes", "44"), ("Strasbourg", "67"), ("Montpellier", "34"), ("Bordeaux", "33"),
    ("Lille", "59"), ("Rennes", "35"), ("Reims", "51"), ("Grenoble", "38"), ("Dijon", "21"),
    ("Angers", "49"), ("Brest", "29"), ("Tours", "37"), ("Limoges", "87"), ("Amiens", "80"),
    ("Clermont-Ferrand", "63"), ("Nancy", "54"), ("Rouen", "76"), ("Caen", "14"),
    ("Besançon", "25"), ("Poitiers", "86"), ("Orléans", "45"),
)

# ----------------------------------------------------------------------------- directory

ORGANISATION_KINDS = ("chu", "clinique", "cabinet", "laboratoire", "pharmacie")
_ORGANISATION_WEIGHTS = (0.10, 0.15, 0.40, 0.15, 0.20)
# TRE_R02 sector and TRE_A01 practice setting of the documents an organisation files.
SECTOR_OF_KIND = {"chu": "SA01", "clinique": "SA04", "cabinet": "SA08", "laboratoire": "SA25",
                  "pharmacie": "SA33"}
SETTING_OF_KIND = {"chu": "ETABLISSEMENT", "clinique": "ETABLISSEMENT",
                   "cabinet": "AMBULATOIRE", "laboratoire": "AMBULATOIRE",
                   "pharmacie": "AMBULATOIRE"}


@dataclass(frozen=True)
class Organisation:
    finess: str  # 9 digits, the last a Luhn key
    name: str
    kind: str  # one of ORGANISATION_KINDS
    city: str = ""

    @property
    def sector(self) -> str:
        """TRE_R02-SecteurActivite code (DocumentReference.context.facilityType)."""
        return SECTOR_OF_KIND[self.kind]

    @property
    def practice_setting(self) -> str:
        """TRE_A01-CadreExercice code (DocumentReference.context.practiceSetting)."""
        return SETTING_OF_KIND[self.kind]


@dataclass(frozen=True)
class Professional:
    rpps: str  # 11 digits, the last a Luhn key
    family: str
    given: str
    profession_code: str  # TRE_G15
    specialty: str | None  # TRE_R38 savoir-faire of a médecin (SM54, ...), else None
    organisation: Organisation

    @property
    def idnat(self) -> str:
        """idNat_PS, as Pro Santé Connect names the professional: ``8`` + RPPS."""
        return "8" + self.rpps

    @property
    def profession(self) -> str:
        return PROFESSIONS.get(self.profession_code, self.profession_code)

    @property
    def signature(self) -> str:
        """How the professional signs: ``Dr Claire MARTIN``, ``Mme Julie ROUX, infirmière``."""
        if self.profession_code in ("10", "21", "40"):
            return f"Dr {self.given} {self.family}"
        civility = "Mme" if self.given in _FEMALE_GIVEN else "M."
        return f"{civility} {self.given} {self.family}, {self.profession.lower()}"


# Professions of those who file documents, in proportion (médecins file most), and the
# savoir-faire of the médecins.
PROFESSION_WEIGHTS = {"10": 0.42, "60": 0.20, "21": 0.12, "70": 0.10, "40": 0.08, "50": 0.08}
SPECIALTIES = {  # TRE_R38-SpecialiteOrdinale
    "SM54": ("Médecine générale", 0.50), "SM44": ("Radio-diagnostic", 0.10),
    "SM04": ("Cardiologie et maladies vasculaires", 0.08), "SM40": ("Pédiatrie", 0.07),
    "SM03": ("Biologie médicale", 0.06), "SM20": ("Gynécologie-obstétrique", 0.06),
    "SM59": ("Médecine d'urgence", 0.05), "SM27": ("Médecine interne", 0.04),
    "SM15": ("Dermatologie et vénéréologie", 0.04),
}
# Where each role works (organisation kinds, most likely first).
_WORKPLACES = {
    ("10", "SM54"): ("cabinet",), ("10", "SM44"): ("cabinet", "clinique", "chu"),
    ("10", "SM03"): ("laboratoire", "chu"), ("10", "SM59"): ("chu", "clinique"),
    ("10", None): ("chu", "clinique", "cabinet"), ("21", None): ("pharmacie", "laboratoire"),
    ("60", None): ("chu", "clinique", "cabinet"), ("70", None): ("cabinet", "clinique"),
    ("50", None): ("chu", "clinique", "cabinet"), ("40", None): ("cabinet",),
}
# One of each role first, so that a directory of 9 or more can author every document kind.
_FIRST_ROLES = (("10", "SM54"), ("10", "SM44"), ("10", "SM03"), ("10", "SM59"), ("21", None),
                ("60", None), ("50", None), ("70", None), ("40", None))
_FEMALE_SHARE = {"10": 0.5, "21": 0.68, "40": 0.48, "50": 0.97, "60": 0.87, "70": 0.5}
_CLINIC_NAMES = ("Saint-Joseph", "du Parc", "des Cèdres", "Sainte-Anne", "de l'Union",
                 "Pasteur", "Jeanne-d'Arc", "du Mail")
_STREETS = ("des Tilleuls", "du Centre", "Victor-Hugo", "de la République", "Jean-Jaurès",
            "des Lilas", "Gambetta")
_PHARMACIES = ("de la Gare", "du Centre", "des Halles", "de la Mairie", "du Marché", "Pasteur")
_LABORATORIES = ("BioAnalyses", "Biopôle", "Bio Santé", "LaboSud", "BioLoire")
_HOSPITAL_SITES = ("Hôpital Nord", "Hôpital Sud", "Hôpital central", "Hôpital Est")


def _organisation(rng: random.Random, kind: str, taken: set[str]) -> Organisation:
    city, department = rng.choice(CITIES)
    while True:
        payload = f"{department}{rng.choice('01')}{rng.randrange(100_000):05d}"
        finess = payload + luhn_digit(payload)
        if finess not in taken:
            taken.add(finess)
            break
    names = {
        "chu": f"CHU de {city} - {rng.choice(_HOSPITAL_SITES)}",
        "clinique": f"Clinique {rng.choice(_CLINIC_NAMES)}",
        "cabinet": rng.choice((f"Maison de santé pluriprofessionnelle de {city}",
                               f"Cabinet médical {rng.choice(_STREETS)}")),
        "laboratoire": f"Laboratoire de biologie médicale {rng.choice(_LABORATORIES)}",
        "pharmacie": f"Pharmacie {rng.choice(_PHARMACIES)}",
    }
    return Organisation(finess, names[kind], kind, city)


def make_organisations(rng: random.Random, count: int) -> list[Organisation]:
    """``count`` organisations with distinct FINESS: one of each kind first (a CHU first of
    all, where every role can work), then in proportion (cabinets most, CHU fewest)."""
    taken: set[str] = set()
    first = ("chu", "cabinet", "laboratoire", "pharmacie", "clinique")
    kinds = [*first[:count], *rng.choices(ORGANISATION_KINDS, _ORGANISATION_WEIGHTS,
                                          k=max(0, count - len(first)))]
    return [_organisation(rng, kind, taken) for kind in kinds]


def _role(rng: random.Random) -> tuple[str, str | None]:
    profession = rng.choices(list(PROFESSION_WEIGHTS), list(PROFESSION_WEIGHTS.values()))[0]
    if profession != "10":
        return profession, None
    return profession, rng.choices(list(SPECIALTIES), [w for _, w in SPECIALTIES.values()])[0]


def _workplace(rng: random.Random, role: tuple[str, str | None],
               places: Sequence[Organisation]) -> Organisation:
    kinds = _WORKPLACES.get(role) or _WORKPLACES[(role[0], None)]
    for kind in kinds:  # the most likely kind that exists; a random one of that kind
        fitting = [o for o in places if o.kind == kind]
        if fitting and (kind == kinds[-1] or rng.random() < 0.7):
            return rng.choice(fitting)
    fitting = [o for o in places if o.kind in kinds]
    return rng.choice(fitting or list(places))


def directory(rng: random.Random, professionals: int, organisations: int) -> list[Professional]:
    """``professionals`` professionals (distinct RPPS) spread over ``organisations``
    organisations: one of each role that authors documents first, then professions and
    médecins' specialties in proportion, each in an organisation fit for the role."""
    if professionals < 1 or organisations < 1:
        raise ValueError("a directory needs at least one professional and one organisation")
    places = make_organisations(rng, organisations)
    roles = [*_FIRST_ROLES[:professionals],
             *(_role(rng) for _ in range(max(0, professionals - len(_FIRST_ROLES))))]
    base = rng.randrange(10**8)  # RPPS "10" + 8 digits + key; a stride keeps them distinct
    people = []
    for i, role in enumerate(roles):
        payload = f"10{(base + i * 7919) % 10**8:08d}"
        female = rng.random() < _FEMALE_SHARE[role[0]]
        people.append(Professional(
            payload + luhn_digit(payload), rng.choice(FAMILY_NAMES),
            rng.choice(GIVEN_NAMES["female" if female else "male"]), role[0], role[1],
            _workplace(rng, role, places)))
    return people


_KIND_WORDS = (("chu", "chu"), ("hôpital", "chu"), ("centre hospitalier", "chu"),
               ("clinique", "clinique"), ("laboratoire", "laboratoire"),
               ("pharmacie", "pharmacie"))


def organisation_named(name: str) -> Organisation:
    """An Organisation known only by name (as Pro Santé Connect's ``raisonSocialeSite``):
    its kind guessed from the name, a FINESS derived from the name (stable, key valid) since
    the claims carry none."""
    lowered = name.lower()
    kind = next((k for word, k in _KIND_WORDS if re.search(rf"\b{word}\b", lowered)),
                "cabinet")
    digits = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % 10**6
    payload = f"75{digits:06d}"
    return Organisation(payload + luhn_digit(payload), name, kind)


def professional_from_claims(claims: dict[str, Any]) -> Professional:
    """The Professional a Pro Santé Connect userinfo describes (idNat_PS ``8`` + RPPS, first
    exercice's profession and savoir-faire, first activity's organisation)."""
    idnat = str(claims.get("SubjectNameID") or claims.get("sub") or "")
    exercices = (claims.get("SubjectRefPro") or {}).get("exercices") or [{}]
    exercice = exercices[0] if isinstance(exercices[0], dict) else {}
    activities = exercice.get("activities") or [{}]
    site = activities[0].get("raisonSocialeSite") if isinstance(activities[0], dict) else None
    if len(idnat) < 2:
        raise ValueError("the claims name no professional (SubjectNameID)")
    return Professional(
        idnat[1:], str(claims.get("family_name") or ""), str(claims.get("given_name") or ""),
        str(exercice.get("codeProfession") or "10"), exercice.get("codeSavoirFaire"),
        organisation_named(str(site or "Cabinet")))


def directory_professional(professional: Professional) -> national.Professional:
    """The RPPS directory entry (``storage.directory``) of a simulated professional."""
    return national.Professional(
        professional.rpps, professional.family, professional.given,
        professional.profession_code, "C", professional.specialty,
        professional.organisation.name)


# ----------------------------------------------------------------------------- identities


@dataclass(frozen=True)
class Identity:
    """A patient's INS and the traits that travel with it."""

    nir: str  # 15 characters, INS-NIR-TEST
    birth_family_name: str
    given_names: tuple[str, ...]  # birth first names, the first one first
    sex: str  # "male" | "female" (a record read back may say "other" or "unknown")
    birth_date: date
    birth_place: str  # INSEE code: department + commune, or 99 + country
    system: str = INS_NIR_TEST  # the INS identifier system (urn:oid:...)

    @property
    def first_given(self) -> str:
        return self.given_names[0]

    def traits(self) -> InsTraits:
        return InsTraits(self.birth_family_name, self.first_given, self.given_names, self.sex,
                         self.birth_date.isoformat(), self.birth_place)

    def age_on(self, day: date) -> int:
        return day.year - self.birth_date.year - (
            (day.month, day.day) < (self.birth_date.month, self.birth_date.day))

    @property
    def display(self) -> str:
        """``Mme Marie Ange CORSE``: how a document names its patient."""
        return f"{'Mme' if self.sex == 'female' else 'M.'} {' '.join(self.given_names)} " \
               f"{self.birth_family_name}"


def identity(rng: random.Random, index: int) -> Identity:
    """The ``index``-th patient: the NIR's sex, birth year, month, place and serial follow
    from the index alone (distinct indexes never share a NIR, up to about 130 million); the
    names and the day of birth come from ``rng``."""
    if not 0 <= index < _NIR_SPACE:
        raise ValueError(f"identity index {index} outside 0..{_NIR_SPACE - 1}")
    rest = index * _STRIDE % _NIR_SPACE  # sex, month and year vary fastest: any few
    rest, sex_index = divmod(rest, 2)  # consecutive patients are a mixed population
    rest, month_index = divmod(rest, 12)
    rest, year_index = divmod(rest, len(BIRTH_YEARS))
    serial, place_index = divmod(rest, len(BIRTH_PLACES))
    sex, year, month = ("male", "female")[sex_index], BIRTH_YEARS[year_index], month_index + 1
    place = BIRTH_PLACES[place_index]
    first13 = f"{sex_index + 1}{year % 100:02d}{month:02d}{place}{serial + 1:03d}"
    day = rng.randint(1, calendar.monthrange(year, month)[1])
    count = rng.choices((1, 2, 3), (0.45, 0.40, 0.15))[0]
    given = tuple(rng.sample(GIVEN_NAMES[sex], count))
    return Identity(first13 + nir_key(first13), rng.choice(FAMILY_NAMES), given, sex,
                    date(year, month, day), place)


def patient_resource(who: Identity,
                     general_practitioner: Professional | None = None) -> dict[str, Any]:
    """The qualified FR Core INS Patient of ``who`` (as ``bench/core/ins.py`` loads them),
    with the attending doctor named by idNat_PS when given."""
    patient = patient_with_ins(who.system, who.nir, who.traits())
    if general_practitioner is not None:
        patient["generalPractitioner"] = [{"identifier": {
            "system": IDNAT_PS, "value": general_practitioner.idnat}}]
    return patient


def directory_identity(who: Identity) -> national.InsIdentity:
    """The INSi directory entry (``storage.directory``) of a simulated patient."""
    return national.InsIdentity(who.system, who.nir, who.birth_family_name, who.given_names,
                                who.sex, who.birth_date.isoformat(), who.birth_place)


def identity_from_patient(patient: dict[str, Any]) -> Identity | None:
    """The Identity of a Patient read from a server (to file for patients seeded elsewhere);
    None without an INS or without the traits that travel with it."""
    ins, traits = find_ins(patient), traits_of(patient)
    if ins is None or traits is None or not traits.birth_place:
        return None
    try:
        born = date.fromisoformat(traits.birth_date)
    except ValueError:
        return None
    return Identity(ins.value, traits.birth_family_name,
                    traits.given_names or (traits.first_given,), traits.gender, born,
                    traits.birth_place, ins.system)


# ----------------------------------------------------------------------------- document kinds


@dataclass(frozen=True)
class DocumentKind:
    """A kind of document: its PDSm type (LOINC) and class (TRE_A03), who writes it, and
    how common and how large it is."""

    name: str
    loinc: str
    class_code: str
    title: str
    authors: tuple[str, ...]  # TRE_G15 professions that write it
    weight: float  # share of all documents filed
    formats: tuple[str, ...] = ("pdf", "cda")
    median_bytes: int = 40_000  # of the PDF form
    specialties: tuple[str, ...] = ()  # médecins who write it (empty: any médecin)
    workplaces: tuple[str, ...] = ()  # organisation kinds it comes from (empty: any)
    loinc_display: str = ""


_GENERALISTS = ("SM54", "SM26", "SM53")  # médecine générale, qualifié, spécialiste
_CLINICIANS = (*_GENERALISTS, "SM04", "SM40", "SM20", "SM59", "SM27", "SM15")
KINDS = (
    DocumentKind("lab-report", "11502-2", "10", "Compte rendu d'examens de biologie médicale",
                 ("10", "21"), 0.34, median_bytes=35_000, specialties=("SM03",),
                 workplaces=("laboratoire", "chu"), loinc_display="Laboratory report"),
    DocumentKind("consultation-note", "11488-4", "10", "Compte rendu de consultation",
                 ("10", "40", "50", "70"), 0.20, median_bytes=30_000, specialties=_CLINICIANS,
                 loinc_display="Consult note"),
    DocumentKind("prescription", "57833-6", "42", "Ordonnance", ("10", "40", "50"), 0.16,
                 median_bytes=20_000, specialties=_CLINICIANS,
                 loinc_display="Prescription for medication"),
    DocumentKind("imaging-report", "18748-4", "31", "Compte rendu d'imagerie médicale",
                 ("10",), 0.12, median_bytes=150_000, specialties=("SM44",),
                 loinc_display="Diagnostic imaging study"),
    DocumentKind("discharge-summary", "34133-9", "10", "Lettre de liaison à la sortie",
                 ("10", "50"), 0.10, median_bytes=80_000,
                 specialties=("SM04", "SM40", "SM20", "SM59", "SM27", "SM15"),
                 workplaces=("chu", "clinique"), loinc_display="Summary of episode note"),
    DocumentKind("vaccination-record", "87273-9", "10", "Note de vaccination",
                 ("10", "21", "50", "60"), 0.05, median_bytes=15_000,
                 specialties=(*_GENERALISTS, "SM40"), loinc_display="Immunization note"),
    DocumentKind("patient-summary", "60591-5", "11", "Volet de synthèse médicale", ("10",),
                 0.03, median_bytes=40_000, specialties=_GENERALISTS,
                 loinc_display="Patient summary Document"),
)
KIND_BY_NAME = {kind.name: kind for kind in KINDS}
_CUMULATIVE = list(itertools.accumulate(kind.weight for kind in KINDS))


def pick_kind(rng: random.Random) -> DocumentKind:
    """A document kind, in the proportions of KINDS' weights."""
    return KINDS[min(bisect.bisect(_CUMULATIVE, rng.random() * _CUMULATIVE[-1]),
                     len(KINDS) - 1)]


def pick_kind_for(rng: random.Random, author: Professional,
                  patient: Identity | None = None) -> DocumentKind:
    """A kind ``author`` writes (for ``patient`` if given), in proportion to the weights of
    those kinds; failing that a kind the author writes for anyone (a midwife and a man), and
    failing that any kind (pick_kind)."""
    fitting = [kind for kind in KINDS if writes(author, kind, patient)] \
        or [kind for kind in KINDS if writes(author, kind)]
    if not fitting:
        return pick_kind(rng)
    return rng.choices(fitting, [kind.weight for kind in fitting])[0]


def writes(professional: Professional, kind: DocumentKind,
           patient: Identity | None = None) -> bool:
    """Whether ``professional`` plausibly authors a document of ``kind`` (for ``patient``:
    no obstetrics for a man)."""
    p = professional
    if p.profession_code not in kind.authors:
        return False
    if p.profession_code == "10" and kind.specialties and p.specialty not in kind.specialties:
        return False
    if kind.workplaces and p.organisation.kind not in kind.workplaces:
        return False
    if p.profession_code == "21" and kind.name == "vaccination-record" \
            and p.organisation.kind != "pharmacie":
        return False
    return not (patient is not None and patient.sex == "male"
                and (p.profession_code == "50" or p.specialty == "SM20"))


def pick_author(rng: random.Random, kind: DocumentKind, professionals: Sequence[Professional],
                patient: Identity | None = None) -> Professional:
    """A professional of the directory who writes ``kind`` (for ``patient`` if given);
    ValueError when none does (a directory of fewer than 9 may lack some roles)."""
    fitting = [p for p in professionals if writes(p, kind, patient)]
    if not fitting:
        raise ValueError(f"no professional of the directory writes a {kind.name}")
    return rng.choice(fitting)


# ----------------------------------------------------------------------------- dates

FIRST_DAY, LAST_DAY = date(2024, 1, 2), date(2026, 11, 20)  # when the simulated acts happen


def _last_sunday(year: int, month: int) -> date:
    last = date(year, month, calendar.monthrange(year, month)[1])
    return last - timedelta(days=(last.weekday() + 1) % 7)


def paris(moment: datetime) -> datetime:
    """A naive local time in Paris, with its UTC offset (summer time from the last Sunday of
    March to the last Sunday of October; the acts happen in the day, away from the switch)."""
    summer = _last_sunday(moment.year, 3) <= moment.date() < _last_sunday(moment.year, 10)
    return moment.replace(tzinfo=timezone(timedelta(hours=2 if summer else 1)))


def _act_time(rng: random.Random, patient: Identity) -> datetime:
    first = max(FIRST_DAY, patient.birth_date + timedelta(days=15))  # acts begin after birth
    day = first + timedelta(days=rng.randrange(max(1, (LAST_DAY - first).days + 1)))
    return paris(datetime(day.year, day.month, day.day, rng.randint(8, 18),
                          rng.randrange(0, 60, 5)))


def _fr(day: date) -> str:
    return day.strftime("%d/%m/%Y")


def _number(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}".replace(".", ",")


# ----------------------------------------------------------------------------- content


@dataclass(frozen=True)
class Section:
    """A part of a document: a heading, narrative lines and optionally a table."""

    heading: str
    lines: tuple[str, ...] = ()
    code: str | None = None  # LOINC section code, for the CDA
    table: tuple[tuple[str, ...], ...] = ()  # header row first


@dataclass(frozen=True)
class Content:
    """What a document says and when: rendered as PDF lines or as a CDA body."""

    kind: DocumentKind
    written: datetime  # DocumentReference.date, CDA effectiveTime
    act_start: datetime  # context.period.start, serviceEvent low
    sections: tuple[Section, ...]
    document_id: str  # a UUID: the CDA's id, the DocumentReference's masterIdentifier


# (name, unit, low, high, decimals) by panel
_PANELS: dict[str, tuple[tuple[str, str, float, float, int], ...]] = {
    "Hémogramme": (
        ("Hématies", "T/L", 4.2, 5.7, 2), ("Hémoglobine", "g/dL", 12.0, 17.0, 1),
        ("Hématocrite", "%", 37, 50, 1), ("VGM", "fL", 80, 100, 0),
        ("Leucocytes", "G/L", 4.0, 10.0, 2), ("Polynucléaires neutrophiles", "G/L", 1.8, 7.5, 2),
        ("Lymphocytes", "G/L", 1.0, 4.0, 2), ("Plaquettes", "G/L", 150, 400, 0)),
    "Ionogramme et fonction rénale": (
        ("Sodium", "mmol/L", 136, 145, 0), ("Potassium", "mmol/L", 3.5, 5.1, 1),
        ("Chlorure", "mmol/L", 98, 107, 0), ("Créatinine", "µmol/L", 59, 104, 0),
        ("DFG estimé (CKD-EPI)", "mL/min/1,73 m²", 90, 120, 0)),
    "Glycémie": (("Glycémie à jeun", "g/L", 0.70, 1.10, 2),
                 ("Hémoglobine glyquée (HbA1c)", "%", 4.0, 6.0, 1)),
    "Bilan lipidique": (
        ("Cholestérol total", "g/L", 1.50, 2.00, 2), ("HDL-cholestérol", "g/L", 0.40, 0.80, 2),
        ("LDL-cholestérol calculé", "g/L", 0.70, 1.60, 2), ("Triglycérides", "g/L", 0.50, 1.50, 2)),
    "Bilan hépatique": (
        ("ASAT", "UI/L", 5, 34, 0), ("ALAT", "UI/L", 5, 55, 0), ("Gamma-GT", "UI/L", 12, 64, 0),
        ("Phosphatases alcalines", "UI/L", 40, 150, 0), ("Bilirubine totale", "µmol/L", 3, 21, 0)),
    "Thyroïde": (("TSH", "mUI/L", 0.35, 4.94, 2),),
    "Inflammation": (("Protéine C réactive (CRP)", "mg/L", 0, 5, 1),),
    "Bilan martial": (("Ferritine", "µg/L", 20, 300, 0),),
    "Vitamine D": (("25-OH vitamine D", "ng/mL", 30, 100, 0),),
    "Hémostase": (("Taux de prothrombine", "%", 70, 100, 0), ("INR", "", 0.8, 1.2, 2)),
}
# (medicine, posology, duration)
_MEDICINES = (
    ("PARACÉTAMOL 1 g, comprimé", "1 comprimé jusqu'à 3 fois par jour si douleur, à 6 heures "
     "d'intervalle au moins", "5 jours"),
    ("AMOXICILLINE 1 g, comprimé dispersible", "1 comprimé matin et soir", "6 jours"),
    ("RAMIPRIL 5 mg, comprimé", "1 comprimé le matin", "3 mois"),
    ("METFORMINE 1000 mg, comprimé pelliculé", "1 comprimé matin et soir au cours des repas",
     "3 mois"),
    ("ATORVASTATINE 20 mg, comprimé", "1 comprimé le soir", "3 mois"),
    ("LÉVOTHYROXINE 75 µg, comprimé", "1 comprimé le matin à jeun", "3 mois"),
    ("AMLODIPINE 5 mg, gélule", "1 gélule le matin", "3 mois"),
    ("IBUPROFÈNE 400 mg, comprimé", "1 comprimé 3 fois par jour au cours des repas", "3 jours"),
    ("OMÉPRAZOLE 20 mg, gélule gastro-résistante", "1 gélule le matin à jeun", "1 mois"),
    ("BISOPROLOL 2,5 mg, comprimé", "1 comprimé le matin", "3 mois"),
    ("APIXABAN 5 mg, comprimé", "1 comprimé matin et soir", "3 mois"),
    ("SALBUTAMOL 100 µg/dose, suspension pour inhalation", "2 bouffées si gêne respiratoire",
     "1 mois"),
    ("CHOLÉCALCIFÉROL 100 000 UI, solution buvable", "1 ampoule tous les 3 mois", "6 mois"),
    ("ESCITALOPRAM 10 mg, comprimé", "1 comprimé le matin", "2 mois"),
    ("FUROSÉMIDE 40 mg, comprimé", "1 comprimé le matin", "1 mois"),
    ("MACROGOL 4000, poudre pour solution buvable", "1 sachet par jour", "15 jours"),
)
_LONG_TERM = tuple(m for m in _MEDICINES if m[2].endswith("mois") and m[2] != "1 mois")
_DENTAL_MEDICINES = (
    ("AMOXICILLINE 1 g, comprimé dispersible", "1 comprimé matin et soir", "7 jours"),
    ("PARACÉTAMOL 1 g, comprimé", "1 comprimé jusqu'à 3 fois par jour si douleur", "3 jours"),
    ("CHLORHEXIDINE 0,12 %, bain de bouche", "3 bains de bouche par jour après les repas",
     "7 jours"),
)
_MIDWIFE_MEDICINES = (
    ("ACIDE FOLIQUE 0,4 mg, comprimé", "1 comprimé par jour", "3 mois"),
    ("SULFATE FERREUX 80 mg, comprimé", "1 comprimé par jour à distance des repas", "2 mois"),
    ("PHLOROGLUCINOL 80 mg, comprimé orodispersible", "2 comprimés si douleur, 6 par jour au "
     "plus", "10 jours"),
)
_REASONS = {
    "SM54": ("Toux fébrile depuis quatre jours", "Renouvellement du traitement de "
             "l'hypertension artérielle", "Lombalgie aiguë après un effort de soulèvement",
             "Suivi du diabète de type 2", "Fatigue et troubles du sommeil",
             "Douleurs abdominales intermittentes", "Céphalées récurrentes"),
    "SM04": ("Palpitations à l'effort", "Bilan d'une hypertension artérielle",
             "Suivi d'une fibrillation atriale"),
    "SM40": ("Fièvre et otalgie droite", "Suivi de la croissance", "Toux nocturne persistante"),
    "SM20": ("Suivi gynécologique annuel", "Consultation prénatale du sixième mois"),
    "SM59": ("Traumatisme de la cheville gauche", "Douleur thoracique atypique"),
    "SM27": ("Bilan d'une anémie", "Fièvre prolongée inexpliquée"),
    "SM15": ("Lésion pigmentée du dos à surveiller", "Eczéma des mains"),
    "40": ("Douleur de la dent 36", "Contrôle annuel et détartrage", "Sensibilité au froid"),
    "50": ("Consultation prénatale", "Rééducation périnéale", "Suivi gynécologique de "
           "prévention"),
    "70": ("Lombalgie chronique", "Rééducation après ligamentoplastie du genou droit",
           "Entorse de la cheville gauche", "Cervicalgies"),
}
_HISTORY = ("Hypertension artérielle traitée", "Diabète de type 2", "Dyslipidémie",
            "Asthme dans l'enfance", "Hypothyroïdie substituée", "Appendicectomie",
            "Tabagisme sevré", "Arthrose des genoux", "Fibrillation atriale paroxystique",
            "Syndrome dépressif en rémission")
_ALLERGIES = ("Aucune allergie connue", "Allergie aux pénicillines (urticaire)",
              "Allergie aux produits de contraste iodés", "Rhinite allergique aux pollens")
_IMAGING = (
    ("Radiographie thoracique de face", "Toux persistante", "Cliché de face en inspiration.",
     "Pas de foyer parenchymateux. Culs-de-sac pleuraux libres. Silhouette cardiaque normale.",
     "Radiographie thoracique sans anomalie."),
    ("Échographie abdominale", "Douleurs de l'hypochondre droit", "Examen par voie "
     "sous-costale et intercostale.", "Foie de taille normale, d'échostructure homogène. "
     "Vésicule alithiasique. Voies biliaires non dilatées. Reins sans dilatation.",
     "Échographie abdominale normale."),
    ("Scanner cérébral sans injection", "Céphalées inhabituelles", "Acquisition hélicoïdale "
     "sans injection. PDL 820 mGy.cm.", "Pas de saignement intra ou extra-axial. Pas d'effet "
     "de masse. Système ventriculaire de taille normale.", "Absence d'anomalie décelable."),
    ("IRM du genou droit", "Gonalgie après torsion", "Séquences sagittales, coronales et "
     "axiales pondérées T1 et DP fat-sat.", "Fissure horizontale de la corne postérieure du "
     "ménisque médial. Ligaments croisés continus. Épanchement articulaire de faible "
     "abondance.", "Lésion méniscale médiale horizontale."),
    ("Radiographie du poignet gauche", "Chute de sa hauteur", "Clichés de face et de profil.",
     "Pas de trait de fracture visible. Interlignes articulaires respectés.",
     "Pas de lésion osseuse traumatique."),
    ("Mammographie bilatérale de dépistage", "Dépistage organisé", "Deux incidences par "
     "sein, complétées par une échographie.", "Seins de densité de type B. Pas de masse, pas "
     "de foyer de microcalcifications suspect.", "Classification ACR 1 bilatérale."),
)
_STAYS = {
    "SM04": ("Cardiologie", ("Décompensation cardiaque gauche", "Fibrillation atriale "
                             "rapide")),
    "SM40": ("Pédiatrie", ("Bronchiolite aiguë", "Gastro-entérite avec déshydratation")),
    "SM20": ("Gynécologie-obstétrique", ("Accouchement par voie basse", "Cholestase "
                                         "gravidique")),
    "SM59": ("Unité d'hospitalisation de courte durée", ("Malaise avec perte de "
                                                          "connaissance", "Colique néphrétique")),
    "SM27": ("Médecine interne", ("Pneumopathie communautaire", "Pyélonéphrite aiguë")),
    "SM15": ("Dermatologie", ("Érysipèle de la jambe droite", "Zona ophtalmique")),
    "50": ("Maternité", ("Accouchement par voie basse", "Suites de couches")),
}
_VACCINES_CHILD = (("Vaccin rougeole-oreillons-rubéole (ROR)", "PRIORIX"),
                   ("Vaccin diphtérie, tétanos, coqueluche, poliomyélite", "INFANRIX TETRA"),
                   ("Vaccin contre le méningocoque C", "NEISVAC"),
                   ("Vaccin contre l'hépatite B", "ENGERIX B10"))
_VACCINES_ADULT = (("Vaccin contre la grippe saisonnière", "INFLUVAC TETRA"),
                   ("Vaccin diphtérie, tétanos, poliomyélite (rappel)", "REVAXIS"),
                   ("Vaccin contre la Covid-19", "COMIRNATY"),
                   ("Vaccin contre les papillomavirus humains", "GARDASIL 9"))
_VACCINES_SENIOR = (("Vaccin contre le zona", "SHINGRIX"),
                    ("Vaccin contre le pneumocoque", "PREVENAR 20"),
                    ("Vaccin contre la grippe saisonnière", "EFLUELDA"))


def _identity_lines(patient: Identity, author: Professional) -> tuple[str, ...]:
    o = author.organisation
    return (f"Patient : {patient.display}, né{'e' if patient.sex == 'female' else ''} le "
            f"{_fr(patient.birth_date)} - INS {patient.nir} (INS-NIR-TEST)",
            f"Auteur : {author.signature} - RPPS {author.rpps}",
            f"Structure : {o.name}, {o.city} - FINESS {o.finess}")


def _lab(rng: random.Random, patient: Identity, author: Professional,
         when: datetime, start: datetime) -> list[Section]:
    sampled = start
    rows: list[tuple[str, ...]] = [("Analyse", "Résultat", "Unité", "Valeurs de référence")]
    abnormal = []
    for panel in rng.sample(list(_PANELS), rng.randint(2, 5)):
        rows.append((panel.upper(), "", "", ""))
        for name, unit, low, high, decimals in _PANELS[panel]:
            floor = low / 2 if low else high / 20  # results stay plausible
            value = max(floor, rng.gauss((low + high) / 2, (high - low) / 3))
            flag = " (H)" if value > high else " (B)" if value < low else ""
            if flag:
                abnormal.append(name)
            rows.append((name, _number(value, decimals) + flag, unit,
                         f"{_number(low, decimals)} - {_number(high, decimals)}"))
    comment = ("Résultats dans les valeurs de référence." if not abnormal else
               f"À noter : {', '.join(abnormal)} en dehors des valeurs de référence.")
    return [Section("Prélèvement", (f"Prélevé le {_fr(sampled.date())} à "
                                    f"{sampled:%H:%M}, sang veineux.",
                                    f"Dossier n° {rng.randrange(10**9):09d}"), "30954-2"),
            Section("Résultats", (), "30954-2", tuple(rows)),
            Section("Commentaire du biologiste", (comment, "Résultats validés par "
                                                  f"{author.signature}."), None)]


def _reason(rng: random.Random, author: Professional) -> str:
    key = author.specialty if author.profession_code == "10" else author.profession_code
    return rng.choice(_REASONS.get(key or "SM54", _REASONS["SM54"]))


def _consultation(rng: random.Random, patient: Identity, author: Professional,
                  when: datetime, start: datetime) -> list[Section]:
    systolic, diastolic = rng.randint(105, 165), rng.randint(60, 95)
    exam = (f"Pression artérielle {systolic}/{diastolic} mmHg, fréquence cardiaque "
            f"{rng.randint(55, 100)}/min, température {_number(rng.uniform(36.2, 38.9), 1)} °C.",
            f"Poids {rng.randint(45, 110)} kg. Examen cardio-pulmonaire sans particularité.")
    if author.profession_code == "70":
        exam = (f"Douleur évaluée à {rng.randint(2, 8)}/10 (EVA). Amplitudes articulaires "
                "limitées en fin de course.", "Force musculaire cotée à 4/5 sur le segment "
                "atteint. Pas de signe neurologique.")
    elif author.profession_code == "40":
        exam = ("Examen exobuccal sans particularité. Gencives légèrement inflammatoires.",
                f"Percussion douloureuse de la dent {rng.choice((16, 26, 36, 46))}; "
                "radiographie rétro-alvéolaire réalisée.")
    return [Section("Motif", (_reason(rng, author),), "29299-5"),
            Section("Antécédents", tuple(rng.sample(_HISTORY, rng.randint(1, 3))), "11348-0"),
            Section("Examen clinique", exam, "29545-1"),
            Section("Conclusion et conduite à tenir", (
                rng.choice(("Évolution favorable attendue.", "Pas de signe de gravité.",
                            "Tableau compatible avec une affection bénigne.")),
                rng.choice(("Traitement symptomatique, réévaluation dans 7 jours si besoin.",
                            f"Revoir dans {rng.choice((1, 3, 6))} mois.",
                            f"{rng.randint(6, 15)} séances prescrites, bilan de fin de "
                            "traitement.")),), "18776-5")]


def _medicines(author: Professional) -> tuple[tuple[str, str, str], ...]:
    return {"40": _DENTAL_MEDICINES, "50": _MIDWIFE_MEDICINES}.get(author.profession_code,
                                                                   _MEDICINES)


def _prescription(rng: random.Random, patient: Identity, author: Professional,
                  when: datetime, start: datetime) -> list[Section]:
    choices = _medicines(author)
    lines: list[str] = []
    for name, posology, duration in rng.sample(choices, rng.randint(1, min(5, len(choices)))):
        lines += [name, f"    {posology}, pendant {duration}."]
    renew = rng.choice(("Ne pas renouveler.", "À renouveler 2 fois.", "À renouveler 3 fois."))
    return [Section("Prescription", tuple(lines), "57828-6"),
            Section("Mentions", (renew, f"Fait le {_fr(when.date())}, {author.signature}."),
                    None)]


def _imaging(rng: random.Random, patient: Identity, author: Professional,
             when: datetime, start: datetime) -> list[Section]:
    exams = [e for e in _IMAGING if patient.sex == "female" or not e[0].startswith("Mammo")]
    exam, indication, technique, result, conclusion = rng.choice(exams)
    return [Section("Examen", (exam, f"Indication : {indication}.",
                               f"Technique : {technique}"), "55111-9"),
            Section("Résultats", (result,), "18782-3"),
            Section("Conclusion", (conclusion,), "55110-1")]


def _discharge(rng: random.Random, patient: Identity, author: Professional,
               when: datetime, start: datetime) -> list[Section]:
    key = author.specialty if author.profession_code == "10" else author.profession_code
    service, reasons = _STAYS.get(key or "SM27", _STAYS["SM27"])
    if patient.sex == "male" and service in ("Gynécologie-obstétrique", "Maternité"):
        service, reasons = _STAYS["SM27"]
    admitted = start.date()
    medicines = rng.sample(_LONG_TERM, rng.randint(1, 4))
    return [Section("Séjour", (f"Service de {service}, {author.organisation.name}.",
                               f"Hospitalisation du {_fr(admitted)} au {_fr(when.date())}.",
                               f"Motif : {rng.choice(reasons)}."), "46241-6"),
            Section("Évolution", ("Évolution clinique favorable sous traitement.",
                                  "Examens complémentaires en faveur du diagnostic retenu.",
                                  "Sortie au domicile, autonome."), "8648-8"),
            Section("Traitement de sortie", tuple(f"{m[0]} : {m[1]}" for m in medicines),
                    "10183-2"),
            Section("Suivi", (f"Consultation de contrôle dans {rng.choice((2, 4, 6))} "
                              "semaines.", "Courrier adressé au médecin traitant."), "18776-5")]


def _vaccination(rng: random.Random, patient: Identity, author: Professional,
                 when: datetime, start: datetime) -> list[Section]:
    age = patient.age_on(when.date())
    vaccines = _VACCINES_CHILD if age < 16 else _VACCINES_SENIOR if age >= 65 else \
        _VACCINES_ADULT
    disease, product = rng.choice(vaccines)
    lot = f"{rng.choice('ABCDEFGHJK')}{rng.choice('LMNPRSTVWX')}{rng.randrange(10**4):04d}"
    return [Section("Vaccination", (f"{disease} : {product}, lot {lot}.",
                                    f"Injection intramusculaire, deltoïde "
                                    f"{rng.choice(('gauche', 'droit'))}, le {_fr(when.date())}.",
                                    "Pas de réaction immédiate après 15 minutes de "
                                    "surveillance."), "11369-6"),
            Section("Prochaine dose", (rng.choice(("Rappel dans un an.", "Schéma complet.",
                                                   "Deuxième dose dans 2 mois.")),), None)]


def _summary(rng: random.Random, patient: Identity, author: Professional,
             when: datetime, start: datetime) -> list[Section]:
    problems = rng.sample(_HISTORY, rng.randint(1, 4))
    return [Section("Pathologies en cours et antécédents", tuple(problems), "11450-4"),
            Section("Allergies et intolérances", (rng.choice(_ALLERGIES),), "48765-2"),
            Section("Traitements au long cours", tuple(
                f"{m[0]} : {m[1]}" for m in rng.sample(_LONG_TERM, rng.randint(0, 4))) or (
                "Aucun traitement au long cours.",), "10160-0"),
            Section("Points de vigilance", (rng.choice((
                "Pas de point particulier.", "Risque de chute à domicile.",
                "Fonction rénale à surveiller avant toute prescription.")),), None)]


_WRITERS = {"lab-report": _lab, "consultation-note": _consultation,
            "prescription": _prescription, "imaging-report": _imaging,
            "discharge-summary": _discharge, "vaccination-record": _vaccination,
            "patient-summary": _summary}


def _act_start(rng: random.Random, kind: DocumentKind, written: datetime) -> datetime:
    """When the act began: the morning's sample for a lab report (validated hours later),
    the admission for a discharge letter, minutes before the writing otherwise."""
    if kind.name == "lab-report":
        day = written - timedelta(days=rng.choice((0, 0, 1)))
        start = day.replace(hour=rng.randint(7, 10), minute=rng.randrange(0, 60, 5))
        start = start if start < written else start - timedelta(days=1)
        return paris(start.replace(tzinfo=None))  # the offset of that day
    if kind.name == "discharge-summary":
        return paris((written - timedelta(days=rng.randint(1, 14))).replace(
            hour=rng.randint(8, 20), minute=rng.randrange(0, 60, 5), tzinfo=None))
    return written - timedelta(minutes=rng.choice((15, 20, 30, 45)))


def content(rng: random.Random, patient: Identity, author: Professional,
            kind: DocumentKind) -> Content:
    """What a document of ``kind`` by ``author`` about ``patient`` says, and when."""
    written = _act_time(rng, patient)
    start = _act_start(rng, kind, written)
    sections = _WRITERS[kind.name](rng, patient, author, written, start)
    return Content(kind, written, start, tuple(sections), _uuid(rng))


def document_lines(patient: Identity, author: Professional, body: Content) -> list[str]:
    """The text of a document, line by line, for its PDF form."""
    lines = [*_identity_lines(patient, author), f"Date : {_fr(body.written.date())} à "
             f"{body.written:%H:%M}", ""]
    for section in body.sections:
        lines.append(section.heading.upper())
        lines += section.lines
        for row in section.table[1:]:
            lines.append(row[0] if not any(row[1:]) else
                         f"    {row[0]} : {row[1]} {row[2]}  (réf. {row[3]})")
        lines.append("")
    lines.append(f"Document signé électroniquement par {author.signature}.")
    return lines


# ----------------------------------------------------------------------------- sizes


def content_size(rng: random.Random, max_bytes: int, median_bytes: int = 40_000) -> int:
    """A content size: log-normal around ``median_bytes`` (most documents a few tens of kB,
    a few in MB), within MIN_BYTES..``max_bytes``."""
    drawn = int(rng.lognormvariate(math.log(median_bytes), SIZE_SIGMA))
    return max(min(MIN_BYTES, max_bytes), min(drawn, max_bytes))


# ----------------------------------------------------------------------------- PDF

_PAGE_WIDTH, _PAGE_HEIGHT, _MARGIN = 595, 842, 56
_LEADING, _FIRST_LINE, _LAST_LINE = 13, 770, 60
_LINES_PER_PAGE = (_FIRST_LINE - _LAST_LINE) // _LEADING
_WRAP = 92  # characters of Helvetica 10 pt in the text width
_SCAN_WIDTH, _SCAN_ROWS = 1240, 1754  # an A4 page scanned at 150 dpi, 8-bit grey
_SMALL_WIDTH = 400  # a signature or a stamp
_MIN_IMAGE = 2048  # below that, padding is not worth an image
_PAPER = bytes(205 + b % 51 for b in range(256))  # noise -> light grey paper


def _pdf_text(text: str) -> bytes:
    """A PDF literal string in WinAnsiEncoding (what Helvetica's /Encoding says)."""
    raw = text.encode("cp1252", errors="replace")
    return b"(" + raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)") + b")"


def _pdf_info_text(text: str) -> bytes:
    return b"<FEFF" + text.encode("utf-16-be").hex().upper().encode() + b">"


def _paginate(lines: Sequence[str]) -> list[list[str]]:
    wrapped = [part for line in lines
               for part in (textwrap.wrap(line, _WRAP, subsequent_indent="    ") or [""])]
    return [wrapped[i:i + _LINES_PER_PAGE]
            for i in range(0, max(1, len(wrapped)), _LINES_PER_PAGE)]


@dataclass(frozen=True)
class _Image:
    width: int
    rows: int
    data: bytes  # width * rows grey samples


def _assemble(title: str, pages: list[list[str]], images: list[_Image]) -> bytes:
    """A PDF 1.4 file: catalog, page tree, fonts, info, text pages then scanned pages, with
    an exact cross-reference table."""
    total = len(pages) + len(images)
    # 1 catalog, 2 pages, 3-4 fonts, 5 info; then per text page (page, content) and per
    # scanned page (page, content, image).
    first_page = 6
    page_numbers = [first_page + 2 * i for i in range(len(pages))]
    scan_start = first_page + 2 * len(pages)
    page_numbers += [scan_start + 3 * i for i in range(len(images))]
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R /Lang (fr-FR) >>",
        2: b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % n for n in page_numbers)
           + b"] /Count %d >>" % total,
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        4: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold "
           b"/Encoding /WinAnsiEncoding >>",
        5: b"<< /Title " + _pdf_info_text(title) + b" /Producer (Carnet simulate) >>",
    }
    fonts = b"/Font << /F1 3 0 R /F2 4 0 R >>"

    def footer(number: int) -> bytes:
        return b"BT /F1 8 Tf %d 30 Td %s Tj ET\n" % (
            _MARGIN, _pdf_text(f"{title} - page {number} / {total}"))

    for i, lines in enumerate(pages):
        stream = b"BT /F2 14 Tf %d 800 Td %s Tj ET\n" % (_MARGIN, _pdf_text(title))
        stream += b"BT /F1 10 Tf %d TL %d %d Td\n" % (_LEADING, _MARGIN, _FIRST_LINE)
        stream += b"".join(_pdf_text(line) + b" Tj T*\n" for line in lines)
        stream += b"ET\n" + footer(i + 1)
        number = page_numbers[i]
        objects[number] = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] "
                           b"/Contents %d 0 R /Resources << %s >> >>"
                           % (_PAGE_WIDTH, _PAGE_HEIGHT, number + 1, fonts))
        objects[number + 1] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
    for j, image in enumerate(images):
        number = page_numbers[len(pages) + j]
        width = _PAGE_WIDTH - 2 * _MARGIN
        height = max(1, min(700, round(width * image.rows / image.width)))
        stream = b"q %d 0 0 %d %d %d cm /Im0 Do Q\n" % (width, height, _MARGIN,
                                                        780 - height)
        stream += b"BT /F1 9 Tf %d 790 Td %s Tj ET\n" % (
            _MARGIN, _pdf_text(f"Pièce numérisée {j + 1} / {len(images)}"))
        stream += footer(len(pages) + j + 1)
        objects[number] = (b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] "
                           b"/Contents %d 0 R /Resources << %s /XObject << /Im0 %d 0 R >> >> >>"
                           % (_PAGE_WIDTH, _PAGE_HEIGHT, number + 1, fonts, number + 2))
        objects[number + 1] = b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream)
        objects[number + 2] = (b"<< /Type /XObject /Subtype /Image /Width %d /Height %d "
                               b"/ColorSpace /DeviceGray /BitsPerComponent 8 /Length %d >>\n"
                               b"stream\n" % (image.width, image.rows, len(image.data))
                               + image.data + b"\nendstream")
    parts, offsets, size = [b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"], [], 15
    for number in range(1, len(objects) + 1):
        offsets.append(size)
        chunk = b"%d 0 obj\n%s\nendobj\n" % (number, objects[number])
        parts.append(chunk)
        size += len(chunk)
    parts.append(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    parts.append(b"".join(b"%010d 00000 n \n" % offset for offset in offsets))
    parts.append(b"trailer\n<< /Size %d /Root 1 0 R /Info 5 0 R >>\nstartxref\n%d\n%%%%EOF\n"
                 % (len(objects) + 1, size))
    return b"".join(parts)


def _scans(rng: random.Random, budget: int) -> list[_Image]:
    """Grey 'scanned pages' holding about ``budget`` bytes of samples."""
    if budget < _MIN_IMAGE:
        return []
    page = _SCAN_WIDTH * _SCAN_ROWS
    count = math.ceil(budget / page)
    images = []
    for i in range(count):
        share = budget // count + (budget % count if i == count - 1 else 0)
        width = _SCAN_WIDTH if share >= 200_000 else _SMALL_WIDTH
        rows = max(1, share // width)
        images.append(_Image(width, rows, rng.randbytes(width * rows).translate(_PAPER)))
    return images


def pdf(rng: random.Random, size_hint: int, title: str, lines: Sequence[str]) -> bytes:
    """A valid multi-page PDF of ``lines`` under ``title``, padded with scanned pages (grey
    images: real streams, as a scanned attachment is) to about ``size_hint`` bytes and never
    above it; trailing lines are dropped when the text alone is larger. ValueError if even
    the title alone does not fit."""
    kept = list(lines)
    text_only = _assemble(title, _paginate(kept), [])
    if len(text_only) > size_hint:
        low, high = 0, len(kept)  # the most lines that fit
        while low < high:
            middle = (low + high + 1) // 2
            if len(_assemble(title, _paginate(kept[:middle]), [])) <= size_hint:
                low = middle
            else:
                high = middle - 1
        kept = kept[:low]
        text_only = _assemble(title, _paginate(kept), [])
        if len(text_only) > size_hint:
            raise ValueError(f"a PDF titled {title!r} does not fit in {size_hint} bytes")
        return text_only
    pages = _paginate(kept)
    overhead = 600  # per scanned page: its page, content and image dictionaries
    budget = size_hint - len(text_only)
    images = _scans(rng, budget - overhead * math.ceil(budget / (_SCAN_WIDTH * _SCAN_ROWS)))
    while images:
        out = _assemble(title, pages, images)
        excess = len(out) - size_hint
        if excess <= 0:
            return out
        last = images[-1]
        rows = last.rows - math.ceil(excess / last.width)
        images[-1:] = [_Image(last.width, rows, last.data[:last.width * rows])] \
            if rows > 0 else []
    return text_only


# ----------------------------------------------------------------------------- CDA

_CDA_GENDER = {"male": "M", "female": "F"}  # others: UN


def _cda_time(moment: datetime) -> str:
    offset = moment.strftime("%z")
    return moment.strftime("%Y%m%d%H%M%S") + offset


def _cda_section(section: Section) -> str:
    code = (f'<code code="{section.code}" codeSystem="{LOINC_OID}" codeSystemName="LOINC"/>'
            if section.code else "")
    text = "".join(f"<paragraph>{escape(line.strip())}</paragraph>" for line in section.lines)
    if section.table:
        head, *body = section.table
        text += ("<table border=\"1\"><thead><tr>"
                 + "".join(f"<th>{escape(cell)}</th>" for cell in head)
                 + "</tr></thead><tbody>"
                 + "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row)
                           + "</tr>" for row in body)
                 + "</tbody></table>")
    return (f"<component><section>{code}<title>{escape(section.heading)}</title>"
            f"<text>{text}</text></section></component>")


def _cda(patient: Identity, author: Professional, body: Content) -> bytes:
    kind, o = body.kind, author.organisation
    given = "".join(f"<given>{escape(name)}</given>" for name in patient.given_names)
    organisation = (f'<id root="{IDNAT_STRUCT_OID}" extension="1{o.finess}"/>'
                    f"<name>{escape(o.name)}</name>")
    written = _cda_time(body.written)
    sections = "".join(_cda_section(section) for section in body.sections)
    ins_root = patient.system.removeprefix("urn:oid:")  # INS-NIR-TEST: INS_TEST_OID
    gender = _CDA_GENDER.get(patient.sex, "UN")
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3">
<realmCode code="FR"/>
<typeId root="2.16.840.1.113883.1.3" extension="POCD_HD000040"/>
<templateId root="2.16.840.1.113883.2.8.2.1"/>
<templateId root="1.2.250.1.213.1.1.1.1"/>
<id root="{body.document_id}"/>
<code code="{kind.loinc}" codeSystem="{LOINC_OID}" codeSystemName="LOINC" \
displayName={quoteattr(kind.loinc_display or kind.title)}/>
<title>{escape(kind.title)}</title>
<effectiveTime value="{written}"/>
<confidentialityCode code="N" codeSystem="2.16.840.1.113883.5.25"/>
<languageCode code="fr-FR"/>
<setId root="{body.document_id}"/>
<versionNumber value="1"/>
<recordTarget><patientRole>
<id root="{ins_root}" extension="{patient.nir}"/>
<patient><name>{given}<family qualifier="BR">{escape(patient.birth_family_name)}</family></name>
<administrativeGenderCode code="{gender}" codeSystem="2.16.840.1.113883.5.1"/>
<birthTime value="{patient.birth_date:%Y%m%d}"/>
<birthplace><place><addr><county>{patient.birth_place}</county></addr></place></birthplace>
</patient></patientRole></recordTarget>
<author><time value="{written}"/><assignedAuthor>
<id root="{IDNAT_PS_OID}" extension="{author.idnat}"/>
<code code="{author.profession_code}" codeSystem="{PROFESSION_OID}" \
displayName={quoteattr(author.profession)}/>
<assignedPerson><name><given>{escape(author.given)}</given>\
<family>{escape(author.family)}</family></name></assignedPerson>
<representedOrganization>{organisation}</representedOrganization>
</assignedAuthor></author>
<custodian><assignedCustodian><representedCustodianOrganization>{organisation}\
</representedCustodianOrganization></assignedCustodian></custodian>
<legalAuthenticator><time value="{written}"/><signatureCode code="S"/><assignedEntity>
<id root="{IDNAT_PS_OID}" extension="{author.idnat}"/>
<assignedPerson><name><given>{escape(author.given)}</given>\
<family>{escape(author.family)}</family></name></assignedPerson>
</assignedEntity></legalAuthenticator>
<documentationOf><serviceEvent><effectiveTime><low value="{_cda_time(body.act_start)}"/>\
<high value="{written}"/></effectiveTime></serviceEvent></documentationOf>
<component><structuredBody>
{sections}
</structuredBody></component>
</ClinicalDocument>
"""
    return xml.encode("utf-8")


def cda(patient: Identity, author: Professional, kind: DocumentKind,
        rng: random.Random) -> bytes:
    """A CDA R2 document (HL7 France header shape) of ``kind``: the patient by INS (root
    1.2.250.1.213.1.4.10), the author by idNat_PS, the custodian by FINESS, a structured body
    of narrative sections. Well-formed XML, not schematron-checked."""
    return _cda(patient, author, content(rng, patient, author, kind))


# ----------------------------------------------------------------------------- submissions


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _stable_urns(node: Any, rng: random.Random, mapping: dict[str, str]) -> Any:
    """The Bundle with every fresh ``urn:uuid:`` (samples draws them from uuid4) replaced by
    one drawn from ``rng``, consistently, so that a seed gives the same Bundle."""
    if isinstance(node, dict):
        return {key: _stable_urns(value, rng, mapping) for key, value in node.items()}
    if isinstance(node, list):
        return [_stable_urns(value, rng, mapping) for value in node]
    if isinstance(node, str) and node.startswith("urn:uuid:") and len(node) == 45:
        if node not in mapping:
            mapping[node] = f"urn:uuid:{_uuid(rng)}"
        return mapping[node]
    return node


def submission(rng: random.Random, patient_id: str, patient: Identity, author: Professional,
               kind: DocumentKind, *, max_bytes: int,
               form: str | None = None) -> tuple[dict[str, Any], int]:
    """One ITI-65 transaction filing a document of ``kind`` by ``author`` for ``patient``
    (``patient_id``: the Patient's id on the server, or a reference), and the size of its
    content in bytes (never above ``max_bytes``). ``form`` ("pdf" or "cda") forces the
    format; by default a kind that exists as CDA is one in CDA_SHARE of the cases."""
    if max_bytes < MIN_BYTES:
        raise ValueError(f"max_bytes must be at least {MIN_BYTES}")
    forced = form is not None
    if form is None:
        form = "cda" if "cda" in kind.formats and rng.random() < CDA_SHARE else "pdf"
    if form not in kind.formats:
        raise ValueError(f"a {kind.name} is not produced as {form!r}")
    body = content(rng, patient, author, kind)
    size_hint = content_size(rng, max_bytes, kind.median_bytes)
    data, media = b"", PDF_TYPE
    if form == "cda":
        data, media = _cda(patient, author, body), CDA_TYPE
        if len(data) > max_bytes and forced:
            raise ValueError(f"the CDA ({len(data)} bytes) is larger than max_bytes")
        if len(data) > max_bytes:  # a PDF can be cut to fit
            form, media = "pdf", PDF_TYPE
    if form == "pdf":
        data = pdf(rng, size_hint, kind.title, document_lines(patient, author, body))
    reference = patient_id if "/" in patient_id or patient_id.startswith("urn:") \
        else f"Patient/{patient_id}"
    master = f"urn:uuid:{body.document_id}"
    bundle = document_bundle(
        reference, content=data, content_type=media, master_id=master,
        type_code=kind.loinc, type_display=kind.loinc_display or None,
        class_code=kind.class_code, title=kind.title,
        date=body.written.isoformat(), period_start=body.act_start.isoformat(),
        author_rpps=author.rpps, author_given=author.given, author_family=author.family,
        author_profession=author.profession_code, author_specialty=author.specialty,
        custodian_finess=author.organisation.finess, custodian_name=author.organisation.name,
        facility_type=author.organisation.sector,
        practice_setting=author.organisation.practice_setting)
    return _stable_urns(bundle, rng, {master: master}), len(data)
