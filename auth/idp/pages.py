"""The login page: pick a seeded test professional (e-CPS) or patient.

Plain HTML, no script, every value escaped. Each identity is a form that
posts the authorization request back with a CSRF token that must match the
cookie set with the page.
"""

from __future__ import annotations

from html import escape

from auth.idp.authorize import AuthorizationRequest
from auth.idp.claims import patient_subject, professional_subject
from storage.directory import InsIdentity, Professional

PROFESSIONS = {"10": "Médecin", "21": "Pharmacien", "40": "Chirurgien-dentiste",
               "50": "Sage-femme", "60": "Infirmier", "70": "Masseur-kinésithérapeute"}
_STYLE = ("body{font-family:system-ui,sans-serif;max-width:40rem;margin:2rem auto;"
          "padding:0 1rem;color:#111}button{font:inherit;padding:.4rem .8rem;margin:.2rem 0;"
          "cursor:pointer}li{list-style:none}")


def _form(request: AuthorizationRequest, csrf: str, subject: str, label: str) -> str:
    hidden = "".join(f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">'
                     for k, v in {**request.hidden_fields(), "csrf": csrf,
                                  "subject": subject}.items())
    return (f'<li><form method="post" action="authorize">{hidden}'
            f'<button type="submit">{escape(label)}</button></form></li>')


def login_page(request: AuthorizationRequest, csrf: str, professionals: list[Professional],
               patients: list[InsIdentity]) -> str:
    pros = "".join(_form(request, csrf, professional_subject(p.rpps),
                         f"{p.given_name} {p.family_name} — "
                         f"{PROFESSIONS.get(p.profession_code, p.profession_code)} "
                         f"(RPPS {p.rpps})") for p in professionals)
    pats = "".join(_form(request, csrf, patient_subject(i.nir),
                         f"{' '.join(i.given_names)} {i.birth_family_name} (né·e le "
                         f"{i.birth_date})") for i in patients)
    return (f'<!doctype html><html lang="fr"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>Connexion — Pro Santé Connect (simulé)</title><style>{_STYLE}</style>"
            f"</head><body><main><h1>Connexion (fournisseur d'identité simulé)</h1>"
            f"<p>L'application <strong>{escape(request.client.name)}</strong> demande "
            f"l'accès : <code>{escape(str(request.scope))}</code></p>"
            f"<h2>Professionnels de santé (e-CPS)</h2><ul>{pros or '<li>aucun</li>'}</ul>"
            f"<h2>Patients</h2><ul>{pats or '<li>aucun</li>'}</ul></main></body></html>")


def error_page(message: str) -> str:
    return (f'<!doctype html><html lang="fr"><head><meta charset="utf-8">'
            f"<title>Erreur de connexion</title></head><body><main>"
            f"<h1>Demande de connexion refusée</h1><p>{escape(message)}</p></main></body></html>")
