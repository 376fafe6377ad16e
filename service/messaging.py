"""Secure messaging between professionals and patients: the rules of the write path.

The FHIR interactions call in here for every ``Communication`` written by anyone
but Carnet itself and its operators (``service/fhir/interactions.py``):

- ``prepare`` checks a new message and completes it (sender, subject, sent) before
  the access policy decides on it: a professional writes to a patient with a
  qualified INS, in their own name, attaching documents of that patient that the
  patient may see; a patient (or an app they granted) only answers a message
  addressed to them, unless it was sent as no-reply;
- ``check_change``: once sent, a message changes only when the patient marks it
  read (``received``, ``status`` completed);
- ``stored`` tells the patient that a professional wrote (an outbox event, in the
  same transaction). A patient's answer notifies nobody yet.

Who may read a message (its two parties) is the policy's (``auth/policy.py``).
"""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.policy import Interaction, Rule
from auth.principal import Patient, Professional
from fhir_profiles.consent import IDNAT_SYSTEM
from fhir_profiles.ins import INS_SLICES
from fhir_profiles.messaging import (
    MESSAGE,
    NO_REPLY_HEADER,
    NO_REPLY_VALUE,
    NOTIFICATION,
    category_of,
    is_no_reply,
    mark_no_reply,
    professional_codes,
    referenced_documents,
)
from service.access import Access
from service.documents import filing
from service.errors import BadRequest, Forbidden, NotFound, Unprocessable
from service.fhir.http import fhir_instant, now_micros
from service.notify import events
from storage import access as records
from storage import resources as repo
from storage.search.extract import patient_of

COMMUNICATION = "Communication"
# A patient may change these of a message they received, and nothing else.
_MARKS = ("received", "status")
_READ = "completed"


def no_reply_header(resource: dict[str, Any], value: str | None) -> dict[str, Any]:
    """``X-MSS-MES: FIN`` (MSSanté) on a POST: the message is stored as no-reply."""
    if value is None:
        return resource
    if value.strip().upper() != NO_REPLY_VALUE:
        raise BadRequest(f"[message-header] {NO_REPLY_HEADER} takes {NO_REPLY_VALUE} (a message "
                         f"the patient cannot answer), not {value!r}", expression=NO_REPLY_HEADER)
    return mark_no_reply(resource)


def _invalid(rule: str, reason: str, path: str) -> Unprocessable:
    return Unprocessable(f"[{rule}] {reason}", expression=path)


async def prepare(conn: AsyncConnection, access: Access,
                  resource: dict[str, Any]) -> dict[str, Any]:
    """A new Communication, checked and completed, before the policy decides on it."""
    if access.internal or access.operator:
        return resource
    if category_of(resource) == NOTIFICATION:
        raise Forbidden.denied(Rule.NOTIFICATION_BY_CARNET,
                               "inbox notifications are written by Carnet",
                               "Communication.category")
    if isinstance(access.principal, Professional):
        prepared = await _professional_message(conn, access, access.principal, resource)
    else:
        prepared = await _patient_answer(conn, access, resource)
    return prepared if prepared.get("sent") else {**prepared,
                                                   "sent": fhir_instant(now_micros())}


async def stored(conn: AsyncConnection, access: Access, resource: dict[str, Any]) -> None:
    """A professional's message was stored: the patient is told, in the same transaction."""
    patient_id = patient_of(resource)
    if (isinstance(access.principal, Professional) and not access.internal
            and category_of(resource) == MESSAGE and patient_id is not None):
        await events.message_sent(conn, patient_id, resource["id"], now_micros())


def check_change(access: Access, old: dict[str, Any] | None, new: dict[str, Any]) -> None:
    """Once sent, a message is changed only by the patient marking it read (and by Carnet)."""
    if access.internal or access.operator:
        return
    if old is None or isinstance(access.principal, Professional):
        raise Forbidden.denied(Rule.MESSAGE_SEALED, "a message, once sent, is not changed "
                               "(only its recipient marks it read)")
    if _without_marks(old) != _without_marks(new):
        raise Forbidden.denied(Rule.MESSAGE_MARK_READ, "the patient marks a message read "
                               "(received, status completed) and changes nothing else")
    if new.get("status") != old.get("status") and new.get("status") != _READ:
        raise Forbidden.denied(Rule.MESSAGE_MARK_READ, f"a message read is {_READ!r}, not "
                               f"{new.get('status')!r}", "Communication.status")


