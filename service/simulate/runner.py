"""``carnet simulate``: professionals filing documents into a Carnet, as many as asked.

The harness is a client from outside, against any Carnet URL: it logs its users
in at the identity provider (``login.py``), finds the patients through the FHIR
API, generates each submission (``corpus.py``) and sends ITI-65 Bundles from N
concurrent clients, at a target rate or as fast as the server answers, for a
count or a duration; it can mix in ITI-67 searches and ITI-68 reads by the same
professionals and portal-like reads by patients. Every answer is recorded
(``report.py``).
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from service.documents.samples import IDNAT_PS
from service.simulate import corpus
from service.simulate.login import (
    PATIENT_SCOPE,
    PROFESSIONAL_SCOPE,
    Client,
    LoginError,
    Provider,
    Token,
)
from service.simulate.memory import peak_rss
from service.simulate.report import TRANSPORT_ERROR, Report

FHIR_JSON = "application/fhir+json"
MAX_PROFESSIONALS = 50   # logged in at start: enough authors, not a login storm
MAX_PATIENT_LOGINS = 20  # patients whose portal-like reads are simulated


class SetupError(Exception):
    """The run cannot start (nobody to log in, no patient found...); the message says why."""


@dataclass(frozen=True)
class Plan:
    url: str
    client: Client
    documents: int | None = None   # stop after this many ITI-65 submissions...
    duration: float | None = None  # ...or after this many seconds (the first reached)
    concurrency: int = 8
    rate: float | None = None      # ITI-65 per second in all; None: as fast as possible
    searches: float = 0.0          # ITI-67 per submission (fractions drawn at random)
    reads: float = 0.0             # ITI-68 of the document just filed, per submission
    patient_reads: float = 0.0     # a patient's « Mes documents » read, per submission
    patients: int = 200            # at most this many of the patients found are used
    max_bytes: int = 2_000_000     # largest generated document
    seed: int = 1                  # the same seed sends the same documents (ids included)
    issuer: str | None = None      # default: <url>/idp, the embedded provider
    timeout: float = 60.0
    server_pids: tuple[int, ...] = ()

    @property
    def base(self) -> str:
        return self.url.rstrip("/")


@dataclass
class Cast:
    """Who takes part: logged-in professionals, the patients found, patients' tokens."""

    professionals: list[tuple[Token, corpus.Professional]]
    patients: list[tuple[str, corpus.Identity]]  # (FHIR id, identity)
    patient_tokens: dict[str, Token] = field(default_factory=dict)  # FHIR id -> token
    # (professional, patient id) pairs the server refused (403): a professional works in
    # the records open to them, as in real life; each refusal was counted when it happened.
    refused: set[tuple[str, str]] = field(default_factory=set)
    # FHIR id -> idNat_PS of the patient's attending doctor (Patient.generalPractitioner).
    attending: dict[str, str] = field(default_factory=dict)

    def pick(self, rng: random.Random, reading: bool = False
             ) -> tuple[Token, corpus.Professional, str, corpus.Identity]:
        """A professional and a patient whose record did not refuse them yet (anyone, once
        every pair was refused: the errors then show it). When the filing is followed by
        reads, the attending doctor files: anyone may feed a record, but only those the
        patient authorised read it (a stranger's reads would all be refused)."""
        if reading and (treated := self._treated()):
            return rng.choice(treated)
        token, author = rng.choice(self.professionals)
        open_to_them = [p for p in self.patients if (token.subject, p[0]) not in self.refused]
        if not open_to_them:
            working = [(t, a) for t, a in self.professionals
                       if any((t.subject, p[0]) not in self.refused for p in self.patients)]
            if working:
                token, author = rng.choice(working)
                open_to_them = [p for p in self.patients
                                if (token.subject, p[0]) not in self.refused]
        patient_id, identity = rng.choice(open_to_them or self.patients)
        return token, author, patient_id, identity

    def _treated(self) -> list[tuple[Token, corpus.Professional, str, corpus.Identity]]:
        doctors = {author.idnat: (token, author) for token, author in self.professionals}
        return [(*doctors[idnat], patient_id, identity) for patient_id, identity in self.patients
                if (idnat := self.attending.get(patient_id)) in doctors
                and (doctors[idnat][0].subject, patient_id) not in self.refused]


