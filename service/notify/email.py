"""E-mail to the patient: a fixed text that says something arrived, never what.

The mail leaves Carnet's trust boundary (mail servers, a shared mailbox, a phone's lock
screen), so it carries no health data: no title, type, author, professional or content,
only the kind of event and the portal's link, where the patient signs in to read.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from urllib.parse import parse_qsl, unquote, urlsplit

import aiosmtplib

from service.notify.errors import DeliveryFailed

_DEFAULT_PORTS = {"smtp": 25, "smtps": 465}
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True)
class SmtpTarget:
    """Where to hand mail over; ``use_tls``: implicit TLS (smtps), ``start_tls``: upgrade."""

    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool

    def __repr__(self) -> str:  # never print the password in logs or tracebacks
        return (f"SmtpTarget(host={self.host!r}, port={self.port}, username={self.username!r}, "
                f"password={'***' if self.password else None}, use_tls={self.use_tls}, "
                f"start_tls={self.start_tls})")


def parse_smtp_url(url: str) -> SmtpTarget:
    """``smtp://[user:password@]host[:port][?starttls=true]`` or ``smtps://...`` (implicit
    TLS); ports default to 25 and 465; user and password are percent-decoded."""
    usage = "use smtp://[user:password@]host[:port][?starttls=true] or smtps://..."
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid SMTP URL ({exc}); {usage}") from None
    if parts.scheme not in _DEFAULT_PORTS:
        raise ValueError(f"unsupported SMTP URL scheme {parts.scheme!r}; {usage}")
    if not parts.hostname:
        raise ValueError(f"the SMTP URL names no host; {usage}")
    if parts.path not in ("", "/") or parts.fragment:
        raise ValueError(f"an SMTP URL has no path or fragment; {usage}")
    start_tls = False
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name != "starttls" or value.lower() not in _BOOLEANS:
            raise ValueError(f"unknown SMTP URL option {name}={value}; only starttls=true|false")
        start_tls = _BOOLEANS[value.lower()]
    if start_tls and parts.scheme == "smtps":
        raise ValueError("smtps:// is TLS from the start; starttls=true applies to smtp:// only")
    username = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    if (username is None) != (password is None):
        raise ValueError(f"give both the SMTP user and password, or neither; {usage}")
    return SmtpTarget(host=parts.hostname, port=port or _DEFAULT_PORTS[parts.scheme],
                      username=username, password=password,
                      use_tls=parts.scheme == "smtps", start_tls=start_tls)


_NOTICES = {
    "document": (
        "Un nouveau document est disponible dans votre Carnet",
        "Un nouveau document est disponible dans votre Carnet.",
        "A new document is available in your Carnet."),
    "message": (
        "Vous avez reçu un nouveau message dans votre Carnet",
        "Un professionnel de santé vous a écrit un nouveau message dans votre Carnet.",
        "You have a new message in your Carnet."),
    "emergency-access": (
        "Votre Carnet a été ouvert en mode urgence",
        "Votre dossier a été ouvert en mode urgence. Consultez l'historique des accès de "
        "votre Carnet pour savoir qui l'a consulté et pourquoi.",
        "Your record was opened in emergency mode; see your access history in your Carnet."),
}
KINDS = tuple(_NOTICES)


def notice(kind: str, portal_url: str) -> tuple[str, str]:
    """The subject and plain text for ``kind``: French first, a short English line after."""
    if kind not in _NOTICES:
        raise ValueError(f"unknown notice kind {kind!r}; use one of {', '.join(KINDS)}")
    subject, french, english = _NOTICES[kind]
    text = (f"Bonjour,\n\n{french}\n\nConnectez-vous pour le consulter : {portal_url}\n\n"
            "Pour protéger votre vie privée, ce message ne contient aucune information de "
            "santé. Merci de ne pas y répondre.\n\n"
            f"--\n{english} Sign in: {portal_url}\n")
    return subject, text


def _message(sender: str, to: str, subject: str, text: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = to
    message["Subject"] = subject
    message["Date"] = formatdate(usegmt=True)
    domain = parseaddr(sender)[1].rpartition("@")[2] or "carnet.localhost"
    message["Message-ID"] = make_msgid(domain=domain)
    message.set_content(text, charset="utf-8")
    return message


async def send_email(target: SmtpTarget, sender: str, to: str, subject: str, text: str, *,
                     timeout: float = 10.0) -> None:  # noqa: ASYNC109 - a deadline
    """One delivery attempt. A 5xx refusal of the recipient (or of the message) is permanent;
    an unreachable, slow or busy server (4xx), or a sender or login refused, is retried:
    the operator fixes a server's configuration, a patient's address stays wrong."""
    try:
        message = _message(sender, to, subject, text)
    except (ValueError, TypeError) as exc:  # a line break or a malformed address
        raise DeliveryFailed(f"the message cannot be built ({type(exc).__name__})",
                             permanent=True) from exc
    try:
        async with asyncio.timeout(timeout):  # the whole attempt, not each SMTP step
            await aiosmtplib.send(message, hostname=target.host,
                                  port=target.port, username=target.username,
                                  password=target.password, use_tls=target.use_tls,
                                  start_tls=target.start_tls, timeout=timeout)
    except aiosmtplib.SMTPRecipientsRefused as exc:
        codes = sorted({refused.code for refused in exc.recipients})
        raise DeliveryFailed("the mail server refused the recipient "
                             f"({', '.join(map(str, codes))})",
                             permanent=any(code >= 500 for code in codes)) from exc
    except (aiosmtplib.SMTPRecipientRefused, aiosmtplib.SMTPDataError) as exc:
        what = "recipient" if isinstance(exc, aiosmtplib.SMTPRecipientRefused) else "message"
        raise DeliveryFailed(f"the mail server refused the {what} ({exc.code})",
                             permanent=exc.code >= 500) from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise DeliveryFailed(f"the mail server answered {exc.code} "
                             f"({type(exc).__name__})") from exc
    except (aiosmtplib.SMTPException, OSError) as exc:  # refused, reset, TLS, timed out
        raise DeliveryFailed(f"could not reach the mail server ({type(exc).__name__})") from exc
