"""The access-policy decision point: the DMP rules, for one resource and for a search.

``decide(principal, action, target, context)`` answers for one resource (a read,
a write, a Binary retrieval, a transaction entry); ``visible_clause`` is the
same rules as a SQL condition on the resource table, so that a search's
totals, pages and includes never count a resource the caller may not see.
Both read the rule names and the category sets below; the table-driven tests
in ``tests/auth/test_access_matrix.py`` hold them to the same answers.

A denial names its rule. A ``hidden`` denial concerns one resource the caller
must not learn exists (a masked document, a type outside the profession's
matrix): the service answers it exactly as for a missing resource (404). A
denial of the whole record (closed, blocked, not authorised) answers 403.

A message (``Communication`` of category message) is its two parties' business: the
professional it names as sender or recipient, and the patient (with the apps they granted).
Any other professional, even the attending doctor, is told nothing of it (hidden); the
parties are read from the message itself (``MessageLabels``, ``with_parties``) and, in SQL,
from the ``sender.identifier`` / ``recipient.identifier`` index. A notification is the
patient's alone. Nobody but Carnet (and its operators) writes a notification or deletes a
message.

SMART scopes come first: a token's scopes count only in the context that fits
the caller (``patient/`` for a patient, ``user/`` for a professional,
``system/`` for an app acting on its own).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson
from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    exists,
    false,
    or_,
    true,
)

from auth.principal import App, Patient, Principal, Professional
from fhir_profiles.access import access_category, open_categories
from fhir_profiles.messaging import (
    MESSAGE,
    NOTIFICATION,
    PROFESSIONAL_SYSTEMS,
    category_of,
    professional_codes,
)
from fhir_profiles.pdsm import class_code, security_codes
from fhir_profiles.subscriptions import OWNER_SYSTEM
from storage.access import (
    EMERGENCY_ACCESS,
    NO_LABELS,
    RECORD_ACTORS,
    RECORD_POLICY,
    AccessLabels,
    RecordState,
    Relation,
)
from storage.search.shapes import Bind, literal_bind
from storage.tables import TOKENS


class Interaction(StrEnum):
    READ = "read"
    VREAD = "vread"
    HISTORY_INSTANCE = "history-instance"
    HISTORY_TYPE = "history-type"
    SEARCH = "search-type"
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    INS_LOOKUP = "ins-lookup"  # the INSi mock: finds anyone's identity by traits


# SMART v2: c create, r read (by id, versions, an instance's history), u update,
# d delete, s search (including type history, which lists resources like a search).
_PERMISSION = {
    Interaction.READ: "r", Interaction.VREAD: "r", Interaction.HISTORY_INSTANCE: "r",
    Interaction.HISTORY_TYPE: "s", Interaction.SEARCH: "s", Interaction.CREATE: "c",
    Interaction.UPDATE: "u", Interaction.DELETE: "d", Interaction.INS_LOOKUP: "s",
}
SUBSCRIPTION = "Subscription"
_READS = frozenset({Interaction.READ, Interaction.VREAD, Interaction.HISTORY_INSTANCE,
                    Interaction.HISTORY_TYPE, Interaction.SEARCH})


class AccessMode(StrEnum):
    """TRE_R248 ModeAcces (OID 1.2.250.1.213.1.1.4.248)."""

    NORMAL = "normal"
    BREAK_GLASS = "bris_de_glace"
    CENTRE_15 = "centre_15"


class Rule(StrEnum):
    """The rules a denial names (in the OperationOutcome and the AuditEvent)."""

    SCOPE = "smart-scope"
    INSI_PROFESSIONALS = "insi-professionals-only"
    OWN_RECORD = "patient-own-record-only"
    INVISIBLE_TO_PATIENT = "invisible-to-patient"
    PATIENT_FILES_CLASS_90 = "patient-files-own-documents-only"
    PATIENT_WRITES = "patient-writes-limited"
    CONSENT_BY_PATIENT = "consent-by-patient-only"
    RECORD_CLOSED = "record-closed"
    BLOCKED = "professional-blocked"
    NOT_AUTHORISED = "not-authorised"
    CARE_TEAM_OBJECTION = "care-team-objection"
    EMERGENCY_OPPOSED = "emergency-opposed"
    PROFESSION_MATRIX = "profession-matrix"
    MASKED = "masked-from-professionals"
    APP_NOT_GRANTED = "app-not-granted"
    APPS_ONLY = "apps-only"
    ATTENDING_BY_PATIENT = "attending-doctor-declared-by-patient"
    LABEL_CHANGE = "document-label-change"
    AUDIT_TRAIL = "audit-trail-is-the-patients"
    # Secure messaging (service/messaging.py applies the ones about a message's content).
    MESSAGE_PARTIES = "message-parties-only"
    NOTIFICATION_FOR_PATIENT = "notification-for-the-patient-only"
    NOTIFICATION_BY_CARNET = "notification-by-carnet-only"
    MESSAGE_SENDER = "message-sender-is-the-caller"
    MESSAGE_SEALED = "message-sealed"
    MESSAGE_MARK_READ = "message-patient-marks-read-only"
    MESSAGE_REPLY_ONLY = "message-patient-replies-only"
    MESSAGE_NO_REPLY = "message-no-reply"
    # App Subscriptions: their channel headers are the app's secrets.
    SUBSCRIPTION_OWNER = "subscription-of-another-app"


@dataclass(frozen=True)
class Permit:
    emergency: bool = False  # permitted only through an emergency access


@dataclass(frozen=True)
class Deny:
    rule: str
    reason: str
    hidden: bool = False


Decision = Permit | Deny

# Categories beyond the profession matrix (fhir_profiles/data/access_matrix.json).
IDENTITY = "identity"          # Patient: identity traits, not health data
DOCUMENT_LIST = "document-list"  # SubmissionSets and Folders: open with the record
CARE_TEAM = "care-team"
CONSENT = "consent"            # the patient's choices: the patient's own business
BINARY = "binary"              # a document's bytes: decided on the document
RESTRICTED = "restricted"      # stored Bundles, Subscriptions: apps only
_WITH_THE_RECORD = frozenset({DOCUMENT_LIST, CARE_TEAM})
# A Target category for a decision on the record as a whole (a search aimed at one
# record): whether the caller may open it, whatever its documents' types and labels.
RECORD_LEVEL = "*"
# What a patient may write into their own record (the portal's and their apps' writes).
_PATIENT_WRITES = frozenset({"Consent", "DocumentReference", "Binary", "List", "Patient",
                             "Communication"})
PATIENT_DOCUMENT = "patient-document"  # class 90
PATIENT_CLASS = "90"  # TRE_A03: Autres documents déposés par le patient


# A Communication of Carnet's category notification: the patient's inbox, not in the matrix.
# (A message keeps the matrix's category, fhir_profiles.messaging.MESSAGE.)
_CONVERSATION = frozenset({MESSAGE, NOTIFICATION})


_CATEGORY_OF_TYPE = {"Patient": IDENTITY, "List": DOCUMENT_LIST, "CareTeam": CARE_TEAM,
                     "Consent": CONSENT, "Binary": BINARY, "Bundle": RESTRICTED,
                     "Subscription": RESTRICTED}
_DIRECTORY_TYPES = frozenset({"Practitioner", "PractitionerRole", "Organization"})
MASQUE_PS, INVISIBLE_PATIENT = "MASQUE_PS", "INVISIBLE_PATIENT"


@dataclass(frozen=True)
class MessageLabels(AccessLabels):
    """A message's labels and its parties: the national identifiers (idNat_PS, RPPS) of the
    professionals it names as sender or recipient. The stored row keeps only the category;
    ``with_parties`` reads the parties back from the content when a decision needs them."""

    parties: frozenset[str] = frozenset()


def meta_security_codes(resource: dict[str, Any]) -> set[str]:
    """The codes of ``meta.security`` (labels a resource other than a document carries)."""
    meta = resource.get("meta")
    labels = meta.get("security") if isinstance(meta, dict) else None
    return {c["code"] for c in labels or [] if isinstance(c, dict)
            and isinstance(c.get("code"), str)}


def labels_of(resource: dict[str, Any]) -> AccessLabels:
    """What the policy keeps beside a stored resource: its category and visibility labels."""
    resource_type = resource["resourceType"]
    if resource_type in _DIRECTORY_TYPES:
        return AccessLabels()
    if resource_type == "Communication":
        return _communication_labels(resource)
    category = _CATEGORY_OF_TYPE.get(resource_type) or access_category(resource) or RESTRICTED
    if resource_type != "DocumentReference":
        # Clinical data (what a summary is built from) takes the same labels in meta.security
        # as its author sets them: a masked diagnosis stays out of other professionals' view.
        tagged = meta_security_codes(resource)
        return AccessLabels(category, MASQUE_PS in tagged, INVISIBLE_PATIENT in tagged)
    if class_code(resource) == PATIENT_CLASS:
        category = PATIENT_DOCUMENT  # what the patient filed, whatever its type says
    labels = security_codes(resource)
    return AccessLabels(category, MASQUE_PS in labels, INVISIBLE_PATIENT in labels)


def _communication_labels(resource: dict[str, Any]) -> AccessLabels:
    if category_of(resource) == NOTIFICATION:
        return AccessLabels(NOTIFICATION)
    parties = professional_codes(resource.get("sender"))
    for recipient in resource.get("recipient") or []:
        parties |= professional_codes(recipient)
    return MessageLabels(access_category(resource) or MESSAGE, parties=frozenset(parties))


def with_parties(labels: AccessLabels, content: bytes | None) -> AccessLabels:
    """A stored message's labels with its parties (read from its content), for a decision
    about a professional; any other labels as they are."""
    if labels.category != MESSAGE or isinstance(labels, MessageLabels) or content is None:
        return labels
    return labels_of(orjson.loads(content))


def is_party(principal: Principal, labels: AccessLabels) -> bool:
    """Whether a professional is named as the message's sender or recipient."""
    if not isinstance(principal, Professional) or not isinstance(labels, MessageLabels):
        return False  # parties unknown: not a party (fail closed)
    codes = {principal.idnat} | ({principal.rpps} if principal.rpps else set())
    return not codes.isdisjoint(labels.parties)


