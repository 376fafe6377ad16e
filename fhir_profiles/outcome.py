"""OperationOutcome issues, shared by the validators and the service's error handler."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass(frozen=True)
class Issue:
    """One ``OperationOutcome.issue``; ``expression`` holds FHIRPath-like element paths."""

    diagnostics: str
    code: str = "invalid"
    severity: str = "error"
    expression: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        issue: dict[str, Any] = {"severity": self.severity, "code": self.code,
                                 "diagnostics": self.diagnostics}
        if self.expression:
            issue["expression"] = self.expression
        return issue


MAX_ISSUES = 100
"""Issues an OperationOutcome lists; the rest are counted in one more. A 10,000-entry Bundle
of bad entries answered 1.5 MB of them, 100,000 wrong items in one array 20 MB."""


def operation_outcome(issues: list[Issue]) -> dict[str, Any]:
    shown = [i.as_json() for i in issues[:MAX_ISSUES]]
    if len(issues) > MAX_ISSUES:
        shown.append(Issue(f"... and {len(issues) - MAX_ISSUES:,} more issues of the same "
                           "request, not listed", code="too-costly",
                           severity="information").as_json())
    return {"resourceType": "OperationOutcome", "issue": shown}


class ValidationFailed(Exception):
    """A resource broke the base FHIR rules (``structure``) or a profile rule (``profile``)."""

    def __init__(self, issues: list[Issue], kind: Literal["structure", "profile"]) -> None:
        super().__init__("; ".join(i.diagnostics for i in issues))
        self.issues = issues
        self.kind = kind
