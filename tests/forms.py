"""Pages' forms as a browser without JavaScript sees them, and PKCE pairs: what the
tests of the provider, the portal and the end-to-end flows all need."""

from __future__ import annotations

import base64
import hashlib
import secrets
from html.parser import HTMLParser


class Forms(HTMLParser):
    """Each form of a page: its action and its named fields (first value wins)."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []
        self._open = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form":
            self.forms.append((values.get("action") or "", {}))
            self._open = True
        elif tag in ("input", "button", "textarea", "select") and self._open \
                and values.get("name"):
            self.forms[-1][1].setdefault(values["name"] or "", values.get("value") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._open = False


def forms_of(html: str) -> list[tuple[str, dict[str, str]]]:
    parser = Forms()
    parser.feed(html)
    parser.close()
    return parser.forms


def form_to(html: str, action_ends_with: str) -> dict[str, str]:
    """The fields of the page's form whose action ends so (the CSRF token among them)."""
    return next(fields for action, fields in forms_of(html) if action.endswith(action_ends_with))


def login_form(html: str, subject: str) -> dict[str, str]:
    """The provider's login page: the one form that logs in as ``subject``."""
    matching = [fields for _, fields in forms_of(html) if fields.get("subject") == subject]
    assert len(matching) == 1, f"no single login form for {subject}"
    return matching[0]


def pkce() -> tuple[str, str]:
    """A fresh (code_verifier, S256 code_challenge) pair."""
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
