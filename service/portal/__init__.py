"""The patient portal (« Mon espace »): a server-rendered web client at ``/portal``.

It is a client of Carnet like any other: it logs the patient in at the issuer
(code flow + PKCE), keeps the tokens server-side, and reads and writes through
the FHIR API with the patient's token (``service/portal/fhir.py``).
"""
