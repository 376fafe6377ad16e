"""CPU cost of verifying one bearer token, in process (no HTTP): µs per ``TokenVerifier.verify``.

Builds a KeyStore in a temporary directory, signs a Pro Santé Connect-like
access token with it, serves its JWKS through ``httpx.MockTransport``, warms
the JwksCache, then times N verifications of that token. Target: < 300 µs.

    . /tmp/venv/bin/activate && python bench/auth_verify.py [N]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from auth.keys import KeyStore
from auth.tokens import JwksCache, TokenVerifier

ISSUER = "https://auth.esante.gouv.fr/auth/realms/esante-wallet"
AUDIENCE = "carnet"
TARGET_US = 300.0


def psc_claims() -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": ISSUER, "sub": "f:550dc1c8-d97b-4b1e-ac8c-8eb4471cf9dd:ANS20200325111411",
        "aud": AUDIENCE, "iat": now, "nbf": now, "exp": now + 3600, "jti": str(uuid.uuid4()),
        "scope": "openid scope_all", "acr": "eidas1", "SubjectNameID": "899700218896",
        "SubjectRefPro": {"exercices": [{"codeProfession": "10", "codeSavoirFaire": "SM26",
                                         "codeCategorieProfessionnelle": "C"}]},
        "given_name": "Paul", "family_name": "Martin", "preferred_username": "899700218896",
    }


async def run(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        store = KeyStore(Path(tmp) / "keys")
        token = store.signing_key().sign(psc_claims())
        jwks = store.jwks()
        transport = httpx.MockTransport(lambda request: httpx.Response(200, json=jwks))
        async with httpx.AsyncClient(transport=transport) as client:
            verifier = TokenVerifier(issuer=ISSUER, audience=AUDIENCE,
                                     keys=JwksCache(f"{ISSUER}/certs", client))
            for _ in range(200):  # warm: JWKS fetched, public key built, code paths hot
                await verifier.verify(token)
            samples = []
            clock = time.perf_counter_ns
            for _ in range(n):
                start = clock()
                await verifier.verify(token)
                samples.append((clock() - start) / 1000)
    samples.sort()
    p50 = samples[len(samples) // 2]
    p99 = samples[min(len(samples) - 1, int(len(samples) * 0.99))]
    mean = statistics.fmean(samples)
    print(f"TokenVerifier.verify, RS256 2048-bit, {len(token)}-char token, {n} verifications")
    print(f"  mean {mean:.1f} µs   p50 {p50:.1f} µs   p99 {p99:.1f} µs"
          f"   (target < {TARGET_US:.0f} µs per verify)")
    print("  within target" if p99 < TARGET_US else "  OVER TARGET")


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    asyncio.run(run(n))


if __name__ == "__main__":
    main()
