"""No INS, name, birth date, e-mail address, document title or content, nor message text in
what Carnet writes outside the record: its logs, its e-mails, its metrics.

One realistic day of a patient's record, in process: a hospital files a document (ITI-65)
for a patient who has an e-mail address; her attending doctor finds her by INS and by name,
reads and searches her documents and writes to her; an emergency doctor breaks the glass; the
patient reads her inbox, her document and her summary through the API and logs in to the
portal; a few requests fail (404, 400, 401 with her INS in the query); the outbox dispatcher
sends her the e-mails. Every log record emitted meanwhile (at DEBUG, formatted by the real
JSON formatter), every e-mail received by the SMTP server (headers and body) and the /metrics
exposition are then searched for each of her identifying or health values, in the forms they
could take (NIR with or without spaces, dates in ISO and French order, any letter case).

Pinned to SQLite: the lines, mails and metrics come from the same code on both back-ends
(the drivers log no statement: SQLAlchemy's and aiosqlite's loggers stay at WARNING, asyncpg
logs none), and the suite's time is counted.

The test SMTP server's own logger (aiosmtpd's ``mail.log``) is left out: it is not Carnet's,
and it logs the whole conversation by design.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from email.message import Message
from urllib.parse import quote

import httpx
import orjson
import pytest

from fhir_profiles.ins import INS_SLICES
from service.app import create_app
from service.notify.channels import build_dispatcher
from service.ops.logs import JsonFormatter
from service.portal.session import register_client
from service.settings import Settings
from storage.db import Database
from storage.directory import InsIdentity
from tests.endpoints import SmtpServer
from tests.factories import FHIR_JSON, file_document, ins_nir, ins_patient
from tests.reliability import figures
from tests.service.access.conftest import DOCTOR, IDNAT, STRANGER, as_professional
from tests.service.messaging.conftest import message, sent
from tests.service.portal.conftest import log_in
from tests.tokens import Tokens, bearer

pytestmark = pytest.mark.parametrize("session_database", ["sqlite"], indirect=True)

FAMILY, GIVEN, BIRTH = "QUENTRIC", "Albertine", "1961-03-14"
EMAIL = "albertine.quentric@example.org"
TITLE = "Bilan hépatique de contrôle Zéphyrine"
CONTENT = "Transaminases normales, stéatose absente, sérologie Kestrelle négative."
MESSAGE = "Vos résultats de Kestrelle sont rassurants, à bientôt."
NIR = ins_nir("female", BIRTH)


def needles() -> dict[str, str]:
    """What must never appear, lowercased, by what it is."""
    spaced = " ".join((NIR[0], NIR[1:3], NIR[3:5], NIR[5:7], NIR[7:10], NIR[10:13], NIR[13:]))
    day = BIRTH.split("-")
    return {"NIR": NIR, "NIR with spaces": spaced, "NIR without key": NIR[:13],
            "family name": FAMILY, "given name": GIVEN, "birth date": BIRTH,
            "birth date, French": f"{day[2]}/{day[1]}/{day[0]}",
            "birth date, compact": "".join(day), "e-mail address": EMAIL,
            "e-mail local part": EMAIL.split("@")[0], "document title": TITLE,
            "title, distinctive word": "Zéphyrine", "document content": "Kestrelle",
            "document content, phrase": CONTENT[:30], "message text": MESSAGE[:30]}


class Captured(logging.Handler):
    """Every record reaching the root logger, formatted as production formats it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(JsonFormatter())
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith("mail.log"):
            self.lines.append(self.format(record))


@pytest.fixture
def settings(settings: Settings, smtp_server: SmtpServer) -> Settings:
    return settings.model_copy(update={"smtp_url": smtp_server.url, "log_level": "debug",
                                       "dispatcher_backoff_seconds": 0.02,
                                       "public_url": "https://carnet.example"})


@pytest.fixture
def captured() -> Iterator[Captured]:
    """Set up first (the test names it first): the level put back is the one from before
    the app's ``configure_logging`` set DEBUG."""
    root = logging.getLogger()
    handler, level = Captured(), root.level
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def mail_text(mail: Message) -> str:
    headers = "\n".join(f"{name}: {value}" for name, value in mail.items())
    body = "\n".join(str(part.get_content()) for part in mail.walk()
                     if part.get_content_maintype() == "text")
    return f"{headers}\n\n{body}"


