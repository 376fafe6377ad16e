"""The access-policy decision point.

Today it decides on SMART scopes: may this token perform this interaction on
this resource type at all? The consent rules (the patient's own record,
blocked professionals, masked documents, the profession matrix) join this
function with the access-policy issue; until then a professional's or
patient's token is limited only by its scopes.

A token's scopes count only in the context that fits the caller: ``patient/``
for a patient, ``user/`` for a professional, ``system/`` for an app acting on
its own. A token that somehow carries another context gains nothing from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from auth.principal import App, Patient, Principal, Professional


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


@dataclass(frozen=True)
class Permit:
    pass


@dataclass(frozen=True)
class Deny:
    rule: str
    reason: str


Decision = Permit | Deny


def scope_context(principal: Principal) -> str:
    if isinstance(principal, Patient):
        return "patient"
    if isinstance(principal, Professional):
        return "user"
    assert isinstance(principal, App)
    return "system"


def decide(principal: Principal, interaction: Interaction, resource_type: str) -> Decision:
    if interaction is Interaction.INS_LOOKUP and isinstance(principal, Patient):
        return Deny("insi-professionals-only", "INSi is queried by professionals and their "
                    "systems, not by patients")
    permission = _PERMISSION[interaction]
    context = scope_context(principal)
    if principal.scopes.allows(resource_type, permission, (context,)):
        return Permit()
    return Deny("smart-scope", f"the token's scopes do not allow {interaction.value} on "
                f"{resource_type} (needs {context}/{resource_type}.{permission})")
