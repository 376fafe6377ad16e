"""Which changes a filed document may take (PDSm metadata update).

Only ``status``, ``securityLabel`` and the ``isArchived`` flag may change;
everything else describes the document itself, and a changed document is a
new one (ITI-65 with ``relatesTo replaces``). Each change is a new version.
Only the document's author (or the system that filed it) may withdraw it.
"""

from __future__ import annotations

from typing import Any

from auth.policy import Rule
from auth.principal import Patient, Principal
from fhir_profiles.pdsm import security_codes
from service.access import INTERNAL, is_author
from service.errors import Forbidden, Unprocessable
from storage.documents import FiledDocument

IS_ARCHIVED = "http://esante.gouv.fr/cisis/fhir/StructureDefinition/PDSm_isArchived"
WITHDRAWN = "entered-in-error"
# (from, to): a document is replaced or withdrawn; nothing comes back from either.
_TRANSITIONS = {("current", "superseded"), ("current", WITHDRAWN), ("superseded", WITHDRAWN)}
_MUTABLE = {"resourceType", "id", "meta", "status", "securityLabel", "extension"}


def _other_extensions(resource: dict[str, Any]) -> list[Any]:
    return [e for e in resource.get("extension") or []
            if not (isinstance(e, dict) and e.get("url") == IS_ARCHIVED)]


def changed_elements(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Elements that differ between two versions, other than the ones allowed to change."""
    changed = sorted(key for key in set(old) | set(new)
                     if key not in _MUTABLE and old.get(key) != new.get(key))
    if _other_extensions(old) != _other_extensions(new):
        changed.append("extension")
    return [f"DocumentReference.{key}" for key in changed]


_VISIBILITY_WHO = {
    "MASQUE_PS": "the patient, the document's author or the attending doctor",
    "INVISIBLE_PATIENT": "the document's author or the attending doctor",
    "INVISIBLE_REPRESENTANTS_LEGAUX": "the document's author or the attending doctor",
}


def check_label_change(old: dict[str, Any], new: dict[str, Any], *, actor: Principal,
                       trusted: bool, attending: bool) -> None:
    """403 unless the caller may add or remove each visibility label that changed.

    The patient masks and unmasks a document from professionals; only its author or
    the attending doctor hides it from the patient, or shows it again; only its author
    changes its confidentiality. ``trusted``: Carnet itself or an operator.
    """
    if trusted:
        return
    changed = security_codes(old) ^ security_codes(new)
    author = is_author(actor, old)
    for code in sorted(changed):
        if code == "MASQUE_PS":
            allowed = isinstance(actor, Patient) or author or attending
        elif code in _VISIBILITY_WHO:
            allowed = author or attending
        else:
            allowed = author
        if not allowed:
            who = _VISIBILITY_WHO.get(code, "the document's author")
            raise Forbidden.denied(Rule.LABEL_CHANGE, f"the {code} label is changed only by "
                                   f"{who}", "DocumentReference.securityLabel")


def check_document_update(old: dict[str, Any], new: dict[str, Any],
                          actor: Principal | None, filed: FiledDocument | None) -> None:
    """422 for a change PDSm forbids; 403 for a withdrawal by someone other than the author."""
    changed = changed_elements(old, new)
    if changed:
        raise Unprocessable(
            f"[document-metadata] only status, securityLabel and the isArchived extension of a "
            f"filed document may change; to change {', '.join(changed)} file a replacement "
            "document (relatesTo replaces)", expression=changed[0])
    before, after = old.get("status"), new.get("status")
    if before != after and (before, after) not in _TRANSITIONS:
        raise Unprocessable(f"[document-status] a {before} document cannot become {after}",
                            expression="DocumentReference.status")
    if after == WITHDRAWN and before != WITHDRAWN and actor is not None:
        filer = filed is not None and filed.filed_by == actor.subject
        if not (filer or actor is INTERNAL or is_author(actor, old)):
            raise Forbidden("[document-author-only] only the document's author may withdraw it "
                            "(status entered-in-error)")