def _without_marks(resource: dict[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in (resource.get("meta") or {}).items()
            if k not in ("versionId", "lastUpdated")}
    return {**{k: v for k, v in resource.items() if k not in (*_MARKS, "meta", "id")},
            "meta": meta}


# ---------------------------------------------------------------------- a professional writes


async def _professional_message(conn: AsyncConnection, access: Access, caller: Professional,
                                resource: dict[str, Any]) -> dict[str, Any]:
    sender = resource.get("sender")
    if sender is None:
        sender = {"identifier": {"system": IDNAT_SYSTEM, "value": caller.idnat}}
    elif not professional_codes(sender) & {caller.idnat, *([caller.rpps] if caller.rpps else [])}:
        raise Forbidden.denied(Rule.MESSAGE_SENDER, "the sender must be you, named by your "
                               f"idNat_PS ({IDNAT_SYSTEM}) or RPPS identifier",
                               "Communication.sender")
    recipient = await _recipient(conn, (resource.get("recipient") or [None])[0])
    patient_id = await _qualified(conn, recipient)
    resource = {**resource, "sender": sender, "recipient": [recipient],
                "subject": _subject(resource, patient_id)}
    for i, reference in enumerate(resource.get("inResponseTo") or []):
        await _message_in_record(conn, access, reference, patient_id,
                                 f"Communication.inResponseTo[{i}]")
    await _check_documents(conn, access, resource, patient_id)
    return resource


async def _recipient(conn: AsyncConnection, recipient: Any) -> dict[str, Any]:
    """The recipient, as ``Patient/<id>``; a patient named by INS alone is looked up."""
    if not isinstance(recipient, dict):
        raise _invalid("message-recipient", "a message has exactly one recipient: the patient "
                       "(Patient/<id>)", "Communication.recipient")
    identifier = recipient.get("identifier")
    if (recipient.get("reference") is None and isinstance(identifier, dict)
            and identifier.get("system") in INS_SLICES.values()
            and isinstance(identifier.get("value"), str)):
        found = await records.record_of_identifier(conn, identifier["system"],
                                                   identifier["value"])
        if found is None:
            raise _unknown_recipient(f"no patient has the INS {identifier['value']}")
        return {**recipient, "reference": f"Patient/{found}"}
    return recipient


def _unknown_recipient(why: str) -> Unprocessable:
    return _invalid("message-recipient-unknown", f"the recipient must be a stored patient "
                    f"with a qualified INS: {why}", "Communication.recipient[0]")


async def _qualified(conn: AsyncConnection, recipient: dict[str, Any]) -> str:
    """The recipient's record id, if INSi knows their qualified INS (as to file a document)."""
    try:
        return await filing.qualified_patient(conn, recipient, "Communication.recipient[0]")
    except Unprocessable as exc:
        reason = str(exc).partition("] ")[2] or str(exc)
        raise _unknown_recipient(reason) from None


def _subject(resource: dict[str, Any], patient_id: str) -> dict[str, Any]:
    """The message's subject: its patient, filled in when absent."""
    subject = resource.get("subject")
    if subject is None:
        return {"reference": f"Patient/{patient_id}"}
    if not isinstance(subject, dict) or subject.get("reference") != f"Patient/{patient_id}":
        raise _invalid("message-subject", f"the subject must be the patient the message is "
                       f"to or from (Patient/{patient_id})", "Communication.subject")
    return subject


async def _check_documents(conn: AsyncConnection, access: Access, resource: dict[str, Any],
                           patient_id: str) -> None:
    """Each document attached is one of the patient's that both the writer and the patient
    may see (a document not yet shown to the patient is never sent to them)."""
    for i, document_id in referenced_documents(resource):
        path = f"Communication.payload[{i}].contentReference"
        refused = _invalid("message-attachment", f"DocumentReference/{document_id} is not a "
                           "document of this patient's record that you may share", path)
        if document_id is None:
            raise refused
        row = await repo.current_content(conn, "DocumentReference", document_id)
        if (row is None or row.deleted or row.content is None
                or row.access.patient_id != patient_id):
            raise refused
        try:
            await access.check(conn, Interaction.READ, "DocumentReference", document_id,
                               row.access, row.content)
        except (NotFound, Forbidden):
            raise refused from None
        if row.access.labels.hidden_from_patient:
            raise _invalid("message-attachment-invisible", f"DocumentReference/{document_id} is "
                           "not yet visible to the patient (INVISIBLE_PATIENT): it cannot be "
                           "sent to them", path)


async def _message_in_record(conn: AsyncConnection, access: Access, reference: Any,
                             patient_id: str | None, path: str) -> dict[str, Any]:
    """The message a reference names, if the caller may read it and it is in the record."""
    target = reference.get("reference") if isinstance(reference, dict) else None
    kind, _, message_id = str(target or "").partition("/")
    refused = _invalid("message-in-response-to", f"{target!r} is not a message of this "
                       "conversation that you may read", path)
    row = (await repo.current_content(conn, COMMUNICATION, message_id)
           if kind == COMMUNICATION and message_id else None)
    if row is None or row.deleted or row.content is None or row.access.labels.category != MESSAGE:
        raise refused
    try:
        await access.check(conn, Interaction.READ, COMMUNICATION, message_id, row.access,
                           row.content)
    except NotFound:
        raise refused from None
    if patient_id is not None and row.access.patient_id != patient_id:
        raise refused
    message: dict[str, Any] = orjson.loads(row.content)
    return message


# --------------------------------------------------------------------------- a patient answers


async def _patient_answer(conn: AsyncConnection, access: Access,
                          resource: dict[str, Any]) -> dict[str, Any]:
    """A patient (or an app they granted, on their behalf) answers a message to them."""
    answered = resource.get("inResponseTo") or []
    if not answered:
        raise Forbidden.denied(Rule.MESSAGE_REPLY_ONLY, "a patient answers the messages "
                               "professionals send them (inResponseTo); they do not start a "
                               "conversation", "Communication.inResponseTo")
    if len(answered) != 1:
        raise _invalid("message-in-response-to", "an answer is to one message",
                       "Communication.inResponseTo")
    record = await _record_of_writer(conn, access, resource)
    original = await _message_in_record(conn, access, answered[0], record,
                                        "Communication.inResponseTo[0]")
    record = record or patient_of(original)
    patient = f"Patient/{record}"
    if record is None or [r.get("reference") for r in original.get("recipient") or []
                          if isinstance(r, dict)] != [patient]:
        raise _invalid("message-in-response-to", "a patient answers a message addressed to "
                       "them", "Communication.inResponseTo[0]")
    if is_no_reply(original):
        raise Forbidden.denied(Rule.MESSAGE_NO_REPLY, "this message was sent as no-reply "
                               f"({NO_REPLY_HEADER}: {NO_REPLY_VALUE}): it cannot be answered",
                               "Communication.inResponseTo[0]")
    sender = resource.get("sender") or {"reference": patient}
    if not isinstance(sender, dict) or sender.get("reference") != patient:
        raise Forbidden.denied(Rule.MESSAGE_SENDER,
                               f"the patient answers in their own name ({patient})",
                               "Communication.sender")
    recipients = resource.get("recipient") or []
    wanted = professional_codes(original.get("sender"))
    if len(recipients) != 1 or not (professional_codes(recipients[0]) & wanted):
        raise _invalid("message-reply-recipient", "an answer goes to the sender of the message "
                       "it answers", "Communication.recipient")
    resource = {**resource, "sender": sender, "subject": _subject(resource, record)}
    await _check_documents(conn, access, resource, record)
    return resource


async def _record_of_writer(conn: AsyncConnection, access: Access,
                            resource: dict[str, Any]) -> str | None:
    """The patient's own record; for an app, the record its message names (None: the one of
    the message it answers)."""
    if isinstance(access.principal, Patient):
        own = await access.own_record(conn)
        if own is None:
            raise Forbidden.denied(Rule.OWN_RECORD, "your record is not known to Carnet")
        return own
    subject = resource.get("subject")
    reference = subject.get("reference") if isinstance(subject, dict) else None
    kind, _, patient_id = str(reference or "").partition("/")
    return patient_id if kind == "Patient" and patient_id else None