def scope_context(principal: Principal) -> str:
    if isinstance(principal, Patient):
        return "patient"
    if isinstance(principal, Professional):
        return "user"
    assert isinstance(principal, App)
    return "system"


def professional_actor(idnat: str) -> str:
    return f"idnat:{idnat}"


def app_actor(client_id: str) -> str:
    return f"app:{client_id}"


def actor_key(principal: Principal) -> str:
    """How the record tables name a caller."""
    if isinstance(principal, Professional):
        return professional_actor(principal.idnat)
    if isinstance(principal, Patient):
        return f"ins:{principal.ins}"
    return app_actor(principal.client_id or principal.subject)


def scope_decision(principal: Principal, interaction: Interaction,
                   resource_type: str) -> Decision:
    """May this token perform this interaction on this type at all (SMART scopes)?"""
    if interaction is Interaction.INS_LOOKUP and isinstance(principal, Patient):
        return Deny(Rule.INSI_PROFESSIONALS, "INSi is queried by professionals and their "
                    "systems, not by patients")
    permission = _PERMISSION[interaction]
    context = scope_context(principal)
    if principal.scopes.allows(resource_type, permission, (context,)):
        return Permit()
    return Deny(Rule.SCOPE, f"the token's scopes do not allow {interaction.value} on "
                f"{resource_type} (needs {context}/{resource_type}.{permission})")


