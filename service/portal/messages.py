"""« Messagerie »: the inbox, one message (marked read when opened), the patient's answer.

The rules are the API's (``service/messaging.py``), not the page's: the inbox is
``Communication?recipient=Patient/<id>``; opening a message marks it read with a JSON
Patch of ``received`` and ``status`` (all a patient may change); an answer is a new
Communication ``inResponseTo`` the message, to its sender. A no-reply message shows no
form, and the API refuses an answer to it all the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from fhir_profiles.messaging import NOTIFICATION, category_of, is_no_reply, referenced_documents
from service.portal.errors import Refusal
from service.portal.fhir import PortalFhir
from service.portal.professionals import professionals_by_idnat, reference_idnat
from service.portal.views import document_view, page_links
from service.portal.web import NOTICES, PortalContext, PortalDep

router = APIRouter()
NOTICES.update({"reponse": "Votre réponse a été envoyée."})
PAGE_SIZE = 10
MAX_ANSWER_CHARS = 5000
SUBJECT_CHARS = 80
EARLIER_MESSAGES = 5  # how far up a conversation (inResponseTo) the page goes
_READ = "completed"
_LINKS = {"DocumentReference": ("documents", "Voir le document"),
          "Communication": ("messages", "Voir le message")}


@dataclass(frozen=True)
class MessageView:
    id: str
    sender: str
    sent: str
    subject: str
    text: str
    unread: bool
    notification: bool
    no_reply: bool
    mine: bool  # the patient's own answer
    about: list[tuple[str, str]]  # (portal path, link text): what a notification is about


@dataclass(frozen=True)
class AttachedDocument:
    id: str
    title: str
    available: bool


def _text(message: dict[str, Any]) -> str:
    return "\n".join(str(item["contentString"]) for item in message.get("payload") or []
                     if isinstance(item, dict) and item.get("contentString"))


def _subject(message: dict[str, Any], text: str) -> str:
    """The topic a professional gave, else the first line of the text, shortened."""
    topic = (message.get("topic") or {}).get("text")
    if topic:
        return str(topic)
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if not first:
        return "(document joint)" if referenced_documents(message) else "(sans texte)"
    return first if len(first) <= SUBJECT_CHARS else first[:SUBJECT_CHARS - 1].rstrip() + "…"


def _about(message: dict[str, Any]) -> list[tuple[str, str]]:
    """Portal links to what a notification is about (a document, a message)."""
    links = []
    for reference in message.get("about") or []:
        kind, _, target = str((reference or {}).get("reference") or "").partition("/")
        if kind in _LINKS and target:
            section, label = _LINKS[kind]
            links.append((f"/{section}/{target}", label))
    return links


class Senders:
    """Who wrote each message, looked up once per page: the patient, Carnet, or the
    professional the sender names (by reference or by national identifier)."""

    def __init__(self, fhir: PortalFhir, patient_id: str | None) -> None:
        self._fhir = fhir
        self._patient = f"Patient/{patient_id}"
        self._known: dict[str, str] = {}

    def by_patient(self, message: dict[str, Any]) -> bool:
        return bool((message.get("sender") or {}).get("reference") == self._patient)

    async def name(self, message: dict[str, Any]) -> str:
        if category_of(message) == NOTIFICATION:
            return "Carnet"
        sender = message.get("sender") or {}
        if self.by_patient(message):
            return "Vous"
        if sender.get("display"):
            return str(sender["display"])
        key = str(sender.get("reference") or sorted((sender.get("identifier") or {}).items()))
        if key not in self._known:
            self._known[key] = await self._professional(sender) or "Professionnel de santé"
        return self._known[key]

    async def _professional(self, sender: dict[str, Any]) -> str | None:
        try:
            idnat = await reference_idnat(self._fhir, sender)
        except Refusal:
            return None  # not in the directory: the page still shows the message
        if idnat is None:
            return None
        return (await professionals_by_idnat(self._fhir, [idnat]))[idnat].name or None


async def message_view(message: dict[str, Any], senders: Senders) -> MessageView:
    text = _text(message)
    mine = senders.by_patient(message)
    return MessageView(
        id=message["id"], sender=await senders.name(message),
        sent=str(message.get("sent") or ""), subject=_subject(message, text), text=text,
        unread=not mine and not message.get("received"),
        notification=category_of(message) == NOTIFICATION, no_reply=is_no_reply(message),
        mine=mine, about=_about(message))


@router.get("/messages", summary="the patient's inbox")
async def inbox(ctx: PortalDep, cursor: str | None = None) -> Response:
    if ctx.patient_id is None:
        return await ctx.page("messages.html", messages=[], cursors={}, total=0)
    params = [("recipient", f"Patient/{ctx.patient_id}"), ("_sort", "-sent"),
              ("_count", str(PAGE_SIZE))]
    if cursor:
        params.append(("_cursor", cursor))
    bundle = await ctx.fhir.get("Communication", params)
    senders = Senders(ctx.fhir, ctx.patient_id)
    found = [await message_view(entry["resource"], senders)
             for entry in bundle.get("entry") or []
             if entry.get("resource", {}).get("resourceType") == "Communication"]
    return await ctx.page("messages.html", messages=found, cursors=page_links(bundle),
                          total=bundle.get("total"))


@router.get("/messages/{message_id}", summary="one message; opening it marks it read")
async def message(ctx: PortalDep, message_id: str) -> Response:
    return await _message_page(ctx, message_id)


@router.post("/messages/{message_id}/reponse", summary="the patient answers a message")
async def answer(ctx: PortalDep, message_id: str) -> Response:
    form = await ctx.form()
    original = await ctx.fhir.get(f"Communication/{message_id}")  # 404: not theirs or none
    text = form.get("texte", "").strip()
    problem = None
    if not text:
        problem = "Votre réponse est vide : écrivez votre message avant de l'envoyer."
    elif len(text) > MAX_ANSWER_CHARS:
        problem = (f"Votre réponse est trop longue ({len(text)} caractères) : "
                   f"{MAX_ANSWER_CHARS} au plus.")
    if problem:
        return await _message_page(ctx, message_id, status_code=400, error=problem, draft=text)
    await ctx.fhir.post("Communication", {
        "resourceType": "Communication", "status": _READ,
        "category": original.get("category"),
        "inResponseTo": [{"reference": f"Communication/{message_id}"}],
        "recipient": [original.get("sender") or {}],
        "payload": [{"contentString": text}]})
    return ctx.redirect(f"/messages/{message_id}", "reponse")


async def _message_page(ctx: PortalContext, message_id: str, *, status_code: int = 200,
                        error: str | None = None, draft: str = "") -> Response:
    found = await _mark_read(ctx, await ctx.fhir.get(f"Communication/{message_id}"))
    senders = Senders(ctx.fhir, ctx.patient_id)
    shown = await message_view(found, senders)
    earlier = [await message_view(m, senders) for m in await _earlier(ctx.fhir, found)]
    later = [await message_view(m, senders) for m in await ctx.fhir.every(
        "Communication", {"in-response-to": f"Communication/{message_id}", "_sort": "sent"})]
    return await ctx.page("message.html", status_code=status_code, message=shown,
                          documents=await _documents(ctx.fhir, found), earlier=earlier,
                          later=later, error=error, draft=draft,
                          max_chars=MAX_ANSWER_CHARS)


async def _mark_read(ctx: PortalContext, message: dict[str, Any]) -> dict[str, Any]:
    """The message, marked read if it was to the patient and unread (the only change a
    patient may make: ``received``, and ``status`` completed)."""
    to_patient = [r.get("reference") for r in message.get("recipient") or []] == [
        f"Patient/{ctx.patient_id}"]
    if not to_patient or message.get("received"):
        return message
    now = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    operations = [{"op": "add", "path": "/received", "value": now}]
    if message.get("status") != _READ:
        operations.append({"op": "replace", "path": "/status", "value": _READ})
    version = (message.get("meta") or {}).get("versionId")
    try:
        return await ctx.fhir.patch(f"Communication/{message['id']}", operations,
                                    if_match=f'W/"{version}"' if version else None)
    except Refusal as refused:
        if refused.status == 412:  # marked read meanwhile (another tab): nothing to do
            return message
        raise


async def _earlier(fhir: PortalFhir, message: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages this one answers, oldest first, as far as the patient may read them."""
    chain: list[dict[str, Any]] = []
    current = message
    for _ in range(EARLIER_MESSAGES):
        answered = (current.get("inResponseTo") or [{}])[0].get("reference")
        if not answered or not str(answered).startswith("Communication/"):
            break
        try:
            current = await fhir.get(str(answered))
        except Refusal:
            break
        chain.insert(0, current)
    return chain


async def _documents(fhir: PortalFhir, message: dict[str, Any]) -> list[AttachedDocument]:
    """The documents sent with the message, with their titles (one since hidden or masked
    from the patient shows as unavailable)."""
    attached = []
    for _, document_id in referenced_documents(message):
        if document_id is None:
            continue
        try:
            view = document_view(await fhir.get(f"DocumentReference/{document_id}"))
            attached.append(AttachedDocument(document_id, view.title, True))
        except Refusal:
            attached.append(AttachedDocument(document_id, "Document non disponible", False))
    return attached
