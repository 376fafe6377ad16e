"""Contract fuzzing: schemathesis drives Carnet's own OpenAPI description against a real server.

For every operation of ``/openapi.json`` (service/openapi.py completes what FastAPI generates)
and every principal (a professional, a patient, an app, and nobody), generated requests must
never get a 5xx; every error must be a FHIR OperationOutcome in ``application/fhir+json``
(OAuth JSON on the identity provider's endpoints, as the description declares); every answer
must conform to the status codes, media types, headers and schemas declared; and requests
the description calls invalid must be refused with a 4xx.

The server is ``live_server`` (``carnet serve --demo``, here beside the other real-server
tests for that reason) on each back-end: PostgreSQL refuses what SQLite stores (a NUL
character: the fuzzing found a 500 there that SQLite never showed). The cases are generated
once per operation and sent as each principal in turn; Hypothesis is derandomised (CI replays
the same cases), runs its generate phase only (a failure is reported, not shrunk) and has no
deadline. ``CARNET_CONTRACT_EXAMPLES=50`` hunts deeper, off CI.

Left out: the portal and the provider's login pages (HTML, covered by tests/service/portal
and tests/auth/idp) and the live stream ``/notifications/stream``, an answer that never ends
(tests/service/notify covers it). The tests after the fuzzing keep what it found, in process.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import Case, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.errors import FailureGroup

from service.app import create_app
from service.settings import Settings
from tests.e2e.conftest import app_token, log_in
from tests.factories import patient
from tests.reliability import figures
from tests.tokens import DOCTOR, PATIENT

# Per operation: valid cases, invalid ones (when it has something to get wrong), and cases
# aimed at stored resources; each case is sent as every principal.
EXAMPLES = int(os.environ.get("CARNET_CONTRACT_EXAMPLES", "3"))
FHIR_JSON = "application/fhir+json"
APP_SCOPE = ("system/Patient.crus system/DocumentReference.crus system/Binary.cr "
             "system/List.crus system/Practitioner.rs system/Communication.rs")
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance, negative_data_rejection]
CONFIG = schemathesis.Config.from_dict({
    # The principals' headers authenticate: generated Authorization headers would be replaced.
    "generation": {"with-security-parameters": False},
    # Refusals of invalid input: schemathesis's list, with FHIR's 412 for a malformed If-Match
    # (service/fhir/http.py: parse_if_match), 413 and 416.
    "checks": {"negative_data_rejection": {"expected-statuses": [
        400, 401, 403, 404, 405, 406, 409, 412, 413, 415, 416, 422, 428, 429]}}})
NOT_FUZZED = {"/idp/authorize", "/notifications/stream"}  # HTML pages; a stream never ends
OAUTH_PATHS = ("/idp/",)  # errors are OAuth JSON there; everywhere else OperationOutcomes


@dataclass
class Carnet:
    base: str
    headers: dict[str, dict[str, str]]  # principal -> request headers
    known: list[tuple[str, str]]  # (type, id) of stored resources
    session: requests.Session = field(default_factory=requests.Session)


def _known_resources(base: str, token: str) -> list[tuple[str, str]]:
    """A few stored resources of each kind the demo seeds, and its documents' Binaries."""
    headers = {"Authorization": f"Bearer {token}"}
    known: list[tuple[str, str]] = []
    for resource_type in ("Patient", "DocumentReference", "List", "Practitioner"):
        found = httpx.get(f"{base}/fhir/{resource_type}", headers=headers,
                          params={"_count": 2}, timeout=10.0)
        assert found.status_code == 200, found.text
        resources = [entry["resource"] for entry in found.json().get("entry", [])]
        known += [(resource_type, r["id"]) for r in resources
                  if r["resourceType"] == resource_type]
        if resource_type == "DocumentReference":
            known += [("Binary", r["content"][0]["attachment"]["url"].rsplit("/", 1)[1])
                      for r in resources]
    assert {kind for kind, _ in known} == {"Patient", "DocumentReference", "List",
                                           "Practitioner", "Binary"}
    return known


