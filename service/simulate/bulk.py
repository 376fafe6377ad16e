"""A fast bulk path for a national-scale corpus, through the normal filing code.

``bulk_load`` fills a Carnet (in process, no HTTP) with ``patients`` FR Core INS Patients
numbered ``first_patient ..`` and ``documents_per_patient`` synthetic documents each
(``corpus.py``), so that a corpus can be grown in stages (0..999, then 1000..9999, ...).
Nothing is written around the service: the mock national directories are seeded as
``service/demo.py`` seeds them, and every Patient and document goes through
``service.fhir.transaction.process`` with ``Access.of_carnet()``, as ``seed_demo`` files the
demo's: the same structure and PDSm validation, INSi check, search indexing, document
registry (masterIdentifiers, re-send answers) and outbox events as any ITI-65 (Carnet's own
work: the access policy does not apply and leaves no access audit record, as for the demo).

Where the speed comes from, validation and indexing untouched:

- one ITI-65 Bundle per patient holding all their documents (one SubmissionSet listing
  ``documents_per_patient`` DocumentReferences and their Binaries): one database
  transaction per patient, not per document;
- the Patients of a chunk in one transaction Bundle (conditional creates), the directory
  entries of a chunk in one transaction;
- the documents (PDFs, CDA, Bundles) generated in worker processes, ahead of the filing,
  while the main process validates and writes;
- ``tasks`` chunks filed concurrently (PostgreSQL overlaps their round trips and commits;
  SQLite queues its single writer);
- on PostgreSQL, ``processes`` filing processes: the filing is Python work (validation,
  SQL statements), one core per process, and the database is far from busy (2,000 x 10
  on 2 cores: 129 documents/s with one process, 243 with two);
- small contents (``max_bytes``, 64 kB by default) so that blob writes do not dominate.

Everything is drawn from ``seed`` and the patient's number alone, so that loading a stage
again files nothing new: the Patients are conditional creates (by INS) and each patient's
Bundle is the same, with the same masterIdentifiers, which the registry answers as a
re-send (``200 OK``, same ids) without storing anything.

The outbox: each filed document writes its ``document`` event, in the filing's
transaction, as always. A bulk load is a back-fill (documents a national record already
held), so by default (``notify=False``) the events are kept, for the record's history and
the portal's live stream, but marked as already fanned out right after their filing: the
dispatcher would otherwise turn a million of them into a million inbox notices, e-mails and
webhook calls about old documents. ``notify=True`` leaves them to the dispatcher, as a live
filing would.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import multiprocessing
import queue
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import update

from service.access import Access
from service.fhir.transaction import BundleContext, process
from service.identity import name_key
from service.simulate import corpus
from storage import directory as national
from storage.blobs import BlobStore
from storage.db import Database
from storage.outbox import OUTBOX

BASE = "http://127.0.0.1:8000/fhir"  # the base the filing's absolute references would use
CHUNK = 50  # patients per chunk: one directory transaction, one Patient Bundle
_PLACEHOLDER = "Patient/bulk-placeholder"


@dataclass
class LoadStats:
    patients: int
    documents: int
    seconds: float

    @property
    def documents_per_second(self) -> float:
        return self.documents / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class _Planned:
    """One patient, ready to file: their identity, Patient resource and ITI-65 Bundle
    (whose subject is filled in once the Patient has its id)."""

    index: int
    identity: corpus.Identity
    patient: dict[str, Any]
    bundle: dict[str, Any]


def organisations_for(professionals: int) -> int:
    """How many organisations the directory of ``professionals`` spreads over."""
    return max(5, professionals // 10)


@functools.lru_cache(maxsize=4)
def professionals_of(seed: int, professionals: int) -> tuple[corpus.Professional, ...]:
    """The directory of one seed: the same for every stage."""
    return tuple(corpus.directory(random.Random(seed), professionals,
                                  organisations_for(professionals)))


def _attending(people: tuple[corpus.Professional, ...]) -> list[corpus.Professional]:
    """Who can be a patient's attending doctor: the generalists, failing that any médecin."""
    generalists = [p for p in people if p.profession_code == "10" and p.specialty == "SM54"]
    return generalists or [p for p in people if p.profession_code == "10"] or list(people)


def _author_and_kind(rng: random.Random, people: tuple[corpus.Professional, ...],
                     who: corpus.Identity) -> tuple[corpus.Professional, corpus.DocumentKind]:
    """A kind in the shared record's proportions and someone who writes it for ``who``."""
    kind = corpus.pick_kind(rng)
    try:
        return corpus.pick_author(rng, kind, people, who), kind
    except ValueError:  # nobody of a small directory writes it: an author, then their kind
        author = rng.choice(people)
        return author, corpus.pick_kind_for(rng, author, who)


