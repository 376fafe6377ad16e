"""The mock Pro Santé Connect identity provider (OIDC, RS256), mounted at ``/idp``."""
