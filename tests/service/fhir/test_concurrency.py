"""Concurrent writers: optimistic locking never loses an update."""

from __future__ import annotations

import asyncio

import httpx

from tests.factories import FHIR_JSON, IPP_SYSTEM, patient
from tests.reliability import figures


async def test_concurrent_updates_with_the_same_if_match_let_exactly_one_win(
        client: httpx.AsyncClient) -> None:
    created = (await client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)).json()

    async def update(i: int) -> int:
        body = {**created, "name": [{"family": f"Writer{i}"}]}
        response = await client.put(f"/fhir/Patient/{created['id']}", json=body,
                                    headers={**FHIR_JSON, "If-Match": 'W/"1"'})
        return response.status_code

    statuses = await asyncio.gather(*(update(i) for i in range(8)))
    assert sorted(statuses) == [200] + [412] * 7
    final = (await client.get(f"/fhir/Patient/{created['id']}")).json()
    assert final["meta"]["versionId"] == "2"
    history = (await client.get(f"/fhir/Patient/{created['id']}/_history")).json()
    assert len(history["entry"]) == 2
    figures.add("concurrency.racing_requests", len(statuses))
    figures.add("concurrency.lost_updates", 0)


async def test_concurrent_updates_without_if_match_all_land_in_history(
        client: httpx.AsyncClient) -> None:
    created = (await client.post("/fhir/Patient", json=patient(), headers=FHIR_JSON)).json()

    async def update(i: int) -> int:
        body = {**created, "name": [{"family": f"Writer{i}"}]}
        return (await client.put(f"/fhir/Patient/{created['id']}", json=body,
                                 headers=FHIR_JSON)).status_code

    statuses = await asyncio.gather(*(update(i) for i in range(6)))
    assert statuses == [200] * 6
    history = (await client.get(f"/fhir/Patient/{created['id']}/_history")).json()
    assert sorted(int(e["response"]["etag"][3:-1]) for e in history["entry"]) == list(range(1, 8))
    figures.add("concurrency.racing_requests", len(statuses))
    figures.add("concurrency.lost_updates", 0)


async def test_concurrent_conditional_creates_create_one_resource(
        client: httpx.AsyncClient) -> None:
    nir = "253072A07300443"
    headers = {**FHIR_JSON, "If-None-Exist": f"identifier={IPP_SYSTEM}|{nir}"}

    async def create() -> int:
        return (await client.post("/fhir/Patient", json=patient(ipp=nir),
                                  headers=headers)).status_code

    statuses = await asyncio.gather(*(create() for _ in range(6)))
    assert sorted(statuses) == [200] * 5 + [201]
    total = (await client.get("/fhir/Patient", params={"_summary": "count"})).json()["total"]
    assert total == 1
    figures.add("concurrency.racing_requests", len(statuses))
    figures.add("concurrency.duplicates", 0)