@dataclass(frozen=True)
class Target:
    """One resource as the policy sees it."""

    resource_type: str
    patient_id: str | None
    labels: AccessLabels = NO_LABELS
    # Whether the caller is among the document's authors; asked only of masked documents.
    authored_by_caller: bool = False


@dataclass(frozen=True)
class AccessContext:
    """What the request brings: the caller's own record (patients), the record's state."""

    own_record: str | None = None
    record: RecordState | None = None
    mode: AccessMode = AccessMode.NORMAL
    internal: bool = False  # Carnet's own work (seeding, superseding)
    operator: bool = False  # an operator app (CARNET_OPERATOR_CLIENTS): audited, not consented


def decide(principal: Principal, action: Interaction, target: Target,
           context: AccessContext) -> Decision:
    scoped = scope_decision(principal, action, target.resource_type)
    if isinstance(scoped, Deny) or context.internal:
        return scoped
    category = target.labels.category
    if category in _CONVERSATION and not context.operator:
        sealed = _sealed(action, category)
        if sealed is not None:
            return sealed
    if target.patient_id is None:
        if category == BINARY and action is Interaction.CREATE:
            return Permit()  # bytes staged before the document that will govern them
        if category in (RESTRICTED, BINARY) and not isinstance(principal, App):
            return Deny(Rule.APPS_ONLY, f"{target.resource_type} is open to apps only",
                        hidden=True)
        if (target.resource_type == SUBSCRIPTION and action in _READS
                and not (context.operator or target.authored_by_caller)):
            # Updates and deletes read the stored Subscription first: the owner's only.
            return Deny(Rule.SUBSCRIPTION_OWNER, "a Subscription is read and changed by the "
                        "app that created it", hidden=True)
        return Permit()
    if isinstance(principal, Patient):
        return _patient_decision(action, target, context)
    if isinstance(principal, App):
        relations = context.record.relations if context.record else frozenset()
        if context.operator:
            return Permit()
        if Relation.APP in relations:
            if target.labels.hidden_from_patient and action in _READS:
                return Deny(Rule.INVISIBLE_TO_PATIENT, "this document is not yet visible to the "
                            "patient, nor to the apps they granted", hidden=True)
            return Permit()
        return Deny(Rule.APP_NOT_GRANTED, "the patient has not granted this app access to "
                    "their record")
    return _professional_decision(principal, action, target, context)


