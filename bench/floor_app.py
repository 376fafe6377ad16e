"""The HTTP floor: the cheapest FastAPI endpoint uvicorn can serve on this machine.

``GET /floor`` returns fixed bytes shaped like a stored Patient, with the FHIR
media type, through the same stack Carnet uses (uvicorn with uvloop/httptools,
Starlette routing, FastAPI). It does no I/O and no parsing, so its req/s is the
ceiling any Carnet endpoint can reach with the same worker count, connections
and load generator; ``run_core.py`` divides each figure by it.

Run by ``run_core.py`` as ``uvicorn floor_app:app --app-dir bench --workers N``.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.responses import Response

BODY = (b'{"resourceType":"Patient","id":"5b0c8f8e-1c1f-4a47-9f0e-2f7a4f0c1d2e",'
        b'"meta":{"versionId":"1","lastUpdated":"2026-01-01T00:00:00.000000Z"},'
        b'"identifier":[{"system":"urn:oid:1.2.250.1.999.1.1.1","value":"100000000000001"}],'
        b'"name":[{"family":"Martin","given":["Jean"]}],"gender":"male",'
        b'"birthDate":"1970-01-01"}')

app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)


@app.get("/floor")
async def floor() -> Response:
    return Response(BODY, media_type="application/fhir+json",
                    headers={"ETag": 'W/"1"', "Last-Modified": "Thu, 01 Jan 2026 00:00:00 GMT"})
