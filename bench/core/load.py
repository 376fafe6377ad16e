"""Bulk-loading the Patients that the read and search figures run over.

The load is checked (row counts, spot-checked answers) before anything is
measured, so a fast but wrong server can never produce a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import quote

from . import IPP_SYSTEM, WORK, BenchError
from .database import admin
from .server import Server

FAMILIES = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
            "Leroy", "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David",
            "Bertrand", "Roux", "Vincent", "Fournier"]
GIVENS = ["Jean", "Marie", "Pierre", "Camille", "Louis", "Chloé", "Hugo", "Léa", "Jules",
          "Manon", "Gabriel", "Inès", "Arthur", "Jade", "Raphaël", "Zoé", "Adam", "Emma",
          "Noé", "Alice"]



def patient(rng: random.Random, value: str) -> dict[str, Any]:
    year = rng.randint(1930, 2020)
    return {"resourceType": "Patient",
            "identifier": [{"system": IPP_SYSTEM, "value": value}],
            "name": [{"family": rng.choice(FAMILIES), "given": [rng.choice(GIVENS)]}],
            "gender": rng.choice(("male", "female")),
            "birthDate": f"{year:04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}"}


async def post_bundles(base: str, auth: dict[str, str], count: int, loaders: int,
                       make: Callable[[int, random.Random], dict[str, Any]],
                       on_answer: Callable[[int, list[dict[str, Any]]], None] | None = None,
                       unit: str = "resources", size: Callable[[int], int] = lambda _i: 1,
                       total: int | None = None) -> None:
    """POST ``count`` transaction Bundles (``make(index, rng)``) from ``loaders`` concurrent
    clients; every Bundle must answer 200 and each of its entries 201 (else BenchError).
    ``on_answer(index, response entries)`` sees each answer; progress is printed in ``unit``
    (``size(index)`` of them per Bundle, ``total`` in all)."""
    import httpx
    import orjson

    total = total if total is not None else count
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(count):
        queue.put_nowait(index)
    done = 0
    next_report = 0.0
    started = time.perf_counter()

    async def loader(number: int, client: httpx.AsyncClient) -> None:
        nonlocal done, next_report
        rng = random.Random(number)
        while True:
            try:
                index = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            bundle = make(index, rng)
            response = await client.post("/fhir", content=orjson.dumps(bundle))
            if response.status_code != 200:
                raise BenchError(f"load Bundle answered {response.status_code}: "
                                 f"{response.text[:2000]}")
            entries = response.json().get("entry", [])
            if len(entries) != len(bundle["entry"]):
                raise BenchError(f"load Bundle of {len(bundle['entry'])} answered "
                                 f"{len(entries)} entries")
            for e in entries:
                if not e["response"]["status"].startswith("201"):
                    raise BenchError(f"load entry answered {e['response']}")
            if on_answer is not None:
                on_answer(index, entries)
            done += size(index)
            elapsed = time.perf_counter() - started
            if done / total >= next_report or done == total:
                print(f"  loaded {done:>9,}/{total:,} {unit} ({done / elapsed:,.0f}/s)",
                      flush=True)
                next_report += 0.1

    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json",
               **auth}
    async with httpx.AsyncClient(base_url=base, headers=headers, timeout=600) as client:
        await asyncio.gather(*(loader(k, client) for k in range(loaders)))


async def post_resources(base: str, auth: dict[str, str], n: int, bundle_size: int,
                         loaders: int,
                         resource: Callable[[int, random.Random], dict[str, Any]]) -> list[str]:
    """Create ``resource(i, rng)`` for i < n through transaction Bundles of ``bundle_size``;
    returns the assigned ids, in order."""
    chunks = [range(start, min(start + bundle_size, n)) for start in range(0, n, bundle_size)]
    ids: list[str | None] = [None] * n

    def make(index: int, rng: random.Random) -> dict[str, Any]:
        resources = [resource(i, rng) for i in chunks[index]]
        return {"resourceType": "Bundle", "type": "transaction",
                "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": r,
                           "request": {"method": "POST", "url": r["resourceType"]}}
                          for r in resources]}

    def on_answer(index: int, entries: list[dict[str, Any]]) -> None:
        for i, e in zip(chunks[index], entries, strict=True):
            ids[i] = e["response"]["location"].split("/")[1]  # Type/<id>/_history/1

    await post_bundles(base, auth, len(chunks), loaders, make, on_answer,
                       size=lambda index: len(chunks[index]), total=n)
    assert all(i is not None for i in ids)
    return ids  # type: ignore[return-value]


async def _load(base: str, auth: dict[str, str], n: int, bundle_size: int,
                loaders: int) -> list[tuple[str, str]]:
    """POST transaction Bundles; returns (identifier value, assigned id) for every Patient."""
    values = [f"1{i:014d}" for i in range(n)]  # 15 digits, unique
    ids = await post_resources(base, auth, n, bundle_size, loaders,
                               lambda i, rng: patient(rng, values[i]))
    return list(zip(values, ids, strict=True))


def load(args: argparse.Namespace, server: Server, db_url: str) -> dict[str, Any]:
    n = args.resources
    print(f"loading {n:,} Patients: transaction Bundles of {args.bundle_size}, "
          f"{args.loaders} concurrent loaders", flush=True)
    started = time.perf_counter()
    pairs = asyncio.run(_load(server.url, server.headers, n, args.bundle_size, args.loaders))
    seconds = time.perf_counter() - started
    counts = admin(args, database=args.db_name, fetch=(
        "SELECT (SELECT count(*) FROM resource WHERE resource_type = 'Patient') AS resources, "
        "(SELECT count(*) FROM token_index WHERE resource_type = 'Patient' "
        f" AND param = 'identifier' AND system = '{IPP_SYSTEM}') AS identifiers"))[0]
    if counts["resources"] != n or counts["identifiers"] != n:
        raise BenchError(f"after loading {n} Patients the database holds {counts['resources']} "
                         f"resources and {counts['identifiers']} identifier index rows")
    vacuum_started = time.perf_counter()
    admin(args, "VACUUM ANALYZE", database=args.db_name)
    vacuum_seconds = time.perf_counter() - vacuum_started
    size = admin(args, database=args.db_name,
                 fetch="SELECT pg_size_pretty(pg_database_size(current_database())) AS s")[0]["s"]
    print(f"  {n:,} Patients in {seconds:.1f}s ({n / seconds:,.0f}/s); VACUUM ANALYZE "
          f"{vacuum_seconds:.1f}s; database {size}", flush=True)

    rng = random.Random(7)
    shuffled = pairs[:]
    rng.shuffle(shuffled)
    read_paths = WORK / "read_paths.txt"
    search_paths = WORK / "search_paths.txt"
    read_paths.write_text("".join(f"/fhir/Patient/{rid}\n" for _, rid in shuffled))
    rng.shuffle(shuffled)
    search_paths.write_text("".join(
        f"/fhir/Patient?identifier={quote(IPP_SYSTEM + '|' + value, safe='')}\n"
        for value, _ in shuffled))
    spot_check(server.url, server.headers, rng.sample(pairs, min(50, n)))
    return {"seconds": seconds, "rate": n / seconds, "db_size": size,
            "read_paths": read_paths, "search_paths": search_paths}


def spot_check(base: str, auth: dict[str, str], sample: list[tuple[str, str]]) -> None:
    """Read and search answers must be right, not only fast."""
    import httpx

    with httpx.Client(base_url=base,
                      headers={"Accept": "application/fhir+json", **auth}) as client:
        for value, rid in sample:
            r = client.get(f"/fhir/Patient/{rid}")
            body = r.json()
            if r.status_code != 200 or body.get("id") != rid or \
                    body["identifier"][0]["value"] != value:
                raise BenchError(f"read Patient/{rid} answered {r.status_code}: {r.text[:500]}")
            r = client.get("/fhir/Patient", params={"identifier": f"{IPP_SYSTEM}|{value}"})
            body = r.json()
            found = [e["resource"]["id"] for e in body.get("entry", [])]
            if r.status_code != 200 or body.get("total") != 1 or found != [rid]:
                raise BenchError(f"search identifier={value} answered {r.status_code} "
                                 f"total={body.get('total')} ids={found}, expected [{rid}]")
    print(f"  spot check: {len(sample)} reads and searches answered correctly", flush=True)

