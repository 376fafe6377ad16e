"""Request ids and the access log: what an operator can follow, and what never leaks."""

from __future__ import annotations

import logging

import httpx
import orjson
import pytest
from fastapi import FastAPI

from service.ops.logs import JsonFormatter

INS = "253072A07300443"


def access_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """The access records as the JSON formatter writes them."""
    formatter = JsonFormatter()
    return [orjson.loads(formatter.format(r)) for r in caplog.records
            if r.name == "carnet.access"]


async def test_a_sane_request_id_is_kept_and_echoed(ops_http: httpx.AsyncClient,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "carnet.access")
    answer = await ops_http.get("/health", headers={"X-Request-ID": "lb-7f3a.42"})
    assert answer.headers["x-request-id"] == "lb-7f3a.42"
    (line,) = access_lines(caplog)
    assert line["request_id"] == "lb-7f3a.42"
    assert line["route"] == "/health"
    assert line["status"] == 200


@pytest.mark.parametrize("given", ["", "a b", "x" * 65, "id\u00e9", "<script>"])
async def test_a_strange_request_id_is_replaced(given: str,
                                               ops_http: httpx.AsyncClient) -> None:
    answer = await ops_http.get("/health", headers={"X-Request-ID": given.encode()})
    made = answer.headers["x-request-id"]
    assert made != given
    assert len(made) == 32 and all(c in "0123456789abcdef" for c in made)


async def test_each_request_has_its_own_id(ops_http: httpx.AsyncClient) -> None:
    ids = {(await ops_http.get("/health")).headers["x-request-id"] for _ in range(3)}
    assert len(ids) == 3


async def test_the_access_line_names_the_route_never_the_path_or_query(
        ops_http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    await ops_http.get(f"/fhir/Patient/{INS}")
    await ops_http.get("/fhir/DocumentReference",
                       params={"patient.identifier": f"urn:oid:1.2.250.1.213.1.4.10|{INS}",
                               "family": "CORSE"})
    lines = access_lines(caplog)
    assert [line["route"] for line in lines] == ["/fhir/{resource_type}/{resource_id}",
                                                 "/fhir/{resource_type}"]
    assert all(line["status"] == 401 for line in lines)
    logged = "\n".join(JsonFormatter().format(r) for r in caplog.records)
    assert INS not in logged
    assert "CORSE" not in logged


async def test_an_unexpected_error_is_an_incident_under_the_request_id(
        ops_app: FastAPI, caplog: pytest.LogCaptureFixture) -> None:
    @ops_app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    transport = httpx.ASGITransport(app=ops_app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://carnet.test") as http:
        answer = await http.get("/boom", headers={"X-Request-ID": "incident-1"})
    assert answer.status_code == 500
    assert answer.json()["issue"][0]["diagnostics"] == "internal error (incident incident-1)"
    errors = [r for r in caplog.records if r.name == "carnet" and r.levelno == logging.ERROR]
    assert len(errors) == 1
    entry = orjson.loads(JsonFormatter().format(errors[0]))
    assert entry["request_id"] == "incident-1"
    assert "RuntimeError: a bug" in entry["exception"]
    assert [line["status"] for line in access_lines(caplog)] == [500]