class Tickets:
    """The submissions still to send: a count, a deadline, and the pace of ``rate``."""

    def __init__(self, plan: Plan) -> None:
        self._left = plan.documents
        self._deadline = (time.monotonic() + plan.duration) if plan.duration else None
        self._interval = 1.0 / plan.rate if plan.rate else 0.0
        self._next = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self) -> bool:
        async with self._lock:
            now = time.monotonic()
            if self._left is not None and self._left <= 0:
                return False
            if self._deadline is not None and now >= self._deadline:
                return False
            if self._left is not None:
                self._left -= 1
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            await asyncio.sleep(start - now)
        return self._deadline is None or time.monotonic() < self._deadline


def _times(rng: random.Random, per_submission: float) -> int:
    """``per_submission`` as a whole count: 1.5 is 1, or 2 half the time."""
    whole = math.floor(per_submission)
    return whole + (rng.random() < per_submission - whole)


async def _send(http: httpx.AsyncClient, report: Report, operation: str, method: str,
                url: str, *, headers: dict[str, str], content: bytes | None = None,
                sent: int = 0) -> httpx.Response | None:
    started = time.monotonic()
    try:
        response = await http.request(method, url, headers=headers, content=content)
        await response.aread()
    except httpx.HTTPError as exc:
        report.record(operation, TRANSPORT_ERROR, time.monotonic() - started, False,
                      reason=f"{type(exc).__name__}: {exc}")
        return None
    report.record(operation, str(response.status_code), time.monotonic() - started,
                  response.is_success, sent if response.is_success else 0,
                  reason=None if response.is_success else _reason(response))
    return response


def _reason(response: httpx.Response) -> str:
    """An error's first OperationOutcome diagnostics (or the start of its body)."""
    try:
        issue = (orjson.loads(response.content).get("issue") or [{}])[0]
        return str(issue.get("diagnostics") or issue.get("code") or "")
    except (orjson.JSONDecodeError, AttributeError):
        return response.text[:200]


def _filed_binary(answer: httpx.Response) -> str | None:
    """The first Binary the transaction-response says it stored (ITI-68's target)."""
    try:
        entries = orjson.loads(answer.content).get("entry") or []
    except orjson.JSONDecodeError:
        return None
    return next((location.split("/_history")[0] for e in entries
                 if (location := (e.get("response") or {}).get("location", ""))
                 .startswith("Binary/")), None)


async def _worker(index: int, plan: Plan, http: httpx.AsyncClient, provider: Provider,
                  cast: Cast, tickets: Tickets, report: Report) -> None:
    rng = random.Random(plan.seed * 1000 + index)
    fhir = f"{plan.base}/fhir"
    while await tickets.take():
        token, author, patient_id, identity = cast.pick(
            rng, reading=bool(plan.searches or plan.reads))
        token = await provider.fresh(token)
        bundle, size = corpus.submission(rng, patient_id, identity, author,
                                         corpus.pick_kind_for(rng, author, identity),
                                         max_bytes=plan.max_bytes)
        body = orjson.dumps(bundle)
        headers = {**token.header(), "Content-Type": FHIR_JSON, "Accept": FHIR_JSON}
        answer = await _send(http, report, "iti65", "POST", fhir, headers=headers,
                             content=body, sent=size)
        if answer is not None and answer.status_code == 403:
            cast.refused.add((token.subject, patient_id))
        read_headers = {**token.header(), "Accept": FHIR_JSON}
        for _ in range(_times(rng, plan.searches)):
            found = await _send(http, report, "iti67", "GET",
                                f"{fhir}/DocumentReference?patient={patient_id}&status=current"
                                "&_sort=-date&_count=10", headers=read_headers)
            if found is not None and found.status_code == 403:
                cast.refused.add((token.subject, patient_id))
        binary = _filed_binary(answer) if answer is not None and answer.is_success else None
        for _ in range(_times(rng, plan.reads) if binary else 0):
            read = await _send(http, report, "iti68", "GET", f"{fhir}/{binary}",
                               headers={**token.header(), "Accept": "*/*"})
            if read is not None and read.status_code == 403:
                cast.refused.add((token.subject, patient_id))
        for _ in range(_times(rng, plan.patient_reads) if cast.patient_tokens else 0):
            reader_id = rng.choice(sorted(cast.patient_tokens))
            reader = await provider.fresh(cast.patient_tokens[reader_id])
            await _send(http, report, "patient", "GET",
                        f"{fhir}/DocumentReference?patient={reader_id}&status=current"
                        "&_sort=-date&_count=10",
                        headers={**reader.header(), "Accept": FHIR_JSON})