def principals(base: str) -> Carnet:
    """Tokens from the server's own provider, as each principal gets one."""
    professional = log_in(base, f"ps:{DOCTOR.rpps}", "openid scope_all")["access_token"]
    tokens = {"professional": professional,
              "patient": log_in(base, f"ins:{PATIENT.nir}", "openid patient/*.rs")["access_token"],
              "app": app_token(base, APP_SCOPE)}
    headers = {"anonymous": {}} | {who: {"Authorization": f"Bearer {token}"}
                                   for who, token in tokens.items()}
    return Carnet(base, headers, _known_resources(base, professional))


def is_operation_outcome(response: schemathesis.Response) -> bool:
    if response.headers.get("content-type", [""])[0].split(";")[0] != FHIR_JSON:
        return False
    try:
        body = response.json()
    except ValueError:
        return False
    return (isinstance(body, dict) and body.get("resourceType") == "OperationOutcome"
            and bool(body.get("issue"))
            and all(isinstance(issue, dict) and issue.get("severity") and issue.get("code")
                    for issue in body["issue"]))


def contract_failures(case: Case, response: schemathesis.Response,
                      headers: dict[str, str]) -> list[str]:
    """What this answer breaks of the contract (empty when it keeps it)."""
    failures: list[str] = []
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except FailureGroup as group:
        failures += [f"{failure.title}: {failure.message}" for failure in group.exceptions]
    path = case.operation.path
    if (response.status_code >= 400 and not path.startswith(OAUTH_PATHS)
            and path != "/ready" and not is_operation_outcome(response)):
        failures.append(f"a {response.status_code} that is not an OperationOutcome")
    return failures


def _has_inputs(operation: Any) -> bool:
    """Whether there is anything to make invalid (else negative generation cannot start)."""
    return bool(list(operation.path_parameters) or list(operation.query)
                or list(operation.body))


def _strategies(operation: Any, carnet: Carnet) -> list[st.SearchStrategy[Case]]:
    """Valid cases; invalid ones; cases on stored resources; valid Patients to write."""
    strategies = [operation.as_strategy()]
    if _has_inputs(operation):
        strategies.append(operation.as_strategy(GenerationMode.NEGATIVE))
    names = {parameter.name for parameter in operation.path_parameters}
    if {"resource_type", "resource_id"} <= names:
        version = {"version_id": "1"} if "version_id" in names else {}
        strategies.append(st.sampled_from(carnet.known).flatmap(
            lambda known: operation.as_strategy(path_parameters={
                "resource_type": known[0], "resource_id": known[1], **version})))
    if names == {"patient_id"}:
        patients = [known for kind, known in carnet.known if kind == "Patient"]
        strategies.append(st.sampled_from(patients).flatmap(
            lambda known: operation.as_strategy(path_parameters={"patient_id": known})))
    if operation.method.upper() in ("POST", "PUT") and names == {"resource_type"}:
        strategies.append(st.text(min_size=1, max_size=40).flatmap(
            lambda family: operation.as_strategy(path_parameters={"resource_type": "Patient"},
                                                 body=patient(family=family.strip() or "X"),
                                                 media_type=FHIR_JSON)))
    return strategies


@dataclass
class Tally:
    requests: int = 0
    server_errors: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def report(self) -> str:
        """Each kind of failure once (operation, status, what broke), with its first request."""
        first: dict[str, str] = {}
        kinds: Counter[str] = Counter()
        for failure in self.failures:
            kind = failure.splitlines()[0]
            kinds[kind] += 1
            first.setdefault(kind, failure)
        return "\n".join(f"[{count}x] {first[kind]}" for kind, count in kinds.most_common())


def fuzz(operation: Any, carnet: Carnet, strategy: st.SearchStrategy[Case],
         tally: Tally) -> None:
    """Send each generated case as every principal; tally answers and broken promises."""

    @given(case=strategy)
    @settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    def send(case: Case) -> None:
        for who, headers in carnet.headers.items():
            response = case.call(base_url=carnet.base, headers=headers,
                                 session=carnet.session, timeout=30)
            tally.requests += 1
            tally.statuses[response.status_code] += 1
            tally.server_errors += response.status_code >= 500
            tally.failures += [
                f"{operation.label} as {who} -> {response.status_code}: {failure}\n"
                f"  {case.as_curl_command(headers=headers)[:500]}"
                for failure in contract_failures(case, response, headers)]

    send()


