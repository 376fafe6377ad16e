import httpx, orjson
from tests.service.access.conftest import *  # noqa
from tests.service.access.conftest import DOCTOR, BLOCKED, Record, as_professional
from tests.service.portal.conftest import PortalBrowser
from tests.factories import practitioner, FHIR_JSON
from fhir_profiles.consent import patient_choice


async def test_probe(portal: PortalBrowser, record: Record, client: httpx.AsyncClient, as_patient, tokens) -> None:
    r = await client.post("/fhir/Practitioner", content=orjson.dumps(practitioner("MARTIN", DOCTOR.rpps)), headers=FHIR_JSON)
    print(r.status_code)
    r = await client.post("/fhir/Practitioner", content=orjson.dumps(practitioner("ROUX", BLOCKED.rpps)), headers=FHIR_JSON)
    h = as_patient
    r = await client.get("/fhir/Practitioner", params={"name": "mart"}, headers=h)
    print("search", r.status_code, r.text[:300])
    r = await client.get("/fhir/Practitioner", params={"identifier": f"urn:oid:1.2.250.1.71.4.2.1|8{DOCTOR.rpps},urn:oid:1.2.250.1.71.4.2.1|8{BLOCKED.rpps}"}, headers=h)
    print("ids", r.status_code, r.json().get("total"))
    r = await client.get("/fhir/Consent", params={"patient": record.patient_id, "status": "active"}, headers=h)
    print("consents", r.status_code, r.text[:1500])
    r = await client.post("/fhir/Consent", content=orjson.dumps(patient_choice(f"Patient/{record.patient_id}", "professional", rpps=[DOCTOR.rpps])), headers={**h, **FHIR_JSON})
    print("block doctor", r.status_code, r.text[:300])
    r = await client.get("/fhir/AuditEvent", params={"patient": record.patient_id, "_count": "3"}, headers=h)
    print("audit", r.status_code, r.text[:3000])
