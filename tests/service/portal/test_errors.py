"""The API's refusals, told to the patient in French, its own words kept as a detail."""

from __future__ import annotations

from service.portal.errors import api_refusal


def test_a_named_rule_gets_its_french_sentence() -> None:
    refusal = api_refusal(403, "access denied [message-no-reply]: this message takes no reply")
    assert refusal.status == 403
    assert refusal.message == "Ce message a été envoyé sans possibilité de réponse."
    assert refusal.detail == "access denied [message-no-reply]: this message takes no reply"


def test_otherwise_the_status_speaks() -> None:
    assert "modifié entre-temps" in api_refusal(412, "version mismatch").message
    assert "introuvable" in api_refusal(404, "[some-future-rule] gone").message
    assert "Réessayez" in api_refusal(503, "audit log unavailable").message