async def test_logs_mails_and_metrics_carry_no_identity_nor_health_data(
        captured: Captured, settings: Settings, database: Database, client: httpx.AsyncClient,
        anonymous: httpx.AsyncClient, tokens: Tokens, smtp_server: SmtpServer) -> None:
    assert logging.getLogger().isEnabledFor(logging.DEBUG)  # create_app set the level
    patient_id = await ins_patient(
        client, database, FAMILY, GIVEN, gender="female", birth_date=BIRTH, nir=NIR,
        telecom=[{"system": "email", "value": EMAIL}],
        generalPractitioner=[{"identifier": {"system": IDNAT, "value": "8" + DOCTOR.rpps}}])
    document = await file_document(client, patient_id, title=TITLE, content=CONTENT.encode(),
                                   content_type="text/plain")
    binary = document["content"][0]["attachment"]["url"]

    doctor = as_professional(tokens, DOCTOR)
    ins = f"{INS_SLICES['INS-NIR-TEST']}|{NIR}"
    for path, params in [
        ("/fhir/Patient", {"identifier": ins}),
        ("/fhir/Patient", {"family": FAMILY, "given": GIVEN, "birthdate": BIRTH}),
        ("/fhir/DocumentReference", {"patient.identifier": ins}),
        ("/fhir/DocumentReference", {"patient": patient_id,
                                     "_include": "DocumentReference:subject"}),
        (f"/fhir/DocumentReference/{document['id']}", {}),
        (f"/fhir/{binary}", {}),
    ]:
        answer = await anonymous.get(path, params=params, headers=doctor)
        assert answer.status_code in (200, 400), (path, answer.text)
    await sent(anonymous, doctor, message(patient_id, MESSAGE))
    glass = await anonymous.get(f"/fhir/DocumentReference/{document['id']}", headers={
        **as_professional(tokens, STRANGER), "X-Access-Mode": "bris_de_glace",
        "X-Access-Reason": quote(f"Patiente {GIVEN} {FAMILY} inconsciente")})
    assert glass.status_code == 200, glass.text

    her = bearer(tokens.patient(who=InsIdentity(INS_SLICES["INS-NIR-TEST"], NIR, FAMILY,
                                                (GIVEN,), "female", BIRTH, "75056")))
    for path, params in [("/fhir/Communication", {"recipient": f"Patient/{patient_id}"}),
                         (f"/fhir/DocumentReference/{document['id']}", {}),
                         (f"/fhir/{binary}", {}), (f"/fhir/Patient/{patient_id}/$summary", {}),
                         ("/fhir/AuditEvent", {"patient": patient_id})]:
        answer = await anonymous.get(path, params=params, headers=her)
        assert answer.status_code == 200, (path, answer.text)

    # Failures, each carrying her identity in its request.
    failures = [
        await anonymous.get(f"/fhir/Patient/{NIR}", headers=doctor),
        await anonymous.get("/fhir/Patient", params={"identifier": ins, "birthdate": FAMILY},
                            headers=doctor),
        await anonymous.post("/fhir/Patient", headers={**FHIR_JSON, **doctor},
                             content=orjson.dumps({"resourceType": "Patient",
                                                   "name": [{"family": FAMILY}],
                                                   "birthDate": f"{BIRTH}x"})),
        await anonymous.get("/fhir/Patient", params={"identifier": ins},
                            headers=bearer(f"{FAMILY}.{NIR}.{GIVEN}")),
    ]
    assert [f.status_code for f in failures][:1] == [404]
    assert all(400 <= f.status_code < 500 for f in failures), \
        [(f.request.url, f.status_code, f.text[:200]) for f in failures
         if not 400 <= f.status_code < 500]

    # The portal: she logs in and opens her pages (its API calls carry her INS in queries).
    portal_app = create_app(settings, database)
    await register_client(database, settings)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=portal_app),
                                 base_url=settings.local_url) as browser:
        landed = await log_in(browser, f"ins:{NIR}")
        assert landed.status_code == 303, landed.text
        for page in ("/portal/documents", f"/portal/documents/{document['id']}",
                     "/portal/messages", "/portal/historique"):
            assert (await browser.get(page)).status_code == 200, page

    # Her mailbox is busy at first (451): the failed attempt is logged, then retried.
    smtp_server.busy.add(EMAIL)
    dispatcher, channels = build_dispatcher(settings, database)
    try:
        assert await dispatcher.run_once() > 0
        assert smtp_server.messages == []
        smtp_server.busy.clear()
        for _ in range(100):
            await asyncio.sleep(0.02)  # the retry's backoff (dispatcher_backoff_seconds)
            await dispatcher.run_once()
            if len(smtp_server.messages) >= 3:
                break
    finally:
        await channels.close()
    # The new document, the message and the emergency access.
    assert len(smtp_server.messages) == 3, [m["Subject"] for m in smtp_server.messages]
    assert all(mail["To"] == EMAIL for mail in smtp_server.messages)  # ...where they belong

    metrics = await anonymous.get("/metrics")
    assert metrics.status_code == 200

    sources = {"log": captured.lines,
               "e-mail": [line for mail in smtp_server.messages
                          for line in mail_text(mail).replace(f"To: {EMAIL}", "To: <her>")
                          .splitlines()],
               "metrics": metrics.text.splitlines()}
    assert len(sources["log"]) > 20 and sources["metrics"]
    found = [f"{where}: {what} in {line[:300]}" for where, lines in sources.items()
             for line in lines for what, needle in needles().items()
             if needle.lower() in line.lower()]
    assert found == [], "\n".join(found)
    figures.add("privacy.lines_scanned", sum(len(lines) for lines in sources.values()))
    figures.add("privacy.leaks", 0)