def _sealed(action: Interaction, category: str) -> Deny | None:
    """What nobody but Carnet does to a conversation: write a notification, delete."""
    if category == NOTIFICATION and action is Interaction.CREATE:
        return Deny(Rule.NOTIFICATION_BY_CARNET, "inbox notifications are written by Carnet")
    if action is Interaction.DELETE:
        return Deny(Rule.MESSAGE_SEALED, "a message, once sent, is never deleted")
    return None


def _patient_decision(action: Interaction, target: Target, context: AccessContext) -> Decision:
    if target.patient_id != context.own_record:
        return Deny(Rule.OWN_RECORD, "a patient reads and writes their own record only",
                    hidden=True)
    if action in _READS:
        if target.labels.hidden_from_patient:
            return Deny(Rule.INVISIBLE_TO_PATIENT, "this document is not yet visible to the "
                        "patient", hidden=True)
        return Permit()
    if target.resource_type not in _PATIENT_WRITES:
        return Deny(Rule.PATIENT_WRITES, f"a patient does not write {target.resource_type} "
                    "resources; professionals file them")
    if (target.resource_type == "DocumentReference" and action is Interaction.CREATE
            and target.labels.category != PATIENT_DOCUMENT):
        return Deny(Rule.PATIENT_FILES_CLASS_90, "a patient files their own documents only "
                    "(class code 90, 'Autres documents déposés par le patient')")
    return Permit()


def attends(principal: Principal, record: RecordState | None) -> bool:
    """Whether the caller is the record's declared attending doctor."""
    return (isinstance(principal, Professional) and record is not None
            and record.choices.attending == actor_key(principal))


