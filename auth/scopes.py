"""SMART App Launch v2 scopes: parse them, check them, narrow a request to a registration.

Facts from the SMART spec (scopes-and-launch-context): a clinical scope is
``(patient|user|system)/(Type|*).<perms>`` where ``<perms>`` is a non-empty subset of the
in-order string ``cruds``; v1 ``.read``/``.write``/``.*`` mean ``.rs``/``.cud``/``.cruds``;
``Observation.rs`` is equivalent to ``Observation.r Observation.s``, so a set merges them.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Literal

PERMISSIONS = "cruds"

Context = Literal["patient", "user", "system"]
CONTEXTS: tuple[Context, ...] = ("patient", "user", "system")
_CONTEXT_BY_NAME: dict[str, Context] = {"patient": "patient", "user": "user", "system": "system"}
_V1_PERMISSIONS = {"read": "rs", "write": "cud", "*": "cruds"}
_TYPE = re.compile(r"[A-Z][A-Za-z]+")


class ScopeError(ValueError):
    """A scope that looks like a SMART resource scope but is malformed; the message says why."""


@dataclass(frozen=True)
class Scope:
    """One resource scope; validated on construction so no invalid Scope can exist."""

    context: Context
    resource_type: str
    permissions: frozenset[str]

    def __post_init__(self) -> None:
        if self.context not in CONTEXTS:
            raise ScopeError(f"unknown scope context {self.context!r}")
        if self.resource_type != "*" and not _TYPE.fullmatch(self.resource_type):
            raise ScopeError(f"{self.resource_type!r} is not a FHIR resource type or '*'")
        if not self.permissions or not self.permissions <= frozenset(PERMISSIONS):
            raise ScopeError(f"permissions must be a non-empty subset of {PERMISSIONS!r}")

    def __str__(self) -> str:
        letters = "".join(p for p in PERMISSIONS if p in self.permissions)
        return f"{self.context}/{self.resource_type}.{letters}"

    def covers(self, resource_type: str) -> bool:
        """A wildcard scope covers every type, including ones the server adds later."""
        return self.resource_type in ("*", resource_type)


def _is_resource_scope_shaped(text: str) -> bool:
    """Only ``word/...`` outside ``launch/...`` is SMART-shaped; URI scopes are someone else's."""
    prefix, slash, _ = text.partition("/")
    return bool(slash) and prefix != "launch" and ":" not in prefix


def parse_scope(text: str) -> Scope | None:
    """The resource scope in ``text``; None for identity, launch and other non-resource scopes."""
    if not _is_resource_scope_shaped(text):
        return None
    if "?" in text:
        raise ScopeError("scopes with query parameters are not supported")
    prefix, _, rest = text.partition("/")
    context = _CONTEXT_BY_NAME.get(prefix)
    if context is None:
        raise ScopeError(f"{text!r}: unknown context {prefix!r} (expected patient, user or system)")
    resource_type, dot, suffix = rest.partition(".")
    if not dot or not suffix:
        raise ScopeError(f"{text!r}: no permissions after the resource type")
    letters = _V1_PERMISSIONS.get(suffix, suffix)
    if "".join(p for p in PERMISSIONS if p in letters) != letters:
        # Rejected, not guessed, so ".read" can never be misread as ".rd" (the spec's rationale).
        raise ScopeError(f"{text!r}: permissions must be a subset of {PERMISSIONS!r} in that order")
    try:
        return Scope(context, resource_type, frozenset(letters))
    except ScopeError as error:
        raise ScopeError(f"{text!r}: {error}") from None


@dataclass(frozen=True)
class ScopeSet:
    """A granted or requested scope string, with resource scopes merged per (context, type)."""

    resource_scopes: tuple[Scope, ...]
    other: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> ScopeSet:
        """Parse a space-separated scope string; raises ScopeError on the first malformed scope."""
        scopes: list[Scope] = []
        other: list[str] = []
        for token in text.split():
            scope = parse_scope(token)
            if scope is None:
                other.append(token)
            else:
                scopes.append(scope)
        return cls._normalised(scopes, other)

    @classmethod
    def _normalised(cls, scopes: Iterable[Scope], other: Iterable[str]) -> ScopeSet:
        """Merge same-type scopes and sort, so equal grants compare and print equal."""
        merged: dict[tuple[Context, str], frozenset[str]] = {}
        for scope in scopes:
            key = (scope.context, scope.resource_type)
            merged[key] = merged.get(key, frozenset()) | scope.permissions
        ordered = sorted(merged.items(), key=lambda item: (CONTEXTS.index(item[0][0]), item[0][1]))
        return cls(
            tuple(Scope(context, type_, perms) for (context, type_), perms in ordered),
            tuple(sorted(set(other))),
        )

    def contexts_allowing(self, resource_type: str, permission: str) -> frozenset[str]:
        """The contexts (patient, user, system) in which ``permission`` on the type is granted."""
        if len(permission) != 1 or permission not in PERMISSIONS:
            raise ValueError(f"permission must be one of {', '.join(PERMISSIONS)}: {permission!r}")
        return frozenset(
            s.context
            for s in self.resource_scopes
            if s.covers(resource_type) and permission in s.permissions
        )

    def allows(
        self, resource_type: str, permission: str, contexts: Collection[str] = CONTEXTS
    ) -> bool:
        """Whether some scope in one of ``contexts`` grants ``permission`` on the type."""
        wanted = {contexts} if isinstance(contexts, str) else set(contexts)
        if unknown := wanted - set(CONTEXTS):
            raise ValueError(f"unknown scope context(s): {', '.join(sorted(unknown))}")
        return bool(self.contexts_allowing(resource_type, permission) & wanted)

    def has(self, scope: str) -> bool:
        """Whether a non-resource scope such as ``openid`` or ``offline_access`` is present."""
        return scope in self.other

    def narrowed_to(self, allowed: ScopeSet) -> ScopeSet:
        """What may be granted when ``self`` is requested by a client registered for ``allowed``.

        Each pair of same-context scopes yields their intersection: the narrower type (a requested
        ``*`` against an allowed ``Observation`` becomes ``Observation``) and the common letters.
        """
        granted: list[Scope] = []
        for want in self.resource_scopes:
            for may in allowed.resource_scopes:
                if want.context != may.context:
                    continue
                if may.covers(want.resource_type):
                    resource_type = want.resource_type
                elif want.resource_type == "*":
                    resource_type = may.resource_type
                else:
                    continue
                if common := want.permissions & may.permissions:
                    granted.append(Scope(want.context, resource_type, common))
        return self._normalised(granted, (s for s in self.other if allowed.has(s)))

    def __str__(self) -> str:
        return " ".join([*self.other, *(str(s) for s in self.resource_scopes)])
