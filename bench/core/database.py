"""PostgreSQL administration and the machine facts recorded with each run.

Kept apart from the server so that creating and dropping the benchmark database
(also on errors) and describing the machine never depend on a running server.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from . import IPP_SYSTEM, ROOT


async def _admin(args: argparse.Namespace, *statements: str, fetch: str | None = None,
                 database: str = "postgres") -> Any:
    import asyncpg

    conn = await asyncpg.connect(host=args.pg_host, port=args.pg_port, user=args.pg_user,
                                 database=database)
    try:
        for statement in statements:
            await conn.execute(statement)
        return await conn.fetch(fetch) if fetch else None
    finally:
        await conn.close()


def admin(args: argparse.Namespace, *statements: str, fetch: str | None = None,
          database: str = "postgres") -> Any:
    return asyncio.run(_admin(args, *statements, fetch=fetch, database=database))


def create_database(args: argparse.Namespace) -> str:
    name = args.db_name
    admin(args, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"')
    return f"postgresql+asyncpg://{args.pg_user}@{args.pg_host}:{args.pg_port}/{name}"


def drop_database(args: argparse.Namespace) -> None:
    admin(args, f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')


def pg_facts(args: argparse.Namespace) -> dict[str, str]:
    rows = admin(args, fetch="SELECT name, setting, unit FROM pg_settings WHERE name IN "
                             "('server_version', 'shared_buffers', 'synchronous_commit', 'fsync', "
                             "'autovacuum', 'max_connections', 'jit')")
    facts = {}
    for r in rows:
        value = r["setting"]
        if r["name"] == "shared_buffers" and r["unit"] == "8kB":
            value = f"{int(value) * 8 // 1024} MB"
        facts[r["name"]] = value
    return facts



def count_created(args: argparse.Namespace, nonce: int) -> int:
    prefix = f"9{nonce:03d}"
    rows = admin(args, database=args.db_name, fetch=(
        "SELECT count(*) AS n FROM token_index WHERE resource_type = 'Patient' "
        f"AND param = 'identifier' AND system = '{IPP_SYSTEM}' AND code LIKE '{prefix}%'"))
    return int(rows[0]["n"])



def count_resources(args: argparse.Namespace, resource_type: str) -> int:
    """Current (not deleted) resources of ``resource_type`` in the benchmark database."""
    rows = admin(args, database=args.db_name, fetch=(
        "SELECT count(*) AS n FROM resource WHERE resource_type = "
        f"'{resource_type}' AND NOT deleted"))
    return int(rows[0]["n"])


def vacuum_analyze(args: argparse.Namespace) -> float:
    """``VACUUM ANALYZE`` the benchmark database (autovacuum may be off); returns seconds."""
    import time

    started = time.perf_counter()
    admin(args, "VACUUM ANALYZE", database=args.db_name)
    return time.perf_counter() - started


def database_size(args: argparse.Namespace) -> str:
    return str(admin(args, database=args.db_name, fetch=(
        "SELECT pg_size_pretty(pg_database_size(current_database())) AS s"))[0]["s"])


def machine_facts(args: argparse.Namespace, wrk_version: str) -> list[tuple[str, str]]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    nproc = subprocess.run(["nproc"], capture_output=True, text=True,
                           check=False).stdout.strip() or str(os.cpu_count())
    mem = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split("\n")[0].split()[1])
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    pg = pg_facts(args)
    versions = []
    for package in ("fastapi", "starlette", "uvicorn", "uvloop", "httptools", "sqlalchemy",
                    "asyncpg", "orjson", "fhir.resources"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions.append(f"{package} {importlib.metadata.version(package)}")
    return [
        ("Code", code_version()),
        ("CPU", f"nproc {nproc} ({cpu}){mem}; server, PostgreSQL and wrk share it"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("PostgreSQL", f"{pg.get('server_version', '?')} (shared_buffers "
                       f"{pg.get('shared_buffers', '?')}, synchronous_commit "
                       f"{pg.get('synchronous_commit', '?')}, fsync {pg.get('fsync', '?')}, "
                       f"autovacuum {pg.get('autovacuum', '?')}, jit {pg.get('jit', '?')}, "
                       f"max_connections {pg.get('max_connections', '?')})"),
        ("Load generator", f"{wrk_version}, {args.threads} threads, {args.connections} "
                           f"connections, {args.duration}s per figure after {args.warmup}s "
                           "warm-up"),
        ("Packages", ", ".join(versions)),
    ]


def code_version() -> str:
    """The commit measured, and which files differed from it (read-only git commands)."""
    def git(*argv: str) -> str:
        with contextlib.suppress(OSError):
            out = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True,
                                 check=False)
            if out.returncode == 0:
                return out.stdout.rstrip()
        return ""

    head = git("rev-parse", "--short", "HEAD") or "unknown (not a git checkout?)"
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no")
               .splitlines() if line[3:] and not line[3:].startswith("bench/")]
    return f"commit {head}" + (f" plus uncommitted changes to {', '.join(changed)}"
                               if changed else "")

