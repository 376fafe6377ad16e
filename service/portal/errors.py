"""What the portal refuses, and how it tells the patient why (in French).

``Refusal`` is raised by the pages themselves (a bad form value) and by
``PortalFhir`` when the API refuses; install.py renders it as an error page.
The API speaks to developers ("access denied [message-no-reply]: ..."): the
patient reads a French sentence for the rule, and the API's words as a detail.
"""

from __future__ import annotations

import re

_RULE = re.compile(r"\[([a-z0-9-]+)\]")
# The API's rules a patient can run into through the portal.
_RULES = {
    "message-no-reply": "Ce message a été envoyé sans possibilité de réponse.",
    "message-patient-replies-only": "Vous pouvez répondre aux messages des professionnels, "
                                    "pas en écrire de nouveaux.",
    "message-patient-marks-read-only": "Vous pouvez seulement marquer ce message comme lu.",
    "patient-files-own-documents-only": "Vous ne pouvez ajouter que vos propres documents, "
                                        "dans votre dossier.",
    "patient-writes-limited": "Cette modification n'est pas possible depuis votre espace.",
    "document-label-change": "Seul l'auteur du document ou votre médecin traitant peut "
                             "changer cette visibilité.",
    "consent-attending-doctor": "Votre médecin traitant ne peut pas être bloqué : déclarez "
                                "d'abord un autre médecin traitant.",
    "consent-actor": "Ce professionnel de santé n'a pas pu être identifié.",
    "document-metadata": "Ce document ne peut pas être modifié ainsi.",
}
_STATUSES = {
    400: "Cette demande est incorrecte.",
    403: "Cette action ne vous est pas permise.",
    404: "Ce contenu est introuvable, ou il ne vous est pas accessible.",
    409: "Ce contenu a été modifié en même temps par ailleurs : rechargez la page.",
    412: "Ce contenu a été modifié entre-temps : rechargez la page et recommencez.",
    413: "Ce contenu est trop volumineux.",
    415: "Ce format n'est pas accepté.",
    422: "Ce contenu n'a pas été accepté : il ne respecte pas les règles du dossier.",
}
_UNKNOWN = "Carnet n'a pas pu traiter cette demande. Réessayez dans un instant."


class Refusal(Exception):
    """A status and a sentence for the patient; ``detail``: the API's own words, if any."""

    def __init__(self, status: int, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


def api_refusal(status: int, diagnostics: str) -> Refusal:
    """The API's answer, told in French: by its rule when it names one, else by status."""
    found = _RULE.search(diagnostics)
    message = _RULES.get(found.group(1) if found else "") or _STATUSES.get(status, _UNKNOWN)
    return Refusal(status, message, detail=diagnostics)
