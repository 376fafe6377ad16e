"""The ``carnet`` command."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import click
import orjson
import uvicorn
from pydantic import ValidationError

from auth.keys import KeyStore
from service import mint
from service.mint import lookup
from service.ops.logs import configure_logging
from service.ops.metrics import MULTIPROCESS_DIR_VARIABLE
from service.ops.observe import ObservedRequests
from service.settings import Settings
from storage.blobs import open_blob_store
from storage.db import Database


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise click.ClickException(configuration_errors(exc)) from exc


def configuration_errors(exc: ValidationError) -> str:
    """One line per bad variable, by its environment name; values are never echoed."""
    lines = [f"  CARNET_{'_'.join(str(p) for p in error['loc']).upper()}: {error['msg']}"
             for error in exc.errors(include_input=False)]
    return "invalid configuration (see the README's Configuration table):\n" + "\n".join(lines)


async def _prepare(settings: Settings, demo: bool) -> dict[str, object] | None:
    db = Database(settings.effective_database_url, pool_size=2)
    blobs = open_blob_store(settings.blob_url, settings.data_dir)
    try:
        await db.migrate()
        if demo:
            from service.demo import seed_demo

            return await seed_demo(db, blobs, f"{settings.local_url}/fhir")
        return None
    finally:
        await db.dispose()
        await blobs.close()


@click.group(help="Carnet: health-document exchange over FHIR R4.")
def main() -> None:
    pass


@main.command(help="Run the HTTP service (FHIR API at /fhir).")
@click.option("--demo", is_flag=True, help="Seed demo data first (embedded SQLite by default).")
@click.option("--host", default=None, help="Listen address (CARNET_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (CARNET_PORT, default 8000).")
@click.option("--workers", type=int, default=1, show_default=True, help="Worker processes.")
def serve(demo: bool, host: str | None, port: int | None, workers: int) -> None:
    if host:
        os.environ["CARNET_HOST"] = host
    if port:
        os.environ["CARNET_PORT"] = str(port)
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    asyncio.run(_prepare(settings, demo))
    click.echo(f"Carnet FHIR API on {settings.local_url}/fhir "
               f"(database: {settings.effective_database_url.split('://')[0]})", err=True)
    with shared_metrics(workers):
        # Live streams (Server-Sent Events) never end by themselves: a stop waits 5 s for
        # the requests in flight, then closes them. Access lines come from Carnet's own
        # middleware (route templates, never paths that may carry an INS).
        uvicorn.run("service.app:create_app", factory=True, host=settings.host,
                    port=settings.port, workers=workers, log_level=settings.log_level,
                    log_config=None, access_log=False, timeout_graceful_shutdown=5)


@contextlib.contextmanager
def shared_metrics(workers: int) -> Iterator[None]:
    """Several workers count into files of one directory, so that whichever worker
    answers ``/metrics`` answers for all (prometheus_client's multiprocess mode)."""
    if workers <= 1 or os.environ.get(MULTIPROCESS_DIR_VARIABLE):
        yield
        return
    directory = tempfile.mkdtemp(prefix="carnet-metrics-")
    os.environ[MULTIPROCESS_DIR_VARIABLE] = directory
    try:
        yield
    finally:
        del os.environ[MULTIPROCESS_DIR_VARIABLE]
        shutil.rmtree(directory, ignore_errors=True)


@main.command(help="Create or upgrade the database schema.")
def migrate() -> None:
    asyncio.run(_prepare(_settings(), demo=False))
    click.echo("schema is up to date", err=True)


@main.command(help="Seed data.")
@click.option("--demo", is_flag=True, required=True, help="Seed the demo data set.")
@click.option("--json", "as_json", is_flag=True, help="Print what was seeded as JSON.")
def seed(demo: bool, as_json: bool) -> None:
    response = asyncio.run(_prepare(_settings(), demo=demo))
    if as_json:
        sys.stdout.write(orjson.dumps(response, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        click.echo("demo data seeded", err=True)


@main.command("bulk-load", help="Load a synthetic corpus in process (directories, Patients, "
                                "ITI-65 Bundles) through the normal validation and indexing; "
                                "re-loading a stage files nothing new.")
@click.option("--patients", type=click.IntRange(1), required=True,
              help="Patients to load (numbered from --first-patient).")
@click.option("--documents-per-patient", type=click.IntRange(1), required=True,
              help="Documents per patient (one ITI-65 Bundle each patient).")
@click.option("--first-patient", type=click.IntRange(0), default=0, show_default=True,
              help="Number of the first patient (grow a corpus in stages).")
@click.option("--tasks", type=click.IntRange(1, 64), default=4, show_default=True,
              help="Patients filed concurrently.")
@click.option("--processes", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Filing processes (PostgreSQL and local blobs; one core each).")
@click.option("--seed", type=int, default=1, show_default=True,
              help="The corpus's seed (the same for every stage of one corpus).")
@click.option("--max-bytes", type=click.IntRange(4096), default=64_000, show_default=True,
              help="Largest generated document.")
@click.option("--notify", is_flag=True,
              help="Leave the documents' events to the dispatcher (default: a back-fill, "
                   "the events are kept but marked as already fanned out).")
def bulk_load(patients: int, documents_per_patient: int, first_patient: int, tasks: int,
              processes: int, seed: int, max_bytes: int, notify: bool) -> None:
    import time

    from service.simulate.bulk import bulk_load as load

    settings = _settings()
    live = sys.stderr.isatty()
    shown = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if done == total or now - shown[0] >= (0.5 if live else 10.0):
            shown[0] = now
            click.echo(("\r" if live else "") + f"{done:,} / {total:,} documents",
                       err=True, nl=not live)

    async def run() -> Any:
        db = Database(settings.effective_database_url, pool_size=tasks + 2)
        store = open_blob_store(settings.blob_url, settings.data_dir)
        try:
            await db.migrate()
            return await load(db, store, first_patient=first_patient, patients=patients,
                              documents_per_patient=documents_per_patient, seed=seed,
                              tasks=tasks, max_bytes=max_bytes, progress=progress,
                              notify=notify, processes=processes)
        finally:
            await db.dispose()
            await store.close()

    stats = asyncio.run(run())
    if live:
        click.echo(err=True)
    click.echo(f"{stats.patients:,} patients, {stats.documents:,} documents in "
               f"{stats.seconds:.1f} s ({stats.documents_per_second:,.0f} documents/s)")


@main.command(help="Run the mock Pro Santé Connect identity provider on its own.")
@click.option("--host", default=None, help="Listen address (CARNET_HOST, default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port (CARNET_PORT, default 8000).")
def idp(host: str | None, port: int | None) -> None:
    from auth.idp.app import standalone_app
    from service.app import idp_config
    from service.ops.headers import install_edge

    if host:
        os.environ["CARNET_HOST"] = host
    if port:
        os.environ["CARNET_PORT"] = str(port)
    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)
    config = idp_config(settings, KeyStore(settings.effective_keys_dir))
    click.echo(f"mock Pro Santé Connect: issuer {config.issuer}", err=True)
    app = standalone_app(config, settings.effective_database_url)
    install_edge(app, settings)  # security headers (and CORS) as on the API
    app.add_middleware(ObservedRequests)  # request ids and access lines, as for the API
    uvicorn.run(app, host=settings.host,
                port=settings.port, log_level=settings.log_level, log_config=None,
                access_log=False)


@main.group(help="The identity provider's signing keys.")
def keys() -> None:
    pass


@keys.command(help="Add a new signing key; older keys stay published until their tokens expire.")
@click.option("--keep", type=int, default=None,
              help="Seconds the previous keys stay in the JWKS (default: token lifetime + leeway).")
def rotate(keep: int | None) -> None:
    settings = _settings()
    keep_seconds = keep if keep is not None else settings.access_token_ttl + settings.token_leeway
    kid = KeyStore(settings.effective_keys_dir).rotate(keep_seconds)
    click.echo(f"new signing key {kid}; previous keys published for {keep_seconds} s more",
               err=True)


def _minted(minting: Coroutine[Any, Any, str]) -> str:
    try:
        return asyncio.run(minting)
    except mint.CannotMint as exc:
        raise click.ClickException(str(exc)) from exc


@main.group(help="Print a bearer token for scripts and harnesses (same data directory).")
def token() -> None:
    pass


@token.command("professional", help="A Pro Santé Connect (e-CPS) token for a professional.")
@click.option("--rpps", required=True, help="11-digit RPPS number from the directory.")
@click.option("--scope", default="openid scope_all", show_default=True)
def token_professional(rpps: str, scope: str) -> None:
    from auth.idp.claims import professional_subject

    click.echo(_minted(mint.user_token(_settings(), professional_subject(rpps), scope)))


@token.command("patient", help="A token for a patient identified by INS.")
@click.option("--ins", "nir", required=True, help="The patient's 15-character INS (NIR).")
@click.option("--scope", default="openid patient/*.rs", show_default=True)
def token_patient(nir: str, scope: str) -> None:
    from auth.idp.claims import patient_subject

    click.echo(_minted(mint.user_token(_settings(), patient_subject(nir), scope)))


@token.command("app", help="A client-credentials token for a registered app.")
@click.option("--client-id", required=True)
@click.option("--scope", required=True, help='e.g. "system/DocumentReference.rs"')
def token_app(client_id: str, scope: str) -> None:
    click.echo(_minted(mint.app_token(_settings(), client_id, scope)))



@main.group(help="The document blob store.")
def blobs() -> None:
    pass


@blobs.command("gc", help="Delete blobs that no Binary references (older than the grace period).")
@click.option("--grace", type=int, default=None,
              help="Seconds an unreferenced blob is kept (default CARNET_BLOB_GC_GRACE).")
def blobs_gc(grace: int | None) -> None:
    from service.documents.gc import collect_garbage

    settings = _settings()

    async def run() -> int:
        db = Database(settings.effective_database_url, pool_size=2)
        store = open_blob_store(settings.blob_url, settings.data_dir)
        try:
            await db.migrate()
            return await collect_garbage(db, store, settings.blob_gc_grace
                                         if grace is None else grace)
        finally:
            await db.dispose()
            await store.close()

    click.echo(f"removed {asyncio.run(run())} unreferenced blob(s)", err=True)


@main.group(help="The tamper-evident audit trail.")
def audit() -> None:
    pass


@audit.command("verify", help="Recompute every patient's audit hash chain; exit 1 if broken.")
def audit_verify() -> None:
    from storage.audit import VerifyReport, verify_chains

    report: VerifyReport = asyncio.run(lookup(_settings(), verify_chains))
    click.echo(f"checked {report.entries} audit entries of {report.patients} patient(s)")
    for link in report.problems:
        click.echo(f"broken: patient {link.patient_id} seq {link.seq}: {link.problem}")
    if report.problems:
        raise SystemExit(1)


@main.command(help="Run the outbox dispatcher as its own process (production: several may run; "
                   "set CARNET_DISPATCHER_ENABLED=false on the API processes then).")
@click.option("--once", is_flag=True, help="Deliver what is due now, then exit.")
def dispatcher(once: bool) -> None:
    from service.notify.channels import build_dispatcher

    settings = _settings()
    configure_logging(settings.log_level, settings.log_format)

    async def run() -> int:
        # Room for the inbox writes in flight and the pass's own transactions within the
        # pool proper: an overflow connection is closed as soon as it is given back.
        db = Database(settings.effective_database_url,
                      pool_size=max(8, 2 * settings.dispatcher_inbox_writes))
        running, channels = build_dispatcher(settings, db, name="dispatcher")
        try:
            await db.migrate()
            if once:
                return await running.run_once()
            await running.start()
            await stopped_by_signal(lambda: click.echo("outbox dispatcher running", err=True))
            return 0
        finally:
            await running.stop()
            await channels.close()
            await db.dispose()

    click.echo(f"outbox dispatcher on {settings.effective_database_url.split('://')[0]}",
               err=True)
    try:
        attempted = asyncio.run(run())
    except KeyboardInterrupt:
        return
    if once:
        click.echo(f"{attempted} delivery attempt(s)", err=True)


async def stopped_by_signal(listening: Callable[[], None]) -> None:
    """Until SIGTERM (a container's stop, systemd) or SIGINT: the caller then stops
    cleanly, its deliveries in hand finished or left to their lease. ``listening`` is
    called once the handlers are in place."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    listening()
    try:
        await stop.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)


@main.group(help="The notification outbox: what waits, what failed.")
def outbox() -> None:
    pass


@outbox.command("status", help="Events waiting and deliveries by status.")
def outbox_status() -> None:
    from storage.outbox import backlog

    for name, count in sorted(asyncio.run(lookup(_settings(), backlog)).items()):
        click.echo(f"{name}: {count}")


@outbox.command("failures", help="Deliveries given up after their last attempt.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True)
def outbox_failures(limit: int) -> None:
    from storage.outbox import Status, deliveries

    found = asyncio.run(lookup(_settings(), lambda conn: deliveries(
        conn, status=Status.FAILED, limit=limit)))
    for d in found:
        click.echo(f"delivery {d.pk} event {d.event_pk} ({d.topic}) {d.channel} -> {d.target}: "
                   f"{d.attempts} attempt(s), last error: {d.last_error}")
    if not found:
        click.echo("no failed delivery")


@main.command(help="Simulate professionals filing documents (ITI-65) into any Carnet, with "
                   "optional searches and reads, and report throughput, latency and errors.")
@click.option("--url", default="http://127.0.0.1:8000", show_default=True,
              help="The Carnet to drive.")
@click.option("--documents", type=click.IntRange(1), default=None,
              help="Stop after this many ITI-65 submissions.")
@click.option("--duration", type=click.FloatRange(0.1), default=None,
              help="Stop after this many seconds (with --documents: the first reached).")
@click.option("--concurrency", type=click.IntRange(1, 1000), default=8, show_default=True,
              help="Concurrent clients.")
@click.option("--rate", type=click.FloatRange(0.01), default=None,
              help="Target ITI-65 submissions per second in all (default: as fast as "
                   "possible).")
@click.option("--searches", type=click.FloatRange(0), default=0.0, show_default=True,
              help="ITI-67 searches by the same professional per submission.")
@click.option("--reads", type=click.FloatRange(0), default=0.0, show_default=True,
              help="ITI-68 reads of the document just filed, per submission.")
@click.option("--patient-reads", type=click.FloatRange(0), default=0.0, show_default=True,
              help="Portal-like reads of a patient's documents, per submission.")
@click.option("--patients", type=click.IntRange(1, 500), default=200, show_default=True,
              help="Patients (found through the API) to file for.")
@click.option("--max-bytes", type=click.IntRange(1024), default=2_000_000, show_default=True,
              help="Largest generated document.")
@click.option("--seed", type=int, default=None,
              help="Random seed: the same seed sends the same documents again, ids included "
                   "(default: a new one, shown in the report).")
@click.option("--issuer", default=None, help="The identity provider (default: <url>/idp).")
@click.option("--client-id", default="demo-app", show_default=True,
              help="The registered OAuth client the users log in through.")
@click.option("--client-secret", envvar="CARNET_SIMULATE_CLIENT_SECRET",
              default="demo-app-secret", show_default=True,
              help="Its secret (CARNET_SIMULATE_CLIENT_SECRET); empty for a public client.")
@click.option("--redirect-uri", default="http://127.0.0.1:8765/callback", show_default=True,
              help="A redirect URI registered for that client (never contacted).")
@click.option("--server-pid", type=int, multiple=True,
              help="The server's process ids, for its peak memory (default: found from "
                   "the port of a loopback URL).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--quiet", is_flag=True, help="No progress line.")
def simulate(url: str, documents: int | None, duration: float | None, concurrency: int,
             rate: float | None, searches: float, reads: float, patient_reads: float,
             patients: int, max_bytes: int, seed: int | None, issuer: str | None,
             client_id: str,
             client_secret: str, redirect_uri: str, server_pid: tuple[int, ...],
             as_json: bool, quiet: bool) -> None:
    from service.simulate.login import Client
    from service.simulate.runner import Plan, SetupError, plan_summary
    from service.simulate.runner import simulate as run_simulation

    if documents is None and duration is None:
        raise click.UsageError("give --documents, --duration, or both")
    plan = Plan(url=url, client=Client(client_id, client_secret or None, redirect_uri),
                documents=documents, duration=duration, concurrency=concurrency, rate=rate,
                searches=searches, reads=reads, patient_reads=patient_reads,
                patients=patients, max_bytes=max_bytes,
                seed=seed if seed is not None else random.randrange(2**31), issuer=issuer,
                server_pids=server_pid)
    live = sys.stderr.isatty()

    def progress(report: Any) -> None:
        if not quiet:
            click.echo(("\r" if live else "") + report.progress_line(), err=True,
                       nl=not live)

    try:
        report = asyncio.run(run_simulation(plan, progress, every=0.5 if live else 5.0))
    except SetupError as exc:
        raise click.ClickException(str(exc)) from exc
    if live and not quiet:
        click.echo(err=True)
    report.setup["plan"] = plan_summary(plan)
    click.echo(orjson.dumps(report.summary(), option=orjson.OPT_INDENT_2).decode()
               if as_json else report.text())
    if report.errors:
        sys.exit(1)


if __name__ == "__main__":
    main()
