"""Patient e-mails through a real SMTP server (aiosmtpd): a fixed text, no health data."""

from __future__ import annotations

import pytest

from service.notify.email import SmtpTarget, notice, parse_smtp_url, send_email
from service.notify.errors import DeliveryFailed
from tests.endpoints import SmtpServer, unused_port

PORTAL = "https://carnet.example.fr/portal"
SENDER = "Carnet <no-reply@carnet.example.fr>"
PATIENT = "jeanne.dupont@example.org"
# What a document or message could tell; none of it may reach a mail.
HEALTH_DATA = ("Compte rendu", "CR-IRM", "radiologie", "Dr", "Martin", "IRM", "diabète",
               "11488-4", "DocumentReference", "Communication", "Practitioner")


@pytest.mark.parametrize("kind", ["document", "message", "emergency-access"])
def test_notices_are_french_then_english_with_the_portal_link(kind: str) -> None:
    subject, text = notice(kind, PORTAL)
    assert PORTAL in text
    french, _, english = text.partition("\n--\n")
    assert "Bonjour" in french and "Carnet" in subject
    assert "Carnet" in english and PORTAL in english
    assert not any(word in subject + text for word in HEALTH_DATA)


def test_the_document_notice_says_only_that_a_document_arrived() -> None:
    subject, text = notice("document", PORTAL)
    assert subject == "Un nouveau document est disponible dans votre Carnet"
    assert "A new document is available in your Carnet." in text


def test_the_emergency_notice_points_to_the_access_history() -> None:
    subject, text = notice("emergency-access", PORTAL)
    assert "urgence" in subject and "historique des accès" in text
    assert "access history" in text


def test_an_unknown_notice_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown notice kind"):
        notice("lab-result", PORTAL)


async def test_delivered_with_its_headers_and_the_fixed_text(smtp_server: SmtpServer) -> None:
    subject, text = notice("document", PORTAL)
    await send_email(parse_smtp_url(smtp_server.url), SENDER, PATIENT, subject, text)
    [message] = smtp_server.messages
    assert message["To"] == PATIENT
    assert message["From"] == SENDER
    assert message["Subject"] == subject
    assert message["Date"] and message["Message-ID"].endswith("@carnet.example.fr>")
    assert message.get_content_type() == "text/plain"
    assert message.get_content_charset() == "utf-8"
    body = message.get_content()  # type: ignore[attr-defined]
    assert body.replace("\r\n", "\n") == text
    assert not any(word in body for word in HEALTH_DATA)
    assert smtp_server.mailbox.envelopes == [("no-reply@carnet.example.fr", [PATIENT])]


async def test_smtp_down_is_temporary_and_up_again_delivers(smtp_server: SmtpServer) -> None:
    target = parse_smtp_url(smtp_server.url)
    subject, text = notice("message", PORTAL)
    smtp_server.stop()
    with pytest.raises(DeliveryFailed) as failed:
        await send_email(target, SENDER, PATIENT, subject, text, timeout=2.0)
    assert not failed.value.permanent
    smtp_server.start()
    await send_email(target, SENDER, PATIENT, subject, text, timeout=2.0)
    assert len(smtp_server.messages) == 1


async def test_a_refused_recipient_is_permanent(smtp_server: SmtpServer) -> None:
    smtp_server.refuse.add(PATIENT)
    with pytest.raises(DeliveryFailed) as failed:
        await send_email(parse_smtp_url(smtp_server.url), SENDER, PATIENT, *notice(
            "document", PORTAL))
    assert failed.value.permanent
    assert "550" in failed.value.reason and PATIENT not in failed.value.reason
    assert smtp_server.messages == []


async def test_a_busy_mailbox_is_temporary(smtp_server: SmtpServer) -> None:
    smtp_server.busy.add(PATIENT)
    with pytest.raises(DeliveryFailed) as failed:
        await send_email(parse_smtp_url(smtp_server.url), SENDER, PATIENT, *notice(
            "document", PORTAL))
    assert not failed.value.permanent
    assert "451" in failed.value.reason


async def test_an_address_with_a_line_break_is_permanent(smtp_server: SmtpServer) -> None:
    with pytest.raises(DeliveryFailed) as failed:
        await send_email(parse_smtp_url(smtp_server.url), SENDER,
                         f"{PATIENT}\r\nBcc: someone@example.org", "s", "t")
    assert failed.value.permanent
    assert smtp_server.messages == []


async def test_a_closed_port_is_temporary() -> None:
    target = SmtpTarget("127.0.0.1", unused_port(), None, None, False, False)
    with pytest.raises(DeliveryFailed) as failed:
        await send_email(target, SENDER, PATIENT, "s", "t", timeout=2.0)
    assert not failed.value.permanent


@pytest.mark.parametrize(("url", "expected"), [
    ("smtp://mail.example.fr", SmtpTarget("mail.example.fr", 25, None, None, False, False)),
    ("smtp://mail.example.fr:2525", SmtpTarget("mail.example.fr", 2525, None, None, False,
                                               False)),
    ("smtp://u%40x:p%3Aw%2F@mail:587?starttls=true",
     SmtpTarget("mail", 587, "u@x", "p:w/", False, True)),
    ("smtps://user:pw@mail.example.fr", SmtpTarget("mail.example.fr", 465, "user", "pw", True,
                                                   False)),
    ("smtps://mail.example.fr:1465/", SmtpTarget("mail.example.fr", 1465, None, None, True,
                                                 False)),
    ("smtp://127.0.0.1:1025?starttls=false", SmtpTarget("127.0.0.1", 1025, None, None, False,
                                                        False)),
])
def test_smtp_urls(url: str, expected: SmtpTarget) -> None:
    assert parse_smtp_url(url) == expected


@pytest.mark.parametrize(("url", "why"), [
    ("http://mail.example.fr", "unsupported SMTP URL scheme"),
    ("mail.example.fr:25", "unsupported SMTP URL scheme"),
    ("smtp://", "names no host"),
    ("smtp://mail:99999", "not a valid SMTP URL"),
    ("smtp://mail:port", "not a valid SMTP URL"),
    ("smtp://mail/path", "no path"),
    ("smtp://mail?tls=yes", "unknown SMTP URL option"),
    ("smtp://mail?starttls=maybe", "unknown SMTP URL option"),
    ("smtps://mail?starttls=true", "smtp:// only"),
    ("smtp://user@mail", "both the SMTP user and password"),
])
def test_bad_smtp_urls_are_refused_clearly(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_smtp_url(url)


def test_the_password_stays_out_of_the_target_repr() -> None:
    assert "s3cret" not in repr(parse_smtp_url("smtp://u:s3cret@mail"))
