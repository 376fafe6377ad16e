"""SMART App Launch discovery: https://hl7.org/fhir/smart-app-launch/conformance.html

Public, like the CapabilityStatement: an app reads it before it holds a token.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse

from service.deps import SettingsDep


async def smart_configuration(settings: SettingsDep) -> JSONResponse:
    issuer = settings.effective_issuer
    return JSONResponse({
        "issuer": issuer,
        "jwks_uri": settings.jwks_url or f"{issuer}/jwks",  # the public one, not ours
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "revocation_endpoint": f"{issuer}/revoke",
        "userinfo_endpoint": f"{issuer}/userinfo",
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post",
                                                  "none"],
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": ["openid", "offline_access", "scope_all",
                             "patient/*.rs", "user/*.cruds", "system/*.cruds"],
        "capabilities": ["launch-standalone", "client-public", "client-confidential-symmetric",
                         "permission-v2", "permission-patient", "permission-user",
                         "context-standalone-patient"],
    })