def plan_patient(seed: int, index: int, documents: int, professionals: int,
                 max_bytes: int) -> _Planned:
    """Patient ``index`` of ``seed``: drawn from the seed and the index alone."""
    people = professionals_of(seed, professionals)
    rng = random.Random(f"carnet-bulk:{seed}:{index}")
    who = corpus.identity(rng, index)
    patient = corpus.patient_resource(who, rng.choice(_attending(people)))
    merged: dict[str, Any] | None = None
    for _ in range(documents):
        author, kind = _author_and_kind(rng, people, who)
        one, _size = corpus.submission(rng, _PLACEHOLDER, who, author, kind,
                                       max_bytes=max_bytes)
        if merged is None:
            merged = one
            continue
        # One SubmissionSet (the first one's) lists every document of the patient.
        submission_set = merged["entry"][0]["resource"]
        added = one["entry"][1:]
        submission_set["entry"].extend(
            {"item": {"reference": e["fullUrl"]}} for e in added
            if e["resource"]["resourceType"] == "DocumentReference")
        merged["entry"].extend(added)
    assert merged is not None
    return _Planned(index, who, patient, merged)


def plan_chunk(seed: int, indexes: range, documents: int, professionals: int,
               max_bytes: int) -> list[_Planned]:
    return [plan_patient(seed, i, documents, professionals, max_bytes) for i in indexes]


def _with_subject(bundle: dict[str, Any], patient_id: str) -> dict[str, Any]:
    subject = {"reference": f"Patient/{patient_id}"}
    for e in bundle["entry"]:
        resource = e["resource"]
        if resource["resourceType"] in ("List", "DocumentReference"):
            resource["subject"] = subject
    return bundle


def _patients_bundle(planned: list[_Planned]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:00000000-0000-4000-8000-{p.index:012d}", "resource": p.patient,
         "request": {"method": "POST", "url": "Patient",
                     "ifNoneExist": f"identifier={p.identity.system}|{p.identity.nir}"}}
        for p in planned]}


def _chunks(first: int, count: int, size: int) -> Iterator[range]:
    end = first + count
    for start in range(first, end, size):
        yield range(start, min(start + size, end))


def _pool(workers: int) -> concurrent.futures.ProcessPoolExecutor:
    """Workers that only draw documents (pure Python, no database, no event loop). Forked
    where possible: a spawned worker would import the caller's main script again (a script
    without a ``__main__`` guard, or pytest, would run twice)."""
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    return concurrent.futures.ProcessPoolExecutor(workers,
                                                  mp_context=multiprocessing.get_context(method))


async def seed_professionals(db: Database, people: tuple[corpus.Professional, ...]) -> None:
    """The RPPS directory mock, as ``seed_directories`` fills it (a refresh when present)."""
    async with db.write() as conn:
        for person in people:
            await national.put_professional(conn, corpus.directory_professional(person))


@dataclass(frozen=True)
class _Load:
    """What every filing task (and process) of one load shares."""

    seed: int
    documents: int
    professionals: int
    max_bytes: int
    tasks: int
    notify: bool
    generators: int


async def bulk_load(db: Database, blobs: BlobStore, *, first_patient: int, patients: int,
                    documents_per_patient: int, professionals: int = 200, seed: int = 1,
                    tasks: int = 4, max_bytes: int = 64_000,
                    progress: Callable[[int, int], None] | None = None,
                    notify: bool = False, generators: int | None = None,
                    processes: int = 1) -> LoadStats:
    """Load patients ``first_patient .. first_patient + patients - 1`` and their documents.

    ``progress(documents filed so far, documents in all)`` is called after each patient.
    ``tasks``: chunks of patients filed concurrently (per process). ``generators``: worker
    processes drawing the documents (default 1, which draws faster than a process files;
    0 draws them in the filing process). ``processes``: filing processes (PostgreSQL with
    a local blob store only, forked, each with its own connections; else 1): validation
    and indexing are Python work, one core per process. A submission the service refuses
    raises its FhirError (in a filing process: RuntimeError with its message): a bulk load
    stops at the first problem rather than leave a corpus with holes.
    """
    if patients < 0 or documents_per_patient < 1 or tasks < 1 or processes < 1:
        raise ValueError("patients >= 0, documents_per_patient >= 1, tasks >= 1, "
                         "processes >= 1")
    started = time.perf_counter()
    await seed_professionals(db, professionals_of(seed, professionals))
    total = patients * documents_per_patient
    load = _Load(seed, documents_per_patient, professionals, max_bytes, tasks, notify,
                 1 if generators is None else generators)
    chunks = list(_chunks(first_patient, patients, CHUNK))
    done = [0]

    def filed(count: int) -> None:
        done[0] += count
        if progress is not None:
            progress(done[0] * documents_per_patient, total)

    if processes > 1 and len(chunks) > 1 and _can_fork(db, blobs):
        await _in_processes(db, blobs, chunks, load, min(processes, len(chunks)), filed)
    else:
        await _file(db, blobs, chunks, load, filed)
    return LoadStats(done[0], done[0] * documents_per_patient, time.perf_counter() - started)