async def _cast(plan: Plan, http: httpx.AsyncClient, provider: Provider,
                report: Report) -> Cast:
    try:
        subjects = await provider.subjects()
    except (LoginError, httpx.HTTPError) as exc:
        raise SetupError(f"cannot reach the identity provider: {exc}") from exc
    professionals = []
    for subject in [s for s in subjects if s.startswith("ps:")][:MAX_PROFESSIONALS]:
        try:
            token = await provider.log_in(subject, PROFESSIONAL_SCOPE)
        except LoginError as exc:
            report.setup.setdefault("login_failures", []).append(str(exc))
            continue
        professionals.append((token, corpus.professional_from_claims(token.claims)))
    if not professionals:
        raise SetupError("no professional could log in at the identity provider "
                         f"({len(subjects)} identities offered)")
    found = await http.get(f"{plan.base}/fhir/Patient",
                           params={"_count": str(min(plan.patients, 500))},
                           headers={**professionals[0][0].header(), "Accept": FHIR_JSON})
    if found.status_code != 200:
        raise SetupError(f"searching the patients answered {found.status_code}: "
                         f"{found.text[:200]}")
    patients = [(entry["resource"]["id"], identity)
                for entry in found.json().get("entry") or []
                if (identity := corpus.identity_from_patient(entry["resource"])) is not None]
    if not patients:
        raise SetupError("no patient with an INS to file for: seed some first (carnet seed "
                         "--demo, or carnet bulk-load --patients N --documents-per-patient 1 "
                         "on the server's machine)")
    cast = Cast(professionals, patients, attending={
        entry["resource"]["id"]: gp["identifier"]["value"]
        for entry in found.json().get("entry") or []
        for gp in entry["resource"].get("generalPractitioner", [])[:1]
        if gp.get("identifier", {}).get("system") == IDNAT_PS})
    if plan.patient_reads:
        by_nir = {identity.nir: patient_id for patient_id, identity in patients}
        for subject in [s for s in subjects if s.startswith("ins:")]:
            patient_id = by_nir.get(subject.removeprefix("ins:"))
            if patient_id is None or len(cast.patient_tokens) >= MAX_PATIENT_LOGINS:
                continue
            try:
                cast.patient_tokens[patient_id] = await provider.log_in(subject, PATIENT_SCOPE)
            except LoginError as exc:
                report.setup.setdefault("login_failures", []).append(str(exc))
    report.setup.update({"professionals": len(professionals), "patients": len(patients),
                         "patient_logins": len(cast.patient_tokens)})
    return cast


async def simulate(plan: Plan, progress: Callable[[Report], None] | None = None,
                   every: float = 0.5) -> Report:
    """Run the plan; ``progress`` is called every ``every`` seconds with the report so far."""
    if plan.documents is None and plan.duration is None:
        raise SetupError("give a count of documents, a duration, or both")
    report = Report(plan.base)
    limits = httpx.Limits(max_connections=plan.concurrency + 4,
                          max_keepalive_connections=plan.concurrency + 4)
    async with httpx.AsyncClient(timeout=plan.timeout, limits=limits) as http:
        provider = Provider(http, plan.issuer or f"{plan.base}/idp", plan.client)
        cast = await _cast(plan, http, provider, report)
        report.started = time.monotonic()
        tickets = Tickets(plan)
        workers = [asyncio.create_task(_worker(i, plan, http, provider, cast, tickets, report))
                   for i in range(plan.concurrency)]
        watcher = asyncio.create_task(_watch(report, plan, progress, every))
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            watcher.cancel()
            report.finished = time.monotonic()
    report.setup["refused_pairs"] = len(cast.refused)
    report.server_peak_rss_bytes = peak_rss(plan.server_pids, plan.base)
    return report


async def _watch(report: Report, plan: Plan, progress: Callable[[Report], None] | None,
                 every: float) -> None:
    """Show progress, and keep the server's peak memory readable (for remote runs: none)."""
    while True:
        await asyncio.sleep(every)
        if progress is not None:
            progress(report)


__all__ = ["Plan", "SetupError", "simulate"]


def plan_summary(plan: Plan) -> dict[str, Any]:
    """The plan as the report records it (never the client secret)."""
    return {"documents": plan.documents, "duration": plan.duration,
            "concurrency": plan.concurrency, "rate": plan.rate, "searches": plan.searches,
            "reads": plan.reads, "patient_reads": plan.patient_reads,
            "max_bytes": plan.max_bytes, "seed": plan.seed, "client_id": plan.client.client_id}
