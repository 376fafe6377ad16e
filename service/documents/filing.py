"""Filing documents (ITI-65): the checks that need more than the resource itself.

Each resource is validated against its PDSm profile before anything is
written (``fhir_profiles.pdsm``). Here, inside the write transaction:

- a re-sent document (same ``masterIdentifier``) is answered from what was
  filed, or refused when its content differs;
- each attachment's ``size`` and ``hash`` must match the stored bytes;
- the subject must be a stored Patient with a qualified INS that INSi knows;
- ``relatesTo replaces`` makes the target ``superseded``, only if it is current
  and belongs to the same patient;
- the document is registered (who filed it, for withdrawal and re-sends).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson
from sqlalchemy.ext.asyncio import AsyncConnection

from auth.policy import Interaction, labels_of
from auth.principal import Patient
from fhir_profiles.ins import find_ins
from fhir_profiles.outcome import Issue
from fhir_profiles.pdsm import SUBMISSION_SET, list_kind
from service.access import Access
from service.errors import BadRequest, Conflict, MethodNotAllowed, NotFound, Unprocessable
from service.fhir import interactions
from service.fhir.http import now_micros
from service.identity import check_patient_identity
from service.notify import events
from storage import documents as registry
from storage import resources as repo
from storage.documents import BinaryContent, FiledDocument

REPLACES = "replaces"


def check_method(resource_type: str, method: str, *, conditional: bool = False) -> None:
    """Documents are never changed in place nor deleted physically (PDSm).

    A conditional create of a DocumentReference is refused too: filing is already
    idempotent on the masterIdentifier, and every filing must pass the checks here.
    """
    if resource_type == "DocumentReference" and method == "POST" and conditional:
        raise BadRequest("a DocumentReference is filed without If-None-Exist: re-sending the "
                         "same masterIdentifier already answers the document filed before")
    if resource_type == "Binary" and method in ("PUT", "PATCH", "DELETE"):
        raise MethodNotAllowed("a Binary is immutable: file a replacement document instead "
                               "(DocumentReference.relatesTo replaces)")
    if resource_type == "DocumentReference" and method == "DELETE":
        raise MethodNotAllowed("documents are never deleted; their author withdraws one by "
                               "setting its status to entered-in-error (PATCH)")


def is_submission_set(resource: dict[str, Any] | None) -> bool:
    return resource is not None and resource.get("resourceType") == "List" \
        and list_kind(resource) == SUBMISSION_SET


def master_identifier(document: dict[str, Any]) -> tuple[str, str]:
    master = document.get("masterIdentifier") or {}
    return str(master.get("system", "")), str(master.get("value", ""))


def content_fingerprint(document: dict[str, Any]) -> str:
    """What makes two filings of one masterIdentifier the same document: its bytes."""
    return ",".join(str((c.get("attachment") or {}).get("hash", ""))
                    for c in document.get("content") or [] if isinstance(c, dict))


def check_submission(resources: list[dict[str, Any]]) -> bool:
    """ITI-65's shape: one SubmissionSet listing every DocumentReference; False if not ITI-65.

    A transaction with neither a SubmissionSet nor a DocumentReference is plain FHIR.
    """
    submission_sets = [r for r in resources if is_submission_set(r)]
    documents = [r for r in resources if r.get("resourceType") == "DocumentReference"]
    if not submission_sets and not documents:
        return False
    if len(submission_sets) != 1:
        raise Unprocessable(f"[iti65-submissionset] an ITI-65 Bundle holds exactly one "
                            f"SubmissionSet List; this one holds {len(submission_sets)}",
                            expression="Bundle.entry")
    if not documents:
        raise Unprocessable("[iti65-documents] an ITI-65 Bundle files at least one "
                            "DocumentReference", expression="Bundle.entry")
    return True


@dataclass(frozen=True)
class Resent:
    """A document filed before: the earlier submission's response, or the document's id."""

    response: bytes | None
    document_ids: tuple[str, ...]


async def find_resent(conn: AsyncConnection, documents: list[dict[str, Any]]) -> Resent | None:
    """None when every document is new; what was filed when the same ones come again.

    Locks each masterIdentifier first, so that concurrent re-sends queue and the
    second one finds what the first filed.
    """
    keys = [master_identifier(d) for d in documents]
    if len(set(keys)) != len(keys):
        raise BadRequest("[iti65-duplicate] two DocumentReferences of the Bundle share a "
                         "masterIdentifier", expression="DocumentReference.masterIdentifier")
    filed = await registry.lock_and_find_filed(conn, keys)
    if not filed:
        return None
    by_key = {(f.master_system, f.master_value): f for f in filed}
    described = ", ".join(value for _system, value in sorted(by_key))
    if len(filed) != len(documents):
        raise Conflict(f"[document-resent] some documents of this Bundle were filed before "
                       f"({described}) and others not: re-send the original Bundle unchanged, "
                       "or file new documents under new masterIdentifiers")
    for document in documents:
        if by_key[master_identifier(document)].content_sha1 != content_fingerprint(document):
            raise Conflict(f"[document-resent] a document with masterIdentifier "
                           f"{master_identifier(document)[1]} was filed before with other "
                           "content; to change it, file a replacement (relatesTo replaces) "
                           "under a new masterIdentifier")
    submissions = {f.submission_pk for f in filed}
    response = None
    if len(submissions) == 1 and None not in submissions:
        response = await registry.submission_response(conn, submissions.pop() or 0)
    return Resent(response, tuple(by_key[master_identifier(d)].document_id for d in documents))


def replayed(response: bytes, resource_types: list[str]) -> bytes:
    """The first submission's response, told as a repeat: nothing was created this time.

    ``resource_types`` are the re-sent Bundle's entries: they must be the first
    Bundle's, entry for entry, or the answer would not fit the request.
    """
    bundle = orjson.loads(response)
    answered = [str((e.get("response") or {}).get("location", "")).partition("/")[0]
                for e in bundle.get("entry") or []]
    if answered != resource_types:
        raise Conflict("[document-resent] these documents were filed before by another "
                       "submission: re-send that Bundle unchanged, or file new documents under "
                       "new masterIdentifiers")
    for entry in bundle.get("entry") or []:
        answer = entry.get("response") or {}
        if answer.get("status", "").startswith("201"):
            answer["status"] = "200 OK"
    return orjson.dumps(bundle)


def _binary_id(url: Any, base: str) -> str | None:
    if not isinstance(url, str):
        return None
    relative = url.removeprefix(base + "/")
    kind, _, binary_id = relative.partition("/")
    return binary_id if kind == "Binary" and binary_id and "/" not in binary_id else None


def _same_media(a: str, b: str) -> bool:
    return a.split(";")[0].strip().lower() == b.split(";")[0].strip().lower()


def _attachment_issues(document: dict[str, Any], base: str,
                       binaries: dict[str, BinaryContent]) -> list[Issue]:
    issues: list[Issue] = []
    for i, item in enumerate(document.get("content") or []):
        attachment = item.get("attachment") or {}
        path = f"DocumentReference.content[{i}].attachment"
        binary_id = _binary_id(attachment.get("url"), base)
        stored = binaries.get(binary_id) if binary_id else None
        if stored is None:
            issues.append(Issue(f"{path}.url: {attachment.get('url')!r} names no Binary of this "
                                "Bundle or of this server", "not-found",
                                expression=[f"{path}.url"]))
            continue
        if attachment.get("size") != stored.size:
            issues.append(Issue(f"{path}.size: {attachment.get('size')} but the document has "
                                f"{stored.size} bytes", "value", expression=[f"{path}.size"]))
        if attachment.get("hash") != stored.sha1:
            issues.append(Issue(f"{path}.hash: {attachment.get('hash')!r} is not the SHA-1 of the "
                                f"document's bytes ({stored.sha1})", "value",
                                expression=[f"{path}.hash"]))
        if not _same_media(str(attachment.get("contentType", "")), stored.content_type):
            issues.append(Issue(f"{path}.contentType: {attachment.get('contentType')!r} but the "
                                f"Binary is {stored.content_type!r}", "value",
                                expression=[f"{path}.contentType"]))
    return issues


def _patient_id(reference: Any) -> str | None:
    if not isinstance(reference, dict) or not isinstance(reference.get("reference"), str):
        return None
    kind, _, patient_id = reference["reference"].rpartition("/")
    return patient_id if kind.endswith("Patient") and patient_id else None


async def qualified_patient(conn: AsyncConnection, reference: Any, path: str) -> str:
    """The id of the subject Patient, refused unless its INS is qualified and known to INSi."""
    patient_id = _patient_id(reference)
    found = (await repo.current_content(conn, "Patient", patient_id)) if patient_id else None
    if patient_id is None or found is None or found.deleted or found.content is None:
        raise Unprocessable(f"[document-subject] {path} must reference a stored Patient "
                            "(Patient/<id>, or Patient?identifier=<INS system>|<INS>)",
                            expression=path)
    patient = orjson.loads(found.content)
    if find_ins(patient) is None:
        raise Unprocessable(f"[document-subject-ins] Patient/{patient_id} has no INS: a document "
                            "is filed only for a patient identified by a qualified INS",
                            expression=path)
    await check_patient_identity(conn, patient)  # the directory may have changed since
    return patient_id


async def _supersede(conn: AsyncConnection, index: int, target: Any, patient_id: str,
                     changed_here: set[str], access: Access) -> None:
    path = f"DocumentReference.relatesTo[{index}].target"
    reference = target.get("reference") if isinstance(target, dict) else None
    kind, _, target_id = str(reference or "").rpartition("/")
    existing = (await repo.current_version(conn, "DocumentReference", target_id, for_update=True)
                if kind.endswith("DocumentReference") and target_id else None)
    if existing is None or existing.deleted or existing.content is None:
        raise Unprocessable(f"[replace-unknown] {path}: {reference!r} is not a stored "
                            "DocumentReference", expression=path)
    try:  # a document the filer may not see is, to them, a document that does not exist
        await access.check(conn, Interaction.READ, "DocumentReference", target_id,
                           existing.access, existing.content)
    except NotFound:
        raise Unprocessable(f"[replace-unknown] {path}: {reference!r} is not a stored "
                            "DocumentReference", expression=path) from None
    old = orjson.loads(existing.content)
    if _patient_id(old.get("subject")) != patient_id:
        raise Unprocessable(f"[replace-other-patient] {path}: the replaced document belongs to "
                            "another patient", expression=path)
    if old.get("status") == "superseded" and f"DocumentReference/{target_id}" in changed_here:
        return  # the Bundle superseded it itself (a PATCH entry, as PDSm's example does)
    if old.get("status") != "current":
        raise Conflict(f"[replace-not-current] {path}: DocumentReference/{target_id} is "
                       f"{old.get('status')}; only a current document can be replaced",
                       expression=path)
    await interactions.update(conn, "DocumentReference", target_id,
                              {**old, "status": "superseded"}, if_match=existing.version_id,
                              access=Access.of_carnet())


class Filing:
    """The documents one database transaction files: checks, then one registration.

    What the transaction already knows (the Binaries it stored, each subject once
    checked) is not asked of the database again.
    """

    def __init__(self, conn: AsyncConnection, *, base: str, access: Access,
                 binaries: list[BinaryContent] | None = None,
                 changed_here: set[str] | None = None,
                 filed_here: set[str] | None = None) -> None:
        self.conn = conn
        self.base = base
        self.access = access
        self.filed_by = access.principal
        self.binaries = {b.binary_id: b for b in binaries or []}
        self.changed_here = changed_here or set()
        # The ids of the documents this transaction files: none may replace another (or itself).
        self.filed_here = filed_here or set()
        self.patients: dict[str, str] = {}
        self.filed: list[FiledDocument] = []
        # What the patient (and their apps) will be told once the filing commits.
        self.notices: list[events.FiledNotice] = []

    async def check(self, document: dict[str, Any]) -> None:
        """Every rule for a DocumentReference just stored; supersedes what it replaces."""
        if document.get("status") != "current":
            raise Unprocessable(f"[document-status] a new document is filed as current, not "
                                f"{document.get('status')}",
                                expression="DocumentReference.status")
        await self._load_binaries(document)
        issues = _attachment_issues(document, self.base, self.binaries)
        if issues:
            raise Unprocessable(issues[0].diagnostics, issues=issues)
        await registry.govern_binaries(self.conn, self._binary_ids(document), document["id"])
        patient_id = await self._patient(document.get("subject"))
        for i, relation in enumerate(document.get("relatesTo") or []):
            if relation.get("code") == REPLACES:
                target = str((relation.get("target") or {}).get("reference") or "")
                if target.rpartition("/")[2] in self.filed_here | {document["id"]}:
                    path = f"DocumentReference.relatesTo[{i}].target"
                    raise Unprocessable(f"[replace-unknown] {path}: a document replaces a "
                                        "document filed before, not itself nor one filed with "
                                        "it", expression=path)
                await _supersede(self.conn, i, relation.get("target"), patient_id,
                                 self.changed_here, self.access)
        system, value = master_identifier(document)
        self.filed.append(FiledDocument(system, value, document["id"], patient_id,
                                        self.filed_by.subject, content_fingerprint(document),
                                        None))
        replaced = [reference.rpartition("/")[2] for r in document.get("relatesTo") or []
                    if r.get("code") == REPLACES
                    and isinstance(reference := (r.get("target") or {}).get("reference"), str)]
        self.notices.append(events.FiledNotice(patient_id, document["id"],
                                               labels_of(document).hidden_from_patient,
                                               replaced))

    async def register(self, submission_response: bytes | None = None) -> None:
        """Record what was filed (and the submission's response, to answer a re-send)."""
        pk = (await registry.save_submission(self.conn, submission_response)
              if submission_response is not None else None)
        await registry.register_documents(self.conn, [
            replace(filed, submission_pk=pk) for filed in self.filed])
        now = now_micros()
        await events.documents_filed(self.conn, self.notices,
                                     by_patient=isinstance(self.filed_by, Patient), now=now)

    def _binary_ids(self, document: dict[str, Any]) -> list[str]:
        return [binary_id for item in document.get("content") or []
                if (binary_id := _binary_id((item.get("attachment") or {}).get("url"),
                                            self.base))]

    async def _load_binaries(self, document: dict[str, Any]) -> None:
        wanted = [b for b in self._binary_ids(document) if b not in self.binaries]
        self.binaries.update(await registry.binary_contents(self.conn, wanted))

    async def _patient(self, subject: Any) -> str:
        key = orjson.dumps(subject).decode()
        if key not in self.patients:
            self.patients[key] = await qualified_patient(self.conn, subject,
                                                         "DocumentReference.subject")
        return self.patients[key]


def check_submission_lists(submission_set: dict[str, Any], documents: list[dict[str, Any]],
                           folders: list[dict[str, Any]]) -> None:
    """The SubmissionSet is about the documents' (and folders') patient and lists every
    document."""
    subject = submission_set.get("subject", {}).get("reference")
    items = {(e.get("item") or {}).get("reference") for e in submission_set.get("entry") or []}
    for member in (*documents, *folders):
        if member.get("subject", {}).get("reference") != subject:
            raise Unprocessable("[iti65-subject] the SubmissionSet, its documents and folders "
                                "must have the same subject", expression="List.subject")
    for document in documents:
        if f"DocumentReference/{document['id']}" not in items:
            raise Unprocessable(f"[iti65-entries] the SubmissionSet does not list "
                                f"DocumentReference/{document['id']} of this Bundle",
                                expression="List.entry")
    members = {f"DocumentReference/{d['id']}" for d in documents} | {
        f"List/{f['id']}" for f in folders}
    strangers = sorted(str(item) for item in items - members)  # itself, or anything else
    if strangers:
        raise Unprocessable(f"[iti65-entries] the SubmissionSet lists {strangers[0]!r}, which "
                            "is neither a document nor a folder of this Bundle",
                            expression="List.entry")


async def file_document(conn: AsyncConnection, document: dict[str, Any], *, base: str,
                        access: Access) -> interactions.Written:
    """One DocumentReference filed on its own (POST, batch entry): idempotent, fully checked."""
    resent = await find_resent(conn, [document])
    if resent is not None:
        document_id = resent.document_ids[0]
        content, version_id, last_updated = await interactions.read(conn, "DocumentReference",
                                                                    document_id, access)
        return interactions.Written("DocumentReference", document_id, version_id, last_updated,
                                    content, created=False)
    written = await interactions.create(conn, document, access=access)
    filing = Filing(conn, base=base, access=access)
    await filing.check(orjson.loads(written.content))
    await filing.register()
    return written
