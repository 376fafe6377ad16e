"""Property tests of the NIR check (``fhir_profiles.ins``) against a formula written here from
the rule (REFERENCE.md, INS): 15 characters, 13 + a 2-digit key, key = 97 - (n mod 97), with
Corsica's departments 2A and 2B counted as 19 and 18. The reference computes the remainder
digit by digit (Horner's rule), not with one big integer as the validator does."""

from __future__ import annotations

from datetime import date

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fhir_profiles.ins import (
    INS_SLICES,
    InsTraits,
    ins_issues,
    nir_key,
    nir_problem,
    patient_with_ins,
)
from tests.fhir_profiles.test_ins import rules
from tests.properties import PROPERTY, passed

DIGITS = "0123456789"
# Sex: 1 man, 2 woman; 3/4 and 7/8 are the validator's documented conventions for persons
# born abroad and temporary numbers. Month: 01-12, or 20-99 for an unknown month (INSEE).
SEXES = "123478"
CORSICA = {"2A": "19", "2B": "18"}


def reference_key(first13: str) -> str:
    """The key of the first 13 characters, from the rule alone."""
    department = first13[5:7]
    remainder = 0
    for character in first13[:5] + CORSICA.get(department, department) + first13[7:]:
        remainder = (remainder * 10 + DIGITS.index(character)) % 97
    return f"{97 - remainder:02d}"


def digits(text: str) -> bool:
    return all(c in DIGITS for c in text)


def keyable(first13: str) -> bool:
    """13 characters the key formula applies to: digits, the department also 2A/2B."""
    return (len(first13) == 13 and digits(first13[:5] + first13[7:])
            and (digits(first13[5:7]) or first13[5:7] in CORSICA))


def reference_valid(nir: str) -> bool:
    """A NIR as the rule describes it, key included."""
    if len(nir) != 15 or not keyable(nir[:13]) or not digits(nir[13:]):
        return False
    month = int(nir[3:5])
    return nir[0] in SEXES and (1 <= month <= 12 or month >= 20) \
        and nir[13:] == reference_key(nir[:13])


@st.composite
def first13s(draw: st.DrawFn, sexes: str = SEXES) -> str:
    """The 13 characters before the key of a well-formed NIR, Corsica included."""
    sex = draw(st.sampled_from(sexes))
    year = draw(st.integers(0, 99))
    month = draw(st.one_of(st.integers(1, 12), st.integers(20, 99)))
    department = draw(st.one_of(st.sampled_from(sorted(CORSICA)),
                                st.integers(0, 99).map("{:02d}".format)))
    commune, serial = draw(st.integers(0, 999)), draw(st.integers(0, 999))
    return f"{sex}{year:02d}{month:02d}{department}{commune:03d}{serial:03d}"


@settings(PROPERTY, max_examples=200)
@given(first13s())
def test_the_key_of_any_well_formed_nir_is_the_formula_and_no_other_key_passes(
        first13: str) -> None:
    key = reference_key(first13)
    assert nir_key(first13) == key
    assert nir_problem(first13 + key) is None
    for other in (f"{n:02d}" for n in range(100)):
        if other != key:
            problem = nir_problem(first13 + other)
            assert problem is not None and f"the key should be {key}" in problem, other
    passed("nir")


@settings(PROPERTY, max_examples=200)
@given(first13s(), st.integers(0, 14), st.characters())
def test_a_nir_with_any_one_character_changed_is_refused(first13: str, position: int,
                                                         replacement: str) -> None:
    """A changed digit moves n by d x 10^k, never a multiple of the prime 97: always caught."""
    nir = first13 + reference_key(first13)
    changed = nir[:position] + replacement + nir[position + 1:]
    if changed == nir:
        return
    assert not reference_valid(changed)
    assert isinstance(nir_problem(changed), str)
    passed("nir")


NIR_LIKE = st.text(alphabet="0123456789ABab2 \u00b2\u0663", min_size=12, max_size=16)


@settings(PROPERTY, max_examples=250)
@given(st.one_of(st.text(max_size=20), NIR_LIKE))
def test_any_text_gets_an_answer_that_agrees_with_the_rule(text: str) -> None:
    """nir_problem answers None or a reason, never raises; nir_key raises only ValueError,
    for anything but 13 keyable characters (unicode digits such as '²' are not digits)."""
    problem = nir_problem(text)
    assert problem is None or (isinstance(problem, str) and problem)
    assert (problem is None) == reference_valid(text)
    if keyable(text[:13]):
        assert nir_key(text[:13]) == reference_key(text[:13])
    else:
        try:
            nir_key(text[:13])
        except ValueError:
            pass
        else:
            raise AssertionError(f"nir_key accepted {text[:13]!r}")
    passed("nir")


SEX_OF = {"1": "male", "2": "female"}


@settings(PROPERTY, max_examples=100)
@given(st.one_of(first13s("12"), first13s()), st.sampled_from(["male", "female", "unknown"]),
       st.dates(date(1900, 1, 1), date(2030, 12, 31)), st.booleans(),
       st.sampled_from(sorted(INS_SLICES)))
@example("2850775056123", "male", date(1985, 7, 1), True, "INS-NIR")
@example("1850775056123", "female", date(1985, 7, 1), False, "INS-NIR-TEST")
def test_the_nir_sex_and_birth_year_must_agree_with_the_traits_and_nothing_else_is_flagged(
        first13: str, gender: str, born: date, same_year: bool, ins_slice: str) -> None:
    """The NIR encodes sex (1 male, 2 female; other digits are not checked) and the birth
    year's last two digits; a qualified patient otherwise complete has no other issue."""
    nir = first13 + reference_key(first13)
    if same_year:  # half of the time born in the NIR's year, in the 1900s or the 2000s
        born = date(born.year // 100 * 100 + int(nir[1:3]), born.month, min(born.day, 28))
    traits = InsTraits("Dupont", "Jeanne", ("Jeanne",), gender, born.isoformat(), nir[5:10])
    expected = set()
    if SEX_OF.get(nir[0], gender) != gender and gender != "unknown":
        expected.add("ins-nir-gender")
    if f"{born.year % 100:02d}" != nir[1:3]:
        expected.add("ins-nir-birth-year")
    assert set(rules(ins_issues(patient_with_ins(ins_slice, nir, traits)))) == expected
    passed("nir")