def _professional_decision(principal: Professional, action: Interaction, target: Target,
                           context: AccessContext) -> Decision:
    category = target.labels.category
    if category == CONSENT:
        return Deny(Rule.CONSENT_BY_PATIENT, "the patient's choices are theirs to read and "
                    "change", hidden=action in _READS)
    if category == IDENTITY:
        return Permit()  # identity traits: needed to find the record, to file, to ask access
    if category in _CONVERSATION:
        return _conversation_decision(principal, action, target, context)
    record = _record_decision(principal, action, context)
    if (category == RECORD_LEVEL and isinstance(record, Deny)
            and target.resource_type == "Communication"
            and isinstance(_record_decision(principal, Interaction.CREATE, context), Permit)):
        # Not open to them, but they may converse with the patient: the search's SQL shows
        # them their own conversations and nothing else.
        return Deny(record.rule, record.reason, hidden=True)
    if isinstance(record, Deny) or action not in _READS or category == RECORD_LEVEL:
        return record
    if category not in _WITH_THE_RECORD and category not in open_categories(
            principal.profession_codes):
        return Deny(Rule.PROFESSION_MATRIX, "this document type is not open to your "
                    "profession", hidden=True)
    if target.labels.masked and not (target.authored_by_caller
                                     or attends(principal, context.record)):
        return Deny(Rule.MASKED, "the patient masked this document from professionals",
                    hidden=True)
    return record


def _conversation_decision(principal: Professional, action: Interaction, target: Target,
                           context: AccessContext) -> Decision:
    """A message is its two parties' business: any other professional, even one who may
    open the record, is told nothing of it. A party converses while the record is not
    closed to them (as for filing: no authorisation needed to write to the patient)."""
    if target.labels.category == NOTIFICATION:
        return Deny(Rule.NOTIFICATION_FOR_PATIENT, "inbox notifications are the patient's",
                    hidden=action in _READS)
    if not is_party(principal, target.labels):
        if action is Interaction.CREATE:
            return Deny(Rule.MESSAGE_SENDER, "a professional sends messages in their own name")
        return Deny(Rule.MESSAGE_PARTIES, "a message is visible to its sender and recipient "
                    "only", hidden=True)
    return _record_decision(principal, Interaction.CREATE, context)


def _record_decision(principal: Professional, action: Interaction,
                     context: AccessContext) -> Decision:
    """May this professional open this record at all (or, for a create, feed it)?"""
    state = context.record
    if state is None:
        return Deny(Rule.NOT_AUTHORISED, "the patient's record is not known")
    choices, relations = state.choices, state.relations
    if choices.closed:
        return Deny(Rule.RECORD_CLOSED, "the patient has closed their record")
    if attends(principal, state):
        return Permit()  # the attending doctor cannot be blocked
    if Relation.BLOCKED in relations:
        return Deny(Rule.BLOCKED, "the patient has blocked your access to their record")
    if context.mode is not AccessMode.NORMAL and choices.emergency_opposed:
        return Deny(Rule.EMERGENCY_OPPOSED, "the patient opposed emergency access to their "
                    "record")
    if action is Interaction.CREATE:
        return Permit()  # any professional may file into a record not closed to them
    if Relation.AUTHORISED in relations:
        return Permit()
    if Relation.CARE_TEAM in relations and not choices.care_team_objection:
        return Permit()
    if state.emergency is not None and not choices.emergency_opposed:
        return Permit(emergency=True)
    if Relation.CARE_TEAM in relations:
        return Deny(Rule.CARE_TEAM_OBJECTION, "the patient objected to access by their care "
                    "team; ask for their explicit authorisation")
    return Deny(Rule.NOT_AUTHORISED, "the patient has not authorised you; ask for their "
                "authorisation, or use emergency access (X-Access-Mode) if they cannot give it")


# ------------------------------------------------------------------------------------ search


@dataclass(frozen=True)
class Viewer:
    """Who searches, as ``visible_clause`` needs it."""

    principal: Principal
    own_record: str | None
    now: int
    internal: bool = False
    operator: bool = False
    # A professional's search aimed at one record that ``decide`` opened to them: the
    # SQL then only says which of its rows they see (and is planned in far less time).
    open_record: str | None = None
    attending: bool = False


def row_filter(viewer: Viewer) -> PolicyFilter | None:
    """The policy as the search's row filter; None when every row is open (Carnet,
    operators)."""
    if viewer.internal or viewer.operator:
        return None
    return PolicyFilter(viewer)


def visible_clause(table: Table, viewer: Viewer) -> ColumnElement[bool] | None:
    """The rows of ``table`` the viewer may see, values bound as they are; None: all."""
    found = row_filter(viewer)
    return found.clause(table, literal_bind) if found is not None else None


