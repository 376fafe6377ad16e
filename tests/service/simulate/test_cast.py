"""Who files and reads in the harness: with reads in the plan, the patient's attending doctor."""

from __future__ import annotations

import random

from service.simulate import corpus
from service.simulate.login import Token
from service.simulate.runner import Cast


def _cast() -> Cast:
    rng = random.Random(4)
    people = corpus.directory(rng, professionals=12, organisations=3)
    professionals = [(Token(f"ps:{p.idnat}", "t", None, 0.0, {}), p) for p in people]
    patients = [(f"pat-{i}", corpus.identity(rng, i)) for i in range(10)]
    # Patients 0-4 are attended by the first professional, the others by nobody logged in.
    attending = {f"pat-{i}": people[0].idnat for i in range(5)}
    attending |= {f"pat-{i}": "8" + "9" * 11 for i in range(5, 10)}
    return Cast(professionals, patients, attending=attending)


def test_a_filing_followed_by_reads_is_made_by_the_attending_doctor() -> None:
    cast, rng = _cast(), random.Random(1)
    picks = [cast.pick(rng, reading=True) for _ in range(50)]
    assert {author.idnat for _, author, _, _ in picks} == {cast.professionals[0][1].idnat}
    assert {patient_id for _, _, patient_id, _ in picks} <= {f"pat-{i}" for i in range(5)}


def test_a_refused_attending_pair_is_not_picked_again() -> None:
    cast, rng = _cast(), random.Random(2)
    doctor = cast.professionals[0][0].subject
    cast.refused |= {(doctor, f"pat-{i}") for i in range(4)}
    assert {cast.pick(rng, reading=True)[2] for _ in range(20)} == {"pat-4"}


def test_without_reads_anyone_files_for_anyone() -> None:
    cast, rng = _cast(), random.Random(3)
    authors = {cast.pick(rng)[1].idnat for _ in range(100)}
    assert len(authors) > 3
