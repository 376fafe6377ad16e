"""Identity and access: the mock Pro Santé Connect provider, token verification,
principals and the one access-policy decision point.

Not built yet: it arrives with the identity issue (INS / e-CPS) and the access
issue (consent-scoped policy). Until then the FHIR API performs no
authentication, which is why ``carnet serve`` listens on 127.0.0.1 by default.
"""