_APP, _CONSTANT = Relation.APP.value, "policy.constant"


class PolicyFilter:
    """The read rules as SQL on the resource table (a ``storage.search.shapes.RowFilter``).

    ``values`` lists what ``clause`` binds, in the same order: a search of a given shape
    is compiled once, and each request only binds its caller's values. Every other
    condition is correlated on the row's record (primary-key and index probes), so that
    a search of one record checks its ten documents, not every record the caller may open.
    """

    def __init__(self, viewer: Viewer) -> None:
        self.viewer = viewer
        principal = viewer.principal
        self._categories: list[str] = []
        self._codes: list[str] = []
        if isinstance(principal, Professional):
            self._categories = sorted(open_categories(principal.profession_codes)
                                      | _WITH_THE_RECORD)
            self._codes = [principal.idnat] + ([principal.rpps] if principal.rpps else [])

    @property
    def key(self) -> Hashable:
        principal = self.viewer.principal
        if isinstance(principal, Professional):
            if self.viewer.open_record is not None:
                return ("one record", len(self._categories), len(self._codes),
                        self.viewer.attending)
            return ("professional", len(self._categories), len(self._codes))
        if isinstance(principal, Patient):
            return ("patient", self.viewer.own_record is None)
        return ("app",)

    def values(self) -> list[tuple[str, Any]]:
        principal, actor = self.viewer.principal, actor_key(self.viewer.principal)
        if isinstance(principal, App):
            return [("policy.actor", actor), ("policy.actor", actor)]
        if isinstance(principal, Patient):
            own = self.viewer.own_record
            return [] if own is None else [("policy.record", own)]
        codes = [("policy.code", code) for code in self._codes]
        if self.viewer.open_record is not None:
            return [("policy.record", self.viewer.open_record),
                    *(("policy.category", c) for c in self._categories),
                    *([] if self.viewer.attending else codes), *codes]
        return [*(("policy.category", c) for c in self._categories),
                *[("policy.actor", actor)] * 5, ("policy.now", self.viewer.now),
                *codes, ("policy.actor", actor), *codes, *[("policy.actor", actor)] * 2]

    def clause(self, table: Table, bind: Bind) -> ColumnElement[bool]:
        """Builds in the order of ``values``: each ``bind`` call takes the next one."""
        principal, c = self.viewer.principal, table.c
        directory = and_(c.patient_id.is_(None), c.category.is_(None))
        if isinstance(principal, App):
            ra = RECORD_ACTORS.c
            granted = exists().where(ra.patient_id == c.patient_id,
                                     ra.actor == bind("policy.actor", actor_key(principal)),
                                     ra.relation == _APP)
            owned = exists().where(
                TOKENS.c.resource_pk == c.pk, TOKENS.c.param == "_tag",
                TOKENS.c.system == OWNER_SYSTEM,
                TOKENS.c.code == bind("policy.actor", actor_key(principal)))
            return or_(and_(c.patient_id.is_(None),
                            or_(c.resource_type != SUBSCRIPTION, owned)),
                       and_(granted, c.hidden_from_patient == false()))
        if isinstance(principal, Patient):
            if self.viewer.own_record is None:
                return directory
            return or_(directory, and_(c.patient_id == bind("policy.record",
                                                            self.viewer.own_record),
                                       c.hidden_from_patient == false(),
                                       c.category != RESTRICTED, c.category != BINARY))
        assert isinstance(principal, Professional)
        actor = actor_key(principal)
        if self.viewer.open_record is not None:
            return or_(directory, c.category == IDENTITY,
                       self._one_record(c, self.viewer.open_record, bind))
        in_matrix = self._in_matrix(c, bind)
        record_open = _record_open(c.patient_id, [bind("policy.actor", actor)
                                                  for _ in range(5)],
                                   bind("policy.now", self.viewer.now))
        authored = self._authored(c, bind)
        attending = exists().where(RECORD_POLICY.c.patient_id == c.patient_id,
                                   RECORD_POLICY.c.attending == bind("policy.actor", actor))
        unmasked = or_(c.masked == false(), authored, attending)
        conversation = and_(c.category == MESSAGE, self._party(c, bind),
                            _conversation_open(c.patient_id, bind("policy.actor", actor),
                                               bind("policy.actor", actor)))
        return or_(directory, c.category == IDENTITY,
                   and_(c.category != MESSAGE, in_matrix, record_open, unmasked), conversation)

    def _one_record(self, c: Any, record: str, bind: Bind) -> ColumnElement[bool]:
        """The rows of the one record already opened: matrix and masking; a message, to
        its parties only."""
        in_record = c.patient_id == bind("policy.record", record)
        in_matrix = self._in_matrix(c, bind)
        readable = (in_matrix if self.viewer.attending
                    else and_(in_matrix, or_(c.masked == false(), self._authored(c, bind))))
        return and_(in_record, or_(and_(c.category != MESSAGE, readable),
                                   and_(c.category == MESSAGE, self._party(c, bind))))

    def _in_matrix(self, c: Any, bind: Bind) -> ColumnElement[bool]:
        """The row's category is open to the caller's professions."""
        return or_(*(c.category == bind("policy.category", category)
                     for category in self._categories))

    def _party(self, c: Any, bind: Bind) -> ColumnElement[bool]:
        """The message names the caller as sender or recipient (by idNat_PS or RPPS)."""
        return exists().where(
            TOKENS.c.resource_pk == c.pk,
            or_(TOKENS.c.param == "sender.identifier", TOKENS.c.param == "recipient.identifier"),
            or_(*(TOKENS.c.system == system for system in PROFESSIONAL_SYSTEMS)),
            or_(*(TOKENS.c.code == bind("policy.code", code) for code in self._codes)))

    def _authored(self, c: Any, bind: Bind) -> ColumnElement[bool]:
        """The document names the caller among its authors (the ``author.identifier`` index)."""
        return exists().where(
            TOKENS.c.resource_pk == c.pk, TOKENS.c.param == "author.identifier",
            or_(*(TOKENS.c.code == bind("policy.code", code) for code in self._codes)))


