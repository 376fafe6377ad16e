"""Secure messaging with the patient as FHIR ``Communication``: its shape, read as data.

A Communication in Carnet is one of two kinds, named by ``category`` in Carnet's
code system ``communication-category``:

- ``message``: a professional writes to the patient, or the patient answers
  (``inResponseTo``); ``payload`` holds text (``contentString``) and documents of
  the patient's record (``contentReference`` to a DocumentReference);
- ``notification``: Carnet's own inbox entry telling the patient that something
  arrived (written by Carnet only).

A message sent as no-reply (MSSanté's ``X-MSS-MES: FIN``) carries the ``no-reply``
extension. Only the shape is checked here; who may write what, and whether the
documents and the patient exist, is the service's business (``service/messaging.py``).
"""

from __future__ import annotations

import re
from typing import Any

from fhir_profiles.consent import IDNAT_SYSTEM, RPPS_SYSTEM
from fhir_profiles.outcome import Issue

CATEGORY_SYSTEM = "https://carnet.esante.example/fhir/CodeSystem/communication-category"
MESSAGE = "message"
NOTIFICATION = "notification"
CATEGORIES = (MESSAGE, NOTIFICATION)
NO_REPLY_URL = "https://carnet.esante.example/fhir/StructureDefinition/no-reply"
# MSSanté: a message the patient's mailbox must not let them answer.
NO_REPLY_HEADER = "X-MSS-MES"
NO_REPLY_VALUE = "FIN"
# How a professional is named as sender or recipient (idNat_PS, or RPPS).
PROFESSIONAL_SYSTEMS = (IDNAT_SYSTEM, RPPS_SYSTEM)
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

__all__ = ["CATEGORIES", "CATEGORY_SYSTEM", "MESSAGE", "NOTIFICATION", "NO_REPLY_URL",
           "PROFESSIONAL_SYSTEMS", "category_of", "communication_issues", "is_no_reply",
           "mark_no_reply", "professional_codes", "referenced_documents"]


def _issue(rule: str, text: str, path: str) -> Issue:
    return Issue(f"[{rule}] {text}", "invariant", expression=[path])


def category_of(communication: dict[str, Any]) -> str | None:
    """Carnet's category code of a Communication (None: not one of Carnet's)."""
    for concept in communication.get("category") or []:
        for coding in (concept.get("coding") or []) if isinstance(concept, dict) else []:
            if isinstance(coding, dict) and coding.get("system") == CATEGORY_SYSTEM:
                code = coding.get("code")
                return code if isinstance(code, str) else None
    return None


def is_no_reply(communication: dict[str, Any]) -> bool:
    return any(isinstance(e, dict) and e.get("url") == NO_REPLY_URL
               and e.get("valueBoolean") is True
               for e in communication.get("extension") or [])


def mark_no_reply(communication: dict[str, Any]) -> dict[str, Any]:
    """The message with the no-reply extension set to true (once)."""
    kept = [e for e in communication.get("extension") or []
            if not (isinstance(e, dict) and e.get("url") == NO_REPLY_URL)]
    return {**communication, "extension": [*kept, {"url": NO_REPLY_URL, "valueBoolean": True}]}


def professional_codes(reference: Any) -> set[str]:
    """The national identifiers (idNat_PS, RPPS) a sender or recipient Reference names."""
    identifier = reference.get("identifier") if isinstance(reference, dict) else None
    if (isinstance(identifier, dict) and identifier.get("system") in PROFESSIONAL_SYSTEMS
            and isinstance(identifier.get("value"), str)):
        return {identifier["value"]}
    return set()


def referenced_documents(communication: dict[str, Any]) -> list[tuple[int, str | None]]:
    """(payload index, DocumentReference id) per ``contentReference``; the id is None when
    the reference is not ``DocumentReference/<id>``."""
    found: list[tuple[int, str | None]] = []
    for i, item in enumerate(communication.get("payload") or []):
        reference = item.get("contentReference") if isinstance(item, dict) else None
        if reference is None:
            continue
        target = reference.get("reference") if isinstance(reference, dict) else None
        kind, _, document_id = str(target or "").partition("/")
        named = kind == "DocumentReference" and _ID.match(document_id) is not None
        found.append((i, document_id if named else None))
    return found


def communication_issues(communication: dict[str, Any]) -> list[Issue]:
    """The shape of a message or notification (FHIR's own rules are checked before)."""
    issues: list[Issue] = []
    categories = communication.get("category") or []
    if len(categories) != 1 or category_of(communication) not in CATEGORIES:
        issues.append(_issue("message-category", "a Communication has exactly one category, "
                             f"{MESSAGE!r} or {NOTIFICATION!r} from {CATEGORY_SYSTEM}",
                             "Communication.category"))
    if len(communication.get("recipient") or []) != 1:
        issues.append(_issue("message-recipient", "a message has exactly one recipient",
                             "Communication.recipient"))
    payload = communication.get("payload") or []
    if not payload:
        issues.append(_issue("message-payload", "a message carries at least one payload "
                             "(contentString, or contentReference to a DocumentReference)",
                             "Communication.payload"))
    for i, item in enumerate(payload):
        if isinstance(item, dict) and "contentAttachment" in item:
            issues.append(_issue("message-payload", "documents travel as contentReference to "
                                 "a DocumentReference of the patient's record, not as inline "
                                 "attachments", f"Communication.payload[{i}]"))
    for i, document_id in referenced_documents(communication):
        if document_id is None:
            issues.append(_issue("message-attachment", "contentReference names a "
                                 "DocumentReference (DocumentReference/<id>)",
                                 f"Communication.payload[{i}].contentReference"))
    return issues