def _can_fork(db: Database, blobs: BlobStore) -> bool:
    from storage.blobs.local import LocalBlobStore

    return (db.is_postgresql and isinstance(blobs, LocalBlobStore)
            and "fork" in multiprocessing.get_all_start_methods())


async def _file(db: Database, blobs: BlobStore, chunks: list[range], load: _Load,
                filed: Callable[[int], None]) -> None:
    """File ``chunks`` in this process: ``load.tasks`` chunks at a time, drawn ahead by
    ``load.generators`` worker processes; ``filed(1)`` after each patient."""
    context = BundleContext(BASE, Access.of_carnet(), 20, 100, return_representation=False,
                            blobs=blobs)
    plan = functools.partial(plan_chunk, load.seed, documents=load.documents,
                             professionals=load.professionals, max_bytes=load.max_bytes)
    pool = _pool(load.generators) if load.generators > 0 else None
    loop = asyncio.get_running_loop()
    tasks = load.tasks
    ahead = tasks + load.generators + 1  # chunks being drawn at most: memory stays bounded
    pending: asyncio.Queue[asyncio.Future[list[_Planned]] | None] = asyncio.Queue(ahead)

    async def produce() -> None:
        for indexes in chunks:
            future: asyncio.Future[list[_Planned]]
            if pool is not None:
                future = loop.run_in_executor(pool, plan, indexes)
            else:
                future = loop.create_future()
                future.set_result(plan(indexes))
            await pending.put(future)
        for _ in range(tasks):
            await pending.put(None)

    async def file_chunk(planned: list[_Planned]) -> None:
        async with db.write() as conn:  # the INSi mock knows them before they are filed
            for p in planned:
                who = corpus.directory_identity(p.identity)
                await national.put_identity(conn, who, name_key(who.birth_family_name))
        answer = orjson.loads(await process(db, _patients_bundle(planned), context))
        ids = [e["response"]["location"].split("/")[1] for e in answer["entry"]]
        for p, patient_id in zip(planned, ids, strict=True):
            await process(db, _with_subject(p.bundle, patient_id), context)
            filed(1)
        if not load.notify:  # a back-fill: the events stay, the dispatcher has nothing to send
            async with db.write() as conn:
                await conn.execute(update(OUTBOX).where(
                    OUTBOX.c.patient_id.in_(ids), OUTBOX.c.fanned_out == False)  # noqa: E712
                    .values(fanned_out=True))

    async def consume() -> None:
        while (future := await pending.get()) is not None:
            await file_chunk(await future)

    try:
        async with asyncio.TaskGroup() as group:  # the first failure cancels the others
            group.create_task(produce())
            for _ in range(tasks):
                group.create_task(consume())
    except BaseExceptionGroup as failed:  # the first problem, as the caller would expect it
        raise failed.exceptions[0] from None
    finally:
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


async def _in_processes(db: Database, blobs: BlobStore, chunks: list[range], load: _Load,
                        processes: int, filed: Callable[[int], None]) -> None:
    """File ``chunks`` from ``processes`` forked processes (every ``processes``-th chunk
    each), each with its own connections; their progress and failures come back here."""
    context = multiprocessing.get_context("fork")
    messages: Any = context.Queue()
    pool_size = load.tasks + 2
    children = [context.Process(target=_child, name=f"carnet-bulk-{k}",
                                args=(k, db.url, pool_size, blobs, chunks[k::processes],
                                      load, messages))
                for k in range(processes)]
    for child in children:
        child.start()
    running = set(range(processes))
    loop = asyncio.get_running_loop()
    try:
        while running:
            try:
                message = await loop.run_in_executor(None, messages.get, True, 1.0)
            except queue.Empty:  # a process killed (out of memory...) says nothing
                died = [k for k in running if children[k].exitcode not in (None, 0)]
                if died:
                    raise RuntimeError(f"bulk filing process {died[0]} died (exit code "
                                       f"{children[died[0]].exitcode})") from None
                continue
            kind, k, value = message
            if kind == "filed":
                filed(value)
            elif kind == "done":
                running.discard(k)
            else:
                raise RuntimeError(f"bulk filing process {k}: {value}")
    finally:
        for k in running:  # after a failure: the others stop too
            children[k].terminate()
        for child in children:
            await loop.run_in_executor(None, child.join)


def _child(k: int, url: str, pool_size: int, blobs: BlobStore, chunks: list[range],
           load: _Load, messages: Any) -> None:
    """A forked filing process: its own event loop and connections (the parent's are never
    used here; the process ends with os._exit, so nothing of the parent's is closed)."""

    async def run() -> None:
        db = Database(url, pool_size=pool_size)
        try:
            await _file(db, blobs, chunks, load, lambda n: messages.put(("filed", k, n)))
        finally:
            await db.dispose()

    try:
        asyncio.run(run())
    except BaseException as exc:  # reported to the parent, which raises
        messages.put(("error", k, f"{type(exc).__name__}: {exc}"))
    else:
        messages.put(("done", k, None))