def _conversation_open(patient_id: ColumnElement[str], attending: Any,
                       blocked: Any) -> ColumnElement[bool]:
    """The record is open to the professional's conversations with the patient: not closed,
    and they are not blocked (unless they attend the patient): ``_conversation_decision``."""
    rp = RECORD_POLICY.alias("conversation_record")
    ra = RECORD_ACTORS.alias("conversation_actor")
    return and_(
        ~exists().where(rp.c.patient_id == patient_id, rp.c.closed == true()),
        or_(exists().where(rp.c.patient_id == patient_id, rp.c.attending == attending),
            ~exists().where(ra.c.patient_id == patient_id, ra.c.actor == blocked,
                            ra.c.relation == Relation.BLOCKED.value)))


def _record_open(patient_id: ColumnElement[str], actors: list[Any],
                 now: Any) -> ColumnElement[bool]:
    """The record ``patient_id`` is open to the professional now: ``_record_decision`` for
    reads, in SQL. ``actors``: five placeholders for the professional's key."""
    rp = RECORD_POLICY.alias("open_record")
    ra, em = RECORD_ACTORS.c, EMERGENCY_ACCESS.c
    attending, blocked, authorised, care_team, emergency = actors

    def related(actor: Any, relation: Relation) -> ColumnElement[bool]:
        return exists().where(ra.patient_id == rp.c.patient_id, ra.actor == actor,
                              ra.relation == relation.value)

    live_emergency = exists().where(em.patient_id == rp.c.patient_id, em.actor == emergency,
                                    em.expires_at > now)
    return exists().where(
        rp.c.patient_id == patient_id, rp.c.closed == false(),
        or_(rp.c.attending == attending,
            and_(~related(blocked, Relation.BLOCKED),
                 or_(related(authorised, Relation.AUTHORISED),
                     and_(rp.c.care_team_objection == false(),
                          related(care_team, Relation.CARE_TEAM)),
                     and_(rp.c.emergency_opposed == false(), live_emergency)))))
