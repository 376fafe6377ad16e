"""A third-party FHIR client (SMART's ``fhirclient`` from PyPI) against the real server."""

from __future__ import annotations

import pytest
from fhirclient import client as fhir_client
from fhirclient.models.binary import Binary
from fhirclient.models.bundle import Bundle
from fhirclient.models.documentreference import DocumentReference
from fhirclient.models.observation import Observation
from fhirclient.models.patient import Patient

from service.demo import INS_NIR_TEST, PATIENTS
from service.documents.samples import document_bundle
from tests.e2e.conftest import app_token

pytestmark = pytest.mark.e2e


APP_SCOPE = "system/Patient.crus system/Observation.crus"


def connect(base: str, token: str | None = None) -> fhir_client.FHIRClient:
    """The client as an app holding a token from Carnet's provider (``/idp``)."""
    smart = fhir_client.FHIRClient(settings={"app_id": "carnet-e2e",
                                             "api_base": f"{base}/fhir/"})
    if token:
        smart.server.session.headers["Authorization"] = f"Bearer {token}"
    return smart


def test_third_party_client_reads_the_capability_statement(integrator_server: str) -> None:
    smart = connect(integrator_server)
    smart.prepare()
    assert smart.server.capabilityStatement.fhirVersion == "4.0.1"
    types = {r.type for r in smart.server.capabilityStatement.rest[0].resource}
    assert {"Patient", "DocumentReference", "Observation"} <= types


def test_third_party_client_creates_searches_pages_and_reads(integrator_server: str) -> None:
    server = connect(integrator_server, app_token(integrator_server, APP_SCOPE)).server
    created_ids = []
    for i in range(7):
        patient = Patient({"name": [{"family": "Fhirclient", "given": [f"Test{i}"]}],
                           "gender": "female", "birthDate": f"198{i}-01-01"})
        response = patient.create(server)
        assert response is not None
        created_ids.append(response["id"])
    Patient({"name": [{"family": "Autre"}]}).create(server)

    search = Patient.where(struct={"family": "fhirclient", "_count": "3", "_sort": "birthdate"})
    pages = list(search.perform_iter(server))
    assert len(pages) == 3
    assert all(isinstance(page, Bundle) and page.total == 7 for page in pages)
    found = [entry.resource.id for page in pages for entry in page.entry]
    assert found == created_ids  # sorted by birth date = creation order here

    read = Patient.read(created_ids[3], server)
    assert read.name[0].given == ["Test3"]
    assert read.meta.versionId == "1"


def test_third_party_client_updates_and_follows_references(integrator_server: str) -> None:
    server = connect(integrator_server, app_token(integrator_server, APP_SCOPE)).server
    patient_id = Patient({"name": [{"family": "Lien"}]}).create(server)["id"]
    observation = Observation({
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2339-0"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-02-01",
    })
    observation_id = observation.create(server)["id"]
    found = Observation.where(struct={"patient": patient_id, "code": "http://loinc.org|2339-0"}
                              ).perform_resources(server)
    assert [o.id for o in found] == [observation_id]

    patient = Patient.read(patient_id, server)
    patient.gender = "male"
    patient.update(server)
    assert Patient.read(patient_id, server).meta.versionId == "2"


DOCUMENT_SCOPE = ("system/Patient.crus system/DocumentReference.crus system/Binary.cr "
                  "system/List.crus")


def test_third_party_client_files_a_document_bundle_and_finds_it(integrator_server: str) -> None:
    """ITI-65 then ITI-67 and ITI-68 with the client's own models."""
    server = connect(integrator_server, app_token(integrator_server, DOCUMENT_SCOPE)).server
    by_ins = Patient.where(struct={"identifier": f"{INS_NIR_TEST}|{PATIENTS[1][1]}"}
                           ).perform_resources(server)
    assert len(by_ins) == 1
    content = b"%PDF-1.4 compte rendu envoye par un client tiers"
    submission = Bundle(document_bundle(f"Patient/{by_ins[0].id}", content=content,
                                        master_id="urn:oid:1.2.250.1.999.77.1"))
    answer = Bundle(server.post_json("", submission.as_json()).json())
    assert answer.type == "transaction-response"
    assert [e.response.status for e in answer.entry] == ["201 Created"] * 3

    found = DocumentReference.where(struct={
        "patient": by_ins[0].id, "identifier": "urn:ietf:rfc:3986|urn:oid:1.2.250.1.999.77.1",
    }).perform_resources(server)
    assert len(found) == 1
    attachment = found[0].content[0].attachment
    assert attachment.size == len(content)
    binary = Binary.read(attachment.url.split("/")[-1], server)
    assert binary.contentType == "application/pdf"
    assert server.request_data(attachment.url, headers={"Accept": "*/*"}) == content