@pytest.mark.e2e
def test_every_operation_keeps_the_contract_for_every_principal(live_server: str) -> None:
    carnet = principals(live_server)
    schema = schemathesis.openapi.from_url(f"{live_server}/openapi.json", config=CONFIG)
    operations = [result.ok() for result in schema.get_all_operations()]
    fuzzed = [op for op in operations if op.path not in NOT_FUZZED]
    assert any(op.path == "/fhir/{resource_type}/{resource_id}" for op in fuzzed)
    tally = Tally()
    with contextlib.closing(carnet.session):
        for operation in fuzzed:
            for strategy in _strategies(operation, carnet):
                fuzz(operation, carnet, strategy, tally)
    assert tally.server_errors == 0, tally.report()
    assert tally.failures == [], tally.report()
    # The cases reached past validation and the access rules, not only to refusals.
    assert {200, 201, 400, 401, 403, 404} <= set(tally.statuses), tally.statuses
    figures.add("contract.operations", len(fuzzed) * len(carnet.headers))
    figures.add("contract.requests", tally.requests)
    figures.add("contract.server_errors", tally.server_errors)
    figures.add("contract.nonconforming", len(tally.failures))


# -- What the checks rest on, and what the fuzzing found (in process, both back-ends) -------

def test_the_contract_check_flags_a_server_error_and_a_bare_error(settings: Settings) -> None:
    """The checks above can fail: a 500, and a 404 in plain text, each break the contract."""
    schema = schemathesis.openapi.from_dict(create_app(settings).openapi(), config=CONFIG)
    read = schema["/fhir/{resource_type}/{resource_id}"]["GET"]
    case = read.Case(path_parameters={"resource_type": "Patient", "resource_id": "nobody"})

    def answer(status: int, content_type: str, body: bytes) -> schemathesis.Response:
        request = requests.Request("GET", "http://carnet.test/fhir/Patient/nobody").prepare()
        return schemathesis.Response(status_code=status, content=body, request=request,
                                     headers={"content-type": [content_type]},
                                     elapsed=0.01, verify=True)

    outcome = {"resourceType": "OperationOutcome",
               "issue": [{"severity": "error", "code": "not-found"}]}
    assert contract_failures(case, answer(404, FHIR_JSON, json.dumps(outcome).encode()), {}) == []
    crashed = contract_failures(case, answer(500, "application/json", b'{"detail": "x"}'), {})
    assert any("Server error" in failure for failure in crashed), crashed
    bare = contract_failures(case, answer(404, "text/plain", b"not found"), {})
    assert "a 404 that is not an OperationOutcome" in bare


async def test_an_undeclared_method_is_a_405_operation_outcome(
        client: httpx.AsyncClient) -> None:
    """What the description does not offer is refused as FHIR refuses it."""
    for path in ("/fhir/metadata", "/fhir/Patient", "/fhir/Patient/x/_history", "/health",
                 "/metrics", "/ready"):
        response = await client.request("PATCH", path)
        assert response.status_code == 405, (path, response.text)
        assert response.headers["content-type"].startswith(FHIR_JSON)
        body = response.json()
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["code"] == "not-supported"


async def test_a_batch_envelope_with_unknown_or_mistyped_elements_is_refused(
        client: httpx.AsyncClient) -> None:
    """Found by the fuzzing: only what entries held was validated; such a batch answered 200."""
    for envelope in ({"": None}, {"total": []}, {"signature": "yes"}, {"entry": [[], False]}):
        bundle = {"resourceType": "Bundle", "type": "batch", "entry": [], **envelope}
        response = await client.post("/fhir", json=bundle,
                                     headers={"Content-Type": FHIR_JSON})
        assert response.status_code == 400, (envelope, response.text)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["severity"] == "error"


@pytest.mark.parametrize("where", ["form", "basic"])
async def test_a_nul_in_an_oauth_client_id_is_refused_not_a_500(
        anonymous: httpx.AsyncClient, where: str) -> None:
    """Found by the fuzzing on PostgreSQL, which cannot bind a NUL character: a 500 before."""
    for path in ("/idp/token", "/idp/revoke"):
        form = {"grant_type": "client_credentials", "token": "t"}
        if where == "form":
            response = await anonymous.post(path, data={
                **form, "client_id": "demo\x00app", "client_secret": "s"})
        else:
            response = await anonymous.post(path, data=form, auth=("demo\x00app", "s"))
        assert response.status_code in (400, 401), (path, response.text)
        assert response.json()["error"] in ("invalid_request", "invalid_client")
